package event

import (
	"hash/maphash"

	"github.com/tally-edge/tally/sketch"
)

// seriesSeed seeds HashSeries for the life of the process: hashes are
// never stored (the journal does not keep them) nor compared across
// processes.
var seriesSeed = maphash.MakeSeed()

// HashSeries returns a 64-bit hash of s, for maps keyed by series: the
// cardinality guard computes it once per event (Event.Hash) and the
// rollup looks series up by it. Equal series hash alike; different ones
// collide with probability 2⁻⁶⁴, and users of the hash compare the series
// on a match.
func HashSeries(s *sketch.Series) uint64 {
	var h maphash.Hash
	h.SetSeed(seriesSeed)
	for _, v := range [...]string{s.Campaign, s.Source, s.Medium, s.Type, s.Country, s.Device, s.Region} {
		h.WriteString(v)
		h.WriteByte(0)
	}
	return h.Sum64()
}

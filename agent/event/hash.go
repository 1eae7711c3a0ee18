package event

import (
	"hash/maphash"
	"math/bits"

	"github.com/tally-edge/tally/sketch"
)

// seriesSeed seeds HashSeries for the life of the process: hashes are
// never stored (the journal does not keep them) nor compared across
// processes.
var seriesSeed = maphash.MakeSeed()

// HashSeries returns a 64-bit hash of s, for maps keyed by series: the
// cardinality guard computes it once per event (Event.Hash) and the
// rollup looks series up by it. Equal series hash alike; different ones
// collide rarely, and users of the hash compare the series on a match.
// Each label is hashed by the runtime's string hash and folded in order,
// so the same labels in other dimensions hash apart.
func HashSeries(s *sketch.Series) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, v := range [...]string{s.Campaign, s.Source, s.Medium, s.Type, s.Country, s.Device, s.Region} {
		h = bits.RotateLeft64((h^maphash.String(seriesSeed, v))*0xbf58476d1ce4e5b9, 31)
	}
	return h
}

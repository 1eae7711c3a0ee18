package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/agent/source"
)

// Journal records are versioned in their first byte: the low five bits
// are flags, the high three the record version minus one.
//
//	version 1: flags (bit 0: a position follows) | [position] | events
//
// where the position is the uvarint-prefixed source and file and the
// varint offset, and the events are in the form of event.AppendEvents.
// A record of a version this build does not know is refused (replay
// fails, loudly) rather than misread.
const (
	recHasPosition   = 1
	recVersionShift  = 5
	recVersion       = 1
	recVersionBits   = (recVersion - 1) << recVersionShift
	recKnownFlagMask = recHasPosition
)

func appendRecordHeader(b []byte, pos *source.Position) []byte {
	if pos == nil {
		return append(b, recVersionBits)
	}
	b = append(b, recVersionBits|recHasPosition)
	b = binary.AppendUvarint(b, uint64(len(pos.Source)))
	b = append(b, pos.Source...)
	b = binary.AppendUvarint(b, uint64(len(pos.File)))
	b = append(b, pos.File...)
	return binary.AppendVarint(b, pos.Offset)
}

var errBadRecord = errors.New("corrupt journal record header")

// splitRecord returns the position (if any) and the events part.
func splitRecord(rec []byte) (*source.Position, []byte, error) {
	if len(rec) == 0 {
		return nil, nil, errBadRecord
	}
	flags, rest := rec[0], rec[1:]
	if v := int(flags>>recVersionShift) + 1; v != recVersion || flags&^(7<<recVersionShift)&^recKnownFlagMask != 0 {
		return nil, nil, fmt.Errorf("journal record of version %d (flags %#x); this build reads version %d", v, flags, recVersion)
	}
	if flags&recHasPosition == 0 {
		return nil, rest, nil
	}
	str := func() (string, bool) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return "", false
		}
		s := string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
		return s, true
	}
	var p source.Position
	var ok bool
	if p.Source, ok = str(); !ok {
		return nil, nil, errBadRecord
	}
	if p.File, ok = str(); !ok {
		return nil, nil, errBadRecord
	}
	off, k := binary.Varint(rest)
	if k <= 0 {
		return nil, nil, errBadRecord
	}
	p.Offset, rest = off, rest[k:]
	return &p, rest, nil
}

// trackedPosition is a source's position and when it last moved.
type trackedPosition struct {
	source.Position
	// Seen is the unix second of the last AcceptAt (or replay) that set
	// it: what pruning goes by.
	Seen int64
}

// Positions are stored in every flush's commit meta (spool.CommitMeta.Data)
// in one of two versions:
//
//	version 1: a msgpack map from source to {"s": source, "f": file,
//	           "o": offset} (written before positions carried a version;
//	           its first byte is a msgpack map header, 0x80-0x8f, 0xde or
//	           0xdf, never 0x02)
//	version 2: 0x02, then a msgpack array of [source, file, offset, seen]
//
// Empty data means no positions in either.
const positionsV2 = 0x02

type storedPositionV1 struct {
	Source string `msgpack:"s"`
	File   string `msgpack:"f"`
	Offset int64  `msgpack:"o"`
}

type storedPositionV2 struct {
	_msgpack struct{} `msgpack:",as_array"`
	Source   string
	File     string
	Offset   int64
	Seen     int64
}

func encodePositions(ps map[string]trackedPosition) ([]byte, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	list := make([]storedPositionV2, 0, len(ps))
	for _, k := range slices.Sorted(maps.Keys(ps)) {
		p := ps[k]
		list = append(list, storedPositionV2{Source: p.Source, File: p.File, Offset: p.Offset, Seen: p.Seen})
	}
	b, err := msgpack.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("encode source positions: %w", err)
	}
	return append([]byte{positionsV2}, b...), nil
}

func decodePositions(b []byte) (map[string]trackedPosition, error) {
	ps := map[string]trackedPosition{}
	switch {
	case len(b) == 0:
	case b[0] == positionsV2:
		var list []storedPositionV2
		if err := msgpack.Unmarshal(b[1:], &list); err != nil {
			return nil, fmt.Errorf("decode source positions (version 2): %w", err)
		}
		for _, p := range list {
			ps[p.Source] = trackedPosition{Position: source.Position{Source: p.Source, File: p.File, Offset: p.Offset}, Seen: p.Seen}
		}
	default:
		var v1 map[string]storedPositionV1
		if err := msgpack.Unmarshal(b, &v1); err != nil {
			return nil, fmt.Errorf("decode source positions (version 1): %w", err)
		}
		for k, p := range v1 {
			// The key names the source (version 1 repeated it inside).
			// Version 1 kept no time: Seen stays 0, and replay counts
			// them as seen at the upgrade.
			ps[k] = trackedPosition{Position: source.Position{Source: k, File: p.File, Offset: p.Offset}}
		}
	}
	return ps, nil
}

// Positions returns every source's position: as recovered at Open (last
// commit, then the journal replay) and advanced by AcceptAt since.
func (c *Collector) Positions() map[string]source.Position {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]source.Position, len(c.positions))
	for k, p := range c.positions {
		out[k] = p.Position
	}
	return out
}

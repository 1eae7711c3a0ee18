package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"

	"github.com/vmihailenco/msgpack/v5"
)

// Position is how far a source (a tailed file, an import) has been read.
// It is journaled in the same record as the events read up to it, and
// committed with every flush, so after a crash a source resumes exactly
// after the last line whose events are durable: no line is lost, none is
// counted twice.
type Position struct {
	// Source names the reader, e.g. "tail:/var/log/nginx/access.log".
	Source string `msgpack:"s"`
	// File identifies the file read (e.g. "dev:inode"), so a reader can
	// tell a rotated file from the one it was reading.
	File string `msgpack:"f"`
	// Offset is the byte offset just after the last line consumed.
	Offset int64 `msgpack:"o"`
}

// Journal records: a flags byte, the position when flag bit 0 is set
// (uvarint-prefixed source and file, varint offset), then the events in
// the form of event.AppendEvents.
const recHasPosition = 1

func appendRecordHeader(b []byte, pos *Position) []byte {
	if pos == nil {
		return append(b, 0)
	}
	b = append(b, recHasPosition)
	b = binary.AppendUvarint(b, uint64(len(pos.Source)))
	b = append(b, pos.Source...)
	b = binary.AppendUvarint(b, uint64(len(pos.File)))
	b = append(b, pos.File...)
	return binary.AppendVarint(b, pos.Offset)
}

var errBadRecord = errors.New("corrupt journal record header")

// splitRecord returns the position (if any) and the events part.
func splitRecord(rec []byte) (*Position, []byte, error) {
	if len(rec) == 0 {
		return nil, nil, errBadRecord
	}
	flags, rest := rec[0], rec[1:]
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
	var p Position
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

func encodePositions(ps map[string]Position) ([]byte, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	b, err := msgpack.Marshal(ps)
	if err != nil {
		return nil, fmt.Errorf("encode source positions: %w", err)
	}
	return b, nil
}

func decodePositions(b []byte) (map[string]Position, error) {
	ps := map[string]Position{}
	if len(b) == 0 {
		return ps, nil
	}
	if err := msgpack.Unmarshal(b, &ps); err != nil {
		return nil, fmt.Errorf("decode source positions: %w", err)
	}
	return ps, nil
}

// Positions returns every source's position: as recovered at Open (last
// commit, then the journal replay) and advanced by AcceptAt since.
func (c *Collector) Positions() map[string]Position {
	c.posMu.Lock()
	defer c.posMu.Unlock()
	return maps.Clone(c.positions)
}

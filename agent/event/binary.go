package event

import (
	"encoding/binary"
	"errors"

	"github.com/tally-edge/tally/sketch"
)

// The journal keeps normalised events in this compact form:
//
//	uvarint count, then per event:
//	  varint unix ms | uvarint visitor | varint value µ | varint cost µ |
//	  byte flags (bit0 has value, bit1 imported row, bit2 vote) |
//	  [if bit1: uvarint weight | uvarint row | uvarint row version] |
//	  8 × (uvarint len, bytes):
//	  campaign, source, medium, type, country, device, region, bot |
//	  [if bit2: uvarint len, bytes: vote]
//
// It is local to one agent and never crosses the wire.

// ErrCorrupt reports a journal record that cannot be decoded.
var ErrCorrupt = errors.New("corrupt event record")

// AppendEvents appends the binary form of events to b.
func AppendEvents(b []byte, events []Event) []byte {
	b = binary.AppendUvarint(b, uint64(len(events)))
	for i := range events {
		e := &events[i]
		b = binary.AppendVarint(b, e.UnixMillis)
		b = binary.AppendUvarint(b, e.Visitor)
		b = binary.AppendVarint(b, e.ValueMicros)
		b = binary.AppendVarint(b, e.CostMicros)
		var flags byte
		if e.HasValue {
			flags |= 1
		}
		if e.Row != 0 || e.Weight != 0 {
			flags |= 2
		}
		if e.Vote != "" {
			flags |= 4
		}
		b = append(b, flags)
		if flags&2 != 0 {
			b = binary.AppendUvarint(b, e.Weight)
			b = binary.AppendUvarint(b, e.Row)
			b = binary.AppendUvarint(b, e.RowVersion)
		}
		for _, s := range [...]string{e.Series.Campaign, e.Series.Source, e.Series.Medium, e.Series.Type,
			e.Series.Country, e.Series.Device, e.Series.Region, e.Bot} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
		if flags&4 != 0 {
			b = binary.AppendUvarint(b, uint64(len(e.Vote)))
			b = append(b, e.Vote...)
		}
	}
	return b
}

// DecodeEvents decodes a record written by AppendEvents, appending to dst.
func DecodeEvents(b []byte, dst []Event) ([]Event, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return dst, ErrCorrupt
	}
	b = b[k:]
	var intern [9]map[string]string
	for range n {
		var e Event
		var ok bool
		if e.UnixMillis, b, ok = varint(b); !ok {
			return dst, ErrCorrupt
		}
		if e.Visitor, b, ok = uvarint(b); !ok {
			return dst, ErrCorrupt
		}
		if e.ValueMicros, b, ok = varint(b); !ok {
			return dst, ErrCorrupt
		}
		if e.CostMicros, b, ok = varint(b); !ok {
			return dst, ErrCorrupt
		}
		if len(b) < 1 {
			return dst, ErrCorrupt
		}
		flags := b[0]
		e.HasValue = flags&1 != 0
		b = b[1:]
		if flags&2 != 0 {
			if e.Weight, b, ok = uvarint(b); !ok {
				return dst, ErrCorrupt
			}
			if e.Row, b, ok = uvarint(b); !ok {
				return dst, ErrCorrupt
			}
			if e.RowVersion, b, ok = uvarint(b); !ok {
				return dst, ErrCorrupt
			}
		}
		fields := [...]*string{&e.Series.Campaign, &e.Series.Source, &e.Series.Medium, &e.Series.Type,
			&e.Series.Country, &e.Series.Device, &e.Series.Region, &e.Bot, &e.Vote}
		present := fields[:]
		if flags&4 == 0 {
			present = fields[:len(fields)-1] // no vote
		}
		for i, f := range present {
			l, rest, ok := uvarint(b)
			if !ok || l > uint64(len(rest)) {
				return dst, ErrCorrupt
			}
			raw := rest[:l]
			b = rest[l:]
			// Intern repeated strings: a replayed journal holds many
			// events of few series.
			if intern[i] == nil {
				intern[i] = make(map[string]string)
			}
			s, hit := intern[i][string(raw)]
			if !hit {
				s = string(raw)
				intern[i][s] = s
			}
			*f = s
		}
		dst = append(dst, e)
	}
	return dst, nil
}

func varint(b []byte) (int64, []byte, bool) {
	v, k := binary.Varint(b)
	if k <= 0 {
		return 0, b, false
	}
	return v, b[k:], true
}

func uvarint(b []byte) (uint64, []byte, bool) {
	v, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, b, false
	}
	return v, b[k:], true
}

// Key returns the series-minute this event belongs to.
func (e *Event) Key() sketch.Key {
	return sketch.Key{Series: e.Series, Minute: sketch.MinuteOf(e.UnixMillis)}
}

// RowID derives an imported row's contribution id from its key (for
// example "cost|2026-11-21|spring_sale|google|cpc"). The top two bits are
// set, which keeps these ids apart from those of live agents (top bit 0)
// and of log backfills (top bits 10).
func RowID(key string) uint64 {
	// FNV-1a 64: stable across processes and versions, which is all an
	// id needs; rows are not adversarial to each other.
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return h | 3<<62
}

package wire

import (
	"encoding/binary"
	"math"
	"slices"

	"github.com/tally-edge/tally/sketch"
)

// AppendContributions appends the msgpack encoding of cs to b: the bytes
// marshal gives the same slice (same keys, same order, compact integers,
// empty optional fields left out), written directly instead of through
// reflection, which costs an agent more than building the contributions.
// The one difference is deliberate: bot reasons are written in sorted
// order, where reflection writes Go's map order.
func AppendContributions(b []byte, cs []Contribution) []byte {
	if cs == nil {
		return append(b, 0xc0)
	}
	b = AppendContributionsHeader(b, len(cs))
	for i := range cs {
		b = AppendContribution(b, &cs[i])
	}
	return b
}

// AppendContributionsHeader appends the msgpack array header of n
// contributions: followed by n AppendContribution, it makes the bytes of
// AppendContributions. It takes at most 5 bytes.
func AppendContributionsHeader(b []byte, n int) []byte { return appendArrayLen(b, n) }

// AppendContribution appends the msgpack encoding of one contribution.
func AppendContribution(b []byte, c *Contribution) []byte {
	b = append(b, 0x85, 0xa1, 's')
	b = appendSeries(b, &c.Series)
	b = append(b, 0xa1, 'm')
	b = appendInt(b, c.Minute)
	b = append(b, 0xa2, 'i', 'd')
	b = appendUint(b, c.CID)
	b = append(b, 0xa1, 'v')
	b = appendUint(b, c.Version)
	b = append(b, 0xa1, 'd')
	return appendEncoded(b, &c.State)
}

func appendSeries(b []byte, s *sketch.Series) []byte {
	b = append(b, 0x87, 0xa1, 'c')
	b = appendString(b, s.Campaign)
	b = append(b, 0xa1, 's')
	b = appendString(b, s.Source)
	b = append(b, 0xa1, 'm')
	b = appendString(b, s.Medium)
	b = append(b, 0xa1, 't')
	b = appendString(b, s.Type)
	b = append(b, 0xa2, 'c', 'o')
	b = appendString(b, s.Country)
	b = append(b, 0xa1, 'd')
	b = appendString(b, s.Device)
	b = append(b, 0xa1, 'r')
	return appendString(b, s.Region)
}

func appendEncoded(b []byte, e *sketch.Encoded) []byte {
	n := 1
	for _, present := range [...]bool{e.ValueMicros != 0, e.CostMicros != 0, len(e.Bots) > 0, len(e.Votes) > 0,
		len(e.HLL) > 0, len(e.Quantiles) > 0, len(e.Registers) > 0} {
		if present {
			n++
		}
	}
	b = append(b, 0x80|byte(n), 0xa1, 'n')
	b = appendUint(b, e.Count)
	if e.ValueMicros != 0 {
		b = append(b, 0xa1, 'v')
		b = appendInt(b, e.ValueMicros)
	}
	if e.CostMicros != 0 {
		b = append(b, 0xa1, 'c')
		b = appendInt(b, e.CostMicros)
	}
	if len(e.Bots) > 0 {
		b = append(b, 0xa1, 'b')
		b = appendCounts(b, e.Bots)
	}
	if len(e.Votes) > 0 {
		b = append(b, 0xa1, 'p')
		b = appendCounts(b, e.Votes)
	}
	if len(e.HLL) > 0 {
		b = append(b, 0xa1, 'h')
		b = appendBytes(b, e.HLL)
	}
	if len(e.Quantiles) > 0 {
		b = append(b, 0xa1, 'q')
		b = appendBytes(b, e.Quantiles)
	}
	if len(e.Registers) > 0 {
		b = append(b, 0xa1, 'g')
		b = appendBytes(b, e.Registers)
	}
	return b
}

// appendCounts writes a map of counts with its keys in order, so equal
// maps encode alike.
func appendCounts(b []byte, counts map[string]uint64) []byte {
	b = appendMapLen(b, len(counts))
	var stack [8]string
	keys := stack[:0]
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = appendString(b, k)
		b = appendUint(b, counts[k])
	}
	return b
}

// appendUint writes n in the fewest bytes msgpack allows.
func appendUint(b []byte, n uint64) []byte {
	switch {
	case n <= math.MaxInt8:
		return append(b, byte(n))
	case n <= math.MaxUint8:
		return append(b, 0xcc, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), n)
}

// appendInt writes n in the fewest bytes msgpack allows, as the unsigned
// forms when it is not negative.
func appendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendUint(b, uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, 0xd0, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
}

func appendString(b []byte, s string) []byte {
	switch l := len(s); {
	case l < 32:
		b = append(b, 0xa0|byte(l))
	case l <= math.MaxUint8:
		b = append(b, 0xd9, byte(l))
	case l <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(l))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(l))
	}
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	switch l := len(v); {
	case l <= math.MaxUint8:
		b = append(b, 0xc4, byte(l))
	case l <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(l))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(l))
	}
	return append(b, v...)
}

func appendArrayLen(b []byte, l int) []byte {
	switch {
	case l < 16:
		return append(b, 0x90|byte(l))
	case l <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(l))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(l))
}

func appendMapLen(b []byte, l int) []byte {
	switch {
	case l < 16:
		return append(b, 0x80|byte(l))
	case l <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(l))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(l))
}

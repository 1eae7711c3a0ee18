package wire

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxContributions is the largest number of contributions one Batch may
// carry, and more generally the longest msgpack array a decoder accepts.
// An agent with more changed series-minutes splits its flush.
//
// The limit exists because the decoder allocates a slice of the declared
// length before reading the elements: without it, a few bytes claiming
// millions of empty contributions would cost hundreds of megabytes.
const MaxContributions = 1 << 16

// Limits of the msgpack structure a decoder accepts, beyond MaxContributions.
// Our messages nest five levels deep and their maps have a handful of keys;
// the limits leave room for fields added within a version.
const (
	maxMapLen = 1 << 10
	maxDepth  = 16
)

// DecodeBatch decodes and validates the Batch in f. Errors are
// *FrameError: ErrWrongKind, ErrMalformed, or what Batch.Validate reports.
func DecodeBatch(f Frame) (*Batch, error) {
	b, err := decodeBatch(f)
	if err != nil {
		return nil, err
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// decodeBatch decodes without validating, so a server can echo the Seq of
// a batch it rejects.
func decodeBatch(f Frame) (*Batch, error) {
	if f.Kind != KindBatch {
		return nil, frameErr(ErrWrongKind, nil, "got %s, want %s", f.Kind, KindBatch)
	}
	var b Batch
	if err := unmarshal(f.Payload, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// DecodeAck decodes and validates the Ack in f. Errors are *FrameError:
// ErrWrongKind, ErrMalformed, or what Ack.Validate reports.
func DecodeAck(f Frame) (*Ack, error) {
	if f.Kind != KindAck {
		return nil, frameErr(ErrWrongKind, nil, "got %s, want %s", f.Kind, KindAck)
	}
	var a Ack
	if err := unmarshal(f.Payload, &a); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// unmarshal checks the msgpack structure of p against our limits, then
// decodes it into v. The check comes first because msgpack/v5 trusts the
// lengths it reads: it allocates a slice or map of the declared size before
// decoding a single element (v5.4.1 even ignores its own slice limit), and
// it skips unknown nested values recursively.
func unmarshal(p []byte, v any) (err error) {
	if err := checkMsgpack(p); err != nil {
		return err
	}
	defer func() {
		// Defence in depth: the structure is checked, but a decoder bug
		// must cost one stream, not the process. Fuzz tests fail on it.
		if r := recover(); r != nil {
			err = frameErr(ErrMalformed, nil, "msgpack decoder panic: %v", r)
		}
	}()
	dec := msgpack.GetDecoder()
	dec.Reset(bytes.NewReader(p))
	err = dec.Decode(v)
	msgpack.PutDecoder(dec)
	if err != nil {
		return frameErr(ErrMalformed, err, "msgpack")
	}
	return nil
}

// checkMsgpack walks the msgpack encoding in p without decoding it and
// checks that it is exactly one well-formed value, that no length points
// past the end, that arrays hold at most MaxContributions elements and maps
// at most maxMapLen entries, and that containers nest at most maxDepth
// deep. It allocates nothing.
func checkMsgpack(p []byte) error {
	// pending[i] counts the values still expected in the i-th open
	// container; pending[0] is the single top-level value.
	var pending [maxDepth + 1]int
	pending[0] = 1
	depth := 1
	pos := 0
	for {
		for depth > 0 && pending[depth-1] == 0 {
			depth--
		}
		if depth == 0 {
			break
		}
		pending[depth-1]--
		if pos >= len(p) {
			return frameErr(ErrMalformed, nil, "msgpack ends at byte %d inside a value", pos)
		}
		c := p[pos]
		pos++
		var (
			skip  uint64 // bytes of data following the header
			items int    // values contained, for arrays and maps
			n     uint64 // declared length
			err   error
		)
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
			// fixint, nil, bool
		case c <= 0x8f: // fixmap
			items, err = mapItems(uint64(c&0x0f), pos, p)
		case c <= 0x9f: // fixarray
			items, err = arrayItems(uint64(c&0x0f), pos, p)
		case c <= 0xbf: // fixstr
			skip = uint64(c & 0x1f)
		case c == 0xc1:
			return frameErr(ErrMalformed, nil, "msgpack byte 0xc1 at %d is never used", pos-1)
		case c == 0xc4, c == 0xd9: // bin8, str8
			skip, pos, err = readLen(p, pos, 1)
		case c == 0xc5, c == 0xda: // bin16, str16
			skip, pos, err = readLen(p, pos, 2)
		case c == 0xc6, c == 0xdb: // bin32, str32
			skip, pos, err = readLen(p, pos, 4)
		case c == 0xc7: // ext8: length, type, data
			skip, pos, err = readLen(p, pos, 1)
			skip++
		case c == 0xc8: // ext16
			skip, pos, err = readLen(p, pos, 2)
			skip++
		case c == 0xc9: // ext32
			skip, pos, err = readLen(p, pos, 4)
			skip++
		case c == 0xca, c == 0xce, c == 0xd2: // float32, uint32, int32
			skip = 4
		case c == 0xcb, c == 0xcf, c == 0xd3: // float64, uint64, int64
			skip = 8
		case c == 0xcc, c == 0xd0: // uint8, int8
			skip = 1
		case c == 0xcd, c == 0xd1: // uint16, int16
			skip = 2
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16: type, data
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc: // array16
			if n, pos, err = readLen(p, pos, 2); err == nil {
				items, err = arrayItems(n, pos, p)
			}
		case c == 0xdd: // array32
			if n, pos, err = readLen(p, pos, 4); err == nil {
				items, err = arrayItems(n, pos, p)
			}
		case c == 0xde: // map16
			if n, pos, err = readLen(p, pos, 2); err == nil {
				items, err = mapItems(n, pos, p)
			}
		case c == 0xdf: // map32
			if n, pos, err = readLen(p, pos, 4); err == nil {
				items, err = mapItems(n, pos, p)
			}
		}
		if err != nil {
			return err
		}
		if skip > uint64(len(p)-pos) {
			return frameErr(ErrMalformed, nil, "msgpack value at byte %d needs %d bytes, %d left", pos, skip, len(p)-pos)
		}
		pos += int(skip)
		if items > 0 {
			if depth > maxDepth {
				return frameErr(ErrMalformed, nil, "msgpack nests deeper than %d", maxDepth)
			}
			pending[depth] = items
			depth++
		}
	}
	if pos != len(p) {
		return frameErr(ErrMalformed, nil, "%d trailing bytes after the message", len(p)-pos)
	}
	return nil
}

// readLen reads a big-endian length of size bytes at pos.
func readLen(p []byte, pos, size int) (n uint64, next int, err error) {
	if len(p)-pos < size {
		return 0, pos, frameErr(ErrMalformed, nil, "msgpack ends inside a length at byte %d", pos)
	}
	for _, b := range p[pos : pos+size] {
		n = n<<8 | uint64(b)
	}
	return n, pos + size, nil
}

// arrayItems checks an array length: every element takes at least a byte.
func arrayItems(n uint64, pos int, p []byte) (int, error) {
	if n > MaxContributions {
		return 0, frameErr(ErrMalformed, nil, "msgpack array of %d elements exceeds the limit of %d", n, MaxContributions)
	}
	if n > uint64(len(p)-pos) {
		return 0, frameErr(ErrMalformed, nil, "msgpack array of %d elements in %d bytes", n, len(p)-pos)
	}
	return int(n), nil
}

// mapItems checks a map length: every entry takes at least two bytes.
func mapItems(n uint64, pos int, p []byte) (int, error) {
	if n > maxMapLen {
		return 0, frameErr(ErrMalformed, nil, "msgpack map of %d entries exceeds the limit of %d", n, maxMapLen)
	}
	if 2*n > uint64(len(p)-pos) {
		return 0, frameErr(ErrMalformed, nil, "msgpack map of %d entries in %d bytes", n, len(p)-pos)
	}
	return int(2 * n), nil
}

// maxMinute is 3000-01-01 in unix seconds: later "minutes" are milliseconds
// or garbage.
const maxMinute = 32503680000

// Validate checks the protocol rules a Batch must follow: the version this
// node speaks, a named agent, at most MaxContributions contributions, and
// for each one a campaign, an event type, and a minute
// that is the start of a minute in unix seconds, after 1970 and before 3000. It does not
// decode the sketches; the merge layer does that and reports corrupt ones.
// Errors are *FrameError with Reason ErrUnknownVersion or ErrInvalid.
func (b *Batch) Validate() error {
	if b.Version != ProtocolVersion {
		return versionErr("batch", b.Version)
	}
	if b.Agent == "" {
		return frameErr(ErrInvalid, nil, "batch %d has no agent name", b.Seq)
	}
	if len(b.Contributions) > MaxContributions {
		return frameErr(ErrInvalid, nil, "batch %d has %d contributions, the limit is %d", b.Seq, len(b.Contributions), MaxContributions)
	}
	for i := range b.Contributions {
		c := &b.Contributions[i]
		var problem string
		switch {
		case c.Series.Campaign == "":
			problem = "empty campaign"
		case c.Series.Type == "":
			problem = "empty event type"
		case c.Minute <= 0 || c.Minute >= maxMinute || c.Minute%60 != 0:
			problem = fmt.Sprintf("minute %d is not the start of a minute in unix seconds", c.Minute)
		default:
			continue
		}
		return frameErr(ErrInvalid, nil, "batch %d, contribution %d (%s): %s", b.Seq, i, c.Series, problem)
	}
	return nil
}

// Validate checks the protocol rules an Ack must follow: the version this
// node speaks, a known status, a redirect target for AckRedirect and a
// non-negative retry hint. Errors are *FrameError with Reason
// ErrUnknownVersion or ErrInvalid.
func (a *Ack) Validate() error {
	if a.Version != ProtocolVersion {
		return versionErr("ack", a.Version)
	}
	switch a.Status {
	case AckOK, AckRejected, AckBusy:
	case AckRedirect:
		if a.Redirect == "" {
			return frameErr(ErrInvalid, nil, "ack %d redirects without an address", a.Seq)
		}
	default:
		return frameErr(ErrInvalid, nil, "ack %d has unknown status %d", a.Seq, uint8(a.Status))
	}
	if a.RetryAfterMillis < 0 {
		return frameErr(ErrInvalid, nil, "ack %d has negative retry hint %d ms", a.Seq, a.RetryAfterMillis)
	}
	return nil
}

package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/tally-edge/tally/sketch"
)

// Live counters: the second speed on the wire (see "Live counters" in
// doc.go for the stream and the encoding).
//
// An agent ships durable state at every flush; between flushes it sends,
// about once a second, the counters of the campaign-minutes that changed,
// on a unidirectional stream of its own to the campaign's owner. They are
// a fast path for the live view only: never acknowledged, never written to
// a log or to storage, and superseded by the durable contributions.

// LiveFields is the number of counters in LiveCounters.
const LiveFields = 8

// LiveCounters are an agent's cumulative counts of one campaign in one
// minute within one restart epoch: every event of that campaign and
// minute the agent's rollup took since the epoch began (imported rows
// apart), counted as the rollup counts them.
type LiveCounters struct {
	// Impressions, Clicks, Conversions and Pageviews count the non-bot
	// events of those types; Other counts every other type (cost,
	// email_open, …), so that Events covers the whole campaign-minute.
	Impressions, Clicks, Conversions, Pageviews, Other uint64
	// ValueMicros and CostMicros are the sums of values and spend.
	ValueMicros, CostMicros int64
	// Bots counts filtered bot events over every reason.
	Bots uint64
}

// Events returns the number of events the counters cover, bots included.
// Two counts of the same agent's events (the live one and the durable one)
// cover nested sets of events once a flush has landed; Events is what
// tells which covers more.
func (c LiveCounters) Events() uint64 {
	return c.Impressions + c.Clicks + c.Conversions + c.Pageviews + c.Other + c.Bots
}

// AddCount adds n non-bot events of event type typ.
func (c *LiveCounters) AddCount(typ string, n uint64) {
	switch typ {
	case "impression":
		c.Impressions += n
	case "click":
		c.Clicks += n
	case "conversion":
		c.Conversions += n
	case "pageview":
		c.Pageviews += n
	default:
		c.Other += n
	}
}

// AddState adds the counters of a series-minute state of event type typ:
// what one contribution holds.
func (c *LiveCounters) AddState(typ string, st *sketch.State) {
	c.AddCount(typ, st.Count)
	c.ValueMicros += st.ValueMicros
	c.CostMicros += st.CostMicros
	c.Bots += st.BotTotal()
}

// Add adds o to c.
func (c *LiveCounters) Add(o LiveCounters) {
	c.Impressions += o.Impressions
	c.Clicks += o.Clicks
	c.Conversions += o.Conversions
	c.Pageviews += o.Pageviews
	c.Other += o.Other
	c.ValueMicros += o.ValueMicros
	c.CostMicros += o.CostMicros
	c.Bots += o.Bots
}

// Sub subtracts o from c. Counts must not go below zero: callers subtract
// only what they added.
func (c *LiveCounters) Sub(o LiveCounters) {
	c.Impressions -= o.Impressions
	c.Clicks -= o.Clicks
	c.Conversions -= o.Conversions
	c.Pageviews -= o.Pageviews
	c.Other -= o.Other
	c.ValueMicros -= o.ValueMicros
	c.CostMicros -= o.CostMicros
	c.Bots -= o.Bots
}

func (c *LiveCounters) fields() [LiveFields]int64 {
	return [LiveFields]int64{int64(c.Impressions), int64(c.Clicks), int64(c.Conversions), int64(c.Pageviews),
		int64(c.Other), c.ValueMicros, c.CostMicros, int64(c.Bots)}
}

func countersOf(f [LiveFields]int64) LiveCounters {
	return LiveCounters{Impressions: uint64(f[0]), Clicks: uint64(f[1]), Conversions: uint64(f[2]), Pageviews: uint64(f[3]),
		Other: uint64(f[4]), ValueMicros: f[5], CostMicros: f[6], Bots: uint64(f[7])}
}

// signedField says which fields may be negative (money); the others are
// counts.
var signedField = [LiveFields]bool{5: true, 6: true}

// LiveRecord is the live state of one campaign in one minute.
type LiveRecord struct {
	Campaign string
	// Minute is the start of the minute, unix seconds.
	Minute   int64
	Counters LiveCounters
}

// Live is one message of an agent's live counters, as decoded: absolute,
// cumulative values, whatever the stream's encoding.
type Live struct {
	// Epoch is the agent's restart epoch: the high 32 bits of the CIDs of
	// the contributions that will carry the same events durably. Live
	// agents' epochs are below 2^31 (CIDs with the top bit set are
	// backfills and imported rows, which have no live counters).
	Epoch uint32
	// Seq numbers the epoch's messages over all of the agent's streams;
	// it increases with every message, so a receiver keeps, for every
	// campaign-minute, the record of the highest Seq.
	Seq uint64
	// Flush is the agent's flush interval: a receiver that has not seen
	// the durable contributions a few of them later drops the record.
	Flush time.Duration
	// Records are the campaign-minutes that changed since the stream's
	// previous message (all of them in a stream's first message).
	Records []LiveRecord
}

// Limits of live streams.
const (
	// MaxLiveFrameSize caps one live frame's payload: a message of a few
	// thousand campaign-minutes is a few tens of kilobytes.
	MaxLiveFrameSize = 1 << 20
	// MaxLiveRefs bounds the campaign-minutes one live stream may name at
	// once (a receiver keeps each one's last values to apply deltas).
	MaxLiveRefs = 1 << 14
	// maxLiveCampaign bounds a campaign name on a live stream (agents cut
	// labels to 128 characters).
	maxLiveCampaign = 1024
	// liveEpochLimit: live epochs are below it (CIDs with the top bit set
	// are not a live agent's).
	liveEpochLimit = 1 << 31
)

type liveKey struct {
	campaign string
	minute   int64
}

type encRef struct {
	ref  uint64
	last [LiveFields]int64
}

// LiveEncoder is the sending side of one live stream: it remembers the
// campaign-minutes it has named (their refs) and the values it sent for
// each, and encodes each message as the differences. Its state is only
// valid for the one stream: when the stream fails, use a new encoder on a
// new stream. Not safe for concurrent use.
type LiveEncoder struct {
	refs    map[liveKey]*encRef
	next    uint64
	started bool
	retired []uint64
	body    []byte
}

// NewLiveEncoder returns the encoder of a new stream.
func NewLiveEncoder() *LiveEncoder { return &LiveEncoder{refs: map[liveKey]*encRef{}} }

// Retire forgets a campaign-minute; the next message tells the receiver
// to free it. A record for it later names it again.
func (e *LiveEncoder) Retire(campaign string, minute int64) {
	k := liveKey{campaign, minute}
	if r := e.refs[k]; r != nil {
		e.retired = append(e.retired, r.ref)
		delete(e.refs, k)
	}
}

// Known returns how many campaign-minutes the stream names now.
func (e *LiveEncoder) Known() int { return len(e.refs) }

// AppendFrame appends the frame of m to dst: only the records whose
// counters differ from what this encoder sent last for them, as
// differences. It reports false, and appends nothing, when there is
// nothing to send (no record changed and nothing to retire). m.Seq must
// increase from one call to the next; m.Epoch and m.Flush must not
// change. compress is as in EncodeOptions. An error leaves the encoder
// unusable, as the stream it encodes for.
func (e *LiveEncoder) AppendFrame(dst []byte, m *Live, compress bool) ([]byte, bool, error) {
	if m.Epoch == 0 || m.Epoch >= liveEpochLimit {
		return dst, false, fmt.Errorf("live: epoch %d is not a live agent's (1 to 2^31-1)", m.Epoch)
	}
	body := e.body[:0]
	var keys []liveKey
	n := 0
	for i := range m.Records {
		r := &m.Records[i]
		if len(r.Campaign) > maxLiveCampaign || r.Campaign == "" || !validMinute(r.Minute) {
			return dst, false, fmt.Errorf("live: record %q@%d is not a campaign-minute", r.Campaign, r.Minute)
		}
		k := liveKey{r.Campaign, r.Minute}
		cur := r.Counters.fields()
		ref := e.refs[k]
		var last [LiveFields]int64 // a campaign-minute not named yet was all zeros
		if ref != nil {
			last = ref.last
		}
		var mask byte
		for f := range LiveFields {
			if cur[f] != last[f] {
				mask |= 1 << f
			}
		}
		if mask == 0 {
			continue
		}
		if ref == nil {
			if len(e.refs) >= MaxLiveRefs {
				return dst, false, fmt.Errorf("live: a stream names at most %d campaign-minutes", MaxLiveRefs)
			}
			ref = &encRef{ref: e.next}
			e.next++
			e.refs[k] = ref
			keys = append(keys, k)
		}
		body = binary.AppendUvarint(body, ref.ref)
		body = append(body, mask)
		for f := range LiveFields {
			if mask&(1<<f) != 0 {
				body = appendDelta(body, cur[f]-ref.last[f])
			}
		}
		ref.last = cur
		n++
	}
	e.body = body
	if n == 0 && len(e.retired) == 0 && len(keys) == 0 {
		return dst, false, nil
	}

	// The payload: a msgpack map, "e" and "f" only in a stream's first
	// message.
	fields := 2 // s, d
	if !e.started {
		fields += 2
	}
	if len(keys) > 0 {
		fields++
	}
	if len(e.retired) > 0 {
		fields++
	}
	p := getScratch()
	defer putScratch(p)
	b := appendMapLen(p.AvailableBuffer(), fields)
	if !e.started {
		b = append(b, 0xa1, 'e')
		b = appendUint(b, uint64(m.Epoch))
		b = append(b, 0xa1, 'f')
		b = appendUint(b, uint64(max(0, m.Flush.Milliseconds())))
	}
	b = append(b, 0xa1, 's')
	b = appendUint(b, m.Seq)
	if len(keys) > 0 {
		b = append(b, 0xa1, 'k')
		b = appendArrayLen(b, 2*len(keys))
		for _, k := range keys {
			b = appendString(b, k.campaign)
			b = appendInt(b, k.minute)
		}
	}
	if len(e.retired) > 0 {
		b = append(b, 0xa1, 'x')
		b = appendArrayLen(b, len(e.retired))
		for _, r := range e.retired {
			b = appendUint(b, r)
		}
	}
	b = append(b, 0xa1, 'd')
	b = appendBytes(b, body)
	out, err := appendRawFrame(dst, KindLive, b, compress)
	if err != nil {
		return dst, false, err
	}
	e.started = true
	e.retired = e.retired[:0]
	return out, true, nil
}

// appendDelta writes a difference as a zigzag varint.
func appendDelta(b []byte, d int64) []byte {
	return binary.AppendUvarint(b, uint64(d<<1)^uint64(d>>63))
}

// appendRawFrame frames an encoded payload as AppendFrame does.
func appendRawFrame(dst []byte, kind Kind, plain []byte, compress bool) ([]byte, error) {
	start := len(dst)
	dst = append(dst, Magic[0], Magic[1], ProtocolVersion, byte(kind), 0, 0, 0, 0, 0)
	body := start + HeaderSize
	var flags Flags
	if compress && len(plain) >= minCompress {
		dst = zstdEncoder().EncodeAll(plain, dst)
		if len(dst)-body < len(plain) {
			flags |= FlagZstd
		} else {
			dst = append(dst[:body], plain...)
		}
	} else {
		dst = append(dst, plain...)
	}
	n := len(dst) - body
	if n > MaxLiveFrameSize {
		return dst[:start], frameErr(ErrTooLarge, nil, "%s payload of %d bytes exceeds the limit of %d", kind, n, MaxLiveFrameSize)
	}
	dst[start+4] = byte(flags)
	binary.BigEndian.PutUint32(dst[start+5:], uint32(n))
	return dst, nil
}

func validMinute(m int64) bool { return m > 0 && m < maxMinute && m%60 == 0 }

type decRef struct {
	campaign string
	minute   int64
	last     [LiveFields]int64
}

// LiveDecoder is the receiving side of one live stream: the refs the
// stream has named and the last values of each. A message it refuses
// leaves it unusable (the stream's state is lost): the receiver ends the
// stream, and the sender starts a new one. Not safe for concurrent use.
type LiveDecoder struct {
	refs    map[uint64]*decRef
	next    uint64
	started bool
	epoch   uint32
	flush   time.Duration
	seq     uint64
}

// NewLiveDecoder returns the decoder of a new stream.
func NewLiveDecoder() *LiveDecoder { return &LiveDecoder{refs: map[uint64]*decRef{}} }

// livePayload is a live frame's msgpack map.
type livePayload struct {
	Epoch   uint32   `msgpack:"e"`
	FlushMS uint64   `msgpack:"f"`
	Seq     uint64   `msgpack:"s"`
	Keys    []any    `msgpack:"k"`
	Retired []uint64 `msgpack:"x"`
	Data    []byte   `msgpack:"d"`
}

// Decode decodes the next frame of the stream. Errors are *FrameError
// (ErrWrongKind, ErrMalformed, ErrInvalid).
func (d *LiveDecoder) Decode(f Frame) (*Live, error) {
	if f.Kind != KindLive {
		return nil, frameErr(ErrWrongKind, nil, "got %s on a live stream, want %s", f.Kind, KindLive)
	}
	var p livePayload
	if err := unmarshal(f.Payload, &p); err != nil {
		return nil, err
	}
	switch {
	case !d.started && (p.Epoch == 0 || p.Epoch >= liveEpochLimit):
		return nil, frameErr(ErrInvalid, nil, "a live stream's first message names no live epoch (got %d)", p.Epoch)
	case d.started && p.Epoch != 0 && p.Epoch != d.epoch:
		return nil, frameErr(ErrInvalid, nil, "live stream of epoch %d continues with epoch %d", d.epoch, p.Epoch)
	case d.started && p.Seq <= d.seq:
		return nil, frameErr(ErrInvalid, nil, "live message %d after %d on the same stream", p.Seq, d.seq)
	case p.FlushMS > uint64(24*time.Hour/time.Millisecond):
		return nil, frameErr(ErrInvalid, nil, "flush interval of %d ms", p.FlushMS)
	case len(p.Keys)%2 != 0:
		return nil, frameErr(ErrInvalid, nil, "live keys hold %d values, not pairs", len(p.Keys))
	}
	if !d.started {
		d.epoch, d.flush, d.started = p.Epoch, time.Duration(p.FlushMS)*time.Millisecond, true
	}
	d.seq = p.Seq
	for _, r := range p.Retired {
		delete(d.refs, r)
	}
	for i := 0; i < len(p.Keys); i += 2 {
		c, ok := p.Keys[i].(string)
		m, mok := msgpackInt(p.Keys[i+1])
		if !ok || !mok || c == "" || len(c) > maxLiveCampaign || !utf8.ValidString(c) || !validMinute(m) {
			return nil, frameErr(ErrInvalid, nil, "live key %d is not a campaign and a minute", i/2)
		}
		if len(d.refs) >= MaxLiveRefs {
			return nil, frameErr(ErrInvalid, nil, "live stream names more than %d campaign-minutes", MaxLiveRefs)
		}
		d.refs[d.next] = &decRef{campaign: c, minute: m}
		d.next++
	}
	out := &Live{Epoch: d.epoch, Seq: p.Seq, Flush: d.flush}
	b := p.Data
	for len(b) > 0 {
		ref, n := binary.Uvarint(b)
		if n <= 0 || len(b) < n+1 {
			return nil, frameErr(ErrMalformed, nil, "live record %d is cut short", len(out.Records))
		}
		mask := b[n]
		b = b[n+1:]
		r := d.refs[ref]
		if r == nil {
			return nil, frameErr(ErrInvalid, nil, "live record names ref %d, which the stream has not named", ref)
		}
		if mask == 0 {
			return nil, frameErr(ErrInvalid, nil, "live record of ref %d changes nothing", ref)
		}
		for f := range LiveFields {
			if mask&(1<<f) == 0 {
				continue
			}
			u, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, frameErr(ErrMalformed, nil, "live record of ref %d is cut short", ref)
			}
			b = b[n:]
			delta := int64(u>>1) ^ -int64(u&1)
			v, overflow := addInt64(r.last[f], delta)
			if overflow || (!signedField[f] && v < 0) {
				return nil, frameErr(ErrInvalid, nil, "live counter %d of ref %d goes out of range", f, ref)
			}
			r.last[f] = v
		}
		out.Records = append(out.Records, LiveRecord{Campaign: r.campaign, Minute: r.minute, Counters: countersOf(r.last)})
	}
	return out, nil
}

// Known returns how many campaign-minutes the stream names now.
func (d *LiveDecoder) Known() int { return len(d.refs) }

func addInt64(a, b int64) (int64, bool) {
	s := a + b
	return s, (a >= 0) == (b >= 0) && (s >= 0) != (a >= 0)
}

// msgpackInt returns an integer msgpack decoded into an interface value.
func msgpackInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

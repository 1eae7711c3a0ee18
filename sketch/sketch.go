// Package sketch holds the per-minute mergeable state that agents build and
// aggregators merge: exact counters and sums, a HyperLogLog of visitor hashes
// and a DDSketch of values.
//
// Both sides of the wire use this package, so its encodings are part of the
// protocol. Three rules keep the numbers exact:
//
//   - Counters (events, value and cost sums in micro-units, bot counts and
//     poll votes by answer) are cumulative per contribution and are
//     replaced, never added, when a newer version of the same contribution
//     arrives.
//   - Uniques are shipped as the HyperLogLog register updates since the
//     previous flush (Registers). Union is idempotent and commutative, so the
//     receiver unions every update it sees, in any order and any number of
//     times. Stored and merged states carry the library's HLL encoding.
//   - Money is fixed-point (millionths) so sums never drift with float rounding.
package sketch

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/DataDog/sketches-go/ddsketch"
	enc "github.com/DataDog/sketches-go/ddsketch/encoding"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"github.com/axiomhq/hyperloglog"
)

// HLLPrecision is the HyperLogLog precision used by every agent and
// aggregator of a deployment. Sketches of different precision cannot merge,
// so it is a constant, not a knob. p=14 gives a standard error of 0.81 %.
const HLLPrecision = 14

// QuantileAccuracy is the relative accuracy of the value quantile sketch:
// every quantile it reports is within 1 % of the true value.
const QuantileAccuracy = 0.01

// MicrosPerUnit converts money between float units and the fixed-point
// micro-units used in every sum.
const MicrosPerUnit = 1_000_000

// ToMicros converts an amount of money to micro-units, rounding to nearest.
func ToMicros(v float64) int64 { return int64(math.Round(v * MicrosPerUnit)) }

// FromMicros converts micro-units back to an amount of money.
func FromMicros(m int64) float64 { return float64(m) / MicrosPerUnit }

// Series identifies one aggregated time series. Region is the label of the
// agent that saw the events.
type Series struct {
	Campaign string `msgpack:"c"`
	Source   string `msgpack:"s"`
	Medium   string `msgpack:"m"`
	Type     string `msgpack:"t"`
	Country  string `msgpack:"co"`
	Device   string `msgpack:"d"`
	Region   string `msgpack:"r"`
}

// String renders the series for logs and errors.
func (s Series) String() string {
	return fmt.Sprintf("%s/%s/%s/%s/%s/%s/%s", s.Campaign, s.Source, s.Medium, s.Type, s.Country, s.Device, s.Region)
}

// Key identifies one series in one minute. Minute is the unix time in
// seconds of the start of the minute.
type Key struct {
	Series Series
	Minute int64
}

// MinuteOf truncates a unix time in milliseconds to the start of its minute,
// in unix seconds.
func MinuteOf(unixMillis int64) int64 {
	sec := unixMillis / 1000
	if unixMillis < 0 && unixMillis%1000 != 0 {
		sec--
	}
	m := sec - sec%60
	if sec < 0 && sec%60 != 0 {
		m -= 60
	}
	return m
}

// State is the mergeable state of one series-minute. The zero value is an
// empty state ready for use. State is not safe for concurrent use.
type State struct {
	// Count is the number of non-bot events.
	Count uint64
	// ValueMicros is the sum of event values (conversion revenue), in micro-units.
	ValueMicros int64
	// CostMicros is the sum of spend on cost events, in micro-units.
	CostMicros int64
	// Bots counts filtered bot events by reason.
	Bots map[string]uint64
	// Votes counts poll votes by VoteKey (poll and answer); nil until the
	// first vote. Its total is part of Count.
	Votes map[string]uint64
	// Uniques holds visitor hashes; nil until the first visitor.
	Uniques *hyperloglog.Sketch
	// UniquesStored is Uniques still in its stored encoding (what
	// DecodeStoredHLL reads), not decoded and not checked: a reader asked
	// to hand uniques over this way sets it instead of Uniques, for a
	// caller that folds them into a Union, which reads the registers
	// straight from the bytes and refuses corrupt ones (kpi.Accumulator
	// does). Merge, Clone and Encode decode it where needed and return
	// decoding errors; UniquesEstimate, which cannot, gives 0 for a
	// corrupt one. Code that reads Uniques directly must not ask for it.
	UniquesStored []byte
	// Values holds event values for quantiles; nil until the first value.
	Values *ddsketch.DDSketch
}

// NewHLL returns an empty HyperLogLog of the deployment precision.
func NewHLL() *hyperloglog.Sketch { return hyperloglog.New14() }

var quantileMapping = mustMapping()

func mustMapping() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(QuantileAccuracy)
	if err != nil {
		panic(err) // a constant accuracy that the library rejects is a programming error
	}
	return m
}

// NewQuantiles returns an empty value sketch of the deployment accuracy.
func NewQuantiles() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(quantileMapping, store.NewDenseStore(), store.NewDenseStore())
}

// AddVisitor records a visitor hash. A zero hash means "no visitor" and is ignored.
func (s *State) AddVisitor(h uint64) {
	if h == 0 {
		return
	}
	if s.Uniques == nil {
		s.Uniques = NewHLL()
	}
	s.Uniques.InsertHash(h)
}

// AddValue records a value (e.g. revenue) both in the exact sum and in the
// quantile sketch.
func (s *State) AddValue(micros int64) {
	s.ValueMicros += micros
	if s.Values == nil {
		s.Values = NewQuantiles()
	}
	// Add only fails for values outside the mapping's range (NaN, ±Inf,
	// beyond ~1e308), which micro-units cannot produce.
	_ = s.Values.Add(FromMicros(micros))
}

// AddBot counts one filtered bot event.
func (s *State) AddBot(reason string) {
	if s.Bots == nil {
		s.Bots = make(map[string]uint64, 1)
	}
	s.Bots[reason]++
}

// VoteKey is the key of Votes for an answer of a poll.
func VoteKey(poll, answer string) string { return poll + voteSep + answer }

// SplitVote returns the poll and answer of a VoteKey. A key without the
// separator (from a foreign writer) is an answer of the poll "".
func SplitVote(key string) (poll, answer string) {
	if p, a, ok := strings.Cut(key, voteSep); ok {
		return p, a
	}
	return "", key
}

// voteSep separates poll and answer in a VoteKey: a control character,
// which the agent removes from dimension values.
const voteSep = "\x1f"

// AddVotes counts n votes for key.
func (s *State) AddVotes(key string, n uint64) {
	if s.Votes == nil {
		s.Votes = make(map[string]uint64, 1)
	}
	s.Votes[key] += n
}

// BotTotal returns the number of bot events over all reasons.
func (s *State) BotTotal() uint64 {
	var n uint64
	for _, c := range s.Bots {
		n += c
	}
	return n
}

// MergeCounters adds o's counters and sums into s.
func (s *State) MergeCounters(o *State) {
	s.Count += o.Count
	s.ValueMicros += o.ValueMicros
	s.CostMicros += o.CostMicros
	for r, c := range o.Bots {
		if s.Bots == nil {
			s.Bots = make(map[string]uint64, len(o.Bots))
		}
		s.Bots[r] += c
	}
	for k, c := range o.Votes {
		s.AddVotes(k, c)
	}
}

// MergeUniques unions o's visitor sketch into s.
func (s *State) MergeUniques(o *hyperloglog.Sketch) error {
	if o == nil {
		return nil
	}
	if s.Uniques == nil {
		s.Uniques = o.Clone()
		return nil
	}
	return s.Uniques.Merge(o)
}

// MergeValues adds o's value sketch into s.
func (s *State) MergeValues(o *ddsketch.DDSketch) error {
	if o == nil || o.IsEmpty() {
		return nil
	}
	if s.Values == nil {
		s.Values = o.Copy()
		return nil
	}
	return s.Values.MergeWith(o)
}

// Merge adds everything in o into s: counters add, sketches merge.
func (s *State) Merge(o *State) error {
	s.MergeCounters(o)
	if err := s.MergeUniques(o.Uniques); err != nil {
		return fmt.Errorf("merge uniques: %w", err)
	}
	if err := s.decodeStoredUniques(); err != nil {
		return err
	}
	if len(o.UniquesStored) > 0 {
		h, err := DecodeStoredHLL(o.UniquesStored)
		if err != nil {
			return fmt.Errorf("merge uniques: %w", err)
		}
		if err := s.MergeUniques(h); err != nil {
			return fmt.Errorf("merge uniques: %w", err)
		}
	}
	if err := s.MergeValues(o.Values); err != nil {
		return fmt.Errorf("merge values: %w", err)
	}
	return nil
}

// UniquesEstimate returns the estimated number of distinct visitors. It
// estimates on a dense copy, which leaves s untouched (the library's
// Estimate mutates the sketch) and is exact for register updates.
func (s *State) UniquesEstimate() uint64 {
	if s.Uniques == nil && len(s.UniquesStored) > 0 {
		var u Union
		if err := u.MergeStored(s.UniquesStored); err != nil {
			return 0 // corrupt: see UniquesStored
		}
		return u.Estimate()
	}
	if s.Uniques == nil {
		return 0
	}
	return estimate(s.Uniques)
}

// decodeStoredUniques replaces UniquesStored by the sketch it encodes,
// merged into Uniques.
func (s *State) decodeStoredUniques() error {
	if len(s.UniquesStored) == 0 {
		return nil
	}
	h, err := DecodeStoredHLL(s.UniquesStored)
	if err != nil {
		return fmt.Errorf("decode uniques: %w", err)
	}
	if err := s.MergeUniques(h); err != nil {
		return fmt.Errorf("merge uniques: %w", err)
	}
	s.UniquesStored = nil
	return nil
}

// Quantile returns the q-quantile of values, or 0 when there are none.
func (s *State) Quantile(q float64) float64 {
	if s.Values == nil || s.Values.IsEmpty() {
		return 0
	}
	v, err := s.Values.GetValueAtQuantile(q)
	if err != nil {
		return 0
	}
	return v
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := &State{Count: s.Count, ValueMicros: s.ValueMicros, CostMicros: s.CostMicros}
	if len(s.Bots) > 0 {
		c.Bots = make(map[string]uint64, len(s.Bots))
		for r, n := range s.Bots {
			c.Bots[r] = n
		}
	}
	if len(s.Votes) > 0 {
		c.Votes = maps.Clone(s.Votes)
	}
	if s.Uniques != nil {
		c.Uniques = s.Uniques.Clone()
	}
	if len(s.UniquesStored) > 0 {
		c.UniquesStored = slices.Clone(s.UniquesStored)
	}
	if s.Values != nil {
		c.Values = s.Values.Copy()
	}
	return c
}

// Encoded is the serialised form of a State, as carried on the wire and
// stored in InfluxDB. HLL and Quantiles are the libraries' own binary
// encodings; they are not canonical, so never compare or hash them.
type Encoded struct {
	Count       uint64            `msgpack:"n"`
	ValueMicros int64             `msgpack:"v,omitempty"`
	CostMicros  int64             `msgpack:"c,omitempty"`
	Bots        map[string]uint64 `msgpack:"b,omitempty"`
	Votes       map[string]uint64 `msgpack:"p,omitempty"`
	HLL         []byte            `msgpack:"h,omitempty"`
	Quantiles   []byte            `msgpack:"q,omitempty"`
	// Registers carries HLL register updates (see Registers): what an
	// agent ships instead of HLL. Decode unions both into Uniques.
	Registers []byte `msgpack:"g,omitempty"`
}

// ErrCorrupt reports an encoded sketch that cannot be decoded.
var ErrCorrupt = errors.New("corrupt sketch encoding")

// Encode serialises s.
func (s *State) Encode() (Encoded, error) {
	e, err := s.EncodeShared()
	if len(e.Bots) > 0 {
		e.Bots = maps.Clone(e.Bots)
	}
	if len(e.Votes) > 0 {
		e.Votes = maps.Clone(e.Votes)
	}
	return e, err
}

// EncodeShared is Encode for an encoding that is used, and dropped,
// before s changes again: its Bots and Votes are s's own maps, not copies.
func (s *State) EncodeShared() (Encoded, error) {
	e := Encoded{Count: s.Count, ValueMicros: s.ValueMicros, CostMicros: s.CostMicros}
	if len(s.Bots) > 0 {
		e.Bots = s.Bots
	}
	if len(s.Votes) > 0 {
		e.Votes = s.Votes
	}
	uniques := s.Uniques
	if len(s.UniquesStored) > 0 {
		var c State
		if err := c.Merge(&State{Uniques: s.Uniques, UniquesStored: s.UniquesStored}); err != nil {
			return Encoded{}, fmt.Errorf("encode uniques: %w", err)
		}
		uniques = c.Uniques
	}
	if uniques != nil {
		b, err := uniques.MarshalBinary()
		if err != nil {
			return Encoded{}, fmt.Errorf("encode uniques: %w", err)
		}
		e.HLL = b
	}
	if s.Values != nil && !s.Values.IsEmpty() {
		var b []byte
		s.Values.Encode(&b, true)
		e.Quantiles = b
	}
	return e, nil
}

// Decode rebuilds a State from its encoding.
func (e Encoded) Decode() (*State, error) {
	s := &State{Count: e.Count, ValueMicros: e.ValueMicros, CostMicros: e.CostMicros}
	if len(e.Bots) > 0 {
		s.Bots = make(map[string]uint64, len(e.Bots))
		for r, n := range e.Bots {
			s.Bots[r] = n
		}
	}
	if len(e.Votes) > 0 {
		s.Votes = maps.Clone(e.Votes)
	}
	if len(e.HLL) > 0 {
		h, err := DecodeHLL(e.HLL)
		if err != nil {
			return nil, err
		}
		s.Uniques = h
	}
	if err := s.MergeRegisters(e.Registers); err != nil {
		return nil, err
	}
	if len(e.Quantiles) > 0 {
		q, err := DecodeQuantiles(e.Quantiles)
		if err != nil {
			return nil, err
		}
		s.Values = q
	}
	return s, nil
}

// DecodeHLL decodes a HyperLogLog and checks its precision.
func DecodeHLL(b []byte) (h *hyperloglog.Sketch, err error) {
	defer func() {
		// The library indexes into the input without checking every
		// length; a malformed sketch from the network must not crash us.
		if r := recover(); r != nil {
			h, err = nil, fmt.Errorf("%w: hll: %v", ErrCorrupt, r)
		}
	}()
	h = NewHLL()
	if err := h.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%w: hll: %v", ErrCorrupt, err)
	}
	if len(b) < 2 || b[1] != HLLPrecision {
		return nil, fmt.Errorf("%w: hll precision %d, want %d", ErrCorrupt, safeByte(b, 1), HLLPrecision)
	}
	return h, nil
}

func safeByte(b []byte, i int) int {
	if i < len(b) {
		return int(b[i])
	}
	return -1
}

// DecodeQuantiles decodes a value sketch encoded without its index mapping.
//
// It does not hand the input to the library's decoder, which ignores
// errors in the bins (a truncated sketch decodes "successfully" with half
// its values) and allocates in proportion to the gap between bin indexes
// (nine hostile bytes can ask for gigabytes). Instead it walks the flags,
// reads the bins into a map-based store, checks every index against the
// mapping's range and every count, and only then builds the sketch.
func DecodeQuantiles(b []byte) (q *ddsketch.DDSketch, err error) {
	defer func() {
		if r := recover(); r != nil {
			q, err = nil, fmt.Errorf("%w: quantiles: %v", ErrCorrupt, r)
		}
	}()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: quantiles: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	pos, neg := store.NewSparseStore(), store.NewSparseStore()
	var zero float64
	buf := b
	for len(buf) > 0 {
		flag, err := enc.DecodeFlag(&buf)
		if err != nil {
			return nil, bad("%v", err)
		}
		switch {
		case flag.Type() == enc.FlagTypePositiveStore:
			err = store.DecodeAndMergeWith(pos, &buf, flag.SubFlag())
		case flag.Type() == enc.FlagTypeNegativeStore:
			err = store.DecodeAndMergeWith(neg, &buf, flag.SubFlag())
		case flag == enc.FlagZeroCountVarFloat:
			var z float64
			z, err = enc.DecodeVarfloat64(&buf)
			zero += z
		default:
			return nil, bad("unexpected flag %#x", flag)
		}
		if err != nil {
			return nil, bad("%v", err)
		}
	}
	if math.IsNaN(zero) || math.IsInf(zero, 0) || zero < 0 {
		return nil, bad("zero count %v", zero)
	}
	lo, hi := quantileMapping.Index(quantileMapping.MinIndexableValue()), quantileMapping.Index(quantileMapping.MaxIndexableValue())
	var verr error
	check := func(index int, count float64) bool {
		if index < lo || index > hi || math.IsNaN(count) || math.IsInf(count, 0) || count <= 0 {
			verr = bad("bin %d with count %v is out of range", index, count)
			return true
		}
		return false
	}
	pos.ForEach(check)
	if verr == nil {
		neg.ForEach(check)
	}
	if verr != nil {
		return nil, verr
	}
	q = NewQuantiles()
	pos.ForEach(func(index int, count float64) bool {
		q.GetPositiveValueStore().AddWithCount(index, count)
		return false
	})
	neg.ForEach(func(index int, count float64) bool {
		q.GetNegativeValueStore().AddWithCount(index, count)
		return false
	})
	if zero > 0 {
		if err := q.AddWithCount(0, zero); err != nil {
			return nil, bad("%v", err)
		}
	}
	return q, nil
}

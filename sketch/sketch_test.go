package sketch

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"github.com/DataDog/sketches-go/ddsketch"
	enc "github.com/DataDog/sketches-go/ddsketch/encoding"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"github.com/axiomhq/hyperloglog"
	"github.com/vmihailenco/msgpack/v5"
)

// uniquesTolerance is the relative error accepted from a p=14 HyperLogLog:
// three standard errors (1.04/sqrt(2^14) = 0.81 %). At the cardinalities
// used here the sketch is sparse and far more precise than that.
const uniquesTolerance = 0.025

// mix is SplitMix64's finaliser. Visitor hashes must be uniformly
// distributed, as the agent's salted SipHash is; small integers would put
// every visitor in the same few registers and make every estimate wrong.
// mix is a bijection with mix(0) == 0, so mix(i) for i >= 1 are distinct
// non-zero hashes.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// addVisitors adds the visitors mix(from) .. mix(to-1).
func addVisitors(s *State, from, to uint64) {
	for i := from; i < to; i++ {
		s.AddVisitor(mix(i))
	}
}

// addValues adds n deterministic values between 0.01 and about 5,000 units
// and returns them in units, as the quantile sketch sees them.
func addValues(s *State, seed uint64, n int) []float64 {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]float64, 0, n)
	for range n {
		m := ToMicros(0.01 + math.Exp(rng.Float64()*8.5))
		s.AddValue(m)
		out = append(out, FromMicros(m))
	}
	return out
}

// exactQuantile is the rank DDSketch reports for q: the element at
// floor(q*(n-1)) of the sorted values.
func exactQuantile(sorted []float64, q float64) float64 {
	return sorted[int(math.Floor(q*float64(len(sorted)-1)))]
}

var testQuantiles = []float64{0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 1}

// checkQuantiles fails unless every quantile of s is within
// QuantileAccuracy of the exact quantile of values.
func checkQuantiles(t *testing.T, s *State, values []float64) {
	t.Helper()
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	for _, q := range testQuantiles {
		want := exactQuantile(sorted, q)
		got := s.Quantile(q)
		if math.Abs(got-want) > QuantileAccuracy*want+1e-9 {
			t.Fatalf("quantile %v = %v, want %v within %v %%", q, got, want, QuantileAccuracy*100)
		}
	}
}

// checkUniques fails unless s estimates want distinct visitors within
// uniquesTolerance.
func checkUniques(t *testing.T, s *State, want uint64) {
	t.Helper()
	got := s.UniquesEstimate()
	if math.Abs(float64(got)-float64(want)) > uniquesTolerance*float64(want) {
		t.Fatalf("uniques estimate %d, want %d within %v %%", got, want, uniquesTolerance*100)
	}
}

// botsEqual compares bot maps, treating nil and empty alike.
func botsEqual(a, b map[string]uint64) bool {
	return len(a) == len(b) && maps.Equal(a, b)
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		visitors uint64 // distinct visitors mix(1..visitors)
		values   int
		build    func(s *State)
	}{
		{name: "empty"},
		{name: "counters only", build: func(s *State) {
			s.Count, s.ValueMicros, s.CostMicros = 7, ToMicros(149.70), ToMicros(-3.25)
			s.AddBot("crawler")
			s.AddBot("crawler")
			s.AddBot("headless")
		}},
		{name: "sparse uniques and values", visitors: 300, values: 50, build: func(s *State) { s.Count = 300 }},
		// 20,000 visitors turn the p=14 sketch dense, the other encoding.
		{name: "dense uniques and many values", visitors: 20_000, values: 5_000, build: func(s *State) {
			s.Count = 20_000
			s.AddBot("datacenter")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			if tc.build != nil {
				tc.build(&s)
			}
			addVisitors(&s, 1, tc.visitors+1)
			values := addValues(&s, 7, tc.values)

			e, err := s.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			// The encoding travels as msgpack (wire) and is stored as such:
			// round trip it the same way so the struct tags are covered.
			b, err := msgpack.Marshal(e)
			if err != nil {
				t.Fatalf("msgpack.Marshal: %v", err)
			}
			var e2 Encoded
			if err := msgpack.Unmarshal(b, &e2); err != nil {
				t.Fatalf("msgpack.Unmarshal: %v", err)
			}
			got, err := e2.Decode()
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}

			if got.Count != s.Count || got.ValueMicros != s.ValueMicros || got.CostMicros != s.CostMicros {
				t.Fatalf("counters: got count %d value %d cost %d, want %d %d %d",
					got.Count, got.ValueMicros, got.CostMicros, s.Count, s.ValueMicros, s.CostMicros)
			}
			if !botsEqual(got.Bots, s.Bots) {
				t.Fatalf("bots %v, want %v", got.Bots, s.Bots)
			}
			if got.BotTotal() != s.BotTotal() {
				t.Fatalf("bot total %d, want %d", got.BotTotal(), s.BotTotal())
			}

			if (got.Uniques == nil) != (tc.visitors == 0) {
				t.Fatalf("decoded uniques nil = %v with %d visitors", got.Uniques == nil, tc.visitors)
			}
			// The same registers must give the same estimate, and that
			// estimate must be close to the truth.
			if g, w := got.UniquesEstimate(), s.UniquesEstimate(); g != w {
				t.Fatalf("decoded uniques estimate %d, original %d", g, w)
			}
			if tc.visitors > 0 {
				checkUniques(t, got, tc.visitors)
				// The decoded sketch has the deployment precision, so it
				// still merges with fresh sketches.
				if err := NewHLL().Merge(got.Uniques); err != nil {
					t.Fatalf("decoded uniques do not merge with NewHLL: %v", err)
				}
			}

			if tc.values == 0 {
				if got.Values != nil && !got.Values.IsEmpty() {
					t.Fatalf("decoded %v values from a state without values", got.Values.GetCount())
				}
				if q := got.Quantile(0.5); q != 0 {
					t.Fatalf("median of no values = %v, want 0", q)
				}
				return
			}
			if got.Values == nil || got.Values.GetCount() != float64(tc.values) {
				t.Fatalf("decoded values sketch %v, want count %d", got.Values, tc.values)
			}
			checkQuantiles(t, got, values)
		})
	}
}

func TestMerge(t *testing.T) {
	var a, b State
	a.Count, a.CostMicros = 10, ToMicros(2.50)
	a.AddBot("crawler")
	a.AddBot("crawler")
	addVisitors(&a, 1, 1001) // visitors 1..1000
	va := addValues(&a, 1, 400)

	b.Count, b.CostMicros = 5, ToMicros(0.75)
	b.AddBot("crawler")
	b.AddBot("headless")
	addVisitors(&b, 501, 2001) // visitors 501..2000: 500 shared with a
	vb := addValues(&b, 2, 600)

	bBefore := b.Clone()
	bEstimate := b.UniquesEstimate()

	m := a.Clone()
	if err := m.Merge(&b); err != nil {
		t.Fatalf("Merge: %v", err)
	}
	if m.Count != 15 || m.CostMicros != ToMicros(3.25) || m.ValueMicros != a.ValueMicros+b.ValueMicros {
		t.Fatalf("merged counters count %d cost %d value %d, want 15 %d %d",
			m.Count, m.CostMicros, m.ValueMicros, ToMicros(3.25), a.ValueMicros+b.ValueMicros)
	}
	if want := map[string]uint64{"crawler": 3, "headless": 1}; !botsEqual(m.Bots, want) {
		t.Fatalf("merged bots %v, want %v", m.Bots, want)
	}
	checkUniques(t, m, 2000) // the union, not the sum of 2,500
	if m.Values.GetCount() != 1000 {
		t.Fatalf("merged values count %v, want 1000", m.Values.GetCount())
	}
	checkQuantiles(t, m, append(slices.Clone(va), vb...))

	// Merging reads o and leaves it as it was.
	if b.Count != bBefore.Count || !botsEqual(b.Bots, bBefore.Bots) || b.UniquesEstimate() != bEstimate ||
		b.Values.GetCount() != bBefore.Values.GetCount() {
		t.Fatalf("Merge changed its argument")
	}

	// Union is idempotent: the receiver unions every HLL delta it sees, as
	// many times as it is re-sent.
	before := m.UniquesEstimate()
	for range 3 {
		if err := m.MergeUniques(b.Uniques); err != nil {
			t.Fatalf("MergeUniques: %v", err)
		}
	}
	if after := m.UniquesEstimate(); after != before {
		t.Fatalf("re-merging the same uniques moved the estimate from %d to %d", before, after)
	}
}

func TestMergeIntoEmptyCopies(t *testing.T) {
	var src State
	src.Count = 3
	src.AddBot("crawler")
	addVisitors(&src, 1, 101)
	addValues(&src, 3, 10)

	var dst State
	if err := dst.Merge(&src); err != nil {
		t.Fatalf("Merge: %v", err)
	}
	est := dst.UniquesEstimate()

	// dst must own its sketches and map: later changes to src, as the
	// agent's rollup makes them, must not show through.
	addVisitors(&src, 1000, 2000)
	addValues(&src, 4, 10)
	src.AddBot("crawler")
	if got := dst.UniquesEstimate(); got != est {
		t.Fatalf("dst uniques moved from %d to %d when src changed", est, got)
	}
	if got := dst.Values.GetCount(); got != 10 {
		t.Fatalf("dst values count %v, want 10", got)
	}
	if got := dst.Bots["crawler"]; got != 1 {
		t.Fatalf("dst crawler bots %d, want 1", got)
	}

	// Merging an empty state (nil sketches, nil map) changes nothing.
	if err := dst.Merge(&State{}); err != nil {
		t.Fatalf("Merge of empty: %v", err)
	}
	if dst.Count != 3 || dst.UniquesEstimate() != est || dst.Values.GetCount() != 10 {
		t.Fatalf("merging an empty state changed dst")
	}
}

func TestMergeRejectsOtherPrecision(t *testing.T) {
	other := hyperloglog.New16()
	for i := uint64(1); i <= 100; i++ {
		other.InsertHash(mix(i))
	}
	var s State
	addVisitors(&s, 1, 101)
	if err := s.Merge(&State{Uniques: other}); err == nil {
		t.Fatalf("merging a p=16 sketch into p=14 succeeded")
	}
}

func TestCloneIsDeep(t *testing.T) {
	var orig State
	orig.Count, orig.CostMicros = 4, ToMicros(1)
	orig.AddBot("crawler")
	addVisitors(&orig, 1, 201)
	addValues(&orig, 5, 20)
	value := orig.ValueMicros
	est, n, q := orig.UniquesEstimate(), orig.Values.GetCount(), orig.Quantile(0.5)

	c := orig.Clone()
	c.Count++
	c.ValueMicros++
	c.CostMicros++
	c.AddBot("crawler")
	c.AddBot("headless")
	addVisitors(c, 1000, 3000)
	for range 50 {
		c.AddValue(ToMicros(1e6))
	}

	if orig.Count != 4 || orig.ValueMicros != value || orig.CostMicros != ToMicros(1) {
		t.Fatalf("original counters changed: %+v", orig)
	}
	if want := map[string]uint64{"crawler": 1}; !botsEqual(orig.Bots, want) {
		t.Fatalf("original bots %v, want %v", orig.Bots, want)
	}
	if got := orig.UniquesEstimate(); got != est {
		t.Fatalf("original uniques %d, want %d", got, est)
	}
	if got := orig.Values.GetCount(); got != n {
		t.Fatalf("original values count %v, want %v", got, n)
	}
	if got := orig.Quantile(0.5); got != q {
		t.Fatalf("original median %v, want %v", got, q)
	}
	// And the clone really has the changes.
	if c.Count != 5 || c.Bots["crawler"] != 2 || c.Values.GetCount() != n+50 || c.UniquesEstimate() <= est {
		t.Fatalf("clone did not take the changes: count %d bots %v values %v uniques %d",
			c.Count, c.Bots, c.Values.GetCount(), c.UniquesEstimate())
	}

	// An empty state clones to an empty state.
	e := (&State{}).Clone()
	if e.Count != 0 || e.Bots != nil || e.Uniques != nil || e.Values != nil {
		t.Fatalf("clone of empty state %+v", e)
	}
}

func TestZeroVisitorIgnored(t *testing.T) {
	var s State
	s.AddVisitor(0)
	if s.Uniques != nil || s.UniquesEstimate() != 0 {
		t.Fatalf("visitor hash 0 (no visitor) was recorded")
	}
	if s.Quantile(0.5) != 0 {
		t.Fatalf("quantile of an empty state is %v, want 0", s.Quantile(0.5))
	}
}

func TestUniquesEstimateDoesNotMutate(t *testing.T) {
	// 100 visitors stay in the sketch's temporary set, which the library's
	// Estimate drains into its sparse list: that changes the encoding, so
	// the encoding shows whether the sketch was touched.
	var s State
	addVisitors(&s, 1, 101)
	before, err := s.Uniques.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}

	e1, e2 := s.UniquesEstimate(), s.UniquesEstimate()
	if e1 != e2 {
		t.Fatalf("two estimates differ: %d, %d", e1, e2)
	}
	after, err := s.Uniques.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("UniquesEstimate changed the sketch (encoding %d -> %d bytes)", len(before), len(after))
	}
	// Control: the library's own Estimate does change it, so the check
	// above can fail.
	ctl := s.Uniques.Clone()
	ctl.Estimate()
	if b, _ := ctl.MarshalBinary(); bytes.Equal(before, b) {
		t.Fatalf("control: Estimate left the encoding unchanged; this test cannot detect a mutation")
	}
	checkUniques(t, &s, 100)

	// The sketch keeps working: merge more and estimate again.
	var more State
	addVisitors(&more, 51, 251) // 150 new visitors
	if err := s.Merge(&more); err != nil {
		t.Fatalf("Merge: %v", err)
	}
	checkUniques(t, &s, 250)
	if e3, e4 := s.UniquesEstimate(), s.UniquesEstimate(); e3 != e4 || e3 <= e1 {
		t.Fatalf("after merge: estimates %d, %d, before %d", e3, e4, e1)
	}
}

// hllEncoding returns the encoding of a p=14 sketch with n visitors.
func hllEncoding(t testing.TB, n uint64) []byte {
	t.Helper()
	var s State
	addVisitors(&s, 1, n+1)
	b, err := s.Uniques.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeHLL(t *testing.T) {
	for _, n := range []uint64{1, 300, 20_000} { // sparse and dense encodings
		b := hllEncoding(t, n)
		h, err := DecodeHLL(b)
		if err != nil {
			t.Fatalf("%d visitors: DecodeHLL: %v", n, err)
		}
		s := State{Uniques: h}
		checkUniques(t, &s, n)
	}
}

// checkCorrupt fails unless err reports a corrupt sketch.
func checkCorrupt(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: decoded without error", what)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: error %v does not wrap ErrCorrupt", what, err)
	}
}

func TestDecodeHLLRejects(t *testing.T) {
	sparse := hllEncoding(t, 300)
	dense := hllEncoding(t, 20_000)
	p16 := hyperloglog.New16()
	for i := uint64(1); i <= 300; i++ {
		p16.InsertHash(mix(i))
	}
	p16Enc, err := p16.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	p16Dense := hyperloglog.New16()
	for i := uint64(1); i <= 100_000; i++ {
		p16Dense.InsertHash(mix(i))
	}
	p16DenseEnc, err := p16Dense.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// header builds the 8-byte header: version, p, b, sparse flag, a
	// big-endian u32 (tmp set size or register count).
	header := func(v, p, bias, sparse byte, n uint32) []byte {
		return []byte{v, p, bias, sparse, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}

	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"one byte", []byte{2}},
		{"seven bytes", sparse[:7]},
		{"header only, sparse", sparse[:8]},
		{"precision 16 sparse", p16Enc},
		{"precision 16 dense", p16DenseEnc},
		{"unknown version", append(header(9, 14, 0, 1, 0), 0, 0, 0, 0)},
		{"precision 0", header(2, 0, 0, 0, 1)},
		{"precision 255", header(2, 255, 0, 0, 1)},
		{"sparse flag 2", header(2, 14, 0, 2, 0)},
		{"v2 with bias", header(2, 14, 3, 0, 1<<14)},
		{"tmp set larger than the input", header(2, 14, 0, 1, 1<<31)},
		{"dense, no registers", header(2, 14, 0, 0, 1<<14)},
		{"dense, register count 2^30", header(2, 14, 0, 0, 1<<30)},
		{"dense, one register short", dense[:len(dense)-1]},
		{"dense, one byte too many", append(slices.Clone(dense), 0)},
		{"all 0xff", bytes.Repeat([]byte{0xff}, 64)},
		{"all zero", make([]byte, 64)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := DecodeHLL(tc.in)
			checkCorrupt(t, tc.name, err)
			if h != nil {
				t.Fatalf("DecodeHLL returned a sketch with error %v", err)
			}
		})
	}

	// Every truncation of a valid encoding is rejected.
	for n := range len(sparse) {
		_, err := DecodeHLL(sparse[:n])
		checkCorrupt(t, fmt.Sprintf("sparse encoding cut to %d of %d bytes", n, len(sparse)), err)
	}
	for n := 0; n < len(dense); n += 211 {
		_, err := DecodeHLL(dense[:n])
		checkCorrupt(t, fmt.Sprintf("dense encoding cut to %d of %d bytes", n, len(dense)), err)
	}
}

func TestDecodeHLLRandomInputNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	valid := hllEncoding(t, 300)
	for i := range 2000 {
		var in []byte
		if i%2 == 0 {
			in = make([]byte, rng.IntN(80))
			for j := range in {
				in[j] = byte(rng.Uint32())
			}
		} else {
			// A plausible header with a damaged body reaches deeper.
			in = slices.Clone(valid)
			for range 1 + rng.IntN(4) {
				in[8+rng.IntN(len(in)-8)] = byte(rng.Uint32())
			}
		}
		h, err := DecodeHLL(in) // must not panic
		if err != nil {
			checkCorrupt(t, "random input", err)
			continue
		}
		if err := NewHLL().Merge(h); err != nil {
			t.Fatalf("accepted sketch does not merge at the deployment precision: %v", err)
		}
	}
}

// quantilesEncoding returns the encoding State.Encode makes of n values.
func quantilesEncoding(t testing.TB, n int) []byte {
	t.Helper()
	var s State
	addValues(&s, 11, n)
	e, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return e.Quantiles
}

func TestDecodeQuantilesRejects(t *testing.T) {
	// A sketch of another accuracy, encoded with its mapping.
	m2, err := mapping.NewLogarithmicMapping(0.02)
	if err != nil {
		t.Fatal(err)
	}
	other := ddsketch.NewDDSketch(m2, store.NewDenseStore(), store.NewDenseStore())
	_ = other.Add(12.5)
	var otherEnc []byte
	other.Encode(&otherEnc, false)

	tests := []struct {
		name string
		in   []byte
	}{
		{"unknown sketch feature", []byte{0xfc}},
		{"zero count without its value", []byte{0x04}},
		{"zero count with a cut varfloat", []byte{0x04, 0xff}},
		{"index mapping of another accuracy", otherEnc},
		{"index mapping cut short", otherEnc[:5]},
		{"unknown index mapping", []byte{0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"summary count without its float", []byte{0xa0, 1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := DecodeQuantiles(tc.in)
			checkCorrupt(t, tc.name, err)
			if q != nil {
				t.Fatalf("DecodeQuantiles returned a sketch with error %v", err)
			}
		})
	}
}

// TestDecodeQuantilesRejectsTruncated cuts a valid encoding short. Every
// non-empty proper prefix of this encoding ends inside the positive store's
// bins, so none of them is a valid sketch: accepting one silently loses
// values and skews the quantiles.
func TestDecodeQuantilesRejectsTruncated(t *testing.T) {
	full := quantilesEncoding(t, 100)
	if _, err := DecodeQuantiles(full); err != nil {
		t.Fatalf("valid encoding: %v", err)
	}
	var accepted []int
	for n := 1; n < len(full); n++ {
		q, err := DecodeQuantiles(full[:n]) // must not panic
		if err == nil {
			accepted = append(accepted, n)
			_ = q
			continue
		}
		checkCorrupt(t, "truncated quantiles", err)
	}
	if len(accepted) > 0 {
		q, _ := DecodeQuantiles(full[:len(full)/2])
		t.Fatalf("DecodeQuantiles accepted %d of %d truncations of a %d-byte encoding without error "+
			"(e.g. half of it decodes to a sketch of %v values, want 100 or an error); prefix lengths %v",
			len(accepted), len(full)-1, len(full), q.GetCount(), accepted[:min(len(accepted), 10)])
	}
}

// TestDecodeQuantilesBoundsMemory decodes a 9-byte input naming two bins
// 2^21 indexes apart. A sketch at QuantileAccuracy over every float64 spans
// fewer than 80,000 indexes, so such an input can only be corrupt or
// hostile; the dense store allocates memory in proportion to the span
// (tens of MiB here, terabytes for a span of 2^40: an out-of-memory crash
// that no recover catches).
func TestDecodeQuantilesBoundsMemory(t *testing.T) {
	s := store.NewSparseStore()
	s.Add(0)
	s.Add(1 << 21)
	var in []byte
	s.Encode(&in, enc.FlagTypePositiveStore)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	q, err := DecodeQuantiles(in)
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	if err == nil {
		t.Errorf("DecodeQuantiles accepted bins %d indexes apart (count %v)", 1<<21, q.GetCount())
	} else {
		checkCorrupt(t, "far-apart bins", err)
	}
	if alloc > 4<<20 {
		t.Errorf("decoding %d bytes allocated %d MiB", len(in), alloc>>20)
	}
}

func TestDecodeQuantilesRandomInputNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	valid := quantilesEncoding(t, 100)
	for i := range 2000 {
		var in []byte
		if i%2 == 0 {
			// Random bytes, but starting with a flag that is not a store,
			// so no input can name far-apart bins (see
			// TestDecodeQuantilesBoundsMemory).
			in = []byte{0xfc}
			for range rng.IntN(40) {
				in = append(in, byte(rng.Uint32()))
			}
		} else {
			in = slices.Clone(valid)
			in[rng.IntN(len(in))] ^= byte(1 + rng.IntN(255))
			in = in[:rng.IntN(len(in)+1)]
			if len(in) > 0 && in[0]&3 != 0 {
				in[0] = 0xfc // keep stores out of the leading position, as above
			}
		}
		if _, err := DecodeQuantiles(in); err != nil { // must not panic
			checkCorrupt(t, "random input", err)
		}
	}
}

func TestEncodedDecodeReportsCorrupt(t *testing.T) {
	good, err := func() (Encoded, error) {
		var s State
		s.Count = 1
		addVisitors(&s, 1, 10)
		addValues(&s, 1, 10)
		return s.Encode()
	}()
	if err != nil {
		t.Fatal(err)
	}
	badHLL, badQ := good, good
	badHLL.HLL = good.HLL[:5]
	badQ.Quantiles = []byte{0xfc}
	for name, e := range map[string]Encoded{"hll": badHLL, "quantiles": badQ} {
		s, err := e.Decode()
		checkCorrupt(t, name, err)
		if s != nil {
			t.Fatalf("%s: Decode returned a state with an error", name)
		}
	}
}

func TestMoney(t *testing.T) {
	tests := []struct {
		in   float64
		want int64
	}{
		{0, 0},
		{19.99, 19_990_000}, // 19.99*1e6 is 19989999.999999996 before rounding
		{-19.99, -19_990_000},
		{0.1 + 0.2, 300_000},
		{49.90, 49_900_000},
		{123456.789012, 123_456_789_012},
		{5e-7, 1}, // half a micro rounds away from zero
		{-5e-7, -1},
		{4e-7, 0},
		{-4e-7, 0},
		{1.5e-6, 2},
		{-2.5e-6, -3},
		{1e12, 1e18},
	}
	for _, tc := range tests {
		if got := ToMicros(tc.in); got != tc.want {
			t.Fatalf("ToMicros(%v) = %d, want %d", tc.in, got, tc.want)
		}
		if got := FromMicros(tc.want); math.Abs(got-tc.in) > 5e-7 {
			t.Fatalf("FromMicros(%d) = %v, want %v", tc.want, got, tc.in)
		}
	}
	// Every price in cents converts exactly, so sums of prices never drift.
	for c := int64(-1_000_000); c <= 1_000_000; c += 37 {
		got := ToMicros(float64(c) / 100)
		if got != c*10_000 {
			t.Fatalf("ToMicros(%v) = %d, want %d", float64(c)/100, got, c*10_000)
		}
		if back := FromMicros(got); back != float64(c)/100 {
			t.Fatalf("FromMicros(%d) = %v, want %v", got, back, float64(c)/100)
		}
	}
}

func TestMinuteOf(t *testing.T) {
	tests := []struct {
		ms   int64
		want int64
	}{
		{0, 0},
		{1, 0},
		{999, 0},
		{1000, 0},
		{59_999, 0},
		{60_000, 60},
		{60_001, 60},
		{119_999, 60},
		{120_000, 120},
		{1_700_000_000_000, 1_699_999_980},
		{1_700_000_039_999, 1_699_999_980},
		{1_700_000_040_000, 1_700_000_040},
		{-1, -60},
		{-999, -60},
		{-1000, -60},
		{-1001, -60},
		{-59_999, -60},
		{-60_000, -60},
		{-60_001, -120},
		{-120_000, -120},
		{-120_001, -180},
	}
	for _, tc := range tests {
		if got := MinuteOf(tc.ms); got != tc.want {
			t.Fatalf("MinuteOf(%d) = %d, want %d", tc.ms, got, tc.want)
		}
	}
	// The defining property, around zero and around a recent time: the
	// result starts a minute, and the minute contains the instant.
	for _, base := range []int64{0, 1_700_000_000_000} {
		for ms := base - 185_000; ms <= base+185_000; ms += 499 {
			m := MinuteOf(ms)
			if m%60 != 0 || ms < m*1000 || ms >= (m+60)*1000 {
				t.Fatalf("MinuteOf(%d) = %d: not the start of the minute holding it", ms, m)
			}
		}
	}
}

// mergeInputs returns n series-minute states as an aggregator receives them
// from agents: a few hundred visitors each (overlapping), counters, values.
func mergeInputs(n int) []*State {
	states := make([]*State, n)
	for i := range states {
		s := &State{Count: 300, CostMicros: ToMicros(1.25)}
		from := uint64(i)*150 + 1
		addVisitors(s, from, from+300)
		addValues(s, uint64(i), 20)
		if i%10 == 0 {
			s.AddBot("crawler")
		}
		states[i] = s
	}
	return states
}

// BenchmarkMerge merges 200 series-minute states of 300 visitors each into
// one, as the aggregator does for one series-minute fed by many agents.
//
//	go test -run '^$' -bench 'Merge' -benchmem ./sketch/
func BenchmarkMerge(b *testing.B) {
	states := mergeInputs(200)
	b.ReportAllocs()
	for b.Loop() {
		var acc State
		for _, s := range states {
			if err := acc.Merge(s); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(states)), "ns/state")
}

// BenchmarkEncodeDecode encodes and decodes one state of 1,000 visitors and
// 1,000 values, the wire and storage cost of a busy series-minute.
//
//	go test -run '^$' -bench 'EncodeDecode' -benchmem ./sketch/
func BenchmarkEncodeDecode(b *testing.B) {
	var s State
	s.Count = 1000
	s.AddBot("crawler")
	addVisitors(&s, 1, 1001)
	addValues(&s, 1, 1000)
	e, err := s.Encode()
	if err != nil {
		b.Fatal(err)
	}
	size := len(e.HLL) + len(e.Quantiles)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		e, err := s.Encode()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Decode(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size), "B/state")
}

// EncodeShared encodes what Encode does; only Encode's bot counts stay
// apart from later changes to the state.
func TestEncodeSharedEqualsEncode(t *testing.T) {
	var s State
	s.Count, s.ValueMicros = 3, ToMicros(12.5)
	s.AddBot("crawler")
	addVisitors(&s, 1, 40)
	addValues(&s, 3, 10)
	copied, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	shared, err := s.EncodeShared()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(copied, shared) {
		t.Fatalf("EncodeShared %+v, Encode %+v", shared, copied)
	}
	s.AddBot("crawler")
	if copied.Bots["crawler"] != 1 || shared.Bots["crawler"] != 2 {
		t.Fatalf("after a change: Encode's bots %v, EncodeShared's %v", copied.Bots, shared.Bots)
	}
	if e, _ := (&State{}).EncodeShared(); e.Bots != nil {
		t.Fatalf("no bots encode as %v", e.Bots)
	}
}

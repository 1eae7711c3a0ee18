package sketch

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/axiomhq/hyperloglog"
)

// unionPoint is one point's uniques in the form a fold may receive
// them: stored bytes (stored) or a decoded library sketch (sketch).
type unionPoint struct {
	stored []byte
	sketch *hyperloglog.Sketch
}

// randomUnionPoint draws a point of a random kind and size. Visitors come
// from a pool shared by all points (so registers collide across points),
// or are crafted with any rho up to the maximum.
func randomUnionPoint(t testing.TB, rng *rand.Rand) unionPoint {
	t.Helper()
	h := NewHLL()
	var n int
	switch rng.IntN(4) {
	case 0:
		n = 0 // an empty sketch
	case 1, 2:
		n = 1 + rng.IntN(900) // sparse
	default:
		n = 1000 + rng.IntN(25_000) // past denseDecodeAfter, up to dense
	}
	pool := uint64(1 + rng.IntN(100_000))
	crafted := rng.IntN(3) == 0
	for range n {
		if crafted {
			h.InsertHash(craftHash(uint16(rng.IntN(numRegisters)), uint8(1+rng.IntN(maxRho))))
			continue
		}
		h.InsertHash(mix(rng.Uint64N(pool)) | 1)
	}
	switch rng.IntN(5) {
	case 0: // decoded, as a reader without StoredUniques hands it over
		return unionPoint{sketch: h}
	case 1: // the library's own encoding, which the first release stored
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return unionPoint{stored: b}
	default:
		b, err := AppendStoredHLL(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		return unionPoint{stored: b}
	}
}

// oldUniques is the fold before Union, estimated by the library alone:
// decode each point into a library sketch, merge it with
// State.MergeUniques, and estimate from a dense library sketch.
func oldUniques(t testing.TB, pts []unionPoint) uint64 {
	t.Helper()
	var st State
	for _, p := range pts {
		h := p.sketch
		if p.stored != nil {
			var err error
			if h, err = DecodeStoredHLL(p.stored); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.MergeUniques(h); err != nil {
			t.Fatal(err)
		}
	}
	if st.Uniques == nil {
		return 0
	}
	return libraryEstimate(t, st.Uniques)
}

// libraryEstimate is axiomhq/hyperloglog's own estimate of h's registers:
// h merged into a dense library sketch.
func libraryEstimate(t testing.TB, h *hyperloglog.Sketch) uint64 {
	t.Helper()
	d := hyperloglog.NewNoSparse()
	if err := d.Merge(h); err != nil {
		t.Fatal(err)
	}
	return d.Estimate()
}

// TestEstimateRegistersEqualsLibrary: on registers of every fill, from
// none to all, with rhos drawn as hashing draws them and with rhos up to
// the largest (past exactSumMaxRho, where the sum is taken register by
// register), estimateRegisters equals the library's dense estimate bit
// for bit, and so do State.UniquesEstimate and a Union's.
func TestEstimateRegistersEqualsLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	fills := []int{0, 1, 2, 10, 100, 1000, 5000, 12_000, 16_000, 30_000, 100_000, 1_000_000, 10_000_000}
	var highRho int
	for trial := range 120 {
		h := hyperloglog.NewNoSparse()
		var regs registerArray
		n := fills[trial%len(fills)]
		set := func(idx uint16, rho uint8) {
			h.InsertHash(craftHash(idx, rho))
			regs[idx] = max(regs[idx], rho)
		}
		if n > 100_000 { // as many visitors: fill registers as hashing would
			for i := range numRegisters {
				set(uint16(i), 1+uint8(min(maxRho-1, bits.LeadingZeros64(rng.Uint64()|1)+rng.IntN(1+n/200_000))))
			}
		} else {
			for range n {
				set(RegisterOf(mix(rng.Uint64()) | 1))
			}
		}
		if trial%3 == 0 && n > 0 { // a few registers past where the histogram sum is exact
			for range 1 + rng.IntN(4) {
				set(uint16(rng.IntN(numRegisters)), uint8(exactSumMaxRho+1+rng.IntN(maxRho-exactSumMaxRho)))
			}
			highRho++
		}
		want := h.Estimate()
		if got := estimateRegisters(&regs); got != want {
			t.Fatalf("trial %d (%d visitors): estimateRegisters %d, library %d", trial, n, got, want)
		}
		if got := (&State{Uniques: h}).UniquesEstimate(); got != want {
			t.Fatalf("trial %d: State.UniquesEstimate %d, library %d", trial, got, want)
		}
		var u Union
		b, err := AppendStoredHLL(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		if b2, est, err := AppendStoredHLLEstimate(nil, h); err != nil || !bytes.Equal(b2, b) || est != want {
			t.Fatalf("trial %d: AppendStoredHLLEstimate gives estimate %d (%v) and other bytes: %v; want %d", trial, est, err, !bytes.Equal(b2, b), want)
		}
		if err := u.MergeStored(b); err != nil {
			t.Fatal(err)
		}
		if got := u.Estimate(); n > 0 && got != want {
			t.Fatalf("trial %d: Union %d, library %d", trial, got, want)
		}
	}
	if highRho == 0 {
		t.Fatal("no registers past exactSumMaxRho: the fallback sum went untested")
	}
}

func mergeUnion(t testing.TB, u *Union, p unionPoint) {
	t.Helper()
	if p.stored != nil {
		if err := u.MergeStored(p.stored); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := u.MergeSketch(p.sketch); err != nil {
		t.Fatal(err)
	}
}

// TestUnionEstimateEqualsLibraryMerge: for many random folds (several
// buckets, each of sparse, dense, empty, stored, legacy-encoded and
// decoded sketches), a Union's estimate equals, bit for bit, what
// decoding every point and merging the library sketches gives; also
// part-way through each bucket, which shows Estimate leaves the Union as
// it was.
func TestUnionEstimateEqualsLibraryMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 2026))
	pool := make([]unionPoint, 60)
	for i := range pool {
		pool[i] = randomUnionPoint(t, rng)
	}
	trials := 30
	if testing.Short() {
		trials = 10
	}
	var dense, listed int
	for trial := range trials {
		buckets := 1 + rng.IntN(4)
		for b := range buckets {
			pts := make([]unionPoint, 1+rng.IntN(10))
			for i := range pts {
				pts[i] = pool[rng.IntN(len(pool))]
			}
			var u Union
			for i, p := range pts {
				mergeUnion(t, &u, p)
				if i == len(pts)/2 {
					if got, want := u.Estimate(), oldUniques(t, pts[:i+1]); got != want {
						t.Fatalf("trial %d bucket %d after %d points: union %d, library merge %d", trial, b, i+1, got, want)
					}
				}
			}
			got, want := u.Estimate(), oldUniques(t, pts)
			if got != want {
				t.Fatalf("trial %d bucket %d (%d points): union %d, library merge %d", trial, b, len(pts), got, want)
			}
			if u.dense != nil {
				dense++
			} else {
				listed++
			}
		}
	}
	if dense == 0 || listed == 0 {
		t.Fatalf("%d dense and %d listed unions: the test must see both", dense, listed)
	}
}

// TestUnionManySmallPoints: a bucket of many small stored points, as a
// long daily series folds them, crosses every compaction and the switch
// to dense, and still estimates as the library merge does.
func TestUnionManySmallPoints(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var pts []unionPoint
	var u Union
	for i := range 400 {
		h := NewHLL()
		for range 1 + rng.IntN(60) {
			h.InsertHash(mix(rng.Uint64N(50_000)) | 1)
		}
		b, err := AppendStoredHLL(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		pts = append(pts, unionPoint{stored: b})
		mergeUnion(t, &u, pts[i])
		if i%50 == 0 || i == 399 {
			if got, want := u.Estimate(), oldUniques(t, pts); got != want {
				t.Fatalf("after %d points: union %d, library merge %d", i+1, got, want)
			}
		}
	}
	if u.dense == nil {
		t.Fatal("the union never went dense")
	}
}

func TestUnionEmpty(t *testing.T) {
	var u Union
	if u.Estimate() != 0 {
		t.Fatal("an empty union estimates non-zero")
	}
	if err := u.MergeSketch(nil); err != nil || u.Estimate() != 0 {
		t.Fatal("merging nil changed the union")
	}
}

// TestMergeStoredRefusesWhatDecodeRefuses: on valid encodings and on
// random corruptions of them, Union.MergeStored fails exactly where
// DecodeStoredHLL does (a reader hands stored bytes over unchecked), and
// a Union refusing an input is left unchanged.
func TestMergeStoredRefusesWhatDecodeRefuses(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var u Union
	base := NewHLL()
	base.InsertHash(mix(1) | 1)
	if err := u.MergeSketch(base); err != nil {
		t.Fatal(err)
	}
	want := u.Estimate()
	var valid [][]byte
	for len(valid) < 24 {
		if p := randomUnionPoint(t, rng); p.stored != nil {
			valid = append(valid, p.stored)
		}
	}
	refused := 0
	for i := range 1500 {
		b := bytes.Clone(valid[rng.IntN(len(valid))])
		switch rng.IntN(4) {
		case 0: // unchanged
		case 1:
			b = b[:rng.IntN(len(b)+1)]
		case 2:
			b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
		default:
			b = append(b, byte(rng.IntN(256)))
		}
		_, derr := DecodeStoredHLL(b)
		before := fmt.Sprint(len(u.packed), u.compacted)
		var scratch Union
		merr := scratch.MergeStored(b)
		if (derr == nil) != (merr == nil) {
			t.Fatalf("case %d (%x…): decode says %v, merge says %v", i, b[:min(len(b), 8)], derr, merr)
		}
		if merr != nil {
			if !errors.Is(merr, ErrCorrupt) && !errors.Is(merr, ErrUnknownEncoding) {
				t.Fatalf("case %d: %v is neither corrupt nor unknown", i, merr)
			}
			refused++
			if err := u.MergeStored(b); err == nil {
				t.Fatalf("case %d: the union took what it refused a moment ago", i)
			}
			if after := fmt.Sprint(len(u.packed), u.compacted); after != before || u.Estimate() != want {
				t.Fatalf("case %d: a refused input changed the union", i)
			}
		}
	}
	if refused < 250 {
		t.Fatalf("only %d corrupt inputs: the test is too gentle", refused)
	}
}

// TestStateUniquesStored: a State holding stored uniques estimates,
// merges, clones and encodes as one holding them decoded.
func TestStateUniquesStored(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	for range 30 {
		h := NewHLL()
		for range rng.IntN(3000) {
			h.InsertHash(mix(rng.Uint64N(10_000)) | 1)
		}
		stored, err := AppendStoredHLL(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		decoded, err := DecodeStoredHLL(stored)
		if err != nil {
			t.Fatal(err)
		}
		a, b := &State{Count: 1, Uniques: decoded}, &State{Count: 1, UniquesStored: stored}
		if a.UniquesEstimate() != b.UniquesEstimate() {
			t.Fatalf("estimate %d decoded, %d stored", a.UniquesEstimate(), b.UniquesEstimate())
		}
		if c := b.Clone(); c.UniquesEstimate() != a.UniquesEstimate() {
			t.Fatal("a clone lost the stored uniques")
		}
		other := &State{Count: 2}
		other.AddVisitor(mix(rng.Uint64()) | 1)
		ma, mb := other.Clone(), other.Clone()
		if err := ma.Merge(a); err != nil {
			t.Fatal(err)
		}
		if err := mb.Merge(b); err != nil {
			t.Fatal(err)
		}
		if ma.UniquesEstimate() != mb.UniquesEstimate() || mb.UniquesStored != nil {
			t.Fatalf("merge: %d from decoded, %d from stored", ma.UniquesEstimate(), mb.UniquesEstimate())
		}
		// Merging into a state that holds stored uniques keeps them.
		mc := b.Clone()
		if err := mc.Merge(other); err != nil {
			t.Fatal(err)
		}
		if mc.UniquesEstimate() != ma.UniquesEstimate() {
			t.Fatalf("merge into stored: %d, want %d", mc.UniquesEstimate(), ma.UniquesEstimate())
		}
		ea, err := a.Encode()
		if err != nil {
			t.Fatal(err)
		}
		eb, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		da, err := ea.Decode()
		if err != nil {
			t.Fatal(err)
		}
		db, err := eb.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if da.UniquesEstimate() != db.UniquesEstimate() || da.UniquesEstimate() != a.UniquesEstimate() {
			t.Fatalf("encode: %d from decoded, %d from stored", da.UniquesEstimate(), db.UniquesEstimate())
		}
	}
}

// foldYear is a year of daily buckets of one campaign as
// BenchmarkSeriesLatency stores it: 6 series a day, each day point the
// stored HyperLogLog of about 500 visitors out of 5,000.
func foldYear(b *testing.B) [][][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	days := make([][][]byte, 365)
	for d := range days {
		for range 6 {
			h := NewHLL()
			for range 96 * 5 {
				h.InsertHash(mix(rng.Uint64N(5000)) | 1)
			}
			s, err := AppendStoredHLL(nil, h)
			if err != nil {
				b.Fatal(err)
			}
			days[d] = append(days[d], s)
		}
	}
	return days
}

// BenchmarkFoldYear folds the uniques of a 365-day daily series (2,190
// stored day points, no storage), the old way and with a Union, in one
// process so that their ratio means something:
//
//   - old: DecodeStoredHLL per point (what the reader did), merged with
//     State.MergeUniques, one estimate per day by the library's dense
//     sketch;
//   - union: Union.MergeStored per point (the reader hands the bytes
//     over unchecked), one Union.Estimate per day.
//
// Reproduce with
//
//	go test -run='^$' -bench=BenchmarkFoldYear -benchtime=20x ./sketch/
func BenchmarkFoldYear(b *testing.B) {
	days := foldYear(b)
	var sink uint64
	b.Run("old", func(b *testing.B) {
		for range b.N {
			for _, pts := range days {
				var st State
				for _, p := range pts {
					h, err := DecodeStoredHLL(p)
					if err != nil {
						b.Fatal(err)
					}
					if err := st.MergeUniques(h); err != nil {
						b.Fatal(err)
					}
				}
				sink += libraryEstimate(b, st.Uniques)
			}
		}
	})
	b.Run("union", func(b *testing.B) {
		for range b.N {
			for _, pts := range days {
				var u Union
				for _, p := range pts {
					if err := u.MergeStored(p); err != nil {
						b.Fatal(err)
					}
				}
				sink += u.Estimate()
			}
		}
	})
	_ = sink
}

// slowBitReader reads one bit at a time: the reference for bitReader.
type slowBitReader struct {
	b   []byte
	pos uint
}

func (r *slowBitReader) bit() (uint64, error) {
	if r.pos>>3 >= uint(len(r.b)) {
		return 0, errShort
	}
	v := r.b[r.pos>>3] >> (7 - r.pos&7) & 1
	r.pos++
	return uint64(v), nil
}

func (r *slowBitReader) rice(k uint, maxQ uint64) (uint64, error) {
	var q uint64
	for {
		b, err := r.bit()
		if err != nil {
			return 0, err
		}
		if b == 0 {
			break
		}
		if q++; q > maxQ {
			return 0, errRange
		}
	}
	var low uint64
	for range k {
		b, err := r.bit()
		if err != nil {
			return 0, err
		}
		low = low<<1 | b
	}
	return q<<k | low, nil
}

// TestBitReaderMatchesBitByBit: on random streams, mostly ones or
// mostly zeros or neither, of every length, bitReader reads the same
// values, fails with the same errors and ends at the same position as
// reading a bit at a time.
func TestBitReaderMatchesBitByBit(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for i := range 20_000 {
		b := make([]byte, rng.IntN(40))
		bias := rng.IntN(3)
		for j := range b {
			switch bias {
			case 0:
				b[j] = byte(rng.IntN(256))
			case 1:
				b[j] = 0xff ^ byte(1<<rng.IntN(9)>>1)
			default:
				b[j] = byte(1 << rng.IntN(9) >> 1)
			}
		}
		fast, slow := bitReader{b: b}, slowBitReader{b: b}
		for step := 0; ; step++ {
			k, maxQ := uint(rng.IntN(14)), uint64(rng.IntN(400))
			fv, ferr := fast.rice(k, maxQ)
			sv, serr := slow.rice(k, maxQ)
			if ferr != serr || (ferr == nil && (fv != sv || fast.pos != slow.pos)) {
				t.Fatalf("stream %d step %d (k %d, maxQ %d): fast %d, %v at %d; bit by bit %d, %v at %d",
					i, step, k, maxQ, fv, ferr, fast.pos, sv, serr, slow.pos)
			}
			if ferr != nil {
				break
			}
		}
	}
}

// BenchmarkEstimateRegisters: one estimate of a dense sketch of 20,000
// visitors, by the library and by estimateRegisters, in one process.
// Reproduce with
//
//	go test -run='^$' -bench=BenchmarkEstimateRegisters ./sketch/
func BenchmarkEstimateRegisters(b *testing.B) {
	h := hyperloglog.NewNoSparse()
	var regs registerArray
	rng := rand.New(rand.NewPCG(1, 1))
	for range 20_000 {
		x := mix(rng.Uint64()) | 1
		h.InsertHash(x)
		i, rho := RegisterOf(x)
		regs[i] = max(regs[i], rho)
	}
	var sink uint64
	b.Run("library", func(b *testing.B) {
		for range b.N {
			sink += h.Estimate()
		}
	})
	b.Run("registers", func(b *testing.B) {
		for range b.N {
			sink += estimateRegisters(&regs)
		}
	})
	_ = sink
}

package sketch

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/axiomhq/hyperloglog"
)

// TestCraftedHashesLandOnTheirRegister pins the equivalence the wire
// format rests on: for every register and rho, the crafted hash gives the
// library that register and rho, in both its sparse and dense forms.
func TestCraftedHashesLandOnTheirRegister(t *testing.T) {
	for _, idx := range []uint16{0, 1, 777, numRegisters - 1} {
		for rho := uint8(1); rho <= maxRho; rho++ {
			h := craftHash(idx, rho)
			if gi, gr := RegisterOf(h); gi != idx || gr != rho {
				t.Fatalf("craftHash(%d, %d) = %#x has register (%d, %d)", idx, rho, h, gi, gr)
			}
			// Dense: one register set to rho, estimate as if by the hash.
			a, b := hyperloglog.NewNoSparse(), hyperloglog.NewNoSparse()
			a.InsertHash(h)
			sparse := hyperloglog.New14()
			sparse.InsertHash(h)
			if err := b.Merge(sparse); err != nil {
				t.Fatal(err)
			}
			ab, _ := a.MarshalBinary()
			bb, _ := b.MarshalBinary()
			if !bytes.Equal(ab, bb) {
				t.Fatalf("(%d, %d): sparse insert merged into dense differs from dense insert", idx, rho)
			}
		}
	}
}

// TestRegistersMatchTheLibrary compares, for real hashes, the dense
// sketch the library builds with the one built from register updates.
func TestRegistersMatchTheLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 10, 300, 5000, 60000} {
		direct := hyperloglog.NewNoSparse()
		var regs Registers
		for range n {
			h := rng.Uint64() | 1
			direct.InsertHash(h)
			regs.Add(h)
		}
		var st State
		if err := st.MergeRegisters(regs.AppendUpdates(nil)); err != nil {
			t.Fatal(err)
		}
		viaRegs := hyperloglog.NewNoSparse()
		if err := viaRegs.Merge(st.Uniques); err != nil {
			t.Fatal(err)
		}
		db, _ := direct.MarshalBinary()
		rb, _ := viaRegs.MarshalBinary()
		if !bytes.Equal(db, rb) {
			t.Fatalf("n=%d: registers differ from the library's own", n)
		}
	}
}

// TestEstimateAccuracy checks estimates through register updates stay
// within three standard errors of HLL at p=14 (3 × 0.81 %) across the
// range, including the small cardinalities of one series-minute.
func TestEstimateAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 5, 50, 500, 2000, 20000, 200000} {
		var st State
		var regs Registers
		for i := range n {
			regs.Add(rng.Uint64() | 1)
			// Ship in several flushes, as an agent does.
			if i%997 == 0 {
				if err := st.MergeRegisters(regs.AppendUpdates(nil)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := st.MergeRegisters(regs.AppendUpdates(nil)); err != nil {
			t.Fatal(err)
		}
		got := float64(st.UniquesEstimate())
		if rel := math.Abs(got-float64(n)) / float64(n); rel > 0.0243 && math.Abs(got-float64(n)) > 1 {
			t.Fatalf("n=%d: estimate %v (%.2f%% off)", n, got, 100*rel)
		}
		// The estimate must not change the sketch.
		if again := float64(st.UniquesEstimate()); again != got {
			t.Fatalf("n=%d: second estimate %v != %v", n, again, got)
		}
	}
}

func TestRegistersEncoding(t *testing.T) {
	var r Registers
	if got := r.AppendUpdates(nil); got != nil {
		t.Fatalf("nothing pending encodes as %v", got)
	}
	r.Add(craftHash(3, 2))
	r.Add(craftHash(3, 5)) // same register, higher rho wins
	r.Add(craftHash(3, 1))
	r.Add(craftHash(200, 1))
	r.Add(0) // no visitor
	// count, gaps 3 and 197, then rhos 5 and 1
	want := []byte{2, 3, 197, 1, 5, 1}
	if got := r.AppendUpdates(nil); !bytes.Equal(got, want) {
		t.Fatalf("encoding %v, want %v", got, want)
	}
	for _, bad := range [][]byte{
		nil, {}, {0}, {1}, {1, 0}, {2, 3, 5}, {2, 3, 0, 5, 1}, // truncated, repeated index
		{1, 0, 0}, {1, 0, maxRho + 1}, // rho out of range
		{1, 0x80, 0x80, 0x01, 1}, // index beyond the register count
		{1, 3, 5, 9},             // trailing bytes
		{0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		calls := 0
		if err := DecodeRegisters(bad, func(uint16, uint8) { calls++ }); err == nil || calls != 0 {
			t.Fatalf("DecodeRegisters(%v) = %v after %d calls; want an error and no calls", bad, err, calls)
		}
	}
}

// TestOnlyIncreasesAreShipped: a register already shipped at a rho is not
// shipped again unless a later hash raises it.
func TestOnlyIncreasesAreShipped(t *testing.T) {
	var r Registers
	r.Add(craftHash(10, 3))
	r.Add(craftHash(20, 2))
	if got := r.AppendUpdates(nil); !bytes.Equal(got, []byte{2, 10, 10, 3, 2}) {
		t.Fatalf("first flush %v", got)
	}
	r.Add(craftHash(10, 2)) // lower: nothing to send
	r.Add(craftHash(20, 2)) // equal: nothing to send
	if got := r.AppendUpdates(nil); got != nil {
		t.Fatalf("second flush sent %v", got)
	}
	r.Add(craftHash(20, 4)) // raised
	r.Add(craftHash(5, 1))  // new
	if got := r.AppendUpdates(nil); !bytes.Equal(got, []byte{2, 5, 15, 1, 4}) {
		t.Fatalf("third flush %v", got)
	}
	if r.Shipped() != 3 {
		t.Fatalf("shipped %d registers, want 3", r.Shipped())
	}
}

func TestAppendAllResendsEverything(t *testing.T) {
	var r Registers
	r.Add(craftHash(10, 3))
	r.Add(craftHash(20, 2))
	r.AppendUpdates(nil)
	r.Add(craftHash(5, 1)) // pending: included and recorded as shipped
	if got := r.AppendAll(nil); !bytes.Equal(got, []byte{3, 5, 5, 10, 1, 3, 2}) {
		t.Fatalf("AppendAll = %v", got)
	}
	if got := r.AppendUpdates(nil); got != nil {
		t.Fatalf("after AppendAll, AppendUpdates sent %v", got)
	}
	var empty Registers
	if got := empty.AppendAll(nil); got != nil {
		t.Fatalf("empty AppendAll = %v", got)
	}
}

// TestAppendFinalMatchesAppendUpdates: the last flush of a series-minute
// sends the same bytes whether or not it remembers what it shipped.
func TestAppendFinalMatchesAppendUpdates(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, perFlush := range []int{0, 1, 30, 3000, 20_000} {
		var kept, final Registers
		for flush := range 3 {
			for range perFlush {
				h := rng.Uint64() >> rng.IntN(20)
				kept.Add(h)
				final.Add(h)
			}
			if flush < 2 {
				a, b := kept.AppendUpdates(nil), final.AppendUpdates(nil)
				if !bytes.Equal(a, b) {
					t.Fatalf("%d per flush: flush %d differs", perFlush, flush)
				}
				continue
			}
			want := kept.AppendUpdates([]byte{7})
			if got := final.AppendFinal([]byte{7}); !bytes.Equal(got, want) {
				t.Fatalf("%d per flush: AppendFinal %v, AppendUpdates %v", perFlush, got, want)
			}
			if final.Shipped() != 0 || final.AppendFinal(nil) != nil {
				t.Fatalf("%d per flush: AppendFinal left state behind", perFlush)
			}
		}
	}
}

// TestDenseSwitchKeepsContent drives one Registers past its dense
// threshold and checks nothing is lost in the switch.
func TestDenseSwitchKeepsContent(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var r Registers
	direct := hyperloglog.NewNoSparse()
	for range 40_000 {
		h := rng.Uint64() | 1
		r.Add(h)
		direct.InsertHash(h)
	}
	if r.dense == nil {
		t.Fatal("never switched to the dense array")
	}
	var st State
	if err := st.MergeRegisters(r.AppendUpdates(nil)); err != nil {
		t.Fatal(err)
	}
	via := hyperloglog.NewNoSparse()
	_ = via.Merge(st.Uniques)
	a, _ := direct.MarshalBinary()
	b, _ := via.MarshalBinary()
	if !bytes.Equal(a, b) {
		t.Fatal("dense switch lost register updates")
	}
	if r.dense != nil || len(r.packed) != 0 {
		t.Fatal("AppendUpdates kept pending state")
	}
}

func FuzzDecodeRegisters(f *testing.F) {
	var r Registers
	for i := range 50 {
		r.Add(uint64(i+1) * 0x9E3779B97F4A7C15)
	}
	f.Add(r.AppendUpdates(nil))
	f.Add([]byte{0})
	f.Add([]byte{2, 3, 197, 5, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var st State
		_ = st.MergeRegisters(b)
		_ = st.UniquesEstimate()
	})
}

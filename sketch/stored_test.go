package sketch

import (
	"bytes"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/axiomhq/hyperloglog"
)

var update = flag.Bool("update", false, "rewrite the golden files of the stored encodings")

// registerBytes returns every register of h (a copy).
func registerBytes(t testing.TB, h *hyperloglog.Sketch) []byte {
	t.Helper()
	regs, put, err := registersOf(h)
	if err != nil {
		t.Fatal(err)
	}
	defer put()
	return bytes.Clone(regs)
}

func randomHLL(seed uint64, n int) *hyperloglog.Sketch {
	rng := rand.New(rand.NewPCG(seed, 7))
	h := NewHLL()
	for range n {
		h.InsertHash(rng.Uint64() | 1)
	}
	return h
}

// TestStoredHLLRoundTrip: every register survives, at every density,
// and the estimate is the one of the original.
func TestStoredHLLRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10, 30, 300, 1023, 1024, 1025, 5000, 60000, 2_000_000} {
		h := randomHLL(uint64(n), n)
		b, err := AppendStoredHLL(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeStoredHLL(b)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(registerBytes(t, got), registerBytes(t, h)) {
			t.Fatalf("n=%d: registers differ after a round trip", n)
		}
		a, c := (&State{Uniques: h}).UniquesEstimate(), (&State{Uniques: got}).UniquesEstimate()
		if a != c {
			t.Fatalf("n=%d: estimate %d, want %d", n, c, a)
		}
		again, _ := AppendStoredHLL(nil, got)
		if !bytes.Equal(again, b) {
			t.Fatalf("n=%d: re-encoding the decoded sketch gives other bytes", n)
		}
	}
}

// TestStoredHLLDecodesAsTheWire: the stored form of what an agent shipped
// decodes to the sketch the wire's register updates give.
func TestStoredHLLDecodesAsTheWire(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{1, 40, 2000, 40000} {
		var regs Registers
		for range n {
			regs.Add(rng.Uint64() | 1)
		}
		var wire State
		if err := wire.MergeRegisters(regs.AppendUpdates(nil)); err != nil {
			t.Fatal(err)
		}
		b, err := AppendStoredHLL(nil, wire.Uniques)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := DecodeStoredHLL(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(registerBytes(t, stored), registerBytes(t, wire.Uniques)) {
			t.Fatalf("n=%d: stored and wire registers differ", n)
		}
		// A small sketch stays sparse, as the wire's does.
		lib, _ := stored.MarshalBinary()
		if sparse := lib[3] == 1; sparse != (n < 1000) {
			t.Fatalf("n=%d: decoded sketch sparse=%v", n, sparse)
		}
	}
}

// TestStoredHLLCanonical: the same registers reached in different orders
// and representations encode to the same bytes.
func TestStoredHLLCanonical(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	hs := make([]uint64, 500)
	for i := range hs {
		hs[i] = rng.Uint64() | 1
	}
	a, b, c := NewHLL(), NewHLL(), hyperloglog.NewNoSparse()
	for i := range hs {
		a.InsertHash(hs[i])
		b.InsertHash(hs[len(hs)-1-i])
		c.InsertHash(hs[i])
	}
	_ = b.Estimate() // compacts b's sparse list
	ea, _ := AppendStoredHLL(nil, a)
	eb, _ := AppendStoredHLL(nil, b)
	ec, _ := AppendStoredHLL(nil, c)
	if !bytes.Equal(ea, eb) || !bytes.Equal(ea, ec) {
		t.Fatal("equal sketches encode differently")
	}
}

// TestStoredHLLSizes pins what the format is for: smaller than the wire's
// bytes and the library's encoding for the sketches a minute holds, and
// than the library's dense array for a full one.
func TestStoredHLLSizes(t *testing.T) {
	for _, c := range []struct {
		n, max int
	}{{1, 6}, {30, 60}, {300, 560}, {100_000, 10_600}} {
		h := randomHLL(99, c.n)
		b, _ := AppendStoredHLL(nil, h)
		lib, _ := h.MarshalBinary()
		if len(b) > c.max || len(b) >= len(lib) {
			t.Errorf("%d visitors: %d bytes stored (library %d), want at most %d", c.n, len(b), len(lib), c.max)
		}
	}
}

func TestStoredHLLReadsTheLibraryEncoding(t *testing.T) {
	h := randomHLL(5, 700)
	lib, _ := h.MarshalBinary()
	got, err := DecodeStoredHLL(lib)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(registerBytes(t, got), registerBytes(t, h)) {
		t.Fatal("registers differ")
	}
}

func TestStoredHLLRefusesCorruptInput(t *testing.T) {
	good, _ := AppendStoredHLL(nil, randomHLL(8, 50))
	cases := map[string][]byte{
		"empty":          {},
		"truncated":      good[:len(good)-3],
		"trailing byte":  append(bytes.Clone(good), 0),
		"no parameters":  {StoredHLLV1, 3},
		"bad rice k":     {StoredHLLV1, 1, 0x0e, 1, 0},
		"zero base":      {StoredHLLV1, 1, 0x00, 0, 0},
		"count too high": {StoredHLLV1, 0x81, 0x81, 0x01, 0, 1},
		"empty but more": {StoredHLLV1, 0, 1},
		// kg=0: a gap of 16384 ones runs past the last register.
		"index out of range": append([]byte{StoredHLLV1, 1, 0x00, 1}, bytes.Repeat([]byte{0xff}, 2049)...),
		"nonzero padding":    {StoredHLLV1, 1, 0x00, 1, 0x01},
	}
	for name, b := range cases {
		if _, err := DecodeStoredHLL(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := DecodeStoredHLL([]byte{0x99, 0}); !errors.Is(err, ErrUnknownEncoding) {
		t.Errorf("unknown version: err %v", err)
	}
}

func TestStoredQuantiles(t *testing.T) {
	var st State
	for i := range 40 {
		st.AddValue(ToMicros(float64(i*7) + 0.5))
	}
	b := AppendStoredQuantiles(nil, st.Values)
	if b[0] != StoredQuantilesV1 {
		t.Fatalf("version byte %#x", b[0])
	}
	q, err := DecodeStoredQuantiles(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []float64{0, 0.5, 0.9, 0.99, 1} {
		want, _ := st.Values.GetValueAtQuantile(p)
		got, _ := q.GetValueAtQuantile(p)
		if got != want {
			t.Fatalf("q%.2f = %v, want %v", p, got, want)
		}
	}
	var legacy []byte
	st.Values.Encode(&legacy, true)
	if _, err := DecodeStoredQuantiles(legacy); err != nil {
		t.Fatalf("the first release's encoding: %v", err)
	}
	if _, err := DecodeStoredQuantiles([]byte{0x77}); !errors.Is(err, ErrUnknownEncoding) {
		t.Fatalf("unknown version: %v", err)
	}
	if _, err := DecodeStoredQuantiles(b[:len(b)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
}

// sampleContribs is a fixed set of contributions with every optional part.
func sampleContribs() []StoredContrib {
	mk := func(count uint64, value, cost int64, visitors int, bots, votes map[string]uint64) *State {
		st := &State{Count: count, CostMicros: cost, Bots: bots, Votes: votes}
		for i := range visitors {
			st.AddVisitor(uint64(i+1) * 0x9E3779B97F4A7C15)
		}
		if value != 0 {
			st.AddValue(value)
			st.AddValue(value * 3)
		}
		return st
	}
	odd := Series{Campaign: "spring\x00sale", Source: "g\\", Type: "click"}
	return []StoredContrib{
		{Agent: "agent-eu", CID: 7<<32 | 1, Version: 3, State: mk(12, 0, 0, 9, nil, nil)},
		{Agent: "agent-eu", CID: 7<<32 | 2, Version: 1, State: mk(2, 49_900_000, 0, 2, map[string]uint64{"crawler": 3, "headless": 1}, nil)},
		{Agent: "agent-us", CID: 1<<32 | 99, Version: 12, Series: &odd, State: mk(5, 0, 1_250_000, 0, nil,
			map[string]uint64{VoteKey("launch", "yes"): 4, VoteKey("launch", "no"): 1})},
		{Agent: "agent-us", CID: 0xffffffff<<32 | 0xffffffff, Version: 1 << 40, State: mk(0, -5, -7, 0, nil, nil)},
	}
}

// TestStoredContribsRoundTrip: identity, versions, counters, sketches and
// exact series come back; without HLLs, everything but the HLLs.
func TestStoredContribsRoundTrip(t *testing.T) {
	in := sampleContribs()
	for _, withHLL := range []bool{true, false} {
		b, err := AppendStoredContribs(nil, in, withHLL)
		if err != nil {
			t.Fatal(err)
		}
		out, err := DecodeStoredContribs(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(in) {
			t.Fatalf("%d entries, want %d", len(out), len(in))
		}
		for i := range in {
			a, c := in[i], out[i]
			if a.Agent != c.Agent || a.CID != c.CID || a.Version != c.Version || !reflect.DeepEqual(a.Series, c.Series) {
				t.Fatalf("entry %d: identity %+v, want %+v", i, c, a)
			}
			sa, sc := a.State, c.State
			if sa.Count != sc.Count || sa.ValueMicros != sc.ValueMicros || sa.CostMicros != sc.CostMicros ||
				len(sa.Bots) != len(sc.Bots) || len(sa.Votes) != len(sc.Votes) {
				t.Fatalf("entry %d: counters %+v, want %+v", i, sc, sa)
			}
			for k, v := range sa.Bots {
				if sc.Bots[k] != v {
					t.Fatalf("entry %d: bots %v, want %v", i, sc.Bots, sa.Bots)
				}
			}
			for k, v := range sa.Votes {
				if sc.Votes[k] != v {
					t.Fatalf("entry %d: votes %v, want %v", i, sc.Votes, sa.Votes)
				}
			}
			if sa.Quantile(0.5) != sc.Quantile(0.5) {
				t.Fatalf("entry %d: median %v, want %v", i, sc.Quantile(0.5), sa.Quantile(0.5))
			}
			wantHLL := withHLL && sa.Uniques != nil
			if (sc.Uniques != nil) != wantHLL {
				t.Fatalf("entry %d: hll kept %v, want %v", i, sc.Uniques != nil, wantHLL)
			}
			if wantHLL && sa.UniquesEstimate() != sc.UniquesEstimate() {
				t.Fatalf("entry %d: uniques %d, want %d", i, sc.UniquesEstimate(), sa.UniquesEstimate())
			}
		}
	}
}

func TestStoredContribsRefuseCorruptInput(t *testing.T) {
	good, _ := AppendStoredContribs(nil, sampleContribs(), true)
	for cut := 1; cut < len(good); cut += 3 {
		if _, err := DecodeStoredContribs(good[:cut]); err == nil {
			t.Fatalf("truncated at %d of %d: decoded", cut, len(good))
		}
	}
	for name, b := range map[string][]byte{
		"trailing":        append(bytes.Clone(good), 0),
		"agent index":     {StoredContribsV1, 1, 1, 'a', 1, 5, 0, 0, 0, 1, 1},
		"unknown flag":    {StoredContribsV1, 1, 1, 'a', 1, 0, 0x80, 0x01, 0, 0, 1, 1},
		"huge count":      {StoredContribsV1, 0xff, 0xff, 0x03},
		"duplicate bot":   {StoredContribsV1, 1, 1, 'a', 1, 0, scBots, 0, 0, 1, 1, 2, 1, 'x', 1, 1, 'x', 2},
		"cid out of rang": {StoredContribsV1, 1, 1, 'a', 1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 1, 1},
	} {
		if _, err := DecodeStoredContribs(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := DecodeStoredContribs([]byte{0x31}); !errors.Is(err, ErrUnknownEncoding) {
		t.Errorf("unknown version: %v", err)
	}
}

// TestStoredGolden pins the stored encodings byte for byte (run with
// -update after a deliberate change, which also needs a new version
// byte) and checks that the files decode to what they hold.
func TestStoredGolden(t *testing.T) {
	var quantiles State
	for _, v := range []float64{1.5, 9.9, 49.9, 49.9, 120} {
		quantiles.AddValue(ToMicros(v))
	}
	hll := func(n int) []byte {
		b, err := AppendStoredHLL(nil, randomHLL(2026, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	contribs, err := AppendStoredContribs(nil, sampleContribs(), true)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := AppendStoredContribs(nil, sampleContribs(), false)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"hll_sparse_v1.bin": hll(30),
		"hll_dense_v1.bin":  hll(50_000),
		"quantiles_v1.bin":  AppendStoredQuantiles(nil, quantiles.Values),
		"contribs_v1.bin":   contribs,
		"ledger_v1.bin":     ledger,
	}
	dir := filepath.Join("testdata", "stored")
	for name, want := range files {
		path := filepath.Join(dir, name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the encoding changed (%d bytes, golden %d); a change needs a new version byte", name, len(want), len(got))
		}
	}
	// The golden files decode to what they were made from.
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, n := range map[string]int{"hll_sparse_v1.bin": 30, "hll_dense_v1.bin": 50_000} {
		h, err := DecodeStoredHLL(read(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(registerBytes(t, h), registerBytes(t, randomHLL(2026, n))) {
			t.Fatalf("%s: registers differ", name)
		}
	}
	q, err := DecodeStoredQuantiles(read("quantiles_v1.bin"))
	if err != nil || q.GetCount() != 5 {
		t.Fatalf("quantiles_v1.bin: %v, count %v", err, q.GetCount())
	}
	cs, err := DecodeStoredContribs(read("contribs_v1.bin"))
	if err != nil || len(cs) != 4 || cs[2].Series == nil || cs[2].Series.Campaign != "spring\x00sale" || cs[0].State.Uniques == nil {
		t.Fatalf("contribs_v1.bin: %v %+v", err, cs)
	}
	ls, err := DecodeStoredContribs(read("ledger_v1.bin"))
	if err != nil || len(ls) != 4 || ls[0].State.Uniques != nil || ls[1].State.ValueMicros != 49_900_000*4 {
		t.Fatalf("ledger_v1.bin: %v %+v", err, ls)
	}
}

package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
)

var ctx = context.Background()

func TestExportVerifyRestoreRoundTrip(t *testing.T) {
	src := newMem()
	fill(src, 1, day1.Add(-30*time.Minute), 25*time.Hour, "spring", "", "été, \"quoted\"")
	store, _ := OpenDir(t.TempDir())
	a := newTestArchiver(t, src, nil, store)

	res, err := a.Export(ctx, day1, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Exported || res.Campaigns != 3 || res.Rows == 0 || res.Parts != 1 || res.Bytes == 0 {
		t.Fatalf("export: %+v", res)
	}
	m, err := a.Manifest(ctx, "2026-03-01")
	if err != nil {
		t.Fatal(err)
	}
	if m.ExportedBy != "test" || m.Counters.Rows != res.Rows || m.Counters.Events == 0 || m.Counters.Bots == 0 ||
		m.Counters.ValueMicros == 0 || m.Counters.CostMicros == 0 {
		t.Fatalf("manifest %+v", m)
	}
	v, err := a.Verify(ctx, day1)
	if err != nil || !v.OK() {
		t.Fatalf("verify: %v %v", v.Problems, err)
	}

	// Restore into an empty store of minutes: every minute comes back
	// with the same counters and the same registers and bins.
	dst := newMem()
	r := newTestArchiver(t, dst, dst, store)
	rr, err := r.Restore(ctx, day1, false)
	if err != nil {
		t.Fatal(err)
	}
	if rr.Rows != res.Rows || rr.Skipped {
		t.Fatalf("restore %+v, export %+v", rr, res)
	}
	if n := sameMinutes(t, src, dst, day1, day1.Add(24*time.Hour)); int64(n) != res.Rows {
		t.Fatalf("compared %d minutes, archived %d", n, res.Rows)
	}
	// Merged over the day, the restored sketches give the same union.
	union := func(m *memSource) uint64 {
		var st sketch.State
		for k, s := range m.minutes {
			if k.Minute >= day1.Unix() && k.Minute < day1.Add(24*time.Hour).Unix() {
				if err := st.Merge(s); err != nil {
					t.Fatal(err)
				}
			}
		}
		return st.UniquesEstimate()
	}
	if u, w := union(dst), union(src); u != w || u == 0 {
		t.Fatalf("union of restored uniques %d, original %d", u, w)
	}
	// Restoring again finds the day in place and skips it.
	if rr, err := r.Restore(ctx, day1, false); err != nil || !rr.Skipped {
		t.Fatalf("second restore %+v %v", rr, err)
	}
}

func TestExportIsIdempotentAndDeterministic(t *testing.T) {
	src := newMem()
	fill(src, 2, day1, 24*time.Hour, "a", "b")
	dir := t.TempDir()
	store, _ := OpenDir(dir)
	a := newTestArchiver(t, src, nil, store)
	if _, err := a.Export(ctx, day1, false); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(dir, "day=2026-03-01", "part-00000.parquet")
	first, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Export(ctx, day1, false)
	if err != nil || res.Outcome != Unchanged {
		t.Fatalf("second export: %+v %v", res, err)
	}
	// Forced, the same minutes (read in another order) give the same bytes.
	res, err = a.Export(ctx, day1, true)
	if err != nil || res.Outcome != Exported {
		t.Fatalf("forced export: %+v %v", res, err)
	}
	again, _ := os.ReadFile(part)
	if !bytes.Equal(first, again) {
		t.Fatal("the same day exported twice gave different bytes")
	}
}

// faultyStore fails the first Put whose key contains failOn.
type faultyStore struct {
	Store
	failOn string
	failed atomic.Bool
}

func (f *faultyStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.Contains(key, f.failOn) && f.failed.CompareAndSwap(false, true) {
		return errors.New("injected: store unreachable")
	}
	return f.Store.Put(ctx, key, r, size)
}

func TestExportResumesAfterAnInterruption(t *testing.T) {
	for _, failOn := range []string{"part-00001", "_manifest.json"} {
		t.Run(failOn, func(t *testing.T) {
			src := newMem()
			fill(src, 3, day1, 8*time.Hour, "a", "b", "c")
			store, _ := OpenDir(t.TempDir())
			fs := &faultyStore{Store: store, failOn: failOn}
			a := newTestArchiver(t, src, nil, fs)
			a.o.partRows = 150 // several parts
			if _, err := a.Export(ctx, day1, false); err == nil {
				t.Fatal("export with a failing store succeeded")
			}
			if _, err := a.Manifest(ctx, "2026-03-01"); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("an interrupted day has a manifest: %v", err)
			}
			res, err := a.Export(ctx, day1, false)
			if err != nil || res.Outcome != Exported || res.Parts < 3 {
				t.Fatalf("resumed export: %+v %v", res, err)
			}
			if v, err := a.Verify(ctx, day1); err != nil || !v.OK() {
				t.Fatalf("verify after resume: %v %v", v.Problems, err)
			}
		})
	}
}

func TestLateDataIsExportedAgainAndStalePartsGo(t *testing.T) {
	src := newMem()
	fill(src, 4, day1, 24*time.Hour, "a", "b")
	dir := t.TempDir()
	store, _ := OpenDir(dir)
	a := newTestArchiver(t, src, nil, store)
	a.o.partRows = 200
	first, err := a.Export(ctx, day1, false)
	if err != nil {
		t.Fatal(err)
	}
	// A late event for a settled minute: one more click, one more visitor.
	k := keyOf("a", "click", day1.Add(13*time.Hour+7*time.Minute))
	st := &sketch.State{Count: 1}
	st.AddVisitor(42)
	if old := src.get(k); old != nil {
		st = old.Clone()
		st.Count++
		st.AddVisitor(42)
	}
	src.set(k, st)
	// And a campaign that shrinks the day below its old part count: gone
	// from InfluxDB (e.g. deleted), so the day has fewer parts.
	src.mu.Lock()
	for key := range src.minutes {
		if key.Series.Campaign == "b" {
			delete(src.minutes, key)
		}
	}
	src.mu.Unlock()
	res, err := a.Export(ctx, day1, false)
	if err != nil || res.Outcome != Exported {
		t.Fatalf("re-export: %+v %v", res, err)
	}
	if res.Parts >= first.Parts {
		t.Fatalf("parts %d then %d: the test needs fewer", first.Parts, res.Parts)
	}
	m, _ := a.Manifest(ctx, "2026-03-01")
	var found bool
	a.readPart(ctx, "2026-03-01", m.Parts[0], t.TempDir(), func(r *Row) error {
		if r.Campaign == "a" && r.Source == "" && r.Type == "click" && r.Minute == k.Minute*1000 {
			found = r.Events == int64(st.Count)
		}
		return nil
	})
	if !found {
		t.Fatal("the late event is not in the archive")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "day=2026-03-01"))
	if len(entries) != res.Parts+1 {
		t.Fatalf("%d objects for %d parts and a manifest", len(entries), res.Parts)
	}
	if v, err := a.Verify(ctx, day1); err != nil || !v.OK() {
		t.Fatalf("verify: %v %v", v.Problems, err)
	}
}

func TestVerifyFindsEveryKindOfDifference(t *testing.T) {
	setup := func(t *testing.T) (*memSource, *Archiver, string) {
		src := newMem()
		fill(src, 5, day1, 24*time.Hour, "a", "b")
		dir := t.TempDir()
		store, _ := OpenDir(dir)
		a := newTestArchiver(t, src, nil, store)
		if _, err := a.Export(ctx, day1, false); err != nil {
			t.Fatal(err)
		}
		return src, a, dir
	}
	want := func(t *testing.T, a *Archiver, sub string) {
		t.Helper()
		v, err := a.Verify(ctx, day1)
		if err != nil {
			t.Fatal(err)
		}
		if v.OK() || !strings.Contains(strings.Join(v.Problems, "\n"), sub) {
			t.Fatalf("problems %q lack %q", v.Problems, sub)
		}
	}
	t.Run("a counter changed in InfluxDB", func(t *testing.T) {
		src, a, _ := setup(t)
		for k, st := range src.minutes {
			if k.Series.Campaign == "b" {
				st.ValueMicros++
				break
			}
		}
		want(t, a, "counters differ")
	})
	t.Run("a visitor more in InfluxDB", func(t *testing.T) {
		src, a, _ := setup(t)
		for k, st := range src.minutes {
			if k.Series.Campaign == "a" && st.Uniques != nil {
				for i := range uint64(1000) {
					st.AddVisitor(0x9E3779B97F4A7C15 * (i + 7))
				}
				break
			}
		}
		want(t, a, "sketches differ")
	})
	t.Run("a minute only in InfluxDB", func(t *testing.T) {
		src, a, _ := setup(t)
		src.set(keyOf("a", "click", day1.Add(23*time.Hour+59*time.Minute)), &sketch.State{Count: 1})
		want(t, a, "the archive does not")
	})
	t.Run("a flipped byte", func(t *testing.T) {
		_, a, dir := setup(t)
		p := filepath.Join(dir, "day=2026-03-01", "part-00000.parquet")
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 1
		os.WriteFile(p, b, 0o644)
		want(t, a, "does not match its manifest")
	})
	t.Run("an extra object", func(t *testing.T) {
		_, a, dir := setup(t)
		os.WriteFile(filepath.Join(dir, "day=2026-03-01", "part-00007.parquet"), []byte("x"), 0o644)
		want(t, a, "not in the manifest")
	})
}

// TestRestoreRefusesADifferentDay: restoring over other data for the day
// would mix two histories; it needs overwrite.
func TestRestoreRefusesADifferentDay(t *testing.T) {
	src := newMem()
	fill(src, 6, day1, 24*time.Hour, "a")
	store, _ := OpenDir(t.TempDir())
	if _, err := newTestArchiver(t, src, nil, store).Export(ctx, day1, false); err != nil {
		t.Fatal(err)
	}
	dst := newMem()
	dst.set(keyOf("a", "click", day1.Add(time.Hour)), &sketch.State{Count: 5})
	r := newTestArchiver(t, dst, dst, store)
	if _, err := r.Restore(ctx, day1, false); !errors.Is(err, ErrDayDiffers) {
		t.Fatalf("restore over other data: %v", err)
	}
	if dst.get(keyOf("a", "click", day1.Add(time.Hour))).Count != 5 || len(dst.minutes) != 1 {
		t.Fatal("a refused restore wrote something")
	}
	// With overwrite the archived minutes land; the extra minute stays, so
	// the day's counters differ from the archive's and Restore says so.
	if _, err := r.Restore(ctx, day1, true); err == nil || !strings.Contains(err.Error(), "after restoring") {
		t.Fatalf("overwrite restore: %v", err)
	}
	sameMinutes(t, src, dst, time.Unix(0, 0), day1.Add(time.Hour))
}

// TestExportRetriesADayThatChanges: minutes that arrive while a day is
// exported make the exporter read it again, and a day that never stops
// changing is not marked done.
func TestExportRetriesADayThatChanges(t *testing.T) {
	src := newMem()
	fill(src, 7, day1, 24*time.Hour, "a")
	store, _ := OpenDir(t.TempDir())
	a := newTestArchiver(t, src, nil, store)
	var extra atomic.Int64
	src.onRead = func(n int) {
		if n == 2 || extra.Load() > 0 { // during the first full read, or always
			i := extra.Add(1)
			src.set(keyOf("a", "click", day1.Add(time.Duration(i)*time.Second*60)), &sketch.State{Count: uint64(i)})
		}
	}
	res, err := a.Export(ctx, day1, false)
	if !errors.Is(err, ErrChanging) || res.Attempts != maxAttempts {
		t.Fatalf("export of a day that keeps changing: %+v %v", res, err)
	}
	if _, err := a.Manifest(ctx, "2026-03-01"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a day that kept changing got a manifest: %v", err)
	}
	var once atomic.Bool
	src.onRead = func(n int) {
		if once.CompareAndSwap(false, true) {
			src.set(keyOf("a", "click", day1.Add(20*time.Hour)), &sketch.State{Count: 9})
		}
	}
	res, err = a.Export(ctx, day1, false)
	if err != nil || res.Attempts != 2 {
		t.Fatalf("export of a day that changed once: %+v %v", res, err)
	}
	if v, err := a.Verify(ctx, day1); err != nil || !v.OK() {
		t.Fatalf("verify: %v %v", v.Problems, err)
	}
}

func TestEmptyDayIsDone(t *testing.T) {
	store, _ := OpenDir(t.TempDir())
	a := newTestArchiver(t, newMem(), nil, store)
	res, err := a.Export(ctx, day1, false)
	if err != nil || res.Rows != 0 || res.Parts != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if days, _ := a.Days(ctx); len(days) != 1 || days[0] != "2026-03-01" {
		t.Fatalf("days %v", days)
	}
	if res, err := a.Export(ctx, day1, false); err != nil || res.Outcome != Unchanged {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestHostileRowsAreRefused(t *testing.T) {
	good := Row{Minute: day1.UnixMilli(), Campaign: "a", Events: 2, SketchEncoding: SketchEncoding}
	st := &sketch.State{Count: 2}
	for v := range uint64(40) {
		st.AddVisitor(0x9E3779B97F4A7C15 * (v + 1))
	}
	st.AddValue(1_000_000)
	hll2, q2, _, err := encodeSketches(st)
	if err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Row){
		"encoding 1: corrupt hll":       func(r *Row) { r.SketchEncoding = 1; r.HLL = []byte{1, 14, 0, 1, 0xff} },
		"encoding 1: corrupt quantiles": func(r *Row) { r.SketchEncoding = 1; r.Quantiles = []byte{0x03, 0xff, 0xff, 0xff, 0xff, 0xff} },
		"encoding 2: hll cut short":     func(r *Row) { r.HLL = hll2[:len(hll2)/2] },
		"encoding 2: hll with a byte too many": func(r *Row) {
			r.HLL = append(append([]byte(nil), hll2...), 0)
		},
		"encoding 2: register count past the sketch": func(r *Row) { r.HLL = []byte{sketch.StoredHLLV1, 0xff, 0xff, 0x03} },
		"encoding 2: quantiles cut short":            func(r *Row) { r.Quantiles = q2[:len(q2)-1] },
		"encoding 2: quantiles of encoding 1":        func(r *Row) { r.Quantiles = q2[1:] },
		"not a minute":                               func(r *Row) { r.Minute += 1500 },
		"negative events":                            func(r *Row) { r.Events = -1 },
		"bots do not add up":                         func(r *Row) { r.Bots = 3; r.BotsByReason = []BotCount{{"x", 2}} },
		"zero votes":                                 func(r *Row) { r.Votes = []VoteCount{{"p", "a", 0}} },
		"unknown sketch encoding":                    func(r *Row) { r.SketchEncoding = 99 },
		"corrupt hll":                                func(r *Row) { r.HLL = []byte{1, 14, 0, 1, 0xff} },
		"hll of another precision": func(r *Row) {
			r.HLL = []byte{1, 16, 0, 0}
		},
		"corrupt quantiles": func(r *Row) { r.Quantiles = []byte{0x03, 0xff, 0xff, 0xff, 0xff, 0xff} },
	} {
		r := good
		mut(&r)
		if _, err := toMinute(r); !errors.Is(err, ErrBadRow) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := toMinute(good); err != nil {
		t.Fatal(err)
	}
	good.HLL, good.Quantiles = hll2, q2
	if m, err := toMinute(good); err != nil || m.State.UniquesEstimate() != st.UniquesEstimate() {
		t.Fatalf("a good row of encoding 2: %v", err)
	}
}

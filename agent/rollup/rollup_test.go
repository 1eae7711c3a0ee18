package rollup

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// genEvents builds n events over nSeries series and nVisitors visitors in
// the minute starting at base.
func genEvents(rng *rand.Rand, n, nSeries, nVisitors int, base time.Time) []event.Event {
	series := make([]sketch.Series, nSeries)
	types := []string{"impression", "click", "pageview", "conversion"}
	for i := range series {
		series[i] = sketch.Series{Campaign: fmt.Sprintf("c%d", i%10), Source: fmt.Sprintf("s%d", i%4), Medium: "cpc",
			Type: types[i%len(types)], Country: "DE", Device: "mobile", Region: "eu"}
	}
	out := make([]event.Event, n)
	for i := range out {
		s := series[rng.IntN(nSeries)]
		e := event.Event{Series: s, UnixMillis: base.UnixMilli() + int64(rng.IntN(60_000)), Visitor: mix(uint64(rng.IntN(nVisitors)) + 1)}
		if s.Type == "conversion" {
			e.ValueMicros, e.HasValue = int64(rng.IntN(100_000_000)), true
		}
		if rng.IntN(50) == 0 {
			e.Bot = "crawler"
		}
		out[i] = e
	}
	return out
}

// outs holds, per rollup under test, the contributions it cut since the
// last flush: those of minutes closed by event time during Add, then those
// of the Cut.
var outs = map[*Rollup]*Slice{}

func outOf(r *Rollup) *Slice {
	if outs[r] == nil {
		outs[r] = &Slice{}
	}
	return outs[r]
}

// flush cuts r and returns every contribution cut since the last flush.
func flush(t testing.TB, r *Rollup) []wire.Contribution {
	t.Helper()
	out := outOf(r)
	if err := r.Cut(out); err != nil {
		t.Fatal(err)
	}
	all := *out
	*out = nil
	return all
}

// mix is SplitMix64's finaliser: visitor hashes must be uniformly
// distributed, as the agent's salted SipHash is.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// merged replays the receiver's rules: per CID keep the counters of the
// highest version, union every HLL delta.
type merged struct {
	versions map[uint64]uint64
	counters map[sketch.Key]map[uint64]sketch.State
	uniques  map[sketch.Key]*sketch.State
}

func newMerged() *merged {
	return &merged{versions: map[uint64]uint64{}, counters: map[sketch.Key]map[uint64]sketch.State{}, uniques: map[sketch.Key]*sketch.State{}}
}

func (m *merged) apply(t *testing.T, cs []wire.Contribution) {
	for _, c := range cs {
		k := sketch.Key{Series: c.Series, Minute: c.Minute}
		st, err := c.State.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if m.uniques[k] == nil {
			m.uniques[k] = &sketch.State{}
		}
		if err := m.uniques[k].MergeUniques(st.Uniques); err != nil {
			t.Fatal(err)
		}
		if c.Version <= m.versions[c.CID] {
			continue
		}
		m.versions[c.CID] = c.Version
		if m.counters[k] == nil {
			m.counters[k] = map[uint64]sketch.State{}
		}
		st.Uniques = nil
		m.counters[k][c.CID] = *st
	}
}

func TestFlushesAreExactUnderRepeatedDelivery(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	cfg := DefaultConfig()
	r := New(7, cfg)
	r.now = func() time.Time { return base }
	want := map[sketch.Key]*sketch.State{}
	wantVisitors := map[sketch.Key]map[uint64]bool{}
	m := newMerged()
	var all [][]wire.Contribution
	for round := range 5 {
		evs := genEvents(rng, 5000, 40, 3000, base.Add(time.Duration(round%2)*time.Minute))
		if err := r.Add(evs, outOf(r)); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			k := e.Key()
			if want[k] == nil {
				want[k] = &sketch.State{}
				wantVisitors[k] = map[uint64]bool{}
			}
			if e.Bot != "" {
				want[k].AddBot(e.Bot)
				continue
			}
			want[k].Count++
			want[k].ValueMicros += e.ValueMicros
			wantVisitors[k][e.Visitor] = true
		}
		all = append(all, flush(t, r))
	}
	// Deliver every flush twice, in reverse order: versions and unions
	// must make that harmless.
	for i := len(all) - 1; i >= 0; i-- {
		m.apply(t, all[i])
		m.apply(t, all[i])
	}
	for k, w := range want {
		var got sketch.State
		for _, st := range m.counters[k] {
			got.MergeCounters(&st)
		}
		if got.Count != w.Count || got.ValueMicros != w.ValueMicros || got.BotTotal() != w.BotTotal() {
			t.Fatalf("%v: got count=%d value=%d bots=%d, want %d %d %d", k.Series, got.Count, got.ValueMicros, got.BotTotal(), w.Count, w.ValueMicros, w.BotTotal())
		}
		est, truth := float64(m.uniques[k].UniquesEstimate()), float64(len(wantVisitors[k]))
		if truth > 0 && (est < truth*0.97 || est > truth*1.03) {
			t.Fatalf("%v: uniques %v, truth %v", k.Series, est, truth)
		}
	}
}

func TestIdleMinutesCloseAndReopenWithNewCID(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	r := New(3, Config{Lateness: 10 * time.Minute})
	r.now = func() time.Time { return now }
	ev := []event.Event{{Series: sketch.Series{Campaign: "c", Type: "click"}, UnixMillis: now.UnixMilli(), Visitor: 9}}
	if err := r.Add(ev, outOf(r)); err != nil {
		t.Fatal(err)
	}
	first := flush(t, r)
	if len(first) != 1 || first[0].CID>>32 != 3 || first[0].Version != 1 {
		t.Fatalf("first flush %+v", first)
	}
	now = now.Add(11 * time.Minute)
	if cs := flush(t, r); len(cs) != 0 {
		t.Fatalf("idle flush emitted %d", len(cs))
	}
	if st := r.Stats(); st.Open != 0 || st.Closed != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := r.Add(ev, outOf(r)); err != nil {
		t.Fatal(err)
	}
	second := flush(t, r)
	if len(second) != 1 || second[0].CID == first[0].CID || second[0].State.Count != 1 {
		t.Fatalf("reopened minute %+v (first cid %x)", second, first[0].CID)
	}
}

func TestAddIsAllOrNothing(t *testing.T) {
	r := New(1, Config{MaxOpen: 2})
	mk := func(c string) event.Event {
		return event.Event{Series: sketch.Series{Campaign: c, Type: "click"}, UnixMillis: time.Now().UnixMilli()}
	}
	if err := r.Add([]event.Event{mk("a"), mk("b"), mk("c")}, outOf(r)); err != ErrFull {
		t.Fatalf("err = %v, want ErrFull", err)
	}
	if st := r.Stats(); st.Events != 0 || st.Open != 0 {
		t.Fatalf("partial apply: %+v", st)
	}
	if r.Fits([]event.Event{mk("a"), mk("b"), mk("c")}) || !r.Fits([]event.Event{mk("a"), mk("b")}) {
		t.Fatal("Fits disagrees with Add")
	}
}

func TestImportedRowsReplaceInsteadOfAdding(t *testing.T) {
	r := New(1, DefaultConfig())
	s := sketch.Series{Campaign: "spring", Source: "google", Medium: "cpc", Type: "impression", Region: "eu"}
	row := event.RowID("cost|2026-11-21|spring|google|cpc")
	ts := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC).UnixMilli()
	imp := func(weight, version uint64) event.Event {
		return event.Event{Series: s, UnixMillis: ts, Weight: weight, Row: row, RowVersion: version}
	}
	// The same row twice in one flush, then a corrected re-import later.
	if err := r.Add([]event.Event{imp(120_000, 10), imp(120_000, 11)}, outOf(r)); err != nil {
		t.Fatal(err)
	}
	cs := flush(t, r)
	if len(cs) != 1 || cs[0].CID != row || cs[0].Version != 11 || cs[0].State.Count != 120_000 {
		t.Fatalf("first flush %+v", cs)
	}
	if cs[0].CID>>62 != 3 {
		t.Fatalf("row id %x lacks its top bits", cs[0].CID)
	}
	if err := r.Add([]event.Event{imp(125_000, 20), imp(1, 5)}, outOf(r)); err != nil { // a stale one is ignored
		t.Fatal(err)
	}
	cs = flush(t, r)
	if len(cs) != 1 || cs[0].Version != 20 || cs[0].State.Count != 125_000 {
		t.Fatalf("re-import %+v", cs)
	}
	// A live event with a weight adds its weight.
	live := event.Event{Series: s, UnixMillis: ts, Weight: 3}
	if err := r.Add([]event.Event{live, live}, outOf(r)); err != nil {
		t.Fatal(err)
	}
	cs = flush(t, r)
	if len(cs) != 1 || cs[0].State.Count != 6 || cs[0].CID == row {
		t.Fatalf("weighted live events %+v", cs)
	}
}

// TestResendOpenGivesANewReceiverEverything: a receiver that saw only the
// flush after ResendOpen ends with the same state as one that saw them all
// (what a campaign's new owner needs after its old owner died).
func TestResendOpenGivesANewReceiverEverything(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	r := New(9, DefaultConfig())
	r.now = func() time.Time { return base }
	old := newMerged()
	for range 3 {
		if err := r.Add(genEvents(rng, 3000, 20, 2000, base), outOf(r)); err != nil {
			t.Fatal(err)
		}
		old.apply(t, flush(t, r))
	}
	if n := r.ResendOpen(); n == 0 {
		t.Fatal("nothing open to resend")
	}
	cs := flush(t, r)
	fresh := newMerged()
	fresh.apply(t, cs)
	old.apply(t, cs)
	if len(fresh.counters) != len(old.counters) || len(fresh.counters) == 0 {
		t.Fatalf("new receiver has %d series-minutes, the old one %d", len(fresh.counters), len(old.counters))
	}
	for k, byCID := range old.counters {
		for cid, st := range byCID {
			if got := fresh.counters[k][cid]; got.Count != st.Count || got.ValueMicros != st.ValueMicros {
				t.Fatalf("%v cid %x: new receiver has count %d value %d, want %d %d", k.Series, cid, got.Count, got.ValueMicros, st.Count, st.ValueMicros)
			}
		}
		if a, b := fresh.uniques[k].UniquesEstimate(), old.uniques[k].UniquesEstimate(); a != b {
			t.Fatalf("%v: new receiver estimates %d uniques, old %d", k.Series, a, b)
		}
	}
	// The flag is one-shot: the next flush sends nothing new.
	if cs := flush(t, r); len(cs) != 0 {
		t.Fatalf("second flush after ResendOpen sent %d contributions", len(cs))
	}
}

// TestEventTimeClosesMinutesAsEventsMovePast: with ByEventTime a minute is
// cut as soon as events have moved Lateness past it, so the rollup holds
// the last minutes of events however rarely it is flushed, and what the
// flushes ship still adds up exactly, late events included.
func TestEventTimeClosesMinutesAsEventsMovePast(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	base := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	const series, minutes = 30, 40
	r := New(4, Config{Lateness: time.Minute, ByEventTime: true})
	want := map[sketch.Key]*sketch.State{}
	wantVisitors := map[sketch.Key]map[uint64]bool{}
	m := newMerged()
	record := func(evs []event.Event) {
		for _, e := range evs {
			k := e.Key()
			if want[k] == nil {
				want[k], wantVisitors[k] = &sketch.State{}, map[uint64]bool{}
			}
			if e.Bot != "" {
				want[k].AddBot(e.Bot)
				continue
			}
			want[k].Count++
			want[k].ValueMicros += e.ValueMicros
			wantVisitors[k][e.Visitor] = true
		}
	}
	flushAll := func() { m.apply(t, flush(t, r)) }
	maxOpen := uint64(0)
	for minute := range minutes {
		evs := genEvents(rng, 2000, series, 500, base.Add(time.Duration(minute)*time.Minute))
		if minute%7 == 6 { // a few lines logged late, from five minutes back
			late := genEvents(rng, 20, series, 500, base.Add(time.Duration(minute-5)*time.Minute))
			evs = append(evs, late...)
		}
		for len(evs) > 0 {
			n := min(len(evs), 1+rng.IntN(700))
			if err := r.Add(evs[:n], outOf(r)); err != nil {
				t.Fatal(err)
			}
			record(evs[:n])
			evs = evs[n:]
			maxOpen = max(maxOpen, r.Stats().Open)
		}
		if minute%13 == 12 {
			flushAll()
		}
	}
	flushAll()
	// Two minutes of series plus the late ones: not forty minutes' worth.
	if maxOpen > 4*series {
		t.Fatalf("up to %d series-minutes open; minutes events had moved past stayed in memory", maxOpen)
	}
	cids := map[sketch.Key]int{}
	for k, w := range want {
		var got sketch.State
		for _, st := range m.counters[k] {
			got.MergeCounters(&st)
		}
		cids[k] = len(m.counters[k])
		if got.Count != w.Count || got.ValueMicros != w.ValueMicros || got.BotTotal() != w.BotTotal() {
			t.Fatalf("%v %d: got count=%d value=%d bots=%d, want %d %d %d", k.Series, k.Minute, got.Count, got.ValueMicros, got.BotTotal(), w.Count, w.ValueMicros, w.BotTotal())
		}
		est, truth := float64(m.uniques[k].UniquesEstimate()), float64(len(wantVisitors[k]))
		if truth > 0 && (est < truth*0.95 || est > truth*1.05) {
			t.Fatalf("%v: uniques %v, truth %v", k.Series, est, truth)
		}
	}
	lateMinute := sketch.MinuteOf(base.Add(time.Minute).UnixMilli()) // minute 6's late lines
	reopened := 0
	for k, n := range cids {
		if k.Minute == lateMinute && n > 1 {
			reopened++
		}
	}
	if reopened == 0 {
		t.Fatal("late events for a closed minute did not open new contributions")
	}
}

// TestSeriesWithEqualHashesStayApart: two series whose Hash collides (as
// an event may carry a wrong one) keep their own entries and counts.
func TestSeriesWithEqualHashesStayApart(t *testing.T) {
	r := New(1, DefaultConfig())
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return base }
	mk := func(c string, n int) []event.Event {
		var evs []event.Event
		for range n {
			evs = append(evs, event.Event{Series: sketch.Series{Campaign: c, Type: "click"}, UnixMillis: base.UnixMilli(), Hash: 42})
		}
		return evs
	}
	if err := r.Add(append(mk("a", 3), mk("b", 5)...), outOf(r)); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, c := range flush(t, r) {
		got[c.Series.Campaign] += c.State.Count
	}
	if got["a"] != 3 || got["b"] != 5 || r.Stats().Open != 2 {
		t.Fatalf("counts %v, %d open; want a=3 b=5 in 2 entries", got, r.Stats().Open)
	}
	// Idle: both close, one after the other in the same chain.
	r.now = func() time.Time { return base.Add(time.Hour) }
	flush(t, r)
	if st := r.Stats(); st.Open != 0 || st.Closed != 2 {
		t.Fatalf("after idling: %+v", st)
	}
}

// TestCutsShipInSeriesOrder: a flush, and the cut of minutes closed by
// event time, hand their contributions over grouped: one run per event
// type, within it one run per campaign, then per source and medium, and
// a series' minutes side by side in order, whatever order the events came
// in (neighbours that share names compress well in a frame).
func TestCutsShipInSeriesOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	levels := []struct {
		name string
		key  func(s sketch.Series) string
	}{
		{"type", func(s sketch.Series) string { return s.Type }},
		{"campaign", func(s sketch.Series) string { return s.Type + "/" + s.Campaign }},
		{"channel", func(s sketch.Series) string { return s.Type + "/" + s.Campaign + "/" + s.Source + "/" + s.Medium }},
		{"series", func(s sketch.Series) string { return s.String() }},
	}
	check := func(what string, cs []wire.Contribution) {
		t.Helper()
		if len(cs) < 20 { // genEvents' 120 series are 20 distinct ones
			t.Fatalf("%s: %d contributions, want 20 or more", what, len(cs))
		}
		for _, l := range levels {
			done := map[string]bool{}
			for i := range cs {
				k := l.key(cs[i].Series)
				if i > 0 && k == l.key(cs[i-1].Series) {
					continue
				}
				if done[k] {
					t.Fatalf("%s: %s %q comes again at contribution %d, after other %ss", what, l.name, k, i, l.name)
				}
				done[k] = true
			}
		}
		for i := 1; i < len(cs); i++ {
			if cs[i].Series == cs[i-1].Series && cs[i].Minute <= cs[i-1].Minute {
				t.Fatalf("%s: %s minute %d comes after its minute %d", what, cs[i].Series, cs[i].Minute, cs[i-1].Minute)
			}
		}
	}

	r := New(1, DefaultConfig())
	for m := range 3 {
		if err := r.Add(genEvents(rng, 3000, 120, 1000, base.Add(time.Duration(m)*time.Minute)), outOf(r)); err != nil {
			t.Fatal(err)
		}
	}
	check("flush", flush(t, r))

	r = New(2, Config{Lateness: time.Minute, ByEventTime: true})
	out := &Slice{}
	for m := range 2 {
		if err := r.Add(genEvents(rng, 3000, 120, 1000, base.Add(time.Duration(m)*time.Minute)), out); err != nil {
			t.Fatal(err)
		}
	}
	if len(*out) != 0 {
		t.Fatalf("%d contributions cut before any minute closed", len(*out))
	}
	// Events three minutes on close the first two minutes' series.
	if err := r.Add(genEvents(rng, 10, 120, 1000, base.Add(4*time.Minute)), out); err != nil {
		t.Fatal(err)
	}
	var closed []wire.Contribution
	for _, c := range *out {
		if c.Minute < base.Add(2*time.Minute).Unix() {
			closed = append(closed, c)
		}
	}
	// Each closed minute is cut on its own, in order within it.
	byMinute := map[int64][]wire.Contribution{}
	for _, c := range closed {
		byMinute[c.Minute] = append(byMinute[c.Minute], c)
	}
	if len(byMinute) != 2 {
		t.Fatalf("closed minutes %d, want 2", len(byMinute))
	}
	for m, cs := range byMinute {
		check(fmt.Sprintf("close of minute %d", m), cs)
	}
}

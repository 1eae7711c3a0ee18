package rollup

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/sketch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memStore is Storage and Reader over maps: points by resolution, and
// markers. It records the queries it answers.
type memStore struct {
	mu      sync.Mutex
	points  map[influx.Resolution]map[sketch.Key]*sketch.State
	markers map[influx.Resolution]map[period]*influx.Marker
	queries []influx.MinuteQuery
	failAt  int // fail the n-th EachMinute (1-based); 0: never
	calls   int
	since   *int64 // the since mark; nil: none
}

func newMem() *memStore {
	return &memStore{points: map[influx.Resolution]map[sketch.Key]*sketch.State{influx.Minutes: {}, influx.Hours: {}, influx.Days: {}},
		markers: map[influx.Resolution]map[period]*influx.Marker{influx.Hours: {}, influx.Days: {}}}
}

func (m *memStore) putMinute(p sketch.Minute) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.points[influx.Minutes][p.Key()] = p.State.Clone()
}

func (m *memStore) EachMinute(ctx context.Context, q influx.MinuteQuery, fn func(sketch.Minute) error) error {
	m.mu.Lock()
	m.calls++
	if m.failAt != 0 && m.calls == m.failAt {
		m.mu.Unlock()
		return fmt.Errorf("storage down")
	}
	res := q.Resolution
	if res == "" {
		res = influx.Minutes
	}
	m.queries = append(m.queries, q)
	var out []sketch.Minute
	for k, st := range m.points[res] {
		t := time.Unix(k.Minute, 0)
		if t.Before(q.From) || !t.Before(q.To) {
			continue
		}
		s := k.Series
		switch {
		case q.AllCampaigns:
			if slices.Contains(q.ExcludeCampaigns, s.Campaign) {
				continue
			}
		case q.Campaign != "":
			if s.Campaign != q.Campaign {
				continue
			}
		default:
			if !slices.Contains(q.Campaigns, s.Campaign) {
				continue
			}
		}
		if (q.Source != "" && s.Source != q.Source) || (q.Type != "" && s.Type != q.Type) {
			continue
		}
		out = append(out, sketch.Minute{Series: s, Minute: k.Minute, State: st.Clone()})
	}
	m.mu.Unlock()
	for _, p := range out {
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) LoadMarkers(ctx context.Context, res influx.Resolution, from, to time.Time, campaigns []string) ([]influx.Marker, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []influx.Marker
	for p, mk := range m.markers[res] {
		if p.start < from.Unix() || p.start >= to.Unix() || (campaigns != nil && !slices.Contains(campaigns, p.campaign)) {
			continue
		}
		out = append(out, *mk)
	}
	return out, nil
}

func (m *memStore) WriteRollups(ctx context.Context, res influx.Resolution, points []sketch.Minute) ([]influx.Refusal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range points {
		m.points[res][p.Key()] = p.State.Clone()
	}
	return nil, nil
}

func (m *memStore) WriteMarkers(ctx context.Context, res influx.Resolution, field string, marks []influx.Marker) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mk := range marks {
		p := period{mk.Campaign, mk.Start}
		cur := m.markers[res][p]
		if cur == nil {
			cur = &influx.Marker{Campaign: mk.Campaign, Start: mk.Start}
			m.markers[res][p] = cur
		}
		if field == influx.FieldChanged {
			cur.Changed = mk.Changed
		} else {
			cur.Rolled = mk.Rolled
		}
	}
	return nil
}

func (m *memStore) LoadSince(ctx context.Context) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.since == nil {
		return 0, false, nil
	}
	return *m.since, true, nil
}

func (m *memStore) WriteSince(ctx context.Context, since int64, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.since = &since
	return nil
}

func (m *memStore) LatestMinute(ctx context.Context) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var latest int64
	found := false
	for k := range m.points[influx.Minutes] {
		if !found || k.Minute > latest {
			latest, found = k.Minute, true
		}
	}
	return latest, found, nil
}

func (m *memStore) dirtyMarkers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for res, ms := range m.markers {
		for _, mk := range ms {
			if !mk.Clean() {
				out = append(out, fmt.Sprintf("%s %s %s", res, mk.Campaign, time.Unix(mk.Start, 0).UTC().Format(time.RFC3339)))
			}
		}
	}
	slices.Sort(out)
	return out
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// write is one owner's write round: markers, minutes, queue.
func write(t *testing.T, r *Roller, m *memStore, ps []sketch.Minute) {
	t.Helper()
	if err := r.Changing(context.Background(), ps); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		m.putMinute(p)
	}
	r.Changed(ps)
}

// genMinutes makes minutes of campaigns over days, with visitors drawn
// from a pool so that uniques overlap across minutes, hours and days.
func genMinutes(rng *rand.Rand, start time.Time, days int, campaigns []string) []sketch.Minute {
	var out []sketch.Minute
	for d := range days {
		for h := 0; h < 24; h += 1 + rng.IntN(3) {
			for _, c := range campaigns {
				for _, typ := range []string{"pageview", "click", "conversion"} {
					if rng.IntN(4) == 0 {
						continue
					}
					s := sketch.Series{Campaign: c, Source: []string{"google", "mail"}[rng.IntN(2)], Type: typ, Region: "eu"}
					minute := start.Add(time.Duration(d)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(rng.IntN(60))*time.Minute).Unix()
					st := &sketch.State{Count: uint64(1 + rng.IntN(20))}
					for range st.Count {
						st.AddVisitor(uint64(rng.IntN(3000)) + 1)
					}
					if typ == "conversion" {
						st.AddValue(int64(rng.IntN(100_000_000)))
					}
					if rng.IntN(5) == 0 {
						st.AddBot("crawler")
					}
					out = append(out, sketch.Minute{Series: s, Minute: minute, State: st})
				}
			}
		}
	}
	return out
}

func newRoller(t *testing.T, m *memStore, c *clock) *Roller {
	t.Helper()
	r := New(Config{Now: c.Now, Settle: 5 * time.Minute, Quiet: 10 * time.Second, MaxDelay: time.Minute}, m, prometheus.NewRegistry(), nil)
	if err := r.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// drain runs passes until nothing is left that is due.
func drain(t *testing.T, r *Roller) {
	t.Helper()
	for range 100 {
		n, err := r.Pass(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("passes never ran out of work")
}

// mergeWhere merges the points of one resolution whose keys keep selects.
func mergeWhere(t *testing.T, m *memStore, res influx.Resolution, keep func(sketch.Key) bool) *sketch.State {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &sketch.State{}
	for k, st := range m.points[res] {
		if keep(k) {
			if err := out.Merge(st); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

func sameState(a, b *sketch.State) bool {
	if a.Count != b.Count || a.ValueMicros != b.ValueMicros || a.BotTotal() != b.BotTotal() || a.UniquesEstimate() != b.UniquesEstimate() {
		return false
	}
	return a.Quantile(0.5) == b.Quantile(0.5) && a.Quantile(0.99) == b.Quantile(0.99)
}

// TestRollupsEqualTheirMinutes: once settled, every hour and day point of
// every series is the merge of its minutes, and every marker is clean.
func TestRollupsEqualTheirMinutes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{t: start.Add(5 * 24 * time.Hour)}
	m := newMem()
	r := newRoller(t, m, c)
	ps := genMinutes(rng, start, 4, []string{"a", "b", "c"})
	for i := 0; i < len(ps); i += 37 {
		write(t, r, m, ps[i:min(i+37, len(ps))])
	}
	c.Add(time.Minute) // past Quiet and MaxDelay: every hour has ended
	drain(t, r)
	if d := m.dirtyMarkers(); len(d) != 0 {
		t.Fatalf("dirty markers after the passes: %v", d)
	}
	checkRollups(t, m)
	if r.Pending() != 0 {
		t.Fatalf("%d hours still pending", r.Pending())
	}
}

// checkRollups compares every rollup with its minutes.
func checkRollups(t *testing.T, m *memStore) {
	t.Helper()
	for _, res := range []influx.Resolution{influx.Hours, influx.Days} {
		m.mu.Lock()
		keys := slices.Collect(mapsKeys(m.points[res]))
		nMinutes := len(m.points[influx.Minutes])
		m.mu.Unlock()
		if len(keys) == 0 || nMinutes == 0 {
			t.Fatalf("no %s points", res)
		}
		for _, k := range keys {
			want := mergeWhere(t, m, influx.Minutes, func(mk sketch.Key) bool {
				return mk.Series == k.Series && floor(mk.Minute, res.Seconds()) == k.Minute
			})
			got := mergeWhere(t, m, res, func(rk sketch.Key) bool { return rk == k })
			if !sameState(got, want) {
				t.Fatalf("%s %s at %s: rollup %+v, minutes %+v", res, k.Series, time.Unix(k.Minute, 0).UTC(), got, want)
			}
		}
	}
	// And every series-hour with minutes has a rollup.
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.points[influx.Minutes] {
		if _, ok := m.points[influx.Hours][sketch.Key{Series: k.Series, Minute: floor(k.Minute, hour)}]; !ok {
			t.Fatalf("no hour rollup for %s at %d", k.Series, k.Minute)
		}
		if _, ok := m.points[influx.Days][sketch.Key{Series: k.Series, Minute: floor(k.Minute, day)}]; !ok {
			t.Fatalf("no day rollup for %s at %d", k.Series, k.Minute)
		}
	}
}

// TestOpenHourWaits: an hour still filling (or within Settle of its end)
// is not rolled up, and its markers stay dirty; after Settle it is.
func TestOpenHourWaits(t *testing.T) {
	start := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	c := &clock{t: start.Add(20 * time.Minute)}
	m := newMem()
	r := newRoller(t, m, c)
	s := sketch.Series{Campaign: "a", Type: "click"}
	write(t, r, m, []sketch.Minute{{Series: s, Minute: start.Add(5 * time.Minute).Unix(), State: &sketch.State{Count: 3}}})
	c.t = start.Add(time.Hour + 4*time.Minute) // the hour ended 4 minutes ago: within Settle
	drain(t, r)
	if len(m.dirtyMarkers()) != 2 || len(m.points[influx.Hours]) != 0 {
		t.Fatalf("rolled up before Settle: markers %v, %d hour points", m.dirtyMarkers(), len(m.points[influx.Hours]))
	}
	c.t = start.Add(time.Hour + 5*time.Minute)
	drain(t, r)
	if d := m.dirtyMarkers(); len(d) != 0 || len(m.points[influx.Hours]) != 1 || len(m.points[influx.Days]) != 1 {
		t.Fatalf("after Settle: markers %v, %d hour and %d day points", d, len(m.points[influx.Hours]), len(m.points[influx.Days]))
	}
}

// TestInFlightWritesKeepMarkersDirty: an hour whose minutes a round is
// writing (Changing done, Changed not yet) is neither rolled up nor
// marked clean, even when it was due; a round that fails leaves it so.
func TestInFlightWritesKeepMarkersDirty(t *testing.T) {
	start := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	c := &clock{t: start.Add(3 * time.Hour)}
	m := newMem()
	r := newRoller(t, m, c)
	s := sketch.Series{Campaign: "a", Type: "click"}
	first := sketch.Minute{Series: s, Minute: start.Unix(), State: &sketch.State{Count: 1}}
	write(t, r, m, []sketch.Minute{first})
	c.Add(time.Minute)
	drain(t, r)
	if len(m.dirtyMarkers()) != 0 {
		t.Fatalf("markers %v", m.dirtyMarkers())
	}
	// A late minute: the round marks, then fails before writing.
	late := sketch.Minute{Series: s, Minute: start.Add(time.Minute).Unix(), State: &sketch.State{Count: 5}}
	if err := r.Changing(context.Background(), []sketch.Minute{late}); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Hour)
	drain(t, r)
	if d := m.dirtyMarkers(); len(d) != 2 {
		t.Fatalf("a marked but unwritten change left markers %v, want the hour and the day dirty", d)
	}
	// The retry writes it.
	write(t, r, m, []sketch.Minute{late})
	c.Add(time.Minute)
	drain(t, r)
	if d := m.dirtyMarkers(); len(d) != 0 {
		t.Fatalf("markers %v", d)
	}
	got := mergeWhere(t, m, influx.Days, func(sketch.Key) bool { return true })
	if got.Count != 6 {
		t.Fatalf("day rollup count %d, want 6", got.Count)
	}
}

// TestChangeDuringPassStaysDirty: a round that writes while a pass reads
// leaves the marker dirty and the hour queued, so the rollup is
// recomputed, never marked clean while it lags.
func TestChangeDuringPassStaysDirty(t *testing.T) {
	start := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	c := &clock{t: start.Add(3 * time.Hour)}
	m := newMem()
	r := newRoller(t, m, c)
	s := sketch.Series{Campaign: "a", Type: "click"}
	write(t, r, m, []sketch.Minute{{Series: s, Minute: start.Unix(), State: &sketch.State{Count: 1}}})
	c.Add(time.Minute)
	// The pass takes its work; then a round writes a change (as if
	// concurrently); then the pass reads and marks.
	w := r.take()
	late := sketch.Minute{Series: s, Minute: start.Add(2 * time.Minute).Unix(), State: &sketch.State{Count: 4}}
	write(t, r, m, []sketch.Minute{late})
	if err := r.roll(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	r.done(w)
	if d := m.dirtyMarkers(); len(d) != 2 {
		t.Fatalf("markers %v after a change during the pass, want the hour and the day dirty", d)
	}
	c.Add(time.Minute)
	drain(t, r)
	if d := m.dirtyMarkers(); len(d) != 0 {
		t.Fatalf("markers %v", d)
	}
	checkRollups(t, m)
}

// TestSweepFinishesAbandonedWork: markers another node left dirty (it
// wrote minutes and stopped) are found by a new owner's sweep and rolled.
func TestSweepFinishesAbandonedWork(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{t: start.Add(3 * 24 * time.Hour)}
	m := newMem()
	old := newRoller(t, m, c)
	for _, p := range genMinutes(rng, start, 2, []string{"a", "b"}) {
		write(t, old, m, []sketch.Minute{p})
	}
	// The old node is gone; "b" moved to the new node, which owns only b.
	nw := New(Config{Now: c.Now, Owns: func(c string) bool { return c == "b" }}, m, prometheus.NewRegistry(), nil)
	n, err := nw.Sweep(context.Background())
	if err != nil || n == 0 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	drain(t, nw)
	for _, d := range m.dirtyMarkers() {
		if d[len("hour "):][0] != 'a' && d[len("day "):][0] != 'a' {
			t.Fatalf("b's marker %q still dirty", d)
		}
	}
	if len(m.dirtyMarkers()) == 0 {
		t.Fatal("a's markers were rolled by a node that does not own a")
	}
}

// TestSourceAnswersEqualMinutes: every question the API asks, answered
// from rollups where the markers allow, folds to the answer from minutes
// alone, including while some periods are dirty.
func TestSourceAnswersEqualMinutes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{t: start.Add(6 * 24 * time.Hour)}
	m := newMem()
	r := newRoller(t, m, c)
	campaigns := []string{"a", "b", "c"}
	for _, p := range genMinutes(rng, start, 5, campaigns) {
		write(t, r, m, []sketch.Minute{p})
	}
	c.Add(time.Minute)
	drain(t, r)
	// Late data, not rolled yet: day 2 of "b" and an hour of "c" dirty.
	late := []sketch.Minute{
		{Series: sketch.Series{Campaign: "b", Type: "click"}, Minute: start.Add(2*24*time.Hour + 5*time.Hour).Unix(), State: &sketch.State{Count: 7}},
		{Series: sketch.Series{Campaign: "c", Type: "pageview"}, Minute: start.Add(3*24*time.Hour + 23*time.Hour + 59*time.Minute).Unix(), State: &sketch.State{Count: 2}},
	}
	late[0].State.AddVisitor(99999)
	write(t, r, m, late)
	if len(m.dirtyMarkers()) != 4 {
		t.Fatalf("dirty %v", m.dirtyMarkers())
	}
	src := &Source{Reader: m, Now: c.Now}
	minutesOnly := minutesSource{m}
	cases := []api.Query{
		{Campaigns: []string{"a"}, From: start, To: start.Add(5 * 24 * time.Hour)},
		{Campaigns: []string{"b"}, From: start.Add(90 * time.Minute), To: start.Add(4*24*time.Hour + 30*time.Second), Step: 24 * time.Hour},
		{AllCampaigns: true, From: start.Add(-time.Hour), To: start.Add(5 * 24 * time.Hour), Step: time.Hour},
		{Campaigns: []string{"a", "b", "c"}, From: start.Add(3 * time.Hour), To: start.Add(4 * 24 * time.Hour), Step: 6 * time.Hour, Type: "click"},
		{AllCampaigns: true, From: start.Add(-24 * time.Hour), To: start.Add(5 * 24 * time.Hour), Splits: []time.Time{start.Add(2*24*time.Hour + 90*time.Minute)}},
		{Campaigns: []string{"c"}, From: start, To: start.Add(5 * 24 * time.Hour), Step: 5 * time.Minute},
		{Campaigns: []string{"c"}, From: start, To: start.Add(5 * 24 * time.Hour), Step: 90 * time.Minute},
	}
	for i, q := range cases {
		want := fold(t, minutesOnly, q)
		m.mu.Lock()
		m.queries = nil
		m.mu.Unlock()
		got := fold(t, src, q)
		if !equalFolds(got, want) {
			t.Fatalf("case %d (%+v): from rollups %v\nfrom minutes %v", i, q, got, want)
		}
		m.mu.Lock()
		res := map[influx.Resolution]int{}
		for _, rq := range m.queries {
			res[rq.Resolution]++
		}
		m.mu.Unlock()
		stepSec := int64(q.Step / time.Second)
		if (stepSec == 0 || stepSec%86400 == 0) && res[influx.Days] == 0 {
			t.Fatalf("case %d read no daily rollups: %v", i, res)
		}
		if stepSec != 0 && stepSec%3600 != 0 && (res[influx.Days] != 0 || res[influx.Hours] != 0) {
			t.Fatalf("case %d with step %s read rollups: %v", i, q.Step, res)
		}
	}
}

// minutesSource answers from minutes alone: the reference answer.
type minutesSource struct{ m *memStore }

func (s minutesSource) EachMinute(ctx context.Context, q api.Query, fn func(sketch.Minute) error) error {
	return s.m.EachMinute(ctx, influx.MinuteQuery{Campaigns: q.Campaigns, AllCampaigns: q.AllCampaigns, From: q.From, To: q.To,
		Source: q.Source, Type: q.Type}, fn)
}

// fold answers q as the API's grid does: KPIs per (bucket, side of each
// split, campaign), buckets by Step, uniques handed over still stored
// and no value sketches where the source can (api.Query.StoredUniques and
// NoQuantiles, as the API asks).
func fold(t testing.TB, s api.Source, q api.Query) map[string]kpi.KPIs {
	t.Helper()
	q.StoredUniques, q.NoQuantiles = true, true
	return foldAs(t, s, q)
}

// foldAs is fold with q's StoredUniques as given.
func foldAs(t testing.TB, s api.Source, q api.Query) map[string]kpi.KPIs {
	t.Helper()
	accs := map[string]*kpi.Accumulator{}
	err := s.EachMinute(context.Background(), q, func(p sketch.Minute) error {
		b := int64(0)
		if st := int64(q.Step / time.Second); st > 0 {
			b = floor(p.Minute, st)
		}
		side := ""
		for _, sp := range q.Splits {
			if p.Minute < ceilSec(sp) {
				side += "<"
			}
		}
		key := fmt.Sprintf("%d/%s/%s", b, side, campaignKey(p.Series.Campaign))
		acc := accs[key]
		if acc == nil {
			acc = &kpi.Accumulator{}
			accs[key] = acc
		}
		return acc.Add(p)
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]kpi.KPIs{}
	for k, a := range accs {
		out[k], _ = a.Result()
	}
	return out
}

func equalFolds(a, b map[string]kpi.KPIs) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPlanReadsLittle: a year of days on one campaign, one day dirty, is
// a handful of queries, not one per day.
func TestPlanReadsLittle(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	m := newMem()
	for d := range 365 {
		start := now.Add(-time.Duration(d+1) * 24 * time.Hour).Truncate(24 * time.Hour)
		m.markers[influx.Days][period{"a", start.Unix()}] = &influx.Marker{Campaign: "a", Start: start.Unix(), Changed: 5, Rolled: 5}
	}
	today := now.Truncate(24 * time.Hour).Unix()
	m.markers[influx.Days][period{"a", today}] = &influx.Marker{Campaign: "a", Start: today, Changed: 9, Rolled: 5}
	m.markers[influx.Hours][period{"a", today + 11*3600}] = &influx.Marker{Campaign: "a", Start: today + 11*3600, Changed: 9, Rolled: 5}
	var zero int64
	m.since = &zero
	src := &Source{Reader: m, Now: func() time.Time { return now }}
	q := api.Query{Campaigns: []string{"a"}, From: now.Add(-365 * 24 * time.Hour), To: now, Step: 24 * time.Hour}
	if err := src.EachMinute(context.Background(), q, func(sketch.Minute) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rq := range m.queries {
		got = append(got, fmt.Sprintf("%s %s..%s", rq.Resolution, rq.From.UTC().Format("01-02T15:04"), rq.To.UTC().Format("01-02T15:04")))
	}
	// The first day's partial hour in minutes and its other hours, the
	// days, and today: its clean hours, the dirty one in minutes.
	if len(got) > 6 {
		t.Fatalf("%d queries for a year: %v", len(got), got)
	}
	days := 0
	for _, rq := range m.queries {
		if rq.Resolution == influx.Days {
			days++
		}
	}
	if days != 1 {
		t.Fatalf("queries %v: want one daily query", got)
	}
}

// TestMinutesBeforeRollupsExisted: minutes an older version stored have
// no markers. The first Init puts the since mark after them, so answers
// about their time come from minutes, while later days come from rollups;
// without the mark (a Source before any Init) only minutes answer.
func TestMinutesBeforeRollupsExisted(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	m := newMem()
	old := genMinutes(rng, start, 3, []string{"a", "b"})
	for _, p := range old {
		m.putMinute(p) // no markers: written before rollups existed
	}
	src := &Source{Reader: m}
	all := api.Query{AllCampaigns: true, From: start, To: start.Add(6 * 24 * time.Hour), Step: 24 * time.Hour}
	if got, want := fold(t, src, all), fold(t, minutesSource{m}, all); !equalFolds(got, want) {
		t.Fatalf("before any Init: %v, want %v", got, want)
	}
	c := &clock{t: start.Add(3*24*time.Hour + 2*time.Hour)}
	r := newRoller(t, m, c)
	if m.since == nil || *m.since != start.Add(3*24*time.Hour).Unix() {
		t.Fatalf("since mark %v, want the day after the latest minute", m.since)
	}
	for _, p := range genMinutes(rng, start.Add(3*24*time.Hour), 2, []string{"a", "b"}) {
		write(t, r, m, []sketch.Minute{p})
	}
	c.Add(3 * 24 * time.Hour)
	drain(t, r)
	m.mu.Lock()
	m.queries = nil
	m.mu.Unlock()
	src = &Source{Reader: m}
	if got, want := fold(t, src, all), fold(t, minutesSource{m}, all); !equalFolds(got, want) {
		t.Fatalf("after Init: %v, want %v", got, want)
	}
	days := 0
	for _, q := range m.queries {
		if q.Resolution == influx.Days {
			days++
			if q.From.Before(start.Add(3 * 24 * time.Hour)) {
				t.Fatalf("daily rollups read for time before the since mark: %+v", q)
			}
		}
	}
	if days == 0 {
		t.Fatal("no daily rollups read after the since mark")
	}
	// A second Init keeps the mark where it is.
	if err := r.Init(context.Background()); err != nil || *m.since != start.Add(3*24*time.Hour).Unix() {
		t.Fatalf("second Init: %v, since %d", err, *m.since)
	}
}

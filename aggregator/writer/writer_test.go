package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/ingest"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/aggregator/quarantine"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStorage records writes and refuses, for good, the points of
// campaigns in refuse; while down it fails every write as a retryable
// error would after its retries.
type fakeStorage struct {
	mu       sync.Mutex
	minutes  []sketch.Minute
	contribs []influx.ContribPoint
	refuse   map[string]string // campaign → reason
	down     bool
}

func (s *fakeStorage) WriteIsolating(_ context.Context, ms []sketch.Minute, cs []influx.ContribPoint) ([]influx.Refusal, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errors.New("influxdb unreachable")
	}
	var refused []influx.Refusal
	for _, m := range ms {
		if r, ok := s.refuse[m.Series.Campaign]; ok {
			refused = append(refused, influx.Refusal{Measurement: influx.MeasurementMinute, Series: m.Series, Minute: m.Minute, Reason: r, Err: errors.New(r)})
			continue
		}
		s.minutes = append(s.minutes, m)
	}
	for _, c := range cs {
		if r, ok := s.refuse[c.Series.Campaign]; ok {
			refused = append(refused, influx.Refusal{Measurement: influx.MeasurementContrib, Series: c.Series, Minute: c.Minute, Agent: c.Agent, Reason: r, Err: errors.New(r)})
			continue
		}
		s.contribs = append(s.contribs, c)
	}
	return refused, nil
}

func (s *fakeStorage) counts() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]uint64{}
	for _, m := range s.minutes {
		out[m.Series.Campaign] = m.State.Count // latest write wins, like InfluxDB
	}
	return out
}

// loads is ingest.Storage with nothing stored.
type loads struct{}

func (loads) LoadContributions(context.Context, time.Time, time.Time) ([]influx.ContribPoint, error) {
	return nil, nil
}
func (loads) LoadContributionsOf(context.Context, time.Time, time.Time, []string) ([]influx.ContribPoint, error) {
	return nil, nil
}
func (loads) LoadContributionsFunc(context.Context, time.Time, time.Time, func(sketch.Series) bool) ([]influx.ContribPoint, error) {
	return nil, nil
}

// fakeRouting owns campaigns named "mine-*"; the rest belong to node b.
type fakeRouting struct {
	mu        sync.Mutex
	fail      bool
	forwarded []wire.Contribution
}

func (r *fakeRouting) Owner(campaign string) (string, bool) {
	if strings.HasPrefix(campaign, "mine-") {
		return "127.0.0.1:1", true
	}
	return "127.0.0.1:2", false
}

func (r *fakeRouting) Forward(_ context.Context, addr, agent string, cs []wire.Contribution) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("owner unreachable")
	}
	if addr != "127.0.0.1:2" || agent != "edge" {
		return errors.New("forwarded to the wrong place")
	}
	r.forwarded = append(r.forwarded, cs...)
	return nil
}

type recorder struct {
	mu      sync.Mutex
	updates []live.Update
}

func (r *recorder) Publish(us []live.Update) {
	r.mu.Lock()
	r.updates = append(r.updates, us...)
	r.mu.Unlock()
}

// failingQuarantine refuses everything.
type failingQuarantine struct{}

func (failingQuarantine) Add(*quarantine.Record) (string, error) { return "", quarantine.ErrFull }
func (failingQuarantine) Stats() (int, int64, error)             { return 0, 0, nil }

type env struct {
	pipe    *ingest.Pipeline
	store   *fakeStorage
	route   *fakeRouting
	pub     *recorder
	quar    *quarantine.Dir
	w       *Writer
	reg     *prometheus.Registry
	walSize func() int64
}

func newEnv(t *testing.T, routed bool, q Quarantine) *env {
	t.Helper()
	e := &env{store: &fakeStorage{refuse: map[string]string{}}, route: &fakeRouting{}, pub: &recorder{}, reg: prometheus.NewRegistry()}
	cfg := ingest.DefaultConfig()
	cfg.Dir, cfg.Node = t.TempDir(), "a"
	pipe, err := ingest.Open(cfg, loads{}, e.reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pipe.Close() })
	if err := pipe.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.pipe = pipe
	if q == nil {
		if e.quar, err = quarantine.Open(t.TempDir(), 1<<20); err != nil {
			t.Fatal(err)
		}
		q = e.quar
	}
	wcfg := Config{Node: "a", Source: pipe, Storage: e.store, Quarantine: q, Publisher: e.pub}
	if routed {
		wcfg.Routing = e.route
	}
	if e.w, err = New(wcfg, e.reg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	e.walSize = func() int64 {
		for _, mf := range must(e.reg.Gather()) {
			if mf.GetName() == "tally_aggregator_wal_bytes" {
				return int64(mf.GetMetric()[0].GetGauge().GetValue())
			}
		}
		return -1
	}
	return e
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var minute = time.Now().Truncate(time.Minute).Unix()

func contribution(t *testing.T, campaign, typ string, cid, count uint64, visitors ...uint64) wire.Contribution {
	t.Helper()
	st := sketch.State{Count: count}
	for _, v := range visitors {
		st.AddVisitor(v*0x9e3779b97f4a7c15 | 1)
	}
	enc, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// The version grows with the count: a later send of a larger count
	// replaces the earlier one.
	return wire.Contribution{Series: sketch.Series{Campaign: campaign, Source: fmt.Sprint(cid), Type: typ, Region: "eu"}, Minute: minute,
		CID: cid, Version: count, State: enc}
}

func (e *env) send(t *testing.T, cs ...wire.Contribution) {
	t.Helper()
	b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "edge", Region: "eu", Seq: 1, Contributions: cs}
	if ack := e.pipe.HandleBatch(context.Background(), wire.Peer{CommonName: "edge", ALPN: wire.ALPN}, b); ack.Status != wire.AckOK {
		t.Fatalf("ack %+v", ack)
	}
}

// TestOwnedWrittenOthersHandedOver: minutes of owned campaigns go to
// storage, the others to their owner, never to storage; a hand-over that
// fails is retried and holds the log only until it succeeds.
func TestOwnedWrittenOthersHandedOver(t *testing.T) {
	e := newEnv(t, true, nil)
	e.route.fail = true
	e.send(t, contribution(t, "mine-1", "click", 1, 5), contribution(t, "theirs-1", "click", 2, 7))
	if err := e.w.Round(context.Background()); err == nil {
		t.Fatal("Round succeeded although the hand-over failed")
	}
	if c := e.store.counts(); len(c) != 1 || c["mine-1"] != 5 {
		t.Fatalf("written %v; want only mine-1", c)
	}
	if e.store.contribs[0].Node != "a" {
		t.Fatalf("contribution point written without the node: %+v", e.store.contribs[0])
	}
	if e.walSize() == 0 {
		t.Fatal("write-ahead log released while a hand-over was outstanding")
	}
	if _, dirty, _ := e.pipe.Store().Counts(); dirty != 1 {
		t.Fatalf("%d dirty minutes, want the one not handed over", dirty)
	}
	if len(e.pub.updates) != 1 || e.pub.updates[0].Campaign != "mine-1" || e.pub.updates[0].KPIs.Clicks != 5 {
		t.Fatalf("published %+v; want mine-1 with 5 clicks", e.pub.updates)
	}
	e.route.mu.Lock()
	e.route.fail = false
	e.route.mu.Unlock()
	if err := e.w.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(e.route.forwarded) != 1 || e.route.forwarded[0].Series.Campaign != "theirs-1" || e.route.forwarded[0].State.Count != 7 {
		t.Fatalf("forwarded %+v", e.route.forwarded)
	}
	if _, ok := e.store.counts()["theirs-1"]; ok {
		t.Fatal("a merged point of a campaign owned elsewhere was written")
	}
	if _, dirty, _ := e.pipe.Store().Counts(); dirty != 0 {
		t.Fatal("minutes still dirty after a successful round")
	}
}

// TestRefusedPointsAreQuarantinedAndNothingStalls: a series-minute that
// storage refuses for good is set aside with its reason and all its
// contributions, counted, and marked written: every other minute is
// written, the log is released, and the node reports degraded (not
// down). Later rounds are not held back.
func TestRefusedPointsAreQuarantinedAndNothingStalls(t *testing.T) {
	e := newEnv(t, false, nil)
	e.store.refuse["poison"] = influx.ReasonRetention
	e.send(t, contribution(t, "good", "click", 1, 3), contribution(t, "poison", "click", 2, 4), contribution(t, "poison", "click", 3, 6))
	if err := e.w.Round(context.Background()); err != nil {
		t.Fatalf("Round: %v", err)
	}
	if c := e.store.counts(); c["good"] != 3 || len(c) != 1 {
		t.Fatalf("written %v, want good only", c)
	}
	entries, err := e.quar.List()
	if err != nil || len(entries) != 2 {
		t.Fatalf("quarantine holds %d records (%v), want the 2 refused series-minutes", len(entries), err)
	}
	var events uint64
	for _, en := range entries {
		if en.Err != nil || en.Record.Reason != influx.ReasonRetention || en.Record.Series.Campaign != "poison" {
			t.Fatalf("record %+v", en)
		}
		events += en.Record.Count()
	}
	if events != 10 {
		t.Fatalf("quarantine holds %d events, want the 10 refused", events)
	}
	if got := testutil.ToFloat64(e.w.m.quarantined.WithLabelValues(influx.ReasonRetention)); got != 2 {
		t.Fatalf("quarantined counter %v, want 2", got)
	}
	if _, dirty, _ := e.pipe.Store().Counts(); dirty != 0 {
		t.Fatalf("%d minutes still dirty: a refusal held them", dirty)
	}
	var d interface{ Degraded() bool }
	if err := e.w.Health(); !errors.As(err, &d) {
		t.Fatalf("Health = %v, want degraded", err)
	}
	// The log was released behind the refused minutes: new data goes
	// through and the earlier records are gone once the segment rolls.
	e.send(t, contribution(t, "good", "click", 1, 9))
	if err := e.w.Round(context.Background()); err != nil || e.store.counts()["good"] != 9 {
		t.Fatalf("next round: %v, good = %d", err, e.store.counts()["good"])
	}
	if rp := e.pipe.Store().ReleasePoint(1 << 62); rp != 1<<62 {
		t.Fatalf("release point %d: something still holds the log", rp)
	}
}

// TestQuarantineFailingKeepsTheMinute: when the quarantine cannot take a
// refused series-minute, it stays dirty and holds the log (nothing is
// dropped); other minutes are written.
func TestQuarantineFailingKeepsTheMinute(t *testing.T) {
	e := newEnv(t, false, failingQuarantine{})
	e.store.refuse["poison"] = influx.ReasonValuesPerTag
	e.send(t, contribution(t, "good", "click", 1, 3), contribution(t, "poison", "click", 2, 4))
	if err := e.w.Round(context.Background()); err == nil {
		t.Fatal("Round succeeded although the quarantine refused")
	}
	if c := e.store.counts(); c["good"] != 3 {
		t.Fatalf("written %v, want good", c)
	}
	if _, dirty, _ := e.pipe.Store().Counts(); dirty != 1 {
		t.Fatalf("%d dirty minutes, want the refused one kept", dirty)
	}
	if rp := e.pipe.Store().ReleasePoint(1 << 62); rp == 1<<62 {
		t.Fatal("the log is released past a minute that is neither written nor set aside")
	}
	var d interface{ Degraded() bool }
	if err := e.w.Health(); !errors.As(err, &d) {
		t.Fatalf("Health = %v, want degraded", err)
	}
}

// TestStorageDownMarksNothing: a round whose write fails marks nothing,
// keeps the log, reports the node not ready, and the next round after
// recovery writes everything.
func TestStorageDownMarksNothing(t *testing.T) {
	e := newEnv(t, false, nil)
	e.store.down = true
	e.send(t, contribution(t, "c", "click", 1, 3))
	if err := e.w.Round(context.Background()); err == nil {
		t.Fatal("Round succeeded with storage down")
	}
	var d interface{ Degraded() bool }
	if err := e.w.Health(); err == nil || errors.As(err, &d) {
		t.Fatalf("Health = %v, want down (not degraded)", err)
	}
	if _, dirty, _ := e.pipe.Store().Counts(); dirty != 1 {
		t.Fatal("a failed write marked the minute written")
	}
	e.store.mu.Lock()
	e.store.down = false
	e.store.mu.Unlock()
	if err := e.w.Round(context.Background()); err != nil || e.store.counts()["c"] != 3 || e.w.Health() != nil {
		t.Fatalf("after recovery: %v, counts %v, health %v", err, e.store.counts(), e.w.Health())
	}
}

// TestLiveViewEqualsFullCompute: the live updates a round publishes,
// built from the incremental campaign-minute unions, equal KPIs computed
// from every series' merged state.
func TestLiveViewEqualsFullCompute(t *testing.T) {
	e := newEnv(t, false, nil)
	var cs []wire.Contribution
	for i := range 30 {
		typ := []string{"impression", "click", "conversion", "cost", "pageview"}[i%5]
		var visitors []uint64
		for v := range 20 {
			visitors = append(visitors, uint64(i*7+v*13)%97)
		}
		cs = append(cs, contribution(t, "live", typ, uint64(i+1), uint64(i+1), visitors...))
	}
	e.send(t, cs...)
	if err := e.w.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
	want, _, err := kpi.Compute(e.store.minutes)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.pub.updates) != 1 || e.pub.updates[0].KPIs != want {
		t.Fatalf("published %+v, want %+v", e.pub.updates, want)
	}
}

// TestRunWritesAndStops: Run writes on its interval and a final round at
// the end, and leaves no goroutine behind.
func TestRunWritesAndStops(t *testing.T) {
	e := newEnv(t, false, nil)
	e.w.cfg.Interval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.w.Run(ctx, time.Second) }()
	e.send(t, contribution(t, "c", "click", 1, 3))
	deadline := time.Now().Add(10 * time.Second)
	for e.store.counts()["c"] != 3 {
		if time.Now().After(deadline) {
			t.Fatal("Run never wrote")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.send(t, contribution(t, "c", "click", 1, 8))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e.store.counts()["c"] != 8 {
		t.Fatalf("final round wrote %d, want 8", e.store.counts()["c"])
	}
}

// Package writer is the aggregator's write rounds: every interval it
// takes the merge store's dirty minutes (a cut of the accept path), writes
// those of campaigns this node owns to InfluxDB, hands the others to
// their owners, publishes the live view of what it wrote, and releases
// the write-ahead log before the earliest change not yet written.
//
// # Failures, by class
//
//   - A write InfluxDB cannot take now (down, slow, 5xx, 429; or 401, 403,
//     404, which a fixed configuration cures): nothing of the round is
//     marked written, the log keeps it, the next round tries again, and
//     Health reports storage failing.
//   - A point InfluxDB refuses for good (400, 413, 422: too large, beyond
//     the retention policy, max-values-per-tag, a field type conflict):
//     influx.Writer.WriteIsolating finds exactly the refused points and
//     writes every other one. The series-minute of each refused point is
//     set aside in the quarantine with its reason and every agent's
//     contributions, counted, and marked written, so the log behind it is
//     released. Health reports degraded while the quarantine holds
//     records; `tally-aggregator quarantine replay` sends them back once
//     the cause is fixed.
//   - A series-minute the quarantine cannot take (full, or its disk
//     failing) stays dirty: the log keeps it and the next round tries
//     again; nothing is dropped.
//   - A hand-over the owner does not acknowledge: those series-minutes stay
//     dirty and are handed over again next round; the rest are done.
//
// Because the log is released per change (merge.Store.ReleasePoint), one
// minute that cannot be written holds back only the log from its own
// first change, never the other minutes' writes.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/aggregator/merge"
	"github.com/tally-edge/tally/aggregator/quarantine"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Source is the accept path's side of a round (ingest.Pipeline).
type Source interface {
	// Cut returns the dirty minutes and the write-ahead log position they
	// cover; foreign says which campaigns are owned elsewhere.
	Cut(foreign func(campaign string) bool) (*merge.Snapshot, uint64, error)
	// Release frees the log before the earliest change not yet written,
	// and at most before ceiling.
	Release(ceiling uint64) error
	// Store is the merge store the cut came from.
	Store() *merge.Store
}

// Storage writes merged minutes and contribution points, isolating the
// points it refuses for good (influx.Writer).
type Storage interface {
	WriteIsolating(ctx context.Context, minutes []sketch.Minute, contribs []influx.ContribPoint) ([]influx.Refusal, error)
}

// Routing says who owns a campaign and hands contributions to owners. A
// nil Routing is a single node owning everything.
type Routing interface {
	// Owner returns the QUIC address of the node that owns campaign and
	// whether that is this node.
	Owner(campaign string) (addr string, self bool)
	// Forward hands one agent's contributions to the node at addr and
	// returns nil only when that node acknowledged them as durable.
	Forward(ctx context.Context, addr, agent string, cs []wire.Contribution) error
}

// Rollups keeps the hourly and daily rollups of the minutes written
// (package rollup). Changing runs before the minutes are written and
// must make the change durable (markers in storage), so that a node that
// fails after the write still has the rollups recomputed by whoever owns
// the campaign next; Changed queues the recomputation once the minutes
// are written. Both are called from the round's goroutine.
type Rollups interface {
	Changing(ctx context.Context, minutes []sketch.Minute) error
	Changed(minutes []sketch.Minute)
}

// Quarantine keeps refused series-minutes (quarantine.Dir).
type Quarantine interface {
	Add(r *quarantine.Record) (string, error)
	Stats() (records int, bytes int64, err error)
}

// Config configures a Writer.
type Config struct {
	// Node is this node's name, written with its contribution points.
	Node string
	// Interval is the period of rounds (default 1s); Timeout bounds one
	// round's storage writes and hand-overs (default 30s).
	Interval, Timeout time.Duration
	// Lateness is how long an untouched minute stays in memory (default
	// 1h).
	Lateness time.Duration
	// HandOverParallel bounds concurrent hand-overs (default 8).
	HandOverParallel int

	Source     Source
	Storage    Storage
	Routing    Routing
	Quarantine Quarantine
	// Publisher, if set, receives the live view of every campaign-minute
	// a round wrote.
	Publisher live.Publisher
	// Rollups, if set, is told of every minute a round writes.
	Rollups Rollups
}

// Writer runs write rounds. Run owns its goroutine; Round may be called
// directly when Run is not running (tests, the final round).
type Writer struct {
	cfg Config
	log *slog.Logger

	mu            sync.Mutex // one round at a time
	storageErr    atomic.Pointer[string]
	quarantineErr atomic.Pointer[string]
	lastWrite     atomic.Int64
	failedRounds  int // consecutive failed rounds of Run, for its log

	m writerMetrics
}

type writerMetrics struct {
	rounds       *prometheus.CounterVec
	roundSeconds prometheus.Histogram
	points       prometheus.Counter
	handedOver   prometheus.Counter
	quarantined  *prometheus.CounterVec
	published    prometheus.Counter
}

// New returns a Writer registering its metrics with reg.
func New(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Writer, error) {
	if cfg.Source == nil || cfg.Storage == nil || cfg.Quarantine == nil {
		return nil, errors.New("writer: Source, Storage and Quarantine are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Lateness <= 0 {
		cfg.Lateness = time.Hour
	}
	if cfg.HandOverParallel <= 0 {
		cfg.HandOverParallel = 8
	}
	w := &Writer{cfg: cfg, log: logger.With("component", "writer")}
	w.m = writerMetrics{
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_influx_writes_total",
			Help: "Write rounds by result (ok, error: storage failed and the round is retried)."}, []string{"result"}),
		roundSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_aggregator_influx_write_duration_seconds",
			Help: "Time of one successful write to InfluxDB.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
		points: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_minutes_written_total",
			Help: "Merged series-minutes written to InfluxDB."}),
		handedOver: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_minutes_handed_over_total",
			Help: "Series-minutes of campaigns owned elsewhere, handed to their owner instead of written."}),
		quarantined: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_quarantined_total",
			Help: "Series-minutes InfluxDB refused for good, set aside in the quarantine, by reason."}, []string{"reason"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_live_updates_total",
			Help: "Campaign-minute updates this node published as their owner."}),
	}
	reg.MustRegister(w.m.rounds, w.m.roundSeconds, w.m.points, w.m.handedOver, w.m.quarantined, w.m.published)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_quarantine_records",
		Help: "Series-minutes waiting in the quarantine for `tally-aggregator quarantine replay`."}, func() float64 {
		n, _, _ := cfg.Quarantine.Stats()
		return float64(n)
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_quarantine_bytes",
		Help: "Bytes the quarantine holds."}, func() float64 {
		_, b, _ := cfg.Quarantine.Stats()
		return float64(b)
	}))
	return w, nil
}

// Run writes every Interval until ctx is done, then runs a final round
// within drainTimeout and returns its error.
func (w *Writer) Run(ctx context.Context, drainTimeout time.Duration) error {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	lastEvict := time.Now()
	store := w.cfg.Source.Store()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
			defer cancel()
			if err := w.Round(dctx); err != nil {
				return fmt.Errorf("final write: %w (the write-ahead log keeps it for the next start)", err)
			}
			return nil
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
			err := w.Round(rctx)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				// The first failure and every thirtieth in a row: an outage
				// of minutes must not flood the log.
				if w.failedRounds++; w.failedRounds == 1 || w.failedRounds%30 == 0 {
					w.log.Warn("write round incomplete; the write-ahead log holds the rest, next round retries", "reason", "write_round_failed",
						"failed_rounds", w.failedRounds, "err", err)
				}
			case err == nil && w.failedRounds > 0:
				w.log.Info("write rounds complete again", "failed_rounds", w.failedRounds)
				w.failedRounds = 0
			}
			if time.Since(lastEvict) > time.Minute {
				if n := store.Evict(time.Now().Add(-w.cfg.Lateness)); n > 0 {
					w.log.Debug("evicted idle minutes", "minutes", n)
				}
				store.AgeLive()
				lastEvict = time.Now()
			}
		}
	}
}

// ownership caches Owner per campaign for one round.
type ownership struct {
	r     Routing
	addrs map[string]string
	self  map[string]bool
}

func (o *ownership) owner(campaign string) (string, bool) {
	if o.r == nil {
		return "", true
	}
	if self, ok := o.self[campaign]; ok {
		return o.addrs[campaign], self
	}
	addr, self := o.r.Owner(campaign)
	o.addrs[campaign], o.self[campaign] = addr, self
	return addr, self
}

// Round runs one write round (see the package doc). The error says what
// did not complete; what did is marked written either way.
func (w *Writer) Round(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	own := &ownership{r: w.cfg.Routing, addrs: map[string]string{}, self: map[string]bool{}}
	var ownMu sync.Mutex // Cut calls foreign under the store's lock; hand-overs read own concurrently
	isOwned := func(campaign string) bool {
		ownMu.Lock()
		defer ownMu.Unlock()
		_, self := own.owner(campaign)
		return self
	}
	src := w.cfg.Source
	sn, at, err := src.Cut(func(c string) bool { return !isOwned(c) })
	if err != nil {
		return err
	}
	// Writing and handing over go on at once: an owner waiting for its
	// contributions should not wait for this node's storage writes.
	var (
		errs   []error
		errsMu sync.Mutex
		wg     sync.WaitGroup
	)
	fail := func(err error) {
		errsMu.Lock()
		errs = append(errs, err)
		errsMu.Unlock()
	}
	if sn.Len() > 0 {
		owned := sn.Subset(func(k sketch.Key) bool { return isOwned(k.Series.Campaign) })
		foreign := sn.Subset(func(k sketch.Key) bool { return !isOwned(k.Series.Campaign) })
		if foreign.Len() > 0 {
			wg.Go(func() {
				if err := w.handOver(ctx, foreign, func(c string) string {
					ownMu.Lock()
					defer ownMu.Unlock()
					addr, _ := own.owner(c)
					return addr
				}); err != nil {
					fail(err)
				}
			})
		}
		if owned.Len() > 0 {
			if err := w.write(ctx, owned); err != nil {
				fail(err)
			}
		}
		wg.Wait()
	}
	if err := src.Release(at); err != nil {
		w.log.Warn("releasing write-ahead log segments failed; retrying next round", "reason", "wal_release_failed", "err", err)
	}
	return errors.Join(errs...)
}

// write writes the owned part of a round, sets aside what storage
// refuses for good, and publishes the live view of what it wrote.
func (w *Writer) write(ctx context.Context, sn *merge.Snapshot) error {
	start := time.Now()
	store := w.cfg.Source.Store()
	contribs := make([]influx.ContribPoint, 0, len(sn.Contribs))
	for _, c := range sn.Contribs {
		p := influx.ContribPoint{Series: c.Key.Series, Minute: c.Key.Minute, Agent: c.Agent, Node: w.cfg.Node, Entries: c.Entries, Count: c.Count}
		if influx.ExactSeriesNeeded(c.Key.Series) {
			// Tags cannot hold this series: store the contributions with
			// it, from their wire form.
			acs, err := store.ContributionsOf(c.Key)
			if err != nil {
				return err
			}
			p.Entries, p.Count = nil, 0
			for _, ac := range acs {
				if ac.Agent == c.Agent {
					p.Contribs = ac.Contribs
				}
			}
			if len(p.Contribs) == 0 {
				continue
			}
		}
		contribs = append(contribs, p)
	}
	if w.cfg.Rollups != nil {
		if err := w.cfg.Rollups.Changing(ctx, sn.Minutes); err != nil {
			w.m.rounds.WithLabelValues("error").Inc()
			msg := err.Error()
			w.storageErr.Store(&msg)
			return fmt.Errorf("rollup markers: %w", err)
		}
	}
	refused, err := w.cfg.Storage.WriteIsolating(ctx, sn.Minutes, contribs)
	if err != nil {
		w.m.rounds.WithLabelValues("error").Inc()
		msg := err.Error()
		w.storageErr.Store(&msg)
		return err
	}
	w.m.rounds.WithLabelValues("ok").Inc()
	w.m.roundSeconds.Observe(time.Since(start).Seconds())
	w.storageErr.Store(nil)
	w.lastWrite.Store(time.Now().UnixNano())

	// Each refused series-minute goes to the quarantine once, with the
	// first refusal that named it.
	held := map[sketch.Key]bool{}
	var qerr error
	seen := map[sketch.Key]bool{}
	reasons := map[string]int{}
	for _, rf := range refused {
		k := rf.Key()
		if seen[k] {
			continue
		}
		seen[k] = true
		if err := w.setAside(store, rf); err != nil {
			held[k] = true
			qerr = err
			continue
		}
		reasons[rf.Reason]++
	}
	if n := len(seen) - len(held); n > 0 {
		// One line per round, however many were refused.
		w.log.Warn("InfluxDB refused points for good; their series-minutes are in the quarantine (tally-aggregator quarantine list)",
			"reason", "quarantined", "series_minutes", n, "refusals", reasons, "first", refused[0].Err)
	}
	if qerr != nil {
		msg := qerr.Error()
		w.quarantineErr.Store(&msg)
		w.log.Error("cannot set refused minutes aside; they stay dirty and the write-ahead log keeps them", "reason", "quarantine_failed",
			"minutes", len(held), "err", qerr)
	} else {
		w.quarantineErr.Store(nil)
	}
	done := sn
	if len(held) > 0 {
		done = sn.Subset(func(k sketch.Key) bool { return !held[k] })
	}
	store.MarkWritten(done)
	w.m.points.Add(float64(done.Len() - len(seen) + len(held)))
	if w.cfg.Rollups != nil {
		w.cfg.Rollups.Changed(done.Minutes)
	}
	w.publish(store, done)
	if qerr != nil {
		return fmt.Errorf("quarantine: %w", qerr)
	}
	return nil
}

// setAside quarantines the series-minute of a refusal.
func (w *Writer) setAside(store *merge.Store, rf influx.Refusal) error {
	k := rf.Key()
	acs, err := store.ContributionsOf(k)
	if err != nil {
		return err
	}
	rec := &quarantine.Record{Time: time.Now().UTC(), Node: w.cfg.Node, Reason: rf.Reason, Measurement: rf.Measurement,
		Agent: rf.Agent, Series: k.Series, Minute: k.Minute}
	if rf.Err != nil {
		rec.Error = rf.Err.Error()
	}
	for _, ac := range acs {
		rec.Contribs = append(rec.Contribs, quarantine.AgentContribs{Agent: ac.Agent, Contribs: ac.Contribs})
	}
	name, err := w.cfg.Quarantine.Add(rec)
	if err != nil {
		return fmt.Errorf("set aside %s minute %d: %w", k.Series, k.Minute, err)
	}
	w.m.quarantined.WithLabelValues(rf.Reason).Inc()
	w.log.Debug("series-minute set aside", "refusal", rf.Reason, "measurement", rf.Measurement, "campaign", k.Series.Campaign,
		"minute", k.Minute, "record", name, "events", rec.Count())
	return nil
}

// publish sends the live view (what the store holds) of every
// campaign-minute the written snapshot touched.
func (w *Writer) publish(store *merge.Store, sn *merge.Snapshot) {
	if w.cfg.Publisher == nil || sn.Len() == 0 {
		return
	}
	seen := map[merge.CampaignMinute]bool{}
	var cms []merge.CampaignMinute
	for _, m := range sn.Minutes {
		cm := merge.CampaignMinute{Campaign: m.Series.Campaign, Minute: m.Minute}
		if !seen[cm] {
			seen[cm] = true
			cms = append(cms, cm)
		}
	}
	var updates []live.Update
	err := store.CampaignView(cms, func(cm merge.CampaignMinute, series []sketch.Minute, uniques uint64) {
		acc := kpi.Accumulator{SkipUniques: true}
		for _, m := range series {
			_ = acc.Add(m) // cannot fail without uniques
		}
		k, _ := acc.Result()
		k.Uniques = uniques
		updates = append(updates, live.Update{Campaign: cm.Campaign, Minute: cm.Minute, KPIs: k})
	})
	if err != nil {
		w.log.Error("cannot compute live updates", "reason", "live_view_failed", "err", err)
		return
	}
	if len(updates) > 0 {
		w.m.published.Add(float64(len(updates)))
		w.cfg.Publisher.Publish(updates)
	}
}

// handOver forwards the contributions of campaigns other nodes own to
// those nodes. What they acknowledge is marked written; the rest stays
// dirty for the next round.
func (w *Writer) handOver(ctx context.Context, sn *merge.Snapshot, addrOf func(campaign string) string) error {
	type dest struct{ addr, agent string }
	groups := map[dest][]wire.Contribution{}
	keysOf := map[dest][]sketch.Key{}
	for _, c := range sn.Contribs {
		d := dest{addrOf(c.Key.Series.Campaign), c.Agent}
		groups[d] = append(groups[d], c.Contribs...)
		keysOf[d] = append(keysOf[d], c.Key)
	}
	var (
		mu     sync.Mutex
		failed = map[sketch.Key]bool{}
		errs   []error
		wg     sync.WaitGroup
		sem    = make(chan struct{}, w.cfg.HandOverParallel)
	)
	for d, cs := range groups {
		if d.agent == merge.FoldedAgent {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			err := w.cfg.Routing.Forward(ctx, d.addr, d.agent, cs)
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			for _, k := range keysOf[d] {
				failed[k] = true
			}
		})
	}
	wg.Wait()
	done := sn.Subset(func(k sketch.Key) bool { return !failed[k] })
	w.cfg.Source.Store().MarkWritten(done)
	w.m.handedOver.Add(float64(done.Len()))
	if len(errs) > 0 {
		return fmt.Errorf("hand over to owners (%d of %d series-minutes wait for the next round): %w", sn.Len()-done.Len(), sn.Len(), errors.Join(errs...))
	}
	return nil
}

// DegradedError reports a node that serves and takes batches but needs
// attention: /readyz answers 200 with it, not 503.
type DegradedError struct{ Reason string }

// Error describes the degradation.
func (e *DegradedError) Error() string { return "degraded: " + e.Reason }

// Degraded marks the error as a degradation, not an outage.
func (e *DegradedError) Degraded() bool { return true }

// Health reports the writer's state: nil when healthy; an error when
// InfluxDB writes fail (the data is safe in the log, but nothing reaches
// storage); a *DegradedError when refused points wait in the quarantine
// or the quarantine itself fails.
func (w *Writer) Health() error {
	if msg := w.storageErr.Load(); msg != nil {
		return fmt.Errorf("InfluxDB writes failing (data is safe in the WAL): %s", *msg)
	}
	if msg := w.quarantineErr.Load(); msg != nil {
		return &DegradedError{Reason: "cannot set refused points aside (they wait in the WAL): " + *msg}
	}
	n, _, err := w.cfg.Quarantine.Stats()
	if err != nil {
		return &DegradedError{Reason: "quarantine unreadable: " + err.Error()}
	}
	if n > 0 {
		return &DegradedError{Reason: fmt.Sprintf("%d series-minutes refused by InfluxDB wait in the quarantine (tally-aggregator quarantine list)", n)}
	}
	return nil
}

package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/anomaly"
	"github.com/tally-edge/tally/aggregator/forecast"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/live"
)

// MinuteSource is the owner's merged minutes (the merge store).
type MinuteSource interface {
	// Steps returns the step of each campaign-minute asked for, from what
	// the node holds merged (a zero step for a minute it holds nothing
	// of). withUniques false leaves uniques unknown (NaN).
	Steps(campaign string, minutes []time.Time, withUniques bool) ([]Step, error)
	// Campaigns lists the campaigns with merged minutes since the time.
	Campaigns(since time.Time) []string
}

// Storage is where alerting keeps what it decided and reads history
// (influx.Writer and influx.Reader).
type Storage interface {
	WriteAlerts(ctx context.Context, alerts []influx.StoredAlert, states []influx.StoredState) error
	LoadAlerts(ctx context.Context, q influx.AlertQuery) ([]influx.StoredAlert, error)
	LoadAlertStates(ctx context.Context, campaigns []string, from, to time.Time) ([]influx.StoredState, error)
	CampaignSteps(ctx context.Context, campaigns []string, from, to time.Time, every time.Duration) ([]influx.StepTotals, error)
}

// Sender delivers alerts (notify.Notifier): Send returns how many targets
// took the alert; the caller is told of each through Done.
type Sender interface {
	Send(a alert.Alert) int
}

// EngineConfig wires an Engine.
type EngineConfig struct {
	Config
	// Node is this node's name (logs).
	Node    string
	Source  MinuteSource
	Storage Storage
	Objects *Objects
	// Publish delivers alert transitions to the stream of every node
	// (live.Fanout); Send to the notification targets (nil: none).
	Publish live.AlertPublisher
	Send    Sender
	// Clustered: the engine judges nothing until the first handoff pass
	// (DropForeign) says what this node owns. A single node owns every
	// campaign.
	Clustered bool
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Engine judges the campaigns this node owns. Run owns its goroutine;
// TakeOver and DropForeign (the handoff), Done (the notifier) and the
// read methods are safe to call from other goroutines.
type Engine struct {
	cfg EngineConfig
	log *slog.Logger
	now func() time.Time

	mu        sync.Mutex
	owned     func(campaign string) bool
	watches   map[string]*watch
	evaluator *alert.Evaluator
	objVer    uint64
	unwatched int
	// outbox holds transitions and states not yet stored, in order.
	outbox []outgoing
	// delivering counts the targets still busy with a stored transition.
	delivering map[string]*delivery
	// delivered holds transitions every target is done with, to be marked
	// so in storage.
	delivered []influx.StoredAlert
	// late holds when campaigns not watched yet were last written late.
	late map[string]time.Time

	loads chan loaded
	wake  chan struct{}
	m     engineMetrics
}

// outgoing is what one round decided for one campaign: transitions to
// store and deliver, and the detector state to store with them.
type outgoing struct {
	campaign string
	alerts   []alert.Alert
	state    *influx.StoredState
}

// delivery is a stored transition the notifier's targets are busy with:
// targets is what Send said (-1 until it returned), done how many
// reported.
type delivery struct {
	rec           influx.StoredAlert
	targets, done int
}

// watch is one campaign's detectors and the rest of its alerting state.
type watch struct {
	campaign string
	key      string // configuration the watch was built with
	mon      *anomaly.Monitor
	monCfg   anomaly.MonitorConfig
	fc       *forecast.Forecaster
	budget   *alert.Budget
	ring     ring
	// judged is the last minute judged or warmed; ready once the history
	// is loaded.
	judged  time.Time
	ready   bool
	loading bool
	// stale marks a watch taken over while it was loading: the load may
	// predate the takeover, so it is loaded again.
	stale bool
	// loadedAt is when the history was loaded; lateAt when minutes were
	// last written late (a backfill): the history is loaded once they stop
	// coming.
	loadedAt, lateAt time.Time
	// carry is what a reload keeps of the watch it replaces (nil for a
	// first load or a takeover).
	carry    *carry
	lastData time.Time
	lastPeek time.Time
	// stateDoc is the detector state last stored.
	stateDoc []byte
	// emitted holds the ids of firing transitions sent for this campaign
	// by peeks whose minute is not settled yet, with what fired.
	peeked map[string]peeked
}

// carry is what a watch this node keeps owning passes to its reload
// (late history, changed rules): the minutes it judged are not judged
// again, and its alert state goes on.
type carry struct {
	judged time.Time
	states map[anomaly.Metric]anomaly.AlertState
	peeked map[string]peeked
}

type peeked struct {
	metric anomaly.Metric
	start  time.Time
	dir    anomaly.Direction
	score  float64
}

type loaded struct {
	campaign    string
	w           *watch
	undelivered []influx.StoredAlert
	firing      []alert.Alert
	// kept is set for a reload of a watch this node keeps: nothing to
	// deliver again, the evaluator's state goes on.
	kept bool
	err  error
	took time.Duration
}

type engineMetrics struct {
	transitions  *prometheus.CounterVec
	judged       prometheus.Counter
	judgedBy     *prometheus.CounterVec
	peeks        prometheus.Counter
	storeErrors  prometheus.Counter
	redelivered  prometheus.Counter
	rebuilds     *prometheus.CounterVec
	rebuildSecs  prometheus.Histogram
	delayMinutes prometheus.Histogram
}

// NewEngine returns an engine; Run starts it.
func NewEngine(cfg EngineConfig, reg prometheus.Registerer, logger *slog.Logger) (*Engine, error) {
	if err := cfg.Config.Validate(); err != nil {
		return nil, err
	}
	if cfg.Source == nil || cfg.Storage == nil || cfg.Objects == nil {
		return nil, errors.New("alerting: Source, Storage and Objects are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ev, err := alert.NewEvaluator(cfg.Objects.Current())
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, log: logger.With("component", "alerting"), now: cfg.Now, watches: map[string]*watch{}, evaluator: ev,
		delivering: map[string]*delivery{}, late: map[string]time.Time{}, loads: make(chan loaded, 64), wake: make(chan struct{}, 1)}
	if cfg.Clustered {
		e.owned = func(string) bool { return false }
	}
	e.m = engineMetrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_alerts_total",
			Help: "Alert transitions this node decided and stored in InfluxDB, by kind, state and severity."}, []string{"kind", "state", "severity"}),
		judged: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_alert_minutes_judged_total",
			Help: "Campaign-minutes judged for good by this node's detectors and rules."}),
		judgedBy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_alert_points_judged_total",
			Help: "Metric-minutes judged for good by this node's detectors, by the baseline they were judged against: none (too little history), rolling (the last hours), seasonal (the same time of day and week)."},
			[]string{"baseline"}),
		peeks: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_alert_peeks_total",
			Help: "Judgements of campaign-minutes in progress (peeks)."}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_alert_store_errors_total",
			Help: "Failed writes of alert transitions and detector states to InfluxDB (retried; nothing is delivered before it is stored)."}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_alert_redeliveries_total",
			Help: "Stored alert transitions delivered again by this node because their previous owner had not marked them delivered."}),
		rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_alert_rebuilds_total",
			Help: "Campaigns whose detectors were rebuilt from InfluxDB (start, takeover, configuration change), by result."}, []string{"result"}),
		rebuildSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_aggregator_alert_rebuild_seconds",
			Help: "Time to rebuild one campaign's detectors from InfluxDB.", Buckets: prometheus.ExponentialBuckets(0.01, 3, 9)}),
		delayMinutes: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_aggregator_alert_delay_seconds",
			Help: "Time from an alert's start minute to its transition being stored.", Buckets: prometheus.ExponentialBuckets(15, 2, 8)}),
	}
	reg.MustRegister(e.m.transitions, e.m.judged, e.m.judgedBy, e.m.peeks, e.m.storeErrors, e.m.redelivered, e.m.rebuilds, e.m.rebuildSecs, e.m.delayMinutes)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_alert_campaigns_watched",
		Help: "Campaigns this node's detectors watch."}, func() float64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return float64(len(e.watches))
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_alert_campaigns_unwatched",
		Help: "Campaigns this node owns but does not watch: beyond alerts.max_campaigns."}, func() float64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return float64(e.unwatched)
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_alert_outbox",
		Help: "Alert transitions waiting to be stored in InfluxDB (and so to be delivered)."}, func() float64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		n := 0
		for _, o := range e.outbox {
			n += len(o.alerts)
		}
		return float64(n)
	}))
	return e, nil
}

// TakeOver marks the campaigns gained for a rebuild from storage
// (cluster.Rebuilder's half, called after the merge pipeline's).
func (e *Engine) TakeOver(gained func(campaign string) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for c, w := range e.watches {
		if gained(c) {
			w.ready, w.carry = false, nil
			w.stale = w.loading
		}
	}
}

// DropForeign forgets the campaigns now owned elsewhere and makes the rest
// this node's (the handoff pass's last step).
func (e *Engine) DropForeign(foreign func(campaign string) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.owned = func(c string) bool { return !foreign(c) }
	for c := range e.watches {
		if foreign(c) {
			delete(e.watches, c)
			e.evaluator.Forget(c)
			e.log.Info("stopped watching a campaign owned elsewhere now", "campaign", c)
		}
	}
}

func (e *Engine) owns(c string) bool { return e.owned == nil || e.owned(c) }

// lateQuiet is how long written history must stay unchanged before a
// watch loads it again; lateEvery is the least time between two loads of
// one campaign for late data.
const (
	lateQuiet = 30 * time.Second
	lateEvery = 5 * time.Minute
)

// Written tells the engine which campaign-minutes this node just wrote as
// their owner (the writer's live updates). A minute written more than two
// minutes and Settle after it began is late data (a backfill, an agent
// that was cut off): history the detectors have not seen. A campaign is
// loaded only once its late writes have stopped for a while, and loaded
// again then if it was loaded before them; judgements already made stand.
func (e *Engine) Written(us []live.Update) {
	now := e.now()
	late := now.Add(-2*time.Minute - e.cfg.Settle).Unix()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, u := range us {
		if u.Minute >= late {
			continue
		}
		if w := e.watches[u.Campaign]; w != nil {
			w.lateAt = now
		} else if _, ok := e.late[u.Campaign]; ok || len(e.late) < e.cfg.MaxCampaigns {
			e.late[u.Campaign] = now // a campaign not watched yet
		}
	}
}

// Done is the notifier's report that target is done with a transition
// (notify.Config.Done).
func (e *Engine) Done(a alert.Alert, target string, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := a.ID + ":" + a.State
	if d := e.delivering[k]; d != nil {
		d.done++
		e.finishLocked(k, d)
	}
}

// finishLocked marks a transition delivered once every target reported.
func (e *Engine) finishLocked(k string, d *delivery) {
	if d.targets < 0 || d.done < d.targets {
		return
	}
	delete(e.delivering, k)
	d.rec.Delivered = true
	e.delivered = append(e.delivered, d.rec)
}

// Run judges every second until ctx is done.
func (e *Engine) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, 4) // rebuilds from storage at once
	for {
		e.round(ctx, func(c string, w *watch, cfgKey string, mcfg anomaly.MonitorConfig, budget *alert.Budget) {
			kept := w.carry
			wg.Go(func() {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				defer func() { <-sem }()
				start := time.Now()
				l := e.load(ctx, c, cfgKey, mcfg, budget, kept)
				l.took = time.Since(start)
				select {
				case e.loads <- l:
				case <-ctx.Done():
				}
			})
		})
		e.flush(ctx)
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			e.flush(fctx)
			cancel()
			return
		case <-t.C:
		case l := <-e.loads:
			e.apply(l)
		case <-e.wake:
		}
	}
}

// watchKey names what a campaign's watch is built from: a change rebuilds
// it.
func watchKey(mcfg anomaly.MonitorConfig, b *alert.Budget) string {
	k, _ := json.Marshal(struct {
		M anomaly.MonitorConfig
		B *alert.Budget
	}{mcfg, b})
	return string(k)
}

// round discovers campaigns, starts rebuilds and judges what is ready.
func (e *Engine) round(ctx context.Context, startLoad func(c string, w *watch, key string, mcfg anomaly.MonitorConfig, b *alert.Budget)) {
	now := e.now()
	ver := e.cfg.Objects.Version()
	cfg := e.cfg.Objects.Current()
	campaigns := e.cfg.Source.Campaigns(now.Add(-time.Hour))
	for _, b := range cfg.Budgets {
		campaigns = append(campaigns, b.Campaign)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := ver != e.objVer
	if changed {
		if err := e.evaluator.SetConfig(cfg); err != nil {
			e.log.Error("alerting objects not valid together; keeping the previous ones", "err", err)
		}
		e.objVer = ver
	}
	e.unwatched = 0
	for _, c := range campaigns {
		if !e.owns(c) {
			continue
		}
		if _, ok := e.watches[c]; !ok {
			if len(e.watches) >= e.cfg.MaxCampaigns {
				e.unwatched++
				continue
			}
			e.watches[c] = &watch{campaign: c, peeked: map[string]peeked{}, lateAt: e.late[c]}
		}
	}
	for c, at := range e.late {
		if _, watched := e.watches[c]; watched || now.Sub(at) > lateQuiet {
			delete(e.late, c)
		}
	}
	for c, w := range e.watches {
		if !e.owns(c) {
			delete(e.watches, c)
			continue
		}
		if w.loading {
			continue
		}
		quiet := w.lateAt.IsZero() || now.Sub(w.lateAt) >= lateQuiet
		if w.ready && w.lateAt.After(w.loadedAt) && quiet && now.Sub(w.loadedAt) >= lateEvery {
			w.ready, w.carry = false, w.keep() // history written late: load it again
		}
		if !w.ready && !quiet {
			continue // history still being written: load it when it is
		}
		if !w.ready || changed {
			mcfg := cfg.AnomalyConfig(c, e.cfg.Monitor)
			var budget *alert.Budget
			if b, ok := cfg.BudgetFor(c); ok {
				budget = &b
			}
			if key := watchKey(mcfg, budget); !w.ready || key != w.key {
				// New, taken over, history written late, or its rules
				// changed: rebuild.
				if w.ready {
					w.carry = w.keep()
				}
				w.ready, w.loading = false, true
				startLoad(c, w, key, mcfg, budget)
				continue
			}
		}
		// A campaign silent for two days, with nothing firing, is dropped
		// (it comes back with its next event).
		if now.Sub(w.lastData) > 48*time.Hour && len(w.mon.AlertStates()) == 0 {
			delete(e.watches, c)
			continue
		}
		if err := e.judge(now, w, cfg); err != nil {
			e.log.Warn("judging a campaign failed; rebuilding it", "campaign", c, "err", err)
			w.ready = false
		}
	}
}

// keep is what a reload of w carries over.
func (w *watch) keep() *carry {
	if w.mon == nil {
		return nil
	}
	return &carry{judged: w.judged, states: w.mon.AlertStates(), peeked: maps.Clone(w.peeked)}
}

// settledBefore is the first minute not yet settled at now.
func (e *Engine) settledBefore(now time.Time) time.Time {
	return now.Add(-e.cfg.Settle).Truncate(time.Minute)
}

// judge judges the settled minutes after the last one judged, then peeks
// at the minute in progress. Called with e.mu held.
func (e *Engine) judge(now time.Time, w *watch, cfg alert.Config) error {
	end := e.settledBefore(now) // minutes before end are settled
	var minutes []time.Time
	for m := w.judged.Add(time.Minute); m.Before(end); m = m.Add(time.Minute) {
		minutes = append(minutes, m)
		if len(minutes) >= 24*60 {
			break // a day at a time
		}
	}
	out := outgoing{campaign: w.campaign}
	if len(minutes) > 0 {
		steps, err := e.cfg.Source.Steps(w.campaign, minutes, true)
		if err != nil {
			return err
		}
		judgeFrom := now.Add(-e.cfg.JudgeLag)
		for i, m := range minutes {
			s := steps[i]
			if s.Events > 0 {
				w.lastData = m
			}
			if m.Before(judgeFrom) {
				if err := w.warm(m, s); err != nil {
					return err
				}
				continue
			}
			evs, err := w.mon.Observe(m, s.Counters)
			if err != nil {
				return err
			}
			e.m.judged.Inc()
			for _, b := range []anomaly.Baseline{anomaly.NoBaseline, anomaly.Rolling, anomaly.Seasonal} {
				if n := w.mon.JudgedBy(b); n > 0 {
					e.m.judgedBy.WithLabelValues(b.String()).Add(float64(n))
				}
			}
			out.alerts = append(out.alerts, e.settle(w, m, evs)...)
			if w.fc != nil {
				_ = w.fc.Observe(m, s.Amounts())
			}
			w.ring.add(m, s)
			w.judged = m
			end := m.Add(time.Minute)
			var pacing *forecast.Pacing
			if w.fc != nil && w.budget != nil {
				if p, err := w.fc.Pacing(end, w.budget.ForecastBudget()); err == nil {
					pacing = &p
				}
			}
			out.alerts = append(out.alerts, e.evaluator.Evaluate(end, w.campaign, ringValues{&w.ring, end}, pacing)...)
		}
		doc, err := json.Marshal(storedState{Judged: w.judged, States: w.mon.AlertStates()})
		if err != nil {
			return err
		}
		if string(doc) != string(w.stateDoc) {
			out.state = &influx.StoredState{Campaign: w.campaign, Minute: w.judged, Doc: doc}
			w.stateDoc = doc
		}
	}
	// The minute in progress, by what it holds so far. The share of it
	// the merged minute covers is between what is Settle old (lo) and all
	// of it up to now (hi): see anomaly.Monitor.Peek.
	next := w.judged.Add(time.Minute)
	if e.cfg.PeekInterval > 0 && next.Equal(end) && now.Sub(w.lastPeek) >= e.cfg.PeekInterval {
		lo := float64(now.Add(-e.cfg.Settle).Sub(next)) / float64(time.Minute)
		hi := min(1, float64(now.Sub(next))/float64(time.Minute))
		if lo >= e.cfg.PeekMinShare {
			w.lastPeek = now
			steps, err := e.cfg.Source.Steps(w.campaign, []time.Time{next}, false)
			if err != nil {
				return err
			}
			evs, err := w.mon.Peek(next, steps[0].Counters, min(lo, hi), hi)
			if err != nil {
				return err
			}
			e.m.peeks.Inc()
			for _, ev := range evs {
				a := alert.FromAnomaly(w.campaign, ev, w.threshold())
				if _, dup := w.peeked[a.ID]; dup {
					continue
				}
				w.peeked[a.ID] = peeked{metric: ev.Metric, start: ev.Start, dir: ev.Direction, score: ev.Score}
				out.alerts = append(out.alerts, a)
			}
		}
	}
	if len(out.alerts) > 0 || out.state != nil {
		for i := range out.alerts {
			out.alerts[i].Silenced = cfg.Silenced(out.alerts[i], now)
		}
		e.outbox = append(e.outbox, out)
	}
	return nil
}

// settle turns a settled minute's detector events into alerts, leaving out
// firings a peek sent already, and keeps firing what a peek fired that
// the settled minute did not (a stored judgement stands). Called with
// e.mu held.
func (e *Engine) settle(w *watch, m time.Time, evs []anomaly.Event) []alert.Alert {
	var out []alert.Alert
	fired := map[string]bool{}
	for _, ev := range evs {
		a := alert.FromAnomaly(w.campaign, ev, w.threshold())
		if ev.State == anomaly.Firing {
			fired[a.ID] = true
			if _, ok := w.peeked[a.ID]; ok {
				delete(w.peeked, a.ID)
				continue
			}
		}
		out = append(out, a)
	}
	for id, p := range w.peeked {
		if p.start.After(m) {
			continue
		}
		delete(w.peeked, id)
		if fired[id] {
			continue
		}
		if err := w.mon.SetFiring(p.metric, p.dir, p.start, p.score); err != nil {
			e.log.Error("cannot keep a peeked alert firing", "campaign", w.campaign, "metric", p.metric, "err", err)
		}
	}
	return out
}

// threshold is the detector threshold of the watch (severity of alerts).
func (w *watch) threshold() float64 { return w.monCfg.Detector.Threshold }

// warm adds a minute to the history without judging it.
func (w *watch) warm(m time.Time, s Step) error {
	if err := w.mon.Warm(m, s.Counters); err != nil {
		return err
	}
	if w.fc != nil {
		_ = w.fc.Observe(m, s.Amounts())
	}
	w.ring.add(m, s)
	w.judged = m
	return nil
}

// storedState is the document of tally_alert_state.
type storedState struct {
	Judged time.Time                             `json:"judged"`
	States map[anomaly.Metric]anomaly.AlertState `json:"states"`
}

// ringValues is alert.Values over a watch's ring at the end of a minute.
type ringValues struct {
	r   *ring
	end time.Time
}

func (v ringValues) Metric(campaign, metric string, window time.Duration) (float64, float64, bool) {
	s, ok := v.r.window(v.end, window)
	if !ok {
		return 0, 0, false
	}
	return metricValue(s, metric)
}

// flush stores what the rounds decided, then delivers it, and marks
// delivered transitions. Storage comes first (see the package doc): what
// cannot be stored now waits in the outbox, undelivered, in order.
func (e *Engine) flush(ctx context.Context) {
	e.mu.Lock()
	outbox := e.outbox
	e.outbox = nil
	delivered := e.delivered
	e.delivered = nil
	e.mu.Unlock()
	if len(delivered) > 0 {
		if err := e.cfg.Storage.WriteAlerts(ctx, delivered, nil); err != nil {
			e.m.storeErrors.Inc()
			e.mu.Lock()
			e.delivered = append(delivered, e.delivered...)
			e.mu.Unlock()
		}
	}
	if len(outbox) == 0 {
		return
	}
	var (
		alerts []alert.Alert
		recs   []influx.StoredAlert
		states []influx.StoredState
	)
	latest := map[string]int{} // campaign → index in states: only the last state counts
	for _, o := range outbox {
		for _, a := range o.alerts {
			doc, err := json.Marshal(a)
			if err != nil {
				continue
			}
			alerts = append(alerts, a)
			recs = append(recs, influx.StoredAlert{Campaign: a.Campaign, Metric: a.Metric, Rule: a.Rule, State: a.State, Start: a.Start, Doc: doc})
		}
		if o.state != nil {
			if i, ok := latest[o.campaign]; ok {
				states[i] = *o.state
			} else {
				latest[o.campaign] = len(states)
				states = append(states, *o.state)
			}
		}
	}
	if err := e.cfg.Storage.WriteAlerts(ctx, recs, states); err != nil {
		e.m.storeErrors.Inc()
		e.log.Warn("cannot store alert transitions; they wait, undelivered, and are retried", "reason", "alert_store_failed",
			"transitions", len(recs), "states", len(states), "err", err)
		e.mu.Lock()
		e.outbox = append(outbox, e.outbox...)
		e.mu.Unlock()
		return
	}
	now := e.now()
	for _, a := range alerts {
		e.m.transitions.WithLabelValues(a.Kind, a.State, a.Severity).Inc()
		if a.State == alert.StateFiring {
			e.m.delayMinutes.Observe(now.Sub(a.Start).Seconds())
		}
		e.log.Info("alert", "campaign", a.Campaign, "metric", a.Metric, "rule", a.Rule, "state", a.State,
			"direction", a.Direction, "start", a.Start, "id", a.ID, "silenced", a.Silenced)
	}
	e.deliver(alerts, recs)
}

// deliver publishes stored transitions to the stream and the notifier.
func (e *Engine) deliver(alerts []alert.Alert, recs []influx.StoredAlert) {
	var las []live.Alert
	for i, a := range alerts {
		las = append(las, live.Alert{Campaign: a.Campaign, Key: a.ID + ":" + a.State, At: a.At.Unix(), JSON: recs[i].Doc})
	}
	if e.cfg.Publish != nil {
		e.cfg.Publish.PublishAlerts(las)
	}
	for i, a := range alerts {
		k := a.ID + ":" + a.State
		d := &delivery{rec: recs[i], targets: -1}
		e.mu.Lock()
		e.delivering[k] = d
		e.mu.Unlock()
		n := 0
		if e.cfg.Send != nil {
			n = e.cfg.Send.Send(a) // Done may report before it returns
		}
		e.mu.Lock()
		if e.delivering[k] == d {
			d.targets = n
			e.finishLocked(k, d)
		}
		e.mu.Unlock()
	}
}

// load rebuilds one campaign's watch from storage (see the package doc,
// step 4). It runs outside the engine's lock.
func (e *Engine) load(ctx context.Context, c, key string, mcfg anomaly.MonitorConfig, budget *alert.Budget, kept *carry) loaded {
	l := loaded{campaign: c, kept: kept != nil}
	now := e.now()
	w := &watch{campaign: c, key: key, monCfg: mcfg, budget: budget, peeked: map[string]peeked{}}
	var err error
	if w.mon, err = anomaly.NewMonitor(mcfg, time.Minute); err != nil {
		l.err = err
		return l
	}
	if budget != nil {
		fcfg := e.cfg.Forecast
		if budget.TimeZone != "" {
			fcfg.TimeZone = budget.TimeZone
		}
		if w.fc, err = forecast.New(fcfg); err != nil {
			l.err = err
			return l
		}
	}
	hist := e.cfg.history(budget != nil)
	end := e.settledBefore(now)
	judgeFrom := now.Add(-e.cfg.JudgeLag).Truncate(time.Minute)
	states, err := e.cfg.Storage.LoadAlertStates(ctx, []string{c}, now.Add(-hist), now.Add(time.Minute))
	if err != nil {
		l.err = err
		return l
	}
	var st storedState
	stateAt := time.Time{}
	if len(states) > 0 {
		if err := json.Unmarshal(states[0].Doc, &st); err == nil {
			stateAt = st.Judged
		} else {
			e.log.Warn("unreadable stored detector state; judging from history alone", "campaign", c, "err", err)
		}
	}
	// Minutes from from are judged again (the previous owner may have
	// judged them without storing, or not at all); before it, history. A
	// reload of this node's own watch judges on after its last minute.
	from := judgeFrom
	if !stateAt.IsZero() && stateAt.Add(time.Minute).After(from) {
		from = stateAt.Add(time.Minute)
	}
	if kept != nil && !kept.judged.IsZero() {
		from = kept.judged.Add(time.Minute)
	}
	if from.After(end) {
		from = end
	}
	slot := mcfg.Detector.Slot
	histFrom := from.Add(-hist).Truncate(slot)
	fine := from.Add(-2 * time.Hour).Truncate(slot)
	coarse, err := e.cfg.Storage.CampaignSteps(ctx, []string{c}, histFrom, fine, slot)
	if err != nil {
		l.err = err
		return l
	}
	recent, err := e.cfg.Storage.CampaignSteps(ctx, []string{c}, fine, from, time.Minute)
	if err != nil {
		l.err = err
		return l
	}
	for _, s := range append(coarse, recent...) {
		step := StepOfTotals(s)
		if err := w.warm(s.Start, step); err != nil {
			l.err = fmt.Errorf("warm %s: %w", s.Start, err)
			return l
		}
		if step.Events > 0 {
			w.lastData = s.Start
		}
	}
	w.judged = from.Add(-time.Minute)
	if w.lastData.IsZero() {
		w.lastData = now // a campaign seen live but with no history yet
	}
	if kept != nil {
		// This node's own watch: its alert state goes on as it was.
		if !w.mon.Last().IsZero() && len(kept.states) > 0 {
			if err := w.mon.SetAlertStates(kept.states); err != nil {
				e.log.Warn("the detectors' state does not fit the reloaded history; starting from none", "campaign", c, "err", err)
			}
		}
		w.peeked = kept.peeked
		if w.peeked == nil {
			w.peeked = map[string]peeked{}
		}
		w.stateDoc, _ = json.Marshal(storedState{Judged: w.judged, States: w.mon.AlertStates()})
		l.w = w
		return l
	}
	if !stateAt.IsZero() && len(st.States) > 0 && !w.mon.Last().IsZero() {
		states := st.States
		if stateAt.Add(time.Minute).Before(from) {
			// History passed between the stored state and now unjudged:
			// pending and calm counts no longer follow.
			for k, s := range states {
				s.Pending, s.PendingDir, s.Calm = 0, 0, 0
				states[k] = s
			}
		}
		if err := w.mon.SetAlertStates(states); err != nil {
			e.log.Warn("stored detector state does not fit the history; starting from none", "campaign", c, "err", err)
		}
	}
	// Stored alerts on top: what is stored firing is firing.
	alerts, err := e.cfg.Storage.LoadAlerts(ctx, influx.AlertQuery{Campaigns: []string{c}, From: now.Add(-hist), To: now.Add(time.Hour)})
	if err != nil {
		l.err = err
		return l
	}
	latest := map[string]alert.Alert{} // by id
	for _, sa := range alerts {
		var a alert.Alert
		if err := json.Unmarshal(sa.Doc, &a); err != nil {
			continue
		}
		if cur, ok := latest[a.ID]; !ok || cur.State == alert.StateFiring {
			latest[a.ID] = a // resolved wins over firing
		}
		if !sa.Delivered {
			l.undelivered = append(l.undelivered, sa)
		}
	}
	for _, a := range latest {
		if a.State != alert.StateFiring {
			continue
		}
		if a.Kind != alert.KindAnomaly {
			l.firing = append(l.firing, a)
			continue
		}
		if w.mon.Last().IsZero() {
			continue // no history: nothing to be firing against
		}
		dir := anomaly.Spike
		if a.Direction == anomaly.Drop.String() {
			dir = anomaly.Drop
		}
		// A no-op when the stored state has it firing already.
		if err := w.mon.SetFiring(anomaly.Metric(a.Metric), dir, a.Start, a.Score); err != nil {
			e.log.Warn("a stored firing alert does not fit the detectors", "campaign", c, "metric", a.Metric, "err", err)
		}
	}
	w.stateDoc, _ = json.Marshal(storedState{Judged: w.judged, States: w.mon.AlertStates()})
	l.w = w
	return l
}

// apply installs a rebuilt watch and delivers again what its previous
// owner stored but did not mark delivered.
func (e *Engine) apply(l loaded) {
	e.mu.Lock()
	cur := e.watches[l.campaign]
	if cur == nil || !e.owns(l.campaign) {
		e.mu.Unlock()
		return // lost while loading
	}
	cur.loading = false
	if cur.stale {
		cur.stale, cur.ready = false, false
		e.mu.Unlock()
		return
	}
	if l.err != nil {
		e.m.rebuilds.WithLabelValues("error").Inc()
		e.log.Warn("cannot rebuild a campaign's detectors from InfluxDB; retrying", "reason", "alert_rebuild_failed", "campaign", l.campaign, "err", l.err)
		e.mu.Unlock()
		return
	}
	e.m.rebuilds.WithLabelValues("ok").Inc()
	e.m.rebuildSecs.Observe(l.took.Seconds())
	l.w.lastPeek, l.w.lateAt = cur.lastPeek, cur.lateAt
	l.w.ready, l.w.loadedAt = true, e.now()
	e.watches[l.campaign] = l.w
	if !l.kept {
		e.evaluator.Forget(l.campaign)
		e.evaluator.Restore(l.firing)
	}
	var again []alert.Alert
	var recs []influx.StoredAlert
	for _, sa := range l.undelivered {
		var a alert.Alert
		if err := json.Unmarshal(sa.Doc, &a); err != nil {
			continue
		}
		again = append(again, a)
		recs = append(recs, sa)
	}
	e.mu.Unlock()
	e.log.Info("rebuilt a campaign's detectors from InfluxDB", "campaign", l.campaign, "judging_from", l.w.judged.Add(time.Minute),
		"took", l.took.Round(time.Millisecond), "redelivering", len(again))
	if len(again) > 0 {
		e.m.redelivered.Add(float64(len(again)))
		e.deliver(again, recs)
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Watched returns the campaigns this node watches (ready or rebuilding).
func (e *Engine) Watched() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Sorted(maps.Keys(e.watches))
}

// Package rollup keeps hourly and daily rollups of the merged minutes and
// answers API questions from the coarsest resolution that answers them
// exactly.
//
// A rollup point is the merge of its period's minute points of one
// series: counters and money summed, HyperLogLogs and DDSketches merged,
// never estimated and added. So an answer folded from rollups is the
// answer folded from the minutes, bit for bit, provided each rollup was
// computed from the minutes as they are now. Markers say when that holds.
//
// # Markers, and why the answers stay exact
//
// Every campaign has a marker per hour (in the hours bucket) and per day
// (in the days bucket) in which minutes were ever written, with two
// fields (influx.Marker): changed, a token (this node's unix
// milliseconds, strictly increasing) written by the owner's write round
// *before* it writes the minutes, and rolled, the changed token the
// period's rollups were last computed from. Step by step:
//
//  1. Changing writes changed=T for every hour and day a round's minutes
//     touch, then the round writes the minutes. A marker with changed ≠
//     rolled means "the rollups may lag the minutes".
//  2. After the minutes are written, Changed queues the hours. An hour is
//     due Settle after it ends (an hour still filling is answered from
//     minutes), or Quiet after its last change when it has ended already.
//  3. A pass reads the due hour's minutes, writes its hour points, then
//     writes rolled=T', T' the latest token this node queued for it
//     before the pass read anything. A write round in between writes a
//     newer changed first, so rolled=T' leaves the marker dirty and the
//     hour queued: never clean while the rollup lags.
//  4. Once none of a day's hours is pending, the day's points are
//     recomputed from its hour points and its marker marked rolled the
//     same way.
//  5. A period without a marker has no minutes (every minute write marks
//     first; Setup marks what was stored before markers existed), so its
//     rollups, being empty, are exact too.
//
// Source (plan.go) reads markers with each question and takes a day or
// hour from the rollups only when its marker is clean or absent.
//
// A node that stops between steps 1 and 3 leaves dirty markers: whoever
// owns the campaign next finds them (Sweep, at start, after a takeover
// and periodically) and recomputes those periods. Tokens are compared for
// equality only, so clocks of different nodes never need to agree.
package rollup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/sketch"
)

// Storage is what the rollups read and write (influx.Reader and
// influx.Writer together).
type Storage interface {
	EachMinute(ctx context.Context, q influx.MinuteQuery, fn func(sketch.Minute) error) error
	LoadMarkers(ctx context.Context, res influx.Resolution, from, to time.Time, campaigns []string) ([]influx.Marker, error)
	WriteRollups(ctx context.Context, res influx.Resolution, points []sketch.Minute) ([]influx.Refusal, error)
	WriteMarkers(ctx context.Context, res influx.Resolution, field string, marks []influx.Marker) error
	LoadSince(ctx context.Context) (since int64, ok bool, err error)
	WriteSince(ctx context.Context, since int64, at time.Time) error
	LatestMinute(ctx context.Context) (minute int64, ok bool, err error)
}

// Config tunes a Roller.
type Config struct {
	// Settle is how long after an hour ends it is first rolled up
	// (default 5m): the agents' lateness and flush interval and a write
	// round, so that an ordinary hour is rolled up once.
	Settle time.Duration
	// Quiet is how long a change to an hour that has ended waits for
	// more before the hour is rolled up again (default 10s), and MaxDelay
	// the longest it waits while changes keep coming (default 1m).
	Quiet, MaxDelay time.Duration
	// Interval is the period of passes (default 1s).
	Interval time.Duration
	// SweepEvery is the period of sweeps for dirty markers (default 5m),
	// SweepWindow how far back they look (default 14 days: the minutes'
	// retention, before which minutes cannot change).
	SweepEvery, SweepWindow time.Duration
	// Timeout bounds one pass's storage calls (default 2m).
	Timeout time.Duration
	// MaxCampaigns is the most campaigns one query reads (default 64).
	MaxCampaigns int
	// MaxHoursPerPass bounds the campaign-hours one pass takes on
	// (default 2048).
	MaxHoursPerPass int
	// Owns says whether this node owns a campaign; nil owns all.
	Owns func(campaign string) bool
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Settle <= 0 {
		c.Settle = 5 * time.Minute
	}
	if c.Quiet <= 0 {
		c.Quiet = 10 * time.Second
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = time.Minute
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.SweepEvery <= 0 {
		c.SweepEvery = 5 * time.Minute
	}
	if c.SweepWindow <= 0 {
		c.SweepWindow = 14 * 24 * time.Hour
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.MaxCampaigns <= 0 {
		c.MaxCampaigns = 64
	}
	if c.MaxHoursPerPass <= 0 {
		c.MaxHoursPerPass = 2048
	}
	if c.Owns == nil {
		c.Owns = func(string) bool { return true }
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

const (
	hour = int64(3600)
	day  = int64(86400)
)

// period names one campaign's hour or day (Start is its start, unix
// seconds). The campaign is its campaignKey.
type period struct {
	campaign string
	start    int64
}

// hourItem is a campaign-hour waiting to be rolled up.
type hourItem struct {
	token int64     // the latest changed token written for it (0: none known)
	first time.Time // when it was first queued since its last roll-up
	due   time.Time
}

// dayItem is a campaign-day whose rollup must be recomputed once none of
// its hours is pending.
type dayItem struct {
	token int64
}

// Roller keeps the rollups of the minutes its node writes. It is safe for
// concurrent use: the writer calls Changing and Changed, Run (or Pass)
// runs on its own goroutine.
type Roller struct {
	cfg     Config
	storage Storage
	log     *slog.Logger

	mu       sync.Mutex
	lastTok  int64
	inflight map[period]int64 // hours Changing marked whose minutes are not written yet
	hours    map[period]*hourItem
	days     map[period]*dayItem

	passMu sync.Mutex // one pass at a time

	m metrics
}

type metrics struct {
	written  *prometheus.CounterVec
	refused  prometheus.Counter
	passes   *prometheus.CounterVec
	passSecs prometheus.Histogram
	swept    prometheus.Counter
}

// New returns a Roller registering its metrics with reg.
func New(cfg Config, storage Storage, reg prometheus.Registerer, logger *slog.Logger) *Roller {
	cfg.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Roller{cfg: cfg, storage: storage, log: logger.With("component", "rollup"),
		inflight: map[period]int64{}, hours: map[period]*hourItem{}, days: map[period]*dayItem{}}
	r.m = metrics{
		written: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_rollup_points_written_total",
			Help: "Rollup points written, by resolution (hour, day)."}, []string{"resolution"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_rollup_points_refused_total",
			Help: "Rollup points InfluxDB refused for good (older than their bucket keeps)."}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_rollup_passes_total",
			Help: "Rollup passes that had work, by result (ok, error: retried next pass)."}, []string{"result"}),
		passSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_aggregator_rollup_pass_duration_seconds",
			Help: "Time of one rollup pass that had work.", Buckets: prometheus.ExponentialBuckets(0.005, 4, 8)}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_rollup_swept_total",
			Help: "Campaign-hours found dirty in storage by sweeps and queued."}),
	}
	reg.MustRegister(r.m.written, r.m.refused, r.m.passes, r.m.passSecs, r.m.swept,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_rollup_pending_hours",
			Help: "Campaign-hours waiting to be rolled up."}, func() float64 { return float64(r.Pending()) }))
	return r
}

// Pending returns the number of campaign-hours waiting.
func (r *Roller) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.hours)
}

// touched returns the campaign-hours and campaign-days of minutes.
func touched(minutes []sketch.Minute) (hours, days []period) {
	seenH := map[period]bool{}
	seenD := map[period]bool{}
	for _, m := range minutes {
		h := period{campaignKey(m.Series.Campaign), floor(m.Minute, hour)}
		if !seenH[h] {
			seenH[h] = true
			hours = append(hours, h)
		}
		d := period{campaignKey(m.Series.Campaign), floor(m.Minute, day)}
		if !seenD[d] {
			seenD[d] = true
			days = append(days, d)
		}
	}
	return hours, days
}

// campaignKey is the name the rollups know a campaign by: the tag value
// InfluxDB stores for it (influx.TagValue). Points and markers read back
// carry the name the tag decodes to, which differs for the agents'
// "(none)" campaign (stored as the tag "(none)", read back as ""); the
// key is the same for both, and it is the name agents route by.
func campaignKey(c string) string { return influx.TagValue(c) }

func floor(v, step int64) int64 { return v - ((v%step)+step)%step }

// token returns a new changed token: unix milliseconds, strictly above
// the last one. The caller holds r.mu.
func (r *Roller) token() int64 {
	t := max(r.cfg.Now().UnixMilli(), r.lastTok+1)
	r.lastTok = t
	return t
}

// Changing writes changed markers for every hour and day minutes touch,
// before the minutes are written (step 1 of the package doc). It returns
// an error when storage did not take them; the round must then not write
// the minutes.
func (r *Roller) Changing(ctx context.Context, minutes []sketch.Minute) error {
	hours, days := touched(minutes)
	if len(hours) == 0 {
		return nil
	}
	r.mu.Lock()
	tok := r.token()
	for _, h := range hours {
		r.inflight[h] = tok
	}
	r.mu.Unlock()
	hm := make([]influx.Marker, len(hours))
	for i, h := range hours {
		hm[i] = influx.Marker{Campaign: h.campaign, Start: h.start, Changed: tok}
	}
	dm := make([]influx.Marker, len(days))
	for i, d := range days {
		dm[i] = influx.Marker{Campaign: d.campaign, Start: d.start, Changed: tok}
	}
	if err := r.storage.WriteMarkers(ctx, influx.Hours, influx.FieldChanged, hm); err != nil {
		return err
	}
	return r.storage.WriteMarkers(ctx, influx.Days, influx.FieldChanged, dm)
}

// Changed queues the hours and days of minutes that are now written
// (step 2 of the package doc).
func (r *Roller) Changed(minutes []sketch.Minute) {
	hours, days := touched(minutes)
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range hours {
		tok := r.inflight[h]
		delete(r.inflight, h)
		r.queueHour(h, tok, now, r.cfg.Quiet)
	}
	for _, d := range days {
		it := r.days[d]
		if it == nil {
			it = &dayItem{}
			r.days[d] = it
		}
		// The day's token is the newest of its hours'.
		for _, h := range hours {
			if floor(h.start, day) == d.start && h.campaign == d.campaign {
				if it2 := r.hours[h]; it2 != nil {
					it.token = max(it.token, it2.token)
				}
			}
		}
	}
}

// queueHour queues a campaign-hour with its latest token, due once it has
// settled and quiet has passed (bounded by MaxDelay since it was first
// queued). The caller holds r.mu.
func (r *Roller) queueHour(h period, tok int64, now time.Time, quiet time.Duration) {
	it := r.hours[h]
	if it == nil {
		it = &hourItem{first: now}
		r.hours[h] = it
	}
	it.token = max(it.token, tok)
	settled := time.Unix(h.start+hour, 0).Add(r.cfg.Settle)
	it.due = maxTime(settled, minTime(now.Add(quiet), it.first.Add(r.cfg.MaxDelay)))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// MarkerWriter writes rollup markers (influx.Writer).
type MarkerWriter interface {
	WriteMarkers(ctx context.Context, res influx.Resolution, field string, marks []influx.Marker) error
}

// MarkChanged marks every hour and day minutes touch as changed, for a
// writer of minutes outside a node's write rounds (an archive restore):
// call it before writing the minutes. The campaigns' owners then find
// the markers dirty (Sweep, within SweepWindow) and recompute the
// rollups; until then, and for periods older than that, Source answers
// those periods from minutes.
func MarkChanged(ctx context.Context, w MarkerWriter, minutes []sketch.Minute) error {
	hours, days := touched(minutes)
	if len(hours) == 0 {
		return nil
	}
	tok := time.Now().UnixMilli()
	hm := make([]influx.Marker, len(hours))
	for i, h := range hours {
		hm[i] = influx.Marker{Campaign: h.campaign, Start: h.start, Changed: tok}
	}
	dm := make([]influx.Marker, len(days))
	for i, d := range days {
		dm[i] = influx.Marker{Campaign: d.campaign, Start: d.start, Changed: tok}
	}
	if err := w.WriteMarkers(ctx, influx.Hours, influx.FieldChanged, hm); err != nil {
		return err
	}
	return w.WriteMarkers(ctx, influx.Days, influx.FieldChanged, dm)
}

// Init makes sure the since mark exists, before the node writes any
// minute: rollups answer only periods starting at or after it, because
// minutes stored before markers existed (an older version's) have none
// (step 5 of the package doc holds only from there on). The first node
// to start sets it to the day after the latest minute stored (0 when
// there is none); later calls rewrite it unchanged at the current time,
// so that no retention of the days bucket ever drops it (Sweep does so
// too). Another node setting it concurrently can only set it later,
// which is as safe.
func (r *Roller) Init(ctx context.Context) error {
	since, ok, err := r.storage.LoadSince(ctx)
	if err != nil {
		return fmt.Errorf("read the rollups' since mark: %w", err)
	}
	if !ok {
		latest, any, err := r.storage.LatestMinute(ctx)
		if err != nil {
			return fmt.Errorf("find the latest minute stored: %w", err)
		}
		if any {
			since = floor(latest, day) + day
			r.log.Info("minutes stored before rollups existed are answered from minutes only",
				"until", time.Unix(since, 0).UTC().Format(time.RFC3339))
		}
	}
	return r.storage.WriteSince(ctx, since, r.cfg.Now())
}

// Sweep queues the campaign-hours and campaign-days of the last
// SweepWindow whose markers are dirty, of campaigns this node owns: what
// a node that stopped mid-way, or a previous owner, left. It returns how
// many hours it queued.
func (r *Roller) Sweep(ctx context.Context) (int, error) {
	if err := r.Init(ctx); err != nil {
		return 0, err
	}
	now := r.cfg.Now()
	from := time.Unix(floor(now.Add(-r.cfg.SweepWindow).Unix(), day), 0)
	to := now.Add(24 * time.Hour)
	dms, err := r.storage.LoadMarkers(ctx, influx.Days, from, to, nil)
	if err != nil {
		return 0, err
	}
	hms, err := r.storage.LoadMarkers(ctx, influx.Hours, from, to, nil)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	dirtyDays := map[period]int64{}
	for _, m := range dms {
		if c := campaignKey(m.Campaign); !m.Clean() && r.cfg.Owns(c) {
			dirtyDays[period{c, m.Start}] = m.Changed
		}
	}
	for _, m := range hms {
		c := campaignKey(m.Campaign)
		if m.Clean() || !r.cfg.Owns(c) {
			continue
		}
		h := period{c, m.Start}
		if _, busy := r.inflight[h]; busy {
			continue
		}
		r.queueHour(h, m.Changed, now, 0) // left behind: due as soon as it has settled
		n++
	}
	for d, tok := range dirtyDays {
		it := r.days[d]
		if it == nil {
			it = &dayItem{}
			r.days[d] = it
		}
		// Recomputed once none of its hours is pending (a dirty day
		// without a dirty hour: stopped between the two).
		it.token = max(it.token, tok)
	}
	r.m.swept.Add(float64(n))
	return n, nil
}

// Run runs passes every Interval, and sweeps at start and every
// SweepEvery, until ctx is done. Failures are logged and retried.
func (r *Roller) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	var lastSweep time.Time
	failures := 0
	for {
		if time.Since(lastSweep) >= r.cfg.SweepEvery {
			sctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
			n, err := r.Sweep(sctx)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				r.log.Warn("sweeping rollup markers failed; retrying next pass", "reason", "rollup_sweep_failed", "err", err)
			case err == nil:
				lastSweep = time.Now()
				if n > 0 {
					r.log.Info("queued campaign-hours whose rollups lag their minutes", "hours", n)
				}
			}
		}
		_, err := r.Pass(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if failures++; failures == 1 || failures%30 == 0 {
				r.log.Warn("rollup pass failed; retrying", "reason", "rollup_failed", "failures", failures, "err", err)
			}
		case err == nil && failures > 0:
			r.log.Info("rollup passes work again", "failures", failures)
			failures = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// work is one pass's share: the due campaign-hours, with the tokens
// snapshotted, and the days to recompute after them.
type work struct {
	hours map[period]int64
	days  map[period]int64
}

// take picks the due work: hours whose time has come and that no write
// round holds, and days none of whose hours stays pending.
func (r *Roller) take() work {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	w := work{hours: map[period]int64{}, days: map[period]int64{}}
	for h, it := range r.hours {
		if len(w.hours) >= r.cfg.MaxHoursPerPass {
			break
		}
		if _, busy := r.inflight[h]; busy || it.due.After(now) {
			continue
		}
		if !r.cfg.Owns(h.campaign) {
			delete(r.hours, h) // the new owner's sweep finds its marker
			continue
		}
		w.hours[h] = it.token
	}
	pendingDay := map[period]bool{}
	for h := range r.hours {
		if _, taken := w.hours[h]; !taken {
			pendingDay[period{h.campaign, floor(h.start, day)}] = true
		}
	}
	for h := range r.inflight {
		pendingDay[period{h.campaign, floor(h.start, day)}] = true
	}
	for d, it := range r.days {
		if pendingDay[d] {
			continue
		}
		if !r.cfg.Owns(d.campaign) {
			delete(r.days, d)
			continue
		}
		w.days[d] = it.token
	}
	return w
}

// done removes what a pass finished, unless it changed meanwhile.
func (r *Roller) done(w work) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for h, tok := range w.hours {
		if it := r.hours[h]; it != nil && it.token == tok {
			delete(r.hours, h)
		}
	}
	for d, tok := range w.days {
		if it := r.days[d]; it != nil && it.token == tok {
			delete(r.days, d)
		}
	}
}

// Pass rolls up what is due: the due hours from their minutes, then the
// days none of whose hours is pending from their hours. It returns the
// number of campaign-hours and campaign-days it rolled up.
func (r *Roller) Pass(ctx context.Context) (int, error) {
	r.passMu.Lock()
	defer r.passMu.Unlock()
	w := r.take()
	if len(w.hours) == 0 && len(w.days) == 0 {
		return 0, nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	err := r.roll(ctx, w)
	if err != nil {
		r.m.passes.WithLabelValues("error").Inc()
		return 0, err
	}
	r.done(w)
	r.m.passes.WithLabelValues("ok").Inc()
	r.m.passSecs.Observe(time.Since(start).Seconds())
	return len(w.hours) + len(w.days), nil
}

// roll computes and writes w's rollups and marks their markers rolled.
// Hours are read a day at a time (one query for the due hours of up to
// MaxCampaigns campaigns in one day), days a month of days at a time.
func (r *Roller) roll(ctx context.Context, w work) error {
	if err := r.rollAll(ctx, influx.Minutes, influx.Hours, hour, day, w.hours); err != nil {
		return err
	}
	// Days the pass's hours belong to are recomputed by this pass only if
	// queued and free of pending hours (take); the others wait.
	return r.rollAll(ctx, influx.Hours, influx.Days, day, 32*day, w.days)
}

// rollAll recomputes the periods of length periods of resolution to from
// the points of resolution from, reading them in windows of length
// window, and marks each rolled with its token.
func (r *Roller) rollAll(ctx context.Context, from, to influx.Resolution, length, window int64, periods map[period]int64) error {
	byWindow := map[int64]map[string]bool{}
	for p := range periods {
		wd := floor(p.start, window)
		if byWindow[wd] == nil {
			byWindow[wd] = map[string]bool{}
		}
		byWindow[wd][p.campaign] = true
	}
	var marks []influx.Marker
	for _, ws := range slices.Sorted(mapsKeys(byWindow)) {
		cs := slices.Sorted(mapsKeys(byWindow[ws]))
		for len(cs) > 0 {
			part := cs[:min(len(cs), r.cfg.MaxCampaigns)]
			cs = cs[len(part):]
			lo, hi := ws+window, ws
			for p := range periods {
				if floor(p.start, window) == ws && slices.Contains(part, p.campaign) {
					lo, hi = min(lo, p.start), max(hi, p.start+length)
				}
			}
			due := func(campaign string, start int64) bool {
				_, ok := periods[period{campaign, start}]
				return ok
			}
			if err := r.rollRange(ctx, from, to, lo, hi, length, part, due); err != nil {
				return err
			}
		}
	}
	for p, tok := range periods {
		if tok != 0 {
			marks = append(marks, influx.Marker{Campaign: p.campaign, Start: p.start, Rolled: tok})
		}
	}
	if len(marks) > 0 {
		if err := r.storage.WriteMarkers(ctx, to, influx.FieldRolled, marks); err != nil {
			return fmt.Errorf("mark %ss rolled: %w", to, err)
		}
	}
	return nil
}

// rollRange reads the points of resolution from in [lo, hi) of campaigns,
// merges them per series and period of length length, and writes, for
// the periods due says, the merged points at resolution to, with Minute
// the period's start.
func (r *Roller) rollRange(ctx context.Context, from, to influx.Resolution, lo, hi, length int64, campaigns []string,
	due func(campaign string, start int64) bool) error {
	type key struct {
		series sketch.Series
		start  int64
	}
	merged := map[key]*sketch.State{}
	var order []key
	err := r.storage.EachMinute(ctx, influx.MinuteQuery{Campaigns: campaigns, From: time.Unix(lo, 0), To: time.Unix(hi, 0),
		Resolution: from}, func(p sketch.Minute) error {
		k := key{p.Series, floor(p.Minute, length)}
		if !due(campaignKey(p.Series.Campaign), k.start) {
			return nil
		}
		st := merged[k]
		if st == nil {
			st = &sketch.State{}
			merged[k] = st
			order = append(order, k)
		}
		return st.Merge(p.State)
	})
	at := time.Unix(lo, 0).UTC().Format(time.RFC3339)
	var corrupt *influx.CorruptPointError
	if errors.As(err, &corrupt) {
		// Writing a rollup without the damaged point would make it
		// disagree with what the minutes answer; stop here.
		return fmt.Errorf("roll up %ss of %d campaigns from %s: %w", to, len(campaigns), at, err)
	}
	if err != nil {
		return fmt.Errorf("read %ss for the %s rollups from %s: %w", from, to, at, err)
	}
	if len(order) == 0 {
		return nil
	}
	points := make([]sketch.Minute, len(order))
	for i, k := range order {
		points[i] = sketch.Minute{Series: k.series, Minute: k.start, State: merged[k]}
	}
	refused, err := r.storage.WriteRollups(ctx, to, points)
	if err != nil {
		return fmt.Errorf("write %s rollups from %s: %w", to, at, err)
	}
	if len(refused) > 0 {
		r.m.refused.Add(float64(len(refused)))
		r.log.Warn("InfluxDB refused rollup points for good", "reason", "rollup_refused", "resolution", string(to), "points", len(refused),
			"first", refused[0].Err)
	}
	r.m.written.WithLabelValues(string(to)).Add(float64(len(points) - len(refused)))
	return nil
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

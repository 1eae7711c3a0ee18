package anomaly

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Metric names a campaign metric a Monitor watches.
type Metric string

// The metrics of a campaign. Shares of the breakdown mix are named by
// ShareMetric.
const (
	Impressions Metric = "impressions"
	Clicks      Metric = "clicks"
	Conversions Metric = "conversions"
	Pageviews   Metric = "pageviews"
	Uniques     Metric = "uniques"
	Revenue     Metric = "revenue"
	Spend       Metric = "spend"
	CTR         Metric = "ctr"
	CVR         Metric = "cvr"
	CPA         Metric = "cpa"
	ROAS        Metric = "roas"
	BotShare    Metric = "bot_share"
)

// AllMetrics are the metrics a Monitor watches by default.
var AllMetrics = []Metric{Impressions, Clicks, Conversions, Pageviews, Uniques, Revenue, Spend, CTR, CVR, CPA, ROAS, BotShare}

// sharePrefix names a source's share of clicks: "share:source=google".
const sharePrefix = "share:source="

// ShareMetric names the metric "this source's share of the campaign's
// clicks".
func ShareMetric(source string) Metric { return Metric(sharePrefix + source) }

// HLLRelErr is the relative standard error of the deployment's HyperLogLog
// (precision 14: 1.04/√16384).
var HLLRelErr = 1.04 / math.Sqrt(1<<14)

// Counters are one step of one campaign, as merged from every region: the
// exact counts and sums and the uniques estimate.
type Counters struct {
	Impressions, Clicks, Conversions, Pageviews float64
	// Uniques is the HyperLogLog estimate of distinct visitors in the step.
	Uniques float64
	// Revenue (conversion values) and Spend (cost) are money.
	Revenue, Spend float64
	// CostEvents is the number of cost events behind Spend.
	CostEvents float64
	// Events counts the non-bot events of every type, Bots the events the
	// bot filter caught.
	Events, Bots float64
	// SourceClicks are the clicks by source (the breakdown whose mix is
	// watched). Sources beyond the monitor's MaxShares are not watched.
	SourceClicks map[string]float64
}

// metricDef says how a metric is read from Counters.
type metricDef struct {
	spec Spec
	obs  func(c *Counters) Obs
	// invert names a rise of the judged quantity a drop of the metric
	// (CPA is judged as conversions per unit of spend).
	invert bool
}

func defOf(m Metric) (metricDef, error) {
	cnt := func(f func(c *Counters) float64) metricDef {
		return metricDef{spec: Spec{Kind: Count}, obs: func(c *Counters) Obs { return Obs{Num: f(c)} }}
	}
	switch m {
	case Impressions:
		return cnt(func(c *Counters) float64 { return c.Impressions }), nil
	case Clicks:
		return cnt(func(c *Counters) float64 { return c.Clicks }), nil
	case Conversions:
		return cnt(func(c *Counters) float64 { return c.Conversions }), nil
	case Pageviews:
		return cnt(func(c *Counters) float64 { return c.Pageviews }), nil
	case Uniques:
		d := cnt(func(c *Counters) float64 { return c.Uniques })
		d.spec.RelErr = HLLRelErr
		return d, nil
	case Revenue:
		return metricDef{spec: Spec{Kind: Amount}, obs: func(c *Counters) Obs { return Obs{Num: c.Revenue, Events: c.Conversions} }}, nil
	case Spend:
		return metricDef{spec: Spec{Kind: Amount}, obs: func(c *Counters) Obs { return Obs{Num: c.Spend, Events: c.CostEvents} }}, nil
	case CTR:
		return metricDef{spec: Spec{Kind: Ratio}, obs: func(c *Counters) Obs { return Obs{Num: c.Clicks, Den: c.Impressions} }}, nil
	case CVR:
		return metricDef{spec: Spec{Kind: Ratio}, obs: func(c *Counters) Obs { return Obs{Num: c.Conversions, Den: c.Clicks} }}, nil
	case CPA:
		return metricDef{spec: Spec{Kind: Ratio}, invert: true, obs: func(c *Counters) Obs { return Obs{Num: c.Conversions, Den: c.Spend} }}, nil
	case ROAS:
		return metricDef{spec: Spec{Kind: AmountRatio}, obs: func(c *Counters) Obs { return Obs{Num: c.Revenue, Den: c.Spend, Events: c.Conversions} }}, nil
	case BotShare:
		return metricDef{spec: Spec{Kind: Ratio}, obs: func(c *Counters) Obs { return Obs{Num: c.Bots, Den: c.Bots + c.Events} }}, nil
	}
	if src, ok := strings.CutPrefix(string(m), sharePrefix); ok && src != "" {
		return metricDef{spec: Spec{Kind: Ratio}, obs: func(c *Counters) Obs { return Obs{Num: c.SourceClicks[src], Den: c.Clicks} }}, nil
	}
	return metricDef{}, fmt.Errorf("anomaly: unknown metric %q", m)
}

// MonitorConfig tunes a campaign's Monitor.
type MonitorConfig struct {
	Detector Config `yaml:"detector"`
	// Metrics are the metrics watched. Default AllMetrics.
	Metrics []Metric `yaml:"metrics"`
	// MaxShares bounds the sources whose share of clicks is watched: the
	// first sources seen (several at once: in name order) get a detector,
	// later ones none. 0 watches no shares. Default 8.
	MaxShares int `yaml:"max_shares"`
}

// DefaultMonitorConfig watches every metric and the shares of 8 sources.
func DefaultMonitorConfig() MonitorConfig {
	return MonitorConfig{Detector: DefaultConfig(), Metrics: slices.Clone(AllMetrics), MaxShares: 8}
}

// Validate reports every problem of c.
func (c MonitorConfig) Validate() error {
	if err := c.Detector.Validate(); err != nil {
		return err
	}
	if len(c.Metrics) == 0 {
		return fmt.Errorf("metrics: none")
	}
	for _, m := range c.Metrics {
		if _, err := defOf(m); err != nil {
			return err
		}
	}
	if c.MaxShares < 0 || c.MaxShares > 64 {
		return fmt.Errorf("max_shares %d: must be 0..64", c.MaxShares)
	}
	return nil
}

// Event is a transition of one metric of a campaign.
type Event struct {
	Metric Metric
	Transition
}

// Monitor watches every metric of one campaign.
type Monitor struct {
	cfg    MonitorConfig
	step   time.Duration
	names  []Metric // in order of creation
	dets   map[Metric]*Detector
	defs   map[Metric]metricDef
	shares int
	// judgedBy counts the metrics the last Observe judged against each
	// baseline.
	judgedBy [Seasonal + 1]int
}

// NewMonitor returns a monitor for a campaign of the given step.
func NewMonitor(cfg MonitorConfig, step time.Duration) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Monitor{cfg: cfg, step: step, dets: map[Metric]*Detector{}, defs: map[Metric]metricDef{}}
	for _, name := range cfg.Metrics {
		if err := m.add(name); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Monitor) add(name Metric) error {
	if _, ok := m.dets[name]; ok {
		return nil
	}
	def, err := defOf(name)
	if err != nil {
		return err
	}
	d, err := New(m.cfg.Detector, m.step, def.spec)
	if err != nil {
		return err
	}
	m.names = append(m.names, name)
	m.dets[name], m.defs[name] = d, def
	return nil
}

// Metrics returns the watched metrics in a stable order.
func (m *Monitor) Metrics() []Metric { return slices.Clone(m.names) }

// Detector returns the detector of one metric, nil when not watched.
func (m *Monitor) Detector(name Metric) *Detector { return m.dets[name] }

// Observe feeds one step of the campaign to every metric's detector and
// returns the alerts that fired or resolved, in metric order.
func (m *Monitor) Observe(t time.Time, c Counters) ([]Event, error) {
	return m.feed(t, c, false)
}

// JudgedBy returns how many of its metrics the last Observe judged
// against baseline b (NoBaseline: too little history to judge). A
// monitor warmed with two days of history judges against Seasonal.
func (m *Monitor) JudgedBy(b Baseline) int {
	if int(b) >= len(m.judgedBy) {
		return 0
	}
	return m.judgedBy[b]
}

// Warm feeds one step to the history only (see Detector.Warm).
func (m *Monitor) Warm(t time.Time, c Counters) error {
	_, err := m.feed(t, c, true)
	return err
}

// Peek judges the step in progress at t from its counters so far without
// changing the monitor (see Detector.Peek): the alerts that would fire
// now. The share of the step the counters cover is known only within
// [lo, hi] (data arrive with a delay), so each metric is judged at both:
// a rise counts only if it is one at hi (the most the counters can
// cover), a fall only if it is one at lo. A metric whose counter is NaN
// (unknown so far) is not judged, and sources not watched yet are not
// added by a peek.
func (m *Monitor) Peek(t time.Time, c Counters, lo, hi float64) ([]Event, error) {
	if !(lo > 0 && lo <= hi && hi <= 1) {
		return nil, fmt.Errorf("anomaly: peek shares [%v, %v]: want 0 < lo <= hi <= 1", lo, hi)
	}
	var events []Event
	for _, name := range m.names {
		d, def := m.dets[name], m.defs[name]
		o := def.obs(&c)
		if math.IsNaN(o.Num) || math.IsNaN(o.Den) || math.IsNaN(o.Events) {
			continue
		}
		for _, share := range []float64{hi, lo} {
			r, err := d.Peek(t, o, share)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			tr := r.Transition
			if tr == nil || tr.State != Firing || (share == hi) != (tr.Direction == Spike) {
				continue
			}
			events = append(events, Event{Metric: name, Transition: def.orient(*tr)})
			break
		}
	}
	return events, nil
}

// SetFiring marks metric's alert firing in direction dir (of the metric)
// since start, with peak score, unless one fires already: how a node
// keeps an alert that storage says is firing (a peek fired it, or the
// stored detector state predates it). Times must lie on the step grid,
// after the first step observed or warmed. A share metric not watched yet
// is added (within MaxShares).
func (m *Monitor) SetFiring(name Metric, dir Direction, start time.Time, peak float64) error {
	if _, ok := m.dets[name]; !ok {
		if !strings.HasPrefix(string(name), sharePrefix) || m.shares >= m.cfg.MaxShares {
			return fmt.Errorf("anomaly: metric %q is not watched", name)
		}
		if err := m.add(name); err != nil {
			return err
		}
		m.shares++
	}
	d, def := m.dets[name], m.defs[name]
	if def.invert {
		dir = -dir
	}
	s := d.AlertState()
	if s.Firing != 0 {
		return nil
	}
	s.Firing, s.Start, s.Peak = dir, start, math.Abs(peak)
	s.Pending, s.PendingDir, s.Calm = 0, 0, 0
	return d.SetAlertState(s)
}

// Last is the time of the last step observed or warmed; zero before any.
func (m *Monitor) Last() time.Time {
	var last time.Time
	for _, d := range m.dets {
		if l := d.Last(); l.After(last) {
			last = l
		}
	}
	return last
}

// AlertStates returns the alert state of every watched metric whose
// detector is not in its initial state (no alert firing, pending or ever
// resolved): what a new owner restores after warming the history.
func (m *Monitor) AlertStates() map[Metric]AlertState {
	out := map[Metric]AlertState{}
	for _, name := range m.names {
		if s := m.dets[name].AlertState(); s != (AlertState{}) {
			out[name] = s
		}
	}
	return out
}

// SetAlertStates restores the alert states of AlertStates on a monitor
// whose history was warmed; metrics it does not name return to the
// initial state. A share metric not watched yet is added (within
// MaxShares).
func (m *Monitor) SetAlertStates(states map[Metric]AlertState) error {
	for name := range states {
		if _, ok := m.dets[name]; ok || !strings.HasPrefix(string(name), sharePrefix) || m.shares >= m.cfg.MaxShares {
			continue
		}
		if err := m.add(name); err != nil {
			return err
		}
		m.shares++
	}
	var errs []error
	for _, name := range m.names {
		if err := m.dets[name].SetAlertState(states[name]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// orient turns a transition of the judged quantity into one of the metric
// (CPA is judged as conversions per unit of spend).
func (def metricDef) orient(tr Transition) Transition {
	if def.invert {
		tr.Direction = -tr.Direction
		if tr.State == Firing {
			tr.Score = -tr.Score
		}
	}
	return tr
}

func (m *Monitor) feed(t time.Time, c Counters, warm bool) ([]Event, error) {
	if m.shares < m.cfg.MaxShares && len(c.SourceClicks) > 0 {
		var fresh []string
		for src, n := range c.SourceClicks {
			if _, ok := m.dets[ShareMetric(src)]; !ok && n > 0 && src != "" {
				fresh = append(fresh, src)
			}
		}
		slices.Sort(fresh)
		for _, src := range fresh {
			if m.shares >= m.cfg.MaxShares {
				break
			}
			if err := m.add(ShareMetric(src)); err != nil {
				return nil, err
			}
			m.shares++
		}
	}
	var events []Event
	if !warm {
		m.judgedBy = [Seasonal + 1]int{}
	}
	for _, name := range m.names {
		d, def := m.dets[name], m.defs[name]
		o := def.obs(&c)
		if warm {
			if err := d.Warm(t, o); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			continue
		}
		r, err := d.Observe(t, o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		m.judgedBy[r.Baseline]++
		if r.Transition != nil {
			events = append(events, Event{Metric: name, Transition: def.orient(*r.Transition)})
		}
	}
	return events, nil
}

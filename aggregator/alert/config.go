package alert

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tally-edge/tally/aggregator/anomaly"
)

// Bounds on what the configuration (and later the admin API) may hold.
const (
	MaxRules        = 1000
	MaxBudgets      = 10000
	MaxSilences     = 1000
	MaxRuleCampaign = 1000 // campaigns named by one rule
	MaxTextLen      = 512  // a comment or summary field
	MaxWindow       = 31 * 24 * time.Hour
	MaxFor          = 24 * time.Hour
	MaxSilenceSpan  = 90 * 24 * time.Hour
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// Config is every rule, budget and silence of a deployment.
type Config struct {
	Rules    []Rule    `yaml:"rules" json:"rules"`
	Budgets  []Budget  `yaml:"budgets" json:"budgets"`
	Silences []Silence `yaml:"silences" json:"silences"`
}

// Rule is a static threshold or an anomaly sensitivity setting.
type Rule struct {
	// Name identifies the rule: lower case letters, digits, _ . -, at most
	// 64 characters, unique.
	Name string `yaml:"name" json:"name"`
	// Kind is "threshold" (Metric Op Value over Window, held For) or
	// "anomaly" (the detector's sensitivity for Metrics of Campaigns).
	Kind string `yaml:"kind" json:"kind"`
	// Campaigns the rule applies to; empty for every campaign.
	Campaigns []string `yaml:"campaigns" json:"campaigns,omitempty"`
	Severity  string   `yaml:"severity" json:"severity,omitempty"`

	// Threshold: Metric is a metric name (see anomaly.AllMetrics, or
	// share:source=NAME), Op one of > >= < <=, Value the threshold, Window
	// the trailing time the metric is computed over (default 15m), For how
	// long the condition must hold before firing and be gone before
	// resolving (default 5m), MinVolume the fewest events in the window's
	// denominator for a ratio to be judged (default 0).
	Metric    string        `yaml:"metric" json:"metric,omitempty"`
	Op        string        `yaml:"op" json:"op,omitempty"`
	Value     float64       `yaml:"value" json:"value,omitempty"`
	Window    time.Duration `yaml:"window" json:"window,omitempty"`
	For       time.Duration `yaml:"for" json:"for,omitempty"`
	MinVolume float64       `yaml:"min_volume" json:"min_volume,omitempty"`

	// Anomaly: Sensitivity is low, medium (the default detector) or high;
	// Metrics the metrics it applies to (empty: all).
	Sensitivity string   `yaml:"sensitivity" json:"sensitivity,omitempty"`
	Metrics     []string `yaml:"metrics" json:"metrics,omitempty"`
}

// Sensitivities and the detector thresholds they stand for.
var sensitivity = map[string]float64{"low": 10, "medium": 8, "high": 6}

// Budget is what one campaign may spend and the return it should get.
type Budget struct {
	Campaign string `yaml:"campaign" json:"campaign"`
	// Daily and Total budgets in the account currency; 0 for none.
	Daily float64 `yaml:"daily" json:"daily,omitempty"`
	Total float64 `yaml:"total" json:"total,omitempty"`
	// Start and End bound the flight (End exclusive, RFC 3339).
	Start time.Time `yaml:"start" json:"start,omitzero"`
	End   time.Time `yaml:"end" json:"end,omitzero"`
	// TimeZone is the campaign's day for the daily budget (IANA; UTC).
	TimeZone string `yaml:"time_zone" json:"time_zone,omitempty"`
	// TargetCPA alerts when the cost per conversion over TargetWindow is
	// above it by more than Tolerance; TargetROAS when revenue per cost is
	// below it by more than Tolerance. 0 for none.
	TargetCPA  float64 `yaml:"target_cpa" json:"target_cpa,omitempty"`
	TargetROAS float64 `yaml:"target_roas" json:"target_roas,omitempty"`
	// TargetWindow is the trailing window of the targets (default 24h);
	// Tolerance the relative slack (default 0.2); MinConversions the fewest
	// conversions (CPA) or the least spend in conversions' worth (ROAS)
	// for a target to be judged (default 10).
	TargetWindow   time.Duration `yaml:"target_window" json:"target_window,omitempty"`
	Tolerance      *float64      `yaml:"tolerance" json:"tolerance,omitempty"`
	MinConversions float64       `yaml:"min_conversions" json:"min_conversions,omitempty"`
}

// Silence mutes the alerts it matches until it ends.
type Silence struct {
	ID string `yaml:"id" json:"id"`
	// Campaign, Metric and Rule match exactly; empty matches any; at least
	// one is set.
	Campaign string    `yaml:"campaign" json:"campaign,omitempty"`
	Metric   string    `yaml:"metric" json:"metric,omitempty"`
	Rule     string    `yaml:"rule" json:"rule,omitempty"`
	Starts   time.Time `yaml:"starts" json:"starts,omitzero"`
	// Ends is required: a silence always expires (at most 90 days after
	// it starts).
	Ends      time.Time `yaml:"ends" json:"ends"`
	CreatedBy string    `yaml:"created_by" json:"created_by,omitempty"`
	Comment   string    `yaml:"comment" json:"comment,omitempty"`
}

// Active reports whether s mutes alerts at now.
func (s Silence) Active(now time.Time) bool {
	return !now.Before(s.Starts) && now.Before(s.Ends)
}

// Matches reports whether s matches a, ignoring time.
func (s Silence) Matches(a Alert) bool {
	return (s.Campaign == "" || s.Campaign == a.Campaign) && (s.Metric == "" || s.Metric == a.Metric) &&
		(s.Rule == "" || s.Rule == a.Rule)
}

// Silence marks the alerts an active silence of c mutes at now.
func (c Config) Silence(alerts []Alert, now time.Time) {
	for i := range alerts {
		alerts[i].Silenced = c.Silenced(alerts[i], now)
	}
}

// Silenced reports whether an active silence of c mutes a at now.
func (c Config) Silenced(a Alert, now time.Time) bool {
	for _, s := range c.Silences {
		if s.Active(now) && s.Matches(a) {
			return true
		}
	}
	return false
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Rules) > MaxRules {
		add("rules: %d, at most %d", len(c.Rules), MaxRules)
	}
	if len(c.Budgets) > MaxBudgets {
		add("budgets: %d, at most %d", len(c.Budgets), MaxBudgets)
	}
	if len(c.Silences) > MaxSilences {
		add("silences: %d, at most %d", len(c.Silences), MaxSilences)
	}
	names := map[string]bool{}
	for i, r := range c.Rules {
		if err := r.validate(); err != nil {
			add("rules[%d] %q: %w", i, r.Name, err)
		}
		if names[r.Name] {
			add("rules[%d]: name %q used twice", i, r.Name)
		}
		names[r.Name] = true
	}
	camps := map[string]bool{}
	for i, b := range c.Budgets {
		if err := b.validate(); err != nil {
			add("budgets[%d] %q: %w", i, b.Campaign, err)
		}
		if camps[b.Campaign] {
			add("budgets[%d]: campaign %q has two budgets", i, b.Campaign)
		}
		camps[b.Campaign] = true
	}
	ids := map[string]bool{}
	for i, s := range c.Silences {
		if err := s.validate(); err != nil {
			add("silences[%d] %q: %w", i, s.ID, err)
		}
		if ids[s.ID] {
			add("silences[%d]: id %q used twice", i, s.ID)
		}
		ids[s.ID] = true
	}
	return errors.Join(errs...)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func validCampaign(c string) error {
	if c == "" || len(c) > 256 || strings.ContainsAny(c, "\x00\n\r") {
		return fmt.Errorf("campaign %q: 1..256 characters, no control characters", c)
	}
	return nil
}

func validMetric(m string) error {
	return anomaly.MonitorConfig{Detector: anomaly.DefaultConfig(), Metrics: []anomaly.Metric{anomaly.Metric(m)}}.Validate()
}

func validSeverity(s string) error {
	switch s {
	case "", SeverityInfo, SeverityWarning, SeverityCritical:
		return nil
	}
	return fmt.Errorf("severity %q: want info, warning or critical", s)
}

func (r Rule) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(r.Name) {
		add("name: want %s", nameRE)
	}
	if r.Name == KindAnomaly || strings.HasPrefix(r.Name, "budget_") || strings.HasSuffix(r.Name, "_target") {
		add("name %q is reserved for built-in checks", r.Name)
	}
	if len(r.Campaigns) > MaxRuleCampaign {
		add("campaigns: %d, at most %d", len(r.Campaigns), MaxRuleCampaign)
	}
	for _, c := range r.Campaigns {
		if err := validCampaign(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := validSeverity(r.Severity); err != nil {
		errs = append(errs, err)
	}
	switch r.Kind {
	case KindThreshold:
		if err := validMetric(r.Metric); err != nil {
			errs = append(errs, err)
		}
		switch r.Op {
		case ">", ">=", "<", "<=":
		default:
			add("op %q: want >, >=, < or <=", r.Op)
		}
		if !finite(r.Value) {
			add("value %v: must be finite", r.Value)
		}
		if r.Window < 0 || r.Window > MaxWindow {
			add("window %v: must be in [0, %v]", r.Window, MaxWindow)
		}
		if r.For < 0 || r.For > MaxFor {
			add("for %v: must be in [0, %v]", r.For, MaxFor)
		}
		if r.MinVolume < 0 || !finite(r.MinVolume) {
			add("min_volume %v: must be >= 0", r.MinVolume)
		}
		if r.Sensitivity != "" || len(r.Metrics) > 0 {
			add("sensitivity and metrics belong to anomaly rules")
		}
	case KindAnomaly:
		if _, ok := sensitivity[r.Sensitivity]; !ok {
			add("sensitivity %q: want low, medium or high", r.Sensitivity)
		}
		if len(r.Metrics) > len(anomaly.AllMetrics)+64 {
			add("metrics: too many")
		}
		for _, m := range r.Metrics {
			if err := validMetric(m); err != nil {
				errs = append(errs, err)
			}
		}
		if r.Metric != "" || r.Op != "" || r.Value != 0 || r.Window != 0 || r.For != 0 {
			add("metric, op, value, window and for belong to threshold rules")
		}
	default:
		add("kind %q: want threshold or anomaly", r.Kind)
	}
	return errors.Join(errs...)
}

func (b Budget) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := validCampaign(b.Campaign); err != nil {
		errs = append(errs, err)
	}
	for name, v := range map[string]float64{"daily": b.Daily, "total": b.Total, "target_cpa": b.TargetCPA,
		"target_roas": b.TargetROAS, "min_conversions": b.MinConversions} {
		if v < 0 || !finite(v) {
			add("%s %v: must be a finite number >= 0", name, v)
		}
	}
	if b.Daily == 0 && b.Total == 0 && b.TargetCPA == 0 && b.TargetROAS == 0 {
		add("sets nothing: want daily, total, target_cpa or target_roas")
	}
	if b.Total > 0 && b.Daily > b.Total {
		add("daily %v exceeds total %v", b.Daily, b.Total)
	}
	if !b.Start.IsZero() && !b.End.IsZero() && !b.End.After(b.Start) {
		add("end %v is not after start %v", b.End, b.Start)
	}
	if b.TimeZone != "" {
		if _, err := time.LoadLocation(b.TimeZone); err != nil {
			add("time_zone %q: %v", b.TimeZone, err)
		}
	}
	if b.TargetWindow < 0 || b.TargetWindow > MaxWindow {
		add("target_window %v: must be in [0, %v]", b.TargetWindow, MaxWindow)
	}
	if b.Tolerance != nil && (*b.Tolerance < 0 || *b.Tolerance > 10 || !finite(*b.Tolerance)) {
		add("tolerance %v: must be in [0, 10]", *b.Tolerance)
	}
	return errors.Join(errs...)
}

func (s Silence) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(s.ID) {
		add("id: want %s", nameRE)
	}
	if s.Campaign == "" && s.Metric == "" && s.Rule == "" {
		add("matches everything: set campaign, metric or rule")
	}
	if s.Campaign != "" {
		if err := validCampaign(s.Campaign); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Metric != "" {
		if err := validMetric(s.Metric); err != nil {
			errs = append(errs, err)
		}
	}
	if len(s.Rule) > 64 {
		add("rule: at most 64 characters")
	}
	if s.Ends.IsZero() {
		add("ends: required (a silence always expires)")
	} else if !s.Ends.After(s.Starts) {
		add("ends %v is not after starts %v", s.Ends, s.Starts)
	} else if !s.Starts.IsZero() && s.Ends.Sub(s.Starts) > MaxSilenceSpan {
		add("lasts %v, at most %v", s.Ends.Sub(s.Starts), MaxSilenceSpan)
	}
	if len(s.Comment) > MaxTextLen || len(s.CreatedBy) > MaxTextLen {
		add("comment or created_by longer than %d bytes", MaxTextLen)
	}
	return errors.Join(errs...)
}

// Prune returns c without the silences that ended before now (expired
// silences are kept out of the configuration the evaluator holds).
func (c Config) Prune(now time.Time) Config {
	c.Silences = slices.DeleteFunc(slices.Clone(c.Silences), func(s Silence) bool { return !now.Before(s.Ends) })
	return c
}

// AnomalyConfig returns the monitor configuration for one campaign: the
// base configuration with the detector threshold of the most specific
// anomaly rule that names the campaign (else one for every campaign), and
// only that rule's metrics when it lists them.
func (c Config) AnomalyConfig(campaign string, base anomaly.MonitorConfig) anomaly.MonitorConfig {
	var chosen *Rule
	for i := range c.Rules {
		r := &c.Rules[i]
		if r.Kind != KindAnomaly {
			continue
		}
		if slices.Contains(r.Campaigns, campaign) {
			chosen = r
			break
		}
		if len(r.Campaigns) == 0 && chosen == nil {
			chosen = r
		}
	}
	if chosen == nil {
		return base
	}
	out := base
	out.Detector.Threshold = sensitivity[chosen.Sensitivity]
	out.Detector.ResolveThreshold = min(base.Detector.ResolveThreshold, out.Detector.Threshold/2)
	if len(chosen.Metrics) > 0 {
		out.Metrics = nil
		for _, m := range chosen.Metrics {
			out.Metrics = append(out.Metrics, anomaly.Metric(m))
		}
	}
	return out
}

package alert

import (
	"fmt"
	"slices"
	"time"

	"github.com/tally-edge/tally/aggregator/forecast"
)

// Built-in checks of a campaign's budget.
const (
	RuleDailyExhausted = "budget_daily_exhausted"
	RuleDailyRunsOut   = "budget_daily_runs_out"
	RuleTotalExhausted = "budget_total_exhausted"
	RuleTotalRunsOut   = "budget_total_runs_out"
	RuleCPATarget      = "cpa_above_target"
	RuleROASTarget     = "roas_below_target"
)

// budgetHold is how long a budget or target condition must hold (and be
// gone) before its alert fires (resolves): projections move minute by
// minute.
const budgetHold = 5 * time.Minute

// Values gives the numbers the rules judge; the caller computes them from
// merged minutes.
type Values interface {
	// Metric returns a campaign's metric over the window that ends at the
	// evaluation time and the volume behind it (the events of a count, the
	// denominator's events of a ratio); ok is false when it is unknown.
	Metric(campaign, metric string, window time.Duration) (value, volume float64, ok bool)
}

// ForecastBudget is b as the forecast package's budget.
func (b Budget) ForecastBudget() forecast.Budget {
	return forecast.Budget{Daily: b.Daily, Total: b.Total, Start: b.Start, End: b.End}
}

// BudgetFor returns the campaign's budget, if it has one.
func (c Config) BudgetFor(campaign string) (Budget, bool) {
	for _, b := range c.Budgets {
		if b.Campaign == campaign {
			return b, true
		}
	}
	return Budget{}, false
}

type condKey struct{ campaign, rule, metric string }

// cond is one condition's state: since when it holds (or stopped holding)
// and whether its alert fires.
type cond struct {
	trueSince, falseSince time.Time
	firing                bool
	alert                 Alert // the firing transition
}

// Evaluator runs the threshold rules and the budget and target checks of
// every campaign it is given. Its state is the conditions that hold or
// whose alerts fire; Restore rebuilds it from stored firing alerts. It is
// not safe for concurrent use.
type Evaluator struct {
	cfg   Config
	conds map[condKey]*cond
}

// NewEvaluator returns an evaluator of cfg.
func NewEvaluator(cfg Config) (*Evaluator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Evaluator{cfg: cfg, conds: map[condKey]*cond{}}, nil
}

// SetConfig replaces the configuration; conditions of rules that remain
// keep their state.
func (e *Evaluator) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	e.cfg = cfg
	return nil
}

// Config returns the configuration.
func (e *Evaluator) Config() Config { return e.cfg }

// Restore marks stored firing alerts as firing, so a node that takes a
// campaign over neither fires them again nor forgets to resolve them.
func (e *Evaluator) Restore(firing []Alert) {
	for _, a := range firing {
		if a.State != StateFiring || a.Kind == KindAnomaly {
			continue
		}
		e.conds[condKey{a.Campaign, a.Rule, a.Metric}] = &cond{trueSince: a.Start, firing: true, alert: a}
	}
}

// Evaluate judges campaign at now: its threshold rules from v and, when
// pacing is given, its budget and targets. It returns the alerts that fired
// or resolved, with Silenced set by the active silences.
func (e *Evaluator) Evaluate(now time.Time, campaign string, v Values, pacing *forecast.Pacing) []Alert {
	var out []Alert
	for i := range e.cfg.Rules {
		r := &e.cfg.Rules[i]
		if r.Kind != KindThreshold || (len(r.Campaigns) > 0 && !slices.Contains(r.Campaigns, campaign)) {
			continue
		}
		window := r.Window
		if window == 0 {
			window = 15 * time.Minute
		}
		hold := r.For
		if hold == 0 {
			hold = 5 * time.Minute
		}
		val, vol, ok := v.Metric(campaign, r.Metric, window)
		if !ok {
			continue // unknown: the condition keeps its state
		}
		holds := vol >= r.MinVolume && compare(val, r.Op, r.Value)
		dir := "above"
		if r.Op == "<" || r.Op == "<=" {
			dir = "below"
		}
		proto := Alert{Campaign: campaign, Metric: r.Metric, Rule: r.Name, Kind: KindThreshold,
			Severity: or(r.Severity, SeverityWarning), Direction: dir, Value: val, Expected: r.Value,
			Summary: fmt.Sprintf("%s: %s over %s is %s (rule %s: %s %s %s)", campaign, r.Metric, window, num(val), r.Name, r.Metric, r.Op, num(r.Value))}
		out = e.step(out, now, proto, holds, hold)
	}
	if b, ok := e.cfg.BudgetFor(campaign); ok {
		out = e.budget(out, now, b, v, pacing)
	}
	for i := range out {
		out[i].Silenced = e.cfg.Silenced(out[i], now)
	}
	return out
}

func (e *Evaluator) budget(out []Alert, now time.Time, b Budget, v Values, p *forecast.Pacing) []Alert {
	loc := time.UTC
	if b.TimeZone != "" {
		loc, _ = time.LoadLocation(b.TimeZone)
	}
	clock := func(t *time.Time) string {
		if t == nil {
			return "?"
		}
		lt := t.In(loc)
		if y, m, d := lt.Date(); y == now.In(loc).Year() && m == now.In(loc).Month() && d == now.In(loc).Day() {
			return lt.Format("15:04")
		}
		return lt.Format("2006-01-02 15:04")
	}
	c := b.Campaign
	if p != nil && b.Daily > 0 {
		spent := p.Day.Spend.Actual
		out = e.step(out, now, Alert{Campaign: c, Metric: "spend", Rule: RuleDailyExhausted, Kind: KindBudget,
			Severity: SeverityCritical, Direction: "above", Value: spent, Expected: b.Daily,
			Summary: fmt.Sprintf("%s: the daily budget of %s is spent (%s at %s)", c, num(b.Daily), num(spent), clock(p.DailyRunsOutAt))},
			p.DailyExhausted, 0)
		runsOut := !p.DailyExhausted && p.DailyRunsOutAt != nil
		out = e.step(out, now, Alert{Campaign: c, Metric: "spend", Rule: RuleDailyRunsOut, Kind: KindBudget,
			Severity: SeverityWarning, Direction: "above", Value: p.Day.Spend.Projected, Expected: b.Daily,
			Summary: fmt.Sprintf("%s: at this pace the daily budget of %s runs out at %s (%s spent, %s projected for the day)",
				c, num(b.Daily), clock(p.DailyRunsOutAt), num(spent), num(p.Day.Spend.Projected))},
			runsOut, budgetHold)
	}
	if p != nil && b.Total > 0 {
		out = e.step(out, now, Alert{Campaign: c, Metric: "spend", Rule: RuleTotalExhausted, Kind: KindBudget,
			Severity: SeverityCritical, Direction: "above", Value: p.FlightSpent, Expected: b.Total,
			Summary: fmt.Sprintf("%s: the total budget of %s is spent (%s)", c, num(b.Total), num(p.FlightSpent))},
			p.TotalExhausted, 0)
		early := !p.TotalExhausted && p.TotalRunsOutAt != nil
		proj := 0.0
		if p.FlightProjects != nil {
			proj = p.FlightProjects.Projected
		}
		out = e.step(out, now, Alert{Campaign: c, Metric: "spend", Rule: RuleTotalRunsOut, Kind: KindBudget,
			Severity: SeverityWarning, Direction: "above", Value: proj, Expected: b.Total,
			Summary: fmt.Sprintf("%s: at the usual pace the total budget of %s runs out at %s, before the flight ends", c, num(b.Total), clock(p.TotalRunsOutAt))},
			early, budgetHold)
	}
	window := b.TargetWindow
	if window == 0 {
		window = 24 * time.Hour
	}
	tol := 0.2
	if b.Tolerance != nil {
		tol = *b.Tolerance
	}
	minConv := b.MinConversions
	if minConv == 0 {
		minConv = 10
	}
	spend, _, okS := v.Metric(c, "spend", window)
	conv, _, okC := v.Metric(c, "conversions", window)
	if b.TargetCPA > 0 && okS && okC {
		limit := b.TargetCPA * (1 + tol)
		// Judged once there are enough conversions, or once the spend would
		// have bought enough at the limit (so none at all is judged too).
		over := (conv >= minConv || spend >= limit*minConv) && spend > limit*conv
		cpa := 0.0
		if conv > 0 {
			cpa = spend / conv
		}
		out = e.step(out, now, Alert{Campaign: c, Metric: "cpa", Rule: RuleCPATarget, Kind: KindTarget,
			Severity: SeverityWarning, Direction: "above", Value: cpa, Expected: b.TargetCPA,
			Summary: fmt.Sprintf("%s: cost per conversion over %s is %s (%s spent, %s conversions), target %s", c, window, num(cpa), num(spend), num(conv), num(b.TargetCPA))},
			over, budgetHold)
	}
	if b.TargetROAS > 0 && okS && okC {
		rev, _, okR := v.Metric(c, "revenue", window)
		if okR {
			roas := 0.0
			if spend > 0 {
				roas = rev / spend
			}
			under := conv >= minConv && spend > 0 && roas < b.TargetROAS*(1-tol)
			out = e.step(out, now, Alert{Campaign: c, Metric: "roas", Rule: RuleROASTarget, Kind: KindTarget,
				Severity: SeverityWarning, Direction: "below", Value: roas, Expected: b.TargetROAS,
				Summary: fmt.Sprintf("%s: return on ad spend over %s is %s, target %s", c, window, num(roas), num(b.TargetROAS))},
				under, budgetHold)
		}
	}
	return out
}

// step advances one condition and appends its transition, if any.
func (e *Evaluator) step(out []Alert, now time.Time, proto Alert, holds bool, hold time.Duration) []Alert {
	k := condKey{proto.Campaign, proto.Rule, proto.Metric}
	c := e.conds[k]
	if c == nil {
		if !holds {
			return out
		}
		c = &cond{}
		e.conds[k] = c
	}
	if holds {
		c.falseSince = time.Time{}
		if c.trueSince.IsZero() {
			c.trueSince = now
		}
		if !c.firing && now.Sub(c.trueSince) >= hold {
			a := proto
			a.State, a.Start, a.At = StateFiring, c.trueSince.Truncate(time.Minute), now
			a.ID = ID(a.Campaign, a.Metric, a.Rule, a.Start)
			c.firing, c.alert = true, a
			out = append(out, a)
		}
		return out
	}
	if !c.firing {
		delete(e.conds, k) // nothing pending, nothing firing: forget it
		return out
	}
	if c.falseSince.IsZero() {
		c.falseSince = now
	}
	if now.Sub(c.falseSince) >= hold {
		a := c.alert
		a.State, a.At = StateResolved, now
		end := now
		a.End = &end
		a.Value = proto.Value
		out = append(out, a)
		delete(e.conds, k)
	}
	return out
}

// Conditions is how many conditions the evaluator holds (pending or
// firing).
func (e *Evaluator) Conditions() int { return len(e.conds) }

func compare(v float64, op string, x float64) bool {
	switch op {
	case ">":
		return v > x
	case ">=":
		return v >= x
	case "<":
		return v < x
	case "<=":
		return v <= x
	}
	return false
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Forget drops every condition of campaign: another node judges it now.
func (e *Evaluator) Forget(campaign string) {
	for k := range e.conds {
		if k.campaign == campaign {
			delete(e.conds, k)
		}
	}
}

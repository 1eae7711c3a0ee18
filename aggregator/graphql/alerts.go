package graphql

import (
	"context"
	"math"
	"net/url"
	"strconv"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/alerting"
	"github.com/tally-edge/tally/aggregator/forecast"
	"github.com/tally-edge/tally/aggregator/graphql/internal/gen"
)

// The alert, alert config and forecast fields answer through REST's
// answer functions (api.Server.Alerts, AlertConfig, Forecast) as the data
// fields do. They only reshape: a key REST's JSON leaves out (an empty
// string, a zero number, an empty list, a zero time) is null here, and
// a projection bound that is not finite is null as in REST's JSON.

// Alerts answers as GET /api/v1/alerts.
func (q *queryResolver) Alerts(ctx context.Context, campaign *string, from, to *time.Time, state *gen.AlertState, limit *int) (*gen.AlertList, error) {
	p := params{}
	p.set("campaign", campaign)
	p.setTime("from", from)
	p.setTime("to", to)
	if state != nil {
		url.Values(p).Set("state", string(*state))
	}
	if limit != nil {
		url.Values(p).Set("limit", strconv.Itoa(*limit))
	}
	resp, err := ask(ctx, url.Values(p), q.answers.Alerts)
	if err != nil {
		return nil, err
	}
	out := &gen.AlertList{From: resp.From, To: resp.To, Firing: resp.Firing, Truncated: resp.Truncated, Alerts: make([]gen.Alert, len(resp.Alerts))}
	for i, a := range resp.Alerts {
		out.Alerts[i] = alertOf(a)
	}
	return out, nil
}

// AlertConfig answers as GET /api/v1/alerts/config (admins and analysts;
// the answer function refuses the other roles). It reads no storage.
func (q *queryResolver) AlertConfig(ctx context.Context) (*gen.AlertConfig, error) {
	resp, err := ask(ctx, url.Values{}, q.answers.AlertConfig)
	if err != nil {
		return nil, err
	}
	out := &gen.AlertConfig{Rules: make([]gen.RuleEntry, len(resp.Rules)), Budgets: make([]gen.BudgetEntry, len(resp.Budgets)),
		Silences: make([]gen.SilenceEntry, len(resp.Silences))}
	for i, r := range resp.Rules {
		out.Rules[i] = gen.RuleEntry{Object: ruleOf(r.Object), Source: r.Source}
	}
	for i, b := range resp.Budgets {
		out.Budgets[i] = gen.BudgetEntry{Object: budgetOf(b.Object), Source: b.Source}
	}
	for i, s := range resp.Silences {
		out.Silences[i] = gen.SilenceEntry{Object: silenceOf(s.Object), Source: s.Source}
	}
	return out, nil
}

// Forecast answers as GET /api/v1/forecast.
func (q *queryResolver) Forecast(ctx context.Context, campaign string) (*gen.Forecast, error) {
	resp, err := ask(ctx, url.Values{"campaign": {campaign}}, q.answers.Forecast)
	if err != nil {
		return nil, err
	}
	out := &gen.Forecast{Campaign: resp.Campaign, TimeZone: resp.TimeZone, Day: dayOf(resp.Day), Summary: resp.Summary}
	if resp.Budget != nil {
		out.Budget = budgetOf(*resp.Budget)
	}
	if pc := resp.Pacing; pc != nil {
		out.Pacing = &gen.Pacing{At: pc.At, Day: dayOf(pc.Day), DailyBudget: pc.DailyBudget, BudgetShare: pc.BudgetShare, TimeShare: pc.TimeShare,
			PaceVsClock: pc.PaceVsClock, PaceVsTypical: pc.PaceVsTypical, DailyExhausted: pc.DailyExhausted, DailyRunsOutAt: pc.DailyRunsOutAt,
			TotalBudget: pc.TotalBudget, FlightSpent: pc.FlightSpent, FlightTimeShare: pc.FlightShare, TotalExhausted: pc.TotalExhausted,
			TotalRunsOutAt: pc.TotalRunsOutAt}
		if pc.FlightProjects != nil {
			out.Pacing.FlightProjection = projectionOf(*pc.FlightProjects)
		}
	}
	return out, nil
}

func alertOf(a alerting.AlertView) gen.Alert {
	return gen.Alert{ID: a.ID, Campaign: a.Campaign, Metric: a.Metric, Rule: a.Rule, Kind: a.Kind, Severity: a.Severity,
		State: gen.AlertState(a.State), Direction: orNull(a.Direction), Start: a.Start, At: a.At, End: a.End, Value: a.Value,
		Expected: a.Expected, Score: orNull(a.Score), Summary: a.Summary, Silenced: a.Silenced, Delivered: a.Delivered}
}

func ruleOf(r alert.Rule) *gen.Rule {
	return &gen.Rule{Name: r.Name, Kind: r.Kind, Campaigns: listOrNull(r.Campaigns), Severity: orNull(r.Severity), Metric: orNull(r.Metric),
		Op: orNull(r.Op), Value: orNull(r.Value), Window: durationOrNull(r.Window), For: durationOrNull(r.For),
		MinVolume: orNull(r.MinVolume), Sensitivity: orNull(r.Sensitivity), Metrics: listOrNull(r.Metrics)}
}

func budgetOf(b alert.Budget) *gen.Budget {
	return &gen.Budget{Campaign: b.Campaign, Daily: orNull(b.Daily), Total: orNull(b.Total), Start: timeOrNull(b.Start), End: timeOrNull(b.End),
		TimeZone: orNull(b.TimeZone), TargetCpa: orNull(b.TargetCPA), TargetRoas: orNull(b.TargetROAS),
		TargetWindow: durationOrNull(b.TargetWindow), Tolerance: b.Tolerance, MinConversions: orNull(b.MinConversions)}
}

func silenceOf(s alert.Silence) *gen.Silence {
	return &gen.Silence{ID: s.ID, Campaign: orNull(s.Campaign), Metric: orNull(s.Metric), Rule: orNull(s.Rule), Starts: timeOrNull(s.Starts),
		Ends: s.Ends, CreatedBy: orNull(s.CreatedBy), Comment: orNull(s.Comment)}
}

func dayOf(d forecast.Day) *gen.ForecastDay {
	return &gen.ForecastDay{Start: d.Start, At: d.At, TimeShare: d.TimeShare, ActivityShare: d.ActivityShare, Basis: d.Basis,
		HistoryDays: d.HistoryDays, Spend: projectionOf(d.Spend), Conversions: projectionOf(d.Conversions), Revenue: projectionOf(d.Revenue),
		Roas: projectionOf(d.ROAS)}
}

// projectionOf is p with each bound that is not finite null, as REST's
// JSON writes it (forecast.Projection.MarshalJSON).
func projectionOf(p forecast.Projection) *gen.Projection {
	finite := func(x float64) *float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return &x
	}
	return &gen.Projection{Actual: finite(p.Actual), Projected: finite(p.Projected), Low: finite(p.Low), High: finite(p.High)}
}

// orNull is v, or null when v is its type's zero (where REST's JSON leaves
// the key out).
func orNull[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

func listOrNull(v []string) []string {
	if len(v) == 0 {
		return nil
	}
	return v
}

// durationOrNull is d as REST's JSON writes it (time.Duration.String,
// such as "15m0s"), null when zero.
func durationOrNull(d time.Duration) *string {
	if d == 0 {
		return nil
	}
	s := d.String()
	return &s
}

func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

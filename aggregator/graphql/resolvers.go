package graphql

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/graphql/internal/gen"
)

// resolver is the root of the resolvers: each data field asks Answers,
// nothing else.
type resolver struct{ answers Answers }

func (r *resolver) Query() gen.QueryResolver { return (*queryResolver)(r) }

type queryResolver resolver

// ask runs one answer function for the caller of ctx with args, after
// the request's earlier storage queries (one at a time per request). Its
// error is an answerError, which the error presenter shows with REST's
// status.
func ask[T any](ctx context.Context, args url.Values, answer func(context.Context, *auth.Principal, url.Values) (T, error)) (T, error) {
	var zero T
	p := auth.FromContext(ctx)
	if p == nil {
		return zero, answerError{fmt.Errorf("%w: no caller", auth.ErrUnauthenticated)}
	}
	release, err := takeTurn(ctx)
	if err != nil {
		return zero, answerError{err}
	}
	defer release()
	v, err := answer(ctx, p, args)
	if err != nil {
		return zero, answerError{err}
	}
	return v, nil
}

// params turns GraphQL arguments into REST's query parameters: an
// argument given (even empty) is a parameter given, one left out or null
// is absent, so REST's rules apply to both alike.
type params url.Values

func (p params) set(name string, v *string) {
	if v != nil {
		url.Values(p).Set(name, *v)
	}
}

func (p params) setTime(name string, t *time.Time) {
	if t != nil {
		url.Values(p).Set(name, t.Format(time.RFC3339Nano))
	}
}

// common sets the parameters every data field takes: campaign, range and
// filter.
func common(campaign *string, rng *gen.Range, f *gen.Filter) params {
	p := params{}
	p.set("campaign", campaign)
	if rng != nil {
		p.set("window", rng.Window)
		p.setTime("from", rng.From)
		p.setTime("to", rng.To)
	}
	if f != nil {
		p.set("source", f.Source)
		p.set("medium", f.Medium)
		p.set("country", f.Country)
		p.set("device", f.Device)
		p.set("region", f.Region)
	}
	return p
}

func (p params) setBy(by *gen.Dimension) {
	if by != nil {
		url.Values(p).Set("by", string(*by))
	}
}

// Whoami is the caller; it reads no storage.
func (q *queryResolver) Whoami(ctx context.Context) (*gen.Caller, error) {
	p := auth.FromContext(ctx)
	if p == nil {
		return nil, answerError{fmt.Errorf("%w: no caller", auth.ErrUnauthenticated)}
	}
	c := &gen.Caller{Subject: p.Subject, Role: string(p.Role), Campaigns: append([]string{}, p.Campaigns...)}
	if !p.Expires.IsZero() {
		c.Expires = &p.Expires
	}
	return c, nil
}

// Campaigns answers as GET /api/v1/campaigns.
func (q *queryResolver) Campaigns(ctx context.Context, rng *gen.Range, f *gen.Filter) (*api.CampaignsResponse, error) {
	resp, err := ask(ctx, url.Values(common(nil, rng, f)), q.answers.Campaigns)
	if err != nil {
		return nil, err
	}
	return &resp, nil
}

// Kpis answers as GET /api/v1/kpis.
func (q *queryResolver) Kpis(ctx context.Context, campaign string, rng *gen.Range, f *gen.Filter, by *gen.Dimension) (*gen.Breakdown, error) {
	p := common(&campaign, rng, f)
	p.setBy(by)
	resp, err := ask(ctx, url.Values(p), q.answers.KPIs)
	if err != nil {
		return nil, err
	}
	return &gen.Breakdown{Campaign: resp.Campaign, By: dimension(resp.By), Total: &resp.Total, Groups: resp.Groups}, nil
}

// Series answers as GET /api/v1/series; each point's values are listed in
// the order of metrics.
func (q *queryResolver) Series(ctx context.Context, campaign *string, metrics []gen.Metric, step *string, rng *gen.Range, f *gen.Filter, by *gen.Dimension) (*gen.SeriesAnswer, error) {
	p := common(campaign, rng, f)
	p.setBy(by)
	p.set("step", step)
	names := make([]string, len(metrics))
	for i, m := range metrics {
		names[i] = string(m)
	}
	url.Values(p).Set("metric", strings.Join(names, ","))
	resp, err := ask(ctx, url.Values(p), q.answers.Series)
	if err != nil {
		return nil, err
	}
	out := &gen.SeriesAnswer{Step: resp.Step, From: resp.From, To: resp.To, By: dimension(resp.By),
		Metrics: make([]gen.Metric, len(resp.Metrics)), Series: make([]gen.Series, 0, len(resp.Series))}
	if resp.Campaign != "" {
		out.Campaign = &resp.Campaign
	}
	for i, m := range resp.Metrics {
		out.Metrics[i] = gen.Metric(m)
	}
	for _, s := range resp.Series {
		gs := gen.Series{Key: s.Key, Points: make([]gen.SeriesPoint, len(s.Points))}
		for i, pt := range s.Points {
			vals := make([]gen.MetricValue, len(resp.Metrics))
			for j, m := range resp.Metrics {
				vals[j] = gen.MetricValue{Metric: gen.Metric(m), Value: pt.Values[m]}
			}
			gs.Points[i] = gen.SeriesPoint{T: pt.T, Values: vals}
		}
		out.Series = append(out.Series, gs)
	}
	return out, nil
}

// Bots answers as GET /api/v1/bots; reasons are sorted.
func (q *queryResolver) Bots(ctx context.Context, campaign string, rng *gen.Range, f *gen.Filter) (*gen.Bots, error) {
	resp, err := ask(ctx, url.Values(common(&campaign, rng, f)), q.answers.Bots)
	if err != nil {
		return nil, err
	}
	out := &gen.Bots{Total: resp.Total, Share: resp.Share, ByReason: make([]gen.BotReason, 0, len(resp.ByReason))}
	for reason, n := range resp.ByReason {
		out.ByReason = append(out.ByReason, gen.BotReason{Reason: reason, Events: n})
	}
	slices.SortFunc(out.ByReason, func(a, b gen.BotReason) int { return strings.Compare(a.Reason, b.Reason) })
	return out, nil
}

// Polls answers as GET /api/v1/polls.
func (q *queryResolver) Polls(ctx context.Context, campaign string, rng *gen.Range, f *gen.Filter) ([]api.Poll, error) {
	resp, err := ask(ctx, url.Values(common(&campaign, rng, f)), q.answers.Polls)
	if err != nil {
		return nil, err
	}
	return resp.Polls, nil
}

// dimension is by as the enum, nil when empty.
func dimension(by string) *gen.Dimension {
	if by == "" {
		return nil
	}
	d := gen.Dimension(by)
	return &d
}

// costs is the complexity of each field: 1 plus its selections, and
// QueryCost more for the fields that read storage (the data fields,
// alerts and forecast).
func costs() gen.ComplexityRoot {
	var c gen.ComplexityRoot
	c.Query.Campaigns = func(child int, _ *gen.Range, _ *gen.Filter) int { return child + 1 + QueryCost }
	c.Query.Kpis = func(child int, _ string, _ *gen.Range, _ *gen.Filter, _ *gen.Dimension) int {
		return child + 1 + QueryCost
	}
	c.Query.Series = func(child int, _ *string, _ []gen.Metric, _ *string, _ *gen.Range, _ *gen.Filter, _ *gen.Dimension) int {
		return child + 1 + QueryCost
	}
	c.Query.Bots = func(child int, _ string, _ *gen.Range, _ *gen.Filter) int { return child + 1 + QueryCost }
	c.Query.Polls = func(child int, _ string, _ *gen.Range, _ *gen.Filter) int { return child + 1 + QueryCost }
	c.Query.Alerts = func(child int, _ *string, _, _ *time.Time, _ *gen.AlertState, _ *int) int {
		return child + 1 + QueryCost
	}
	c.Query.Forecast = func(child int, _ string) int { return child + 1 + QueryCost }
	// alertConfig reads the objects in force from memory: 1 plus its
	// selections, gqlgen's default.
	return c
}

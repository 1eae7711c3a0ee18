package graphql_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/alerting"
	"github.com/tally-edge/tally/aggregator/forecast"
	"github.com/tally-edge/tally/aggregator/graphql"
)

// alertService is alerting.Service for these tests: alerts of spring
// and autumn with every field set somewhere, objects with every field set,
// and forecasts with a budget, pacing and an open upper bound. It records
// what it was asked.
type alertService struct {
	mu        sync.Mutex
	alerts    []alert.Alert
	queries   []alerting.AlertQuery
	forecasts []string
}

func newAlertService() *alertService {
	s := &alertService{}
	for i, c := range []string{"spring", "autumn", "spring"} {
		a := alert.Alert{Campaign: c, Metric: "clicks", Rule: "anomaly", Kind: alert.KindAnomaly, Severity: alert.SeverityWarning,
			State: alert.StateFiring, Direction: "drop", Start: now.Add(time.Duration(-10-i) * time.Minute), At: now.Add(-9 * time.Minute),
			Value: 3, Expected: 41.5, Score: -9.25, Summary: c + ": clicks is far below its usual level"}
		if i == 2 { // a resolved, silenced threshold alert without direction or score
			end := now.Add(-2 * time.Minute)
			a.Rule, a.Kind, a.State, a.Direction, a.Score, a.End, a.At, a.Silenced = "ctr-floor", alert.KindThreshold, alert.StateResolved, "", 0, &end, end, true
		}
		a.ID = alert.ID(a.Campaign, a.Metric, a.Rule, a.Start)
		s.alerts = append(s.alerts, a)
	}
	return s
}

func (s *alertService) Alerts(_ context.Context, q alerting.AlertQuery) (alerting.AlertList, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = append(s.queries, q)
	out := alerting.AlertList{From: q.From, To: q.To, Alerts: []alerting.AlertView{}}
	for i, a := range s.alerts {
		if (q.All || slices.Contains(q.Campaigns, a.Campaign)) && (q.State == "" || q.State == a.State) {
			if q.Limit > 0 && len(out.Alerts) == q.Limit {
				out.Truncated = true
				break
			}
			out.Alerts = append(out.Alerts, alerting.AlertView{Alert: a, Delivered: i == 0})
			if a.State == alert.StateFiring {
				out.Firing++
			}
		}
	}
	return out, nil
}

func (s *alertService) Objects() alerting.ObjectsView {
	tol := 0.25
	return alerting.ObjectsView{
		Rules: []alerting.ObjectView[alert.Rule]{
			{Object: alert.Rule{Name: "ctr-floor", Kind: alert.KindThreshold, Campaigns: []string{"spring", "autumn"}, Severity: "critical",
				Metric: "ctr", Op: "<", Value: 0.01, Window: time.Hour, For: 90 * time.Second, MinVolume: 200}, Source: alerting.SourceFile},
			{Object: alert.Rule{Name: "touchy", Kind: alert.KindAnomaly, Sensitivity: "high", Metrics: []string{"clicks", "cvr"}}, Source: alerting.SourceAPI},
		},
		Budgets: []alerting.ObjectView[alert.Budget]{
			{Object: alert.Budget{Campaign: "autumn", Daily: 500, Total: 9000, Start: now.Add(-72 * time.Hour), End: now.Add(72 * time.Hour),
				TimeZone: "Europe/Berlin", TargetCPA: 12.5, TargetROAS: 3, TargetWindow: 24 * time.Hour, Tolerance: &tol, MinConversions: 5}, Source: alerting.SourceAPI},
			{Object: alert.Budget{Campaign: "spring", Daily: 80}, Source: alerting.SourceFile},
		},
		Silences: []alerting.ObjectView[alert.Silence]{
			{Object: alert.Silence{ID: "release", Campaign: "spring", Metric: "clicks", Rule: "anomaly", Starts: now.Add(-time.Hour),
				Ends: now.Add(time.Hour), CreatedBy: "root", Comment: "planned release"}, Source: alerting.SourceAPI},
		},
	}
}

func (s *alertService) PutObject(context.Context, any, string) error               { return nil }
func (s *alertService) DeleteObject(context.Context, string, string, string) error { return nil }

func (s *alertService) Forecast(_ context.Context, campaign string, at time.Time) (alerting.Forecast, error) {
	s.mu.Lock()
	s.forecasts = append(s.forecasts, campaign)
	s.mu.Unlock()
	if campaign == "empty" {
		return alerting.Forecast{}, alerting.ErrNoData
	}
	day := forecast.Day{Start: at.Truncate(24 * time.Hour), At: at, TimeShare: 0.4375, ActivityShare: 0.31, Basis: "weekday", HistoryDays: 14,
		Spend:       forecast.Projection{Actual: 120.5, Projected: 388, Low: 301.25, High: 470},
		Conversions: forecast.Projection{Actual: 9, Projected: 29, Low: 20, High: math.Inf(1)},
		Revenue:     forecast.Projection{Actual: 0, Projected: 0, Low: 0, High: 0},
		ROAS:        forecast.Projection{Actual: math.NaN(), Projected: 2.5, Low: 1.75, High: 3.5}}
	f := alerting.Forecast{Campaign: campaign, TimeZone: "UTC", Day: day, Summary: campaign + ": at this pace the daily budget runs out at 19:10"}
	if campaign == "autumn" {
		b := alert.Budget{Campaign: campaign, Daily: 300, Total: 5000, End: at.Add(96 * time.Hour)}
		runsOut := at.Add(8*time.Hour + 40*time.Minute)
		f.Budget = &b
		f.Pacing = &forecast.Pacing{At: at, Day: day, DailyBudget: 300, BudgetShare: 0.4, TimeShare: 0.4375, PaceVsClock: 0.914, PaceVsTypical: 1.29,
			DailyRunsOutAt: &runsOut, TotalBudget: 5000, FlightSpent: 2100, FlightShare: 0.6,
			FlightProjects: &forecast.Projection{Actual: 2100, Projected: 4700, Low: 4400, High: math.Inf(1)}}
	}
	return f, nil
}

func (s *alertService) lastQuery() alerting.AlertQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[len(s.queries)-1]
}

func (s *alertService) asked() (alertQueries, forecasts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queries), len(s.forecasts)
}

// The selections of every field of the alert types.
const (
	projectionFields = `actual projected low high`
	dayFields        = `start at time_share activity_share basis history_days spend { ` + projectionFields + ` } conversions { ` + projectionFields +
		` } revenue { ` + projectionFields + ` } roas { ` + projectionFields + ` }`
	budgetFields   = `campaign daily total start end time_zone target_cpa target_roas target_window tolerance min_conversions`
	forecastFields = `campaign time_zone day { ` + dayFields + ` } budget { ` + budgetFields + ` } pacing { at day { ` + dayFields +
		` } daily_budget budget_share time_share pace_vs_clock pace_vs_typical daily_exhausted daily_runs_out_at total_budget flight_spent
		flight_time_share flight_projection { ` + projectionFields + ` } total_exhausted total_runs_out_at } summary`
	alertListFields = `from to firing truncated alerts { id campaign metric rule kind severity state direction start at end value expected
		score summary silenced delivered }`
	alertConfigFields = `rules { source object { name kind campaigns severity metric op value window for min_volume sensitivity metrics } }
		budgets { source object { ` + budgetFields + ` } } silences { source object { id campaign metric rule starts ends created_by comment } }`
)

// sameAsREST reports how GraphQL's answer differs from REST's JSON: a key
// REST leaves out must be null in GraphQL (or false, for the flags REST
// writes only when set); every other value must be equal.
func sameAsREST(rest, gql []byte) error {
	var r, g any
	if err := json.Unmarshal(rest, &r); err != nil {
		return err
	}
	if err := json.Unmarshal(gql, &g); err != nil {
		return err
	}
	g = dropOmitted(g, r)
	if !reflect.DeepEqual(r, g) {
		return fmt.Errorf("\nGraphQL %s\nREST    %s", mustMarshal(g), rest)
	}
	return nil
}

// dropOmitted removes from g the keys REST (r) left out whose GraphQL
// value stands for that: null, or false for a flag.
func dropOmitted(g, r any) any {
	switch gv := g.(type) {
	case map[string]any:
		rm, _ := r.(map[string]any)
		for k, v := range gv {
			rv, inREST := rm[k]
			switch {
			case !inREST && (v == nil || v == false):
				delete(gv, k)
			default:
				gv[k] = dropOmitted(v, rv)
			}
		}
	case []any:
		rl, _ := r.([]any)
		for i := range gv {
			var rv any
			if i < len(rl) {
				rv = rl[i]
			}
			gv[i] = dropOmitted(gv[i], rv)
		}
	}
	return g
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestAlertsAnswersEqualREST asks alerts, alertConfig and forecast of REST
// and of GraphQL as each role and compares the answers key by key; the
// service is asked the same question by both.
func TestAlertsAnswersEqualREST(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig())
	from, to := now.Add(-time.Hour).Format(time.RFC3339), now.Add(time.Minute).Format(time.RFC3339)
	for _, tc := range []struct {
		token   string
		alerts  int // in the list of every campaign the caller sees
		configs bool
	}{{adminToken, 3, true}, {analystToken, 3, true}, {viewerToken, 2, false}} {
		q := `query($from: Time, $to: Time) {
			all: alerts { ` + alertListFields + ` }
			some: alerts(campaign: "spring", from: $from, to: $to, state: firing, limit: 1) { ` + alertListFields + ` }
			cut: alerts(limit: 1) { ` + alertListFields + ` }
			forecast(campaign: "spring") { ` + forecastFields + ` }`
		if tc.configs {
			q += ` alertConfig { ` + alertConfigFields + ` } budgeted: forecast(campaign: "autumn") { ` + forecastFields + ` }`
		}
		before, _ := e.alerts.asked()
		code, body, r := e.query(t, tc.token, q+" }", map[string]any{"from": from, "to": to})
		if code != 200 || len(r.Errors) > 0 {
			t.Fatalf("GraphQL as %s: %d %s", tc.token, code, body)
		}
		e.alerts.mu.Lock()
		fromGraphQL := slices.Clone(e.alerts.queries[before:])
		e.alerts.mu.Unlock()
		if len(fromGraphQL) != 3 {
			t.Fatalf("GraphQL as %s asked the service %d times for 3 alert fields", tc.token, len(fromGraphQL))
		}
		for _, c := range []struct {
			field, path string
			q           url.Values
		}{
			{"all", "/api/v1/alerts", nil},
			{"some", "/api/v1/alerts", url.Values{"campaign": {"spring"}, "from": {from}, "to": {to}, "state": {"firing"}, "limit": {"1"}}},
			{"cut", "/api/v1/alerts", url.Values{"limit": {"1"}}},
			{"forecast", "/api/v1/forecast", url.Values{"campaign": {"spring"}}},
			{"alertConfig", "/api/v1/alerts/config", nil},
			{"budgeted", "/api/v1/forecast", url.Values{"campaign": {"autumn"}}},
		} {
			if !tc.configs && (c.field == "alertConfig" || c.field == "budgeted") {
				continue
			}
			rest := e.rest(t, tc.token, c.path, c.q)
			if c.path == "/api/v1/alerts" {
				// The service was asked the same by both.
				if fromREST := e.alerts.lastQuery(); !slices.ContainsFunc(fromGraphQL, func(q alerting.AlertQuery) bool { return reflect.DeepEqual(q, fromREST) }) {
					t.Errorf("%s as %s: REST asked the service %+v, GraphQL %+v", c.field, tc.token, fromREST, fromGraphQL)
				}
			}
			if err := sameAsREST(rest, r.Data[c.field]); err != nil {
				t.Errorf("%s as %s: %v", c.field, tc.token, err)
			}
		}
		all := must[alerting.AlertList](t, r.Data["all"])
		if len(all.Alerts) != tc.alerts || all.Firing == 0 {
			t.Errorf("alerts as %s: %d, want %d: %s", tc.token, len(all.Alerts), tc.alerts, r.Data["all"])
		}
		if cut := must[alerting.AlertList](t, r.Data["cut"]); !cut.Truncated || len(cut.Alerts) != 1 {
			t.Errorf("alerts(limit: 1) as %s: %s", tc.token, r.Data["cut"])
		}
		// Every kind of null: no direction, score or end; a bound that
		// is not finite; keys REST leaves out.
		for _, want := range []string{`"direction":null`, `"score":null`, `"end":null`, `"silenced":true`, `"delivered":true`} {
			if !strings.Contains(string(r.Data["all"]), want) {
				t.Errorf("alerts as %s lack %s: %s", tc.token, want, r.Data["all"])
			}
		}
		if fc := string(r.Data["forecast"]); !strings.Contains(fc, `"high":null`) || !strings.Contains(fc, `"budget":null`) ||
			!strings.Contains(fc, `"roas":{"actual":null,"projected":2.5`) {
			t.Errorf("forecast as %s: %s", tc.token, fc)
		}
		if tc.configs {
			if c := string(r.Data["alertConfig"]); !strings.Contains(c, `"window":"1h0m0s","for":"1m30s"`) || !strings.Contains(c, `"campaigns":null`) ||
				!strings.Contains(c, `"tolerance":0.25`) || !strings.Contains(c, `"comment":"planned release"`) {
				t.Errorf("alertConfig as %s: %s", tc.token, c)
			}
			if fc := string(r.Data["budgeted"]); !strings.Contains(fc, `"flight_projection":{"actual":2100,"projected":4700,"low":4400,"high":null}`) {
				t.Errorf("forecast with a budget as %s: %s", tc.token, fc)
			}
		}
	}
}

// TestViewerAlertsScoped: a viewer's alerts are its campaigns' only, and
// its alerts, forecast or alertConfig outside them is refused inside the
// query as REST refuses it (403), with nothing asked of the service; the
// other fields still answer.
func TestViewerAlertsScoped(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig())
	code, body, r := e.query(t, viewerToken, `{ alerts { alerts { campaign } } }`, nil)
	if code != 200 || len(r.Errors) > 0 || string(r.Data["alerts"]) != `{"alerts":[{"campaign":"spring"},{"campaign":"spring"}]}` {
		t.Fatalf("the viewer's alerts: %d %s", code, body)
	}
	if q := e.alerts.lastQuery(); q.All || !slices.Equal(q.Campaigns, []string{"spring"}) {
		t.Fatalf("the viewer's alerts asked the service for %+v", q)
	}
	if line := lastAudit(t, e.audit); fmt.Sprint(line["campaigns"]) != "[spring]" {
		t.Fatalf("audit line %v", line)
	}
	for _, q := range []string{
		`{ alerts(campaign: "autumn") { firing } mine: alerts(campaign: "spring") { firing } }`,
		`{ forecast(campaign: "autumn") { summary } mine: forecast(campaign: "spring") { campaign } }`,
		`{ alertConfig { rules { source } } mine: alerts { firing } }`,
	} {
		alertsBefore, forecastsBefore := e.alerts.asked()
		code, body, r := e.query(t, viewerToken, q, nil)
		if code != 200 || len(r.Errors) != 1 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		ext := r.Errors[0].Extensions
		if ext["code"] != "FORBIDDEN" || ext["status"] != float64(403) {
			t.Fatalf("%s: %s", q, body)
		}
		field := strings.Fields(strings.Trim(q, "{ "))[0]
		field, _, _ = strings.Cut(field, "(")
		if string(r.Data[field]) != "null" || string(r.Data["mine"]) == "null" || len(r.Data["mine"]) == 0 {
			t.Fatalf("%s: the refused field is not null or the allowed one is missing: %s", q, body)
		}
		if strings.Contains(body, "far below") || strings.Contains(body, "ctr-floor") || strings.Count(body, "autumn") > 1 {
			t.Fatalf("%s: the refused answer leaked: %s", q, body)
		}
		alertsAfter, forecastsAfter := e.alerts.asked()
		if alertsAfter+forecastsAfter-alertsBefore-forecastsBefore != 1 { // the allowed field's only
			t.Fatalf("%s: the service was asked %d times, want once", q, alertsAfter+forecastsAfter-alertsBefore-forecastsBefore)
		}
		if line := lastAudit(t, e.audit); line["outcome"] != "graphql_forbidden" || strings.Contains(fmt.Sprint(line["campaigns"]), "autumn") {
			t.Fatalf("%s: audit line %v", q, line)
		}
	}
	// REST refuses the same.
	for _, path := range []string{"/api/v1/alerts?campaign=autumn", "/api/v1/forecast?campaign=autumn", "/api/v1/alerts/config"} {
		if code := e.restStatus(t, viewerToken, path); code != 403 {
			t.Fatalf("REST %s as the viewer: %d", path, code)
		}
	}
	// The analyst reads the configuration; nobody's role but admin and
	// analyst does.
	if code, body, r := e.query(t, analystToken, `{ alertConfig { budgets { object { campaign } } } }`, nil); code != 200 || len(r.Errors) > 0 ||
		string(r.Data["alertConfig"]) != `{"budgets":[{"object":{"campaign":"autumn"}},{"object":{"campaign":"spring"}}]}` {
		t.Fatalf("the analyst's alertConfig: %d %s", code, body)
	}
}

// TestAlertFieldErrors: bad arguments are REST's 400 with REST's
// message, a campaign without data REST's 404.
func TestAlertFieldErrors(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig())
	for _, c := range []struct{ q, code, says string }{
		{`{ alerts(limit: 0) { firing } }`, "BAD_REQUEST", `parameter "limit": want 1 to 1000`},
		{`{ alerts(limit: 1001) { firing } }`, "BAD_REQUEST", `parameter "limit": want 1 to 1000`},
		{`{ alerts(campaign: "") { firing } }`, "BAD_REQUEST", `parameter "campaign": empty`},
		{`{ alerts(from: "2026-01-01T00:00:00Z", to: "2026-03-01T00:00:00Z") { firing } }`, "BAD_REQUEST", `parameter "from": must be before to`},
		{`{ alerts(campaign: "` + strings.Repeat("x", 600) + `") { firing } }`, "BAD_REQUEST", "longer than 512 bytes"},
		{`{ forecast(campaign: "") { summary } }`, "BAD_REQUEST", `parameter "campaign": required`},
		{`{ forecast(campaign: "empty") { summary } }`, "NOT_FOUND", "no data"},
	} {
		code, body, r := e.query(t, adminToken, c.q, nil)
		if code != 200 || len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != c.code || !strings.Contains(r.Errors[0].Message, c.says) {
			t.Errorf("%.80s: %d %s, want %s saying %q", c.q, code, body, c.code, c.says)
		}
	}
	if code, body, _ := e.query(t, adminToken, `{ alerts(state: sleeping) { firing } }`, nil); code != 422 || !strings.Contains(body, "AlertState") {
		t.Errorf("an unknown state: %d %s", code, body)
	}
}

// TestAlertFieldsCost: alerts and forecast read storage and cost as the
// data fields do (nine fit the default bound, ten do not); alertConfig
// reads memory and costs as whoami.
func TestAlertFieldsCost(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig())
	fields := func(n int, field string) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			fmt.Fprintf(&b, ` f%d: %s`, i, field)
		}
		return b.String() + " }"
	}
	for _, field := range []string{`alerts { firing truncated }`, `forecast(campaign: "spring") { campaign summary }`} {
		if code, body, r := e.query(t, adminToken, fields(9, field), nil); code != 200 || len(r.Errors) > 0 {
			t.Fatalf("9 × %s: %d %.300s", field, code, body)
		}
		alertsBefore, forecastsBefore := e.alerts.asked()
		code, body, r := e.query(t, adminToken, fields(10, field), nil)
		if code != 422 || len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "COMPLEXITY_LIMIT_EXCEEDED" {
			t.Fatalf("10 × %s: %d %.300s", field, code, body)
		}
		if a, f := e.alerts.asked(); a != alertsBefore || f != forecastsBefore {
			t.Fatalf("10 × %s: a refused query reached the service", field)
		}
	}
	if code, body, r := e.query(t, adminToken, fields(40, `alertConfig { rules { source } }`), nil); code != 200 || len(r.Errors) > 0 {
		t.Fatalf("40 × alertConfig: %d %.300s", code, body)
	}
	// The three with every subfield cost 353: alerts 123, alertConfig 41
	// and forecast 189 (the README quotes it).
	every := `{ alerts { ` + alertListFields + ` } alertConfig { ` + alertConfigFields + ` } forecast(campaign: "autumn") { ` + forecastFields + ` } }`
	for limit, want := range map[int]int{352: 422, 353: 200} {
		cfg := graphql.DefaultConfig()
		cfg.MaxComplexity = limit
		if code, body, _ := newEnv(t, cfg).query(t, adminToken, every, nil); code != want {
			t.Fatalf("every alert field with a complexity bound of %d: %d %.300s, want %d", limit, code, body, want)
		}
	}
	// The deepest alert field nests 5 deep: within the lowest depth bound.
	shallow := graphql.DefaultConfig()
	shallow.MaxDepth = 5
	e = newEnv(t, shallow)
	if code, body, _ := e.query(t, adminToken, `{ forecast(campaign: "autumn") { pacing { day { spend { actual } } } } }`, nil); code != 200 {
		t.Fatalf("forecast 5 deep with a limit of 5: %d %s", code, body)
	}
}

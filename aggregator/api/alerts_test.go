package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/alerting"
	"github.com/tally-edge/tally/aggregator/forecast"
)

// fakeAlerts is alerting.Service for the API's tests: alerts of spring
// and autumn, objects, and the edits it was asked for.
type fakeAlerts struct {
	mu      sync.Mutex
	alerts  []alert.Alert
	objects alerting.ObjectsView
	puts    []any
	deletes []string
	queries []alerting.AlertQuery
}

func newFakeAlerts() *fakeAlerts {
	f := &fakeAlerts{}
	for _, c := range []string{"spring", "autumn"} {
		a := alert.Alert{Campaign: c, Metric: "clicks", Rule: "anomaly", Kind: alert.KindAnomaly, Severity: alert.SeverityWarning,
			State: alert.StateFiring, Direction: "drop", Start: now.Add(-10 * time.Minute), At: now.Add(-10 * time.Minute),
			Summary: c + ": clicks is far below its usual level"}
		a.ID = alert.ID(a.Campaign, a.Metric, a.Rule, a.Start)
		f.alerts = append(f.alerts, a)
	}
	f.objects = alerting.ObjectsView{
		Rules:    []alerting.ObjectView[alert.Rule]{{Object: alert.Rule{Name: "ctr-floor", Kind: alert.KindThreshold, Metric: "ctr", Op: "<", Value: 0.01}, Source: alerting.SourceFile}},
		Budgets:  []alerting.ObjectView[alert.Budget]{{Object: alert.Budget{Campaign: "autumn", Daily: 500}, Source: alerting.SourceAPI}},
		Silences: []alerting.ObjectView[alert.Silence]{},
	}
	return f
}

func (f *fakeAlerts) Alerts(_ context.Context, q alerting.AlertQuery) (alerting.AlertList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	out := alerting.AlertList{From: q.From, To: q.To, Alerts: []alerting.AlertView{}}
	for _, a := range f.alerts {
		if (q.All || slices.Contains(q.Campaigns, a.Campaign)) && (q.State == "" || q.State == a.State) {
			out.Alerts = append(out.Alerts, alerting.AlertView{Alert: a})
		}
	}
	return out, nil
}

func (f *fakeAlerts) Objects() alerting.ObjectsView { return f.objects }

func (f *fakeAlerts) PutObject(_ context.Context, obj any, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := obj.(alert.Rule); ok && r.Name == "from-file" {
		return &alerting.ObjectError{Status: 403, Msg: "rule \"from-file\" is defined in the configuration file"}
	}
	f.puts = append(f.puts, obj)
	return nil
}

func (f *fakeAlerts) DeleteObject(_ context.Context, kind, name, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "missing" {
		return &alerting.ObjectError{Status: 404, Msg: "no " + kind + " \"missing\""}
	}
	f.deletes = append(f.deletes, kind+"/"+name+" by "+by)
	return nil
}

func (f *fakeAlerts) Forecast(_ context.Context, campaign string, at time.Time) (alerting.Forecast, error) {
	if campaign == "empty" {
		return alerting.Forecast{}, alerting.ErrNoData
	}
	return alerting.Forecast{Campaign: campaign, TimeZone: "UTC", Day: forecast.Day{At: at}, Summary: campaign + ": on pace"}, nil
}

func (e *testEnv) do(method, url, token, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	e.srv.ServeHTTP(w, r)
	return w
}

// TestAlertsScopedToTheViewer: a viewer's list holds its campaigns'
// alerts only, and the service is asked for exactly those.
func TestAlertsScopedToTheViewer(t *testing.T) {
	e := newEnv(t)
	got := decode[alerting.AlertList](t, e.get("/api/v1/alerts", viewerToken))
	if len(got.Alerts) != 1 || got.Alerts[0].Campaign != "spring" {
		t.Fatalf("viewer's alerts: %+v", got.Alerts)
	}
	f := e.srv.cfg.Alerts.(*fakeAlerts)
	if q := f.queries[len(f.queries)-1]; q.All || !slices.Equal(q.Campaigns, []string{"spring"}) {
		t.Fatalf("viewer's query %+v", q)
	}
	if got := decode[alerting.AlertList](t, e.get("/api/v1/alerts", analystToken)); len(got.Alerts) != 2 {
		t.Fatalf("analyst's alerts: %+v", got.Alerts)
	}
	for _, bad := range []string{"/api/v1/alerts?state=sleeping", "/api/v1/alerts?limit=0", "/api/v1/alerts?campaign=",
		"/api/v1/alerts?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z", "/api/v1/alerts?metric=clicks", "/api/v1/forecast"} {
		if w := e.get(bad, adminToken); w.Code != 400 {
			t.Fatalf("%s: %d %s", bad, w.Code, w.Body)
		}
	}
	if w := e.get("/api/v1/forecast?campaign=empty", adminToken); w.Code != 404 {
		t.Fatalf("forecast without data: %d", w.Code)
	}
	fc := decode[alerting.Forecast](t, e.get("/api/v1/forecast?campaign=spring", viewerToken))
	if fc.Campaign != "spring" || !fc.Day.At.Equal(now) {
		t.Fatalf("forecast %+v", fc)
	}
}

// TestAlertObjectsAdminOnly: admins edit rules, budgets and silences;
// analysts and viewers cannot; bodies are strict and bounded; the name
// in the body must be the path's; the service's refusals keep their
// status.
func TestAlertObjectsAdminOnly(t *testing.T) {
	e := newEnv(t)
	rule := `{"kind":"threshold","metric":"ctr","op":"<","value":0.01,"window":"1h","for":"10m"}`
	for _, tc := range []struct {
		method, url, token, body string
		want                     int
	}{
		{"PUT", "/api/v1/alerts/rules/ctr-floor", analystToken, rule, 403},
		{"PUT", "/api/v1/alerts/rules/ctr-floor", viewerToken, rule, 403},
		{"PUT", "/api/v1/alerts/rules/ctr-floor", "", rule, 401},
		{"DELETE", "/api/v1/alerts/budgets/spring", analystToken, "", 403},
		{"PUT", "/api/v1/alerts/rules/ctr-floor", adminToken, rule, 200},
		{"PUT", "/api/v1/alerts/rules/ctr-floor", adminToken, `{"kind":"threshold","colour":"red"}`, 400},
		{"PUT", "/api/v1/alerts/rules/ctr-floor", adminToken, `{"kind":"threshold","window":900}`, 400},
		{"PUT", "/api/v1/alerts/rules/ctr-floor", adminToken, `{"name":"other","kind":"threshold"}`, 400},
		{"PUT", "/api/v1/alerts/rules/ctr-floor", adminToken, `{"kind":"threshold"}` + strings.Repeat(" ", maxObjectBody), 400},
		{"PUT", "/api/v1/alerts/rules/from-file", adminToken, `{"kind":"anomaly","sensitivity":"high"}`, 403},
		{"PUT", "/api/v1/alerts/budgets/spring", adminToken, `{"daily":500,"time_zone":"Europe/Berlin","target_window":"24h"}`, 200},
		{"PUT", "/api/v1/alerts/silences/release", adminToken, `{"campaign":"spring","ends":"2026-11-22T12:00:00Z"}`, 200},
		{"DELETE", "/api/v1/alerts/silences/release", adminToken, "", 204},
		{"DELETE", "/api/v1/alerts/rules/missing", adminToken, "", 404},
	} {
		if w := e.do(tc.method, tc.url, tc.token, tc.body); w.Code != tc.want {
			t.Fatalf("%s %s as %s: %d %s, want %d", tc.method, tc.url, tc.token, w.Code, w.Body, tc.want)
		}
	}
	f := e.srv.cfg.Alerts.(*fakeAlerts)
	if len(f.puts) != 3 {
		t.Fatalf("puts %+v", f.puts)
	}
	if r := f.puts[0].(alert.Rule); r.Name != "ctr-floor" || r.Window != time.Hour || r.For != 10*time.Minute {
		t.Fatalf("rule stored as %+v", r)
	}
	if b := f.puts[1].(alert.Budget); b.Campaign != "spring" || b.TargetWindow != 24*time.Hour {
		t.Fatalf("budget stored as %+v", b)
	}
	if !slices.Equal(f.deletes, []string{"silence/release by root"}) {
		t.Fatalf("deletes %v", f.deletes)
	}
	objs := decode[alerting.ObjectsView](t, e.get("/api/v1/alerts/config", analystToken))
	if len(objs.Rules) != 1 || objs.Rules[0].Source != alerting.SourceFile {
		t.Fatalf("objects %+v", objs)
	}
	if w := e.get("/api/v1/alerts/config", viewerToken); w.Code != http.StatusForbidden {
		t.Fatalf("viewer reading objects: %d", w.Code)
	}
}

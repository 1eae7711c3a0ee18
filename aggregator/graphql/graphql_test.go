package graphql_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/introspection"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/graphql"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/sketch"
)

const (
	adminToken   = "admin-token-0123456789"
	analystToken = "analyst-token-0123456789"
	viewerToken  = "viewer-token-0123456789"
	otherViewer  = "other-viewer-token-0123456789"
)

// now is the fixed clock of the API: 10:30:20 UTC.
var now = time.Date(2026, 11, 22, 10, 30, 20, 0, time.UTC)

// source holds points and selects them as InfluxDB would. These unit
// tests use it to see what the API asked for; the tests against a real
// aggregator and InfluxDB are in tests/attack/api.
type source struct {
	mu      sync.Mutex
	pts     []api.Point
	err     error
	queries int
	// block, when set, holds every query until it is closed or the
	// query's context ends; running and peak count the queries held.
	block         chan struct{}
	running, peak int
}

func (s *source) EachMinute(ctx context.Context, q api.Query, fn func(api.Point) error) error {
	s.mu.Lock()
	s.queries++
	s.running++
	s.peak = max(s.peak, s.running)
	pts, err, block := s.pts, s.err, s.block
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
	}()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	for _, p := range pts {
		sr := p.Series
		if (!q.AllCampaigns && !slices.Contains(q.Campaigns, sr.Campaign)) || p.Minute < q.From.Unix() || !time.Unix(p.Minute, 0).Before(q.To) {
			continue
		}
		if (q.Source != "" && q.Source != sr.Source) || (q.Country != "" && q.Country != sr.Country) || (q.Type != "" && q.Type != sr.Type) ||
			(q.Medium != "" && q.Medium != sr.Medium) || (q.Device != "" && q.Device != sr.Device) || (q.Region != "" && q.Region != sr.Region) {
			continue
		}
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// point is a series-minute of campaign c ago minutes before now's minute.
func point(c, src, typ string, ago int64, count uint64, visitors ...uint64) api.Point {
	st := &sketch.State{Count: count}
	for _, v := range visitors {
		st.AddVisitor(v*0x9e3779b97f4a7c15 + 1)
	}
	switch typ {
	case "conversion":
		st.ValueMicros = int64(count) * 2_500_000
	case "cost":
		st.CostMicros = int64(count) * 1_250_000
	case "poll_vote":
		st.Votes = map[string]uint64{sketch.VoteKey("color", "red"): count, sketch.VoteKey("color", "blue"): count / 2}
		st.Count = count + count/2
	}
	if src == "bot" {
		st.Bots = map[string]uint64{"crawler": count, "headless": 1}
	}
	m := now.Unix() - now.Unix()%60 - ago*60
	return api.Point{Series: sketch.Series{Campaign: c, Source: src, Medium: "cpc", Type: typ, Country: "DE", Device: "mobile", Region: "eu"}, Minute: m, State: st}
}

// points is a small but complete data set: two campaigns, two sources,
// every kind of answer.
func points() []api.Point {
	var pts []api.Point
	for i := int64(0); i < 50; i++ {
		for _, c := range []string{"spring", "autumn"} {
			k := uint64(i%7 + 1)
			if c == "autumn" {
				k *= 11
			}
			pts = append(pts, point(c, "google", "impression", i, 10*k, uint64(i), uint64(i+1)),
				point(c, "bing", "click", i, k, uint64(i)), point(c, "google", "conversion", i, k%3),
				point(c, "google", "cost", i, 1), point(c, "bot", "pageview", i, k))
			if i%5 == 0 {
				pts = append(pts, point(c, "google", "poll_vote", i, k))
			}
		}
	}
	return pts
}

type env struct {
	src    *source
	alerts *alertService
	url    string
	audit  string
	reg    *prometheus.Registry
}

// newEnv serves the API with GraphQL mounted, over src.
func newEnv(t *testing.T, cfg graphql.Config, pts ...api.Point) *env {
	t.Helper()
	a, err := auth.New(auth.Config{Tokens: []auth.StaticToken{
		{Token: adminToken, Subject: "root", Role: auth.Admin},
		{Token: analystToken, Subject: "ana", Role: auth.Analyst},
		{Token: viewerToken, Subject: "alice", Role: auth.Viewer, Campaigns: []string{"spring"}},
		{Token: otherViewer, Subject: "olga", Role: auth.Viewer, Campaigns: []string{"autumn"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{src: &source{pts: pts}, alerts: newAlertService(), audit: filepath.Join(t.TempDir(), "audit.jsonl"), reg: prometheus.NewRegistry()}
	audit, err := auth.OpenAudit(auth.AuditConfig{Path: e.audit}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { audit.Close() })
	logger := slog.New(slog.DiscardHandler)
	srv := api.New(api.Config{Auth: a, Audit: audit, Now: func() time.Time { return now }, MaxQueriesPerSubject: 2, MaxConcurrentQueries: 4,
		QueryWait: time.Second, Alerts: e.alerts}, e.src, func() error { return nil }, e.reg, e.reg, nil, logger)
	if err := graphql.Mount(srv, cfg, e.reg, logger); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e.url = hs.URL
	return e
}

// gqlResponse is a GraphQL answer.
type gqlResponse struct {
	Data   map[string]json.RawMessage `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Path       []any          `json:"path"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
}

// query posts a GraphQL query; it returns the status, the raw body and
// the decoded answer (when the body is JSON).
func (e *env) query(t *testing.T, token, query string, vars map[string]any) (int, string, gqlResponse) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return e.post(t, token, body)
}

func (e *env) post(t *testing.T, token string, body []byte) (int, string, gqlResponse) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+graphql.Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r gqlResponse
	_ = json.Unmarshal(b, &r)
	return resp.StatusCode, string(b), r
}

// rest gets a REST route's body.
func (e *env) rest(t *testing.T, token, path string, q url.Values) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url+path+"?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("REST %s %s: %d %s", path, q.Encode(), resp.StatusCode, b)
	}
	return b
}

// restStatus is the status of a REST GET.
func (e *env) restStatus(t *testing.T, token, path string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func must[T any](t *testing.T, raw []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%v in %s", err, raw)
	}
	return v
}

const kpiFields = `impressions clicks conversions pageviews uniques revenue cost ctr cvr cpa roas bots_filtered`

// TestAnswersEqualREST asks each question of REST and of GraphQL and
// compares the answers field by field.
func TestAnswersEqualREST(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig(), points()...)
	from, to := now.Add(-40*time.Minute).Format(time.RFC3339), now.Format(time.RFC3339)
	vars := map[string]any{"from": from, "to": to}
	window := url.Values{"from": {from}, "to": {to}}
	with := func(kv ...string) url.Values {
		q := url.Values{}
		for k, v := range window {
			q[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return q
	}
	for _, token := range []string{adminToken, viewerToken} {
		code, body, r := e.query(t, token, `query($from: Time, $to: Time) {
			campaigns(range: {from: $from, to: $to}) { from to campaigns { campaign kpis { `+kpiFields+` } previous { `+kpiFields+` } }
				total { kpis { `+kpiFields+` } previous { `+kpiFields+` } } }
			bySource: kpis(campaign: "spring", range: {from: $from, to: $to}, by: source) { campaign by total { `+kpiFields+` } groups { key kpis { `+kpiFields+` } } }
			flat: kpis(campaign: "spring", range: {from: $from, to: $to}, filter: {source: "google"}) { total { `+kpiFields+` } }
			series(metrics: [clicks, uniques, revenue, ctr], step: "15m", range: {from: $from, to: $to}, by: campaign) {
				campaign step from to by metrics series { key points { t values { metric value } } } }
			bots(campaign: "spring", range: {from: $from, to: $to}) { total share by_reason { reason events } }
			polls(campaign: "spring", range: {from: $from, to: $to}) { poll total answers { answer votes share } }
		}`, vars)
		if code != 200 || len(r.Errors) > 0 {
			t.Fatalf("GraphQL: %d %s", code, body)
		}

		wantCampaigns := must[api.CampaignsResponse](t, e.rest(t, token, "/api/v1/campaigns", window))
		if got := must[api.CampaignsResponse](t, r.Data["campaigns"]); !reflect.DeepEqual(got, wantCampaigns) {
			t.Errorf("campaigns:\nGraphQL %+v\nREST    %+v", got, wantCampaigns)
		}
		if token == viewerToken && (len(wantCampaigns.Campaigns) != 1 || strings.Contains(body, "autumn")) {
			t.Errorf("the viewer of spring sees %+v", wantCampaigns.Campaigns)
		}

		wantBreakdown := must[api.BreakdownResponse](t, e.rest(t, token, "/api/v1/kpis", with("campaign", "spring", "by", "source")))
		if got := must[api.BreakdownResponse](t, r.Data["bySource"]); !reflect.DeepEqual(got, wantBreakdown) || len(got.Groups) != 3 {
			t.Errorf("kpis by source:\nGraphQL %+v\nREST    %+v", got, wantBreakdown)
		}
		wantFlat := must[kpi.KPIs](t, e.rest(t, token, "/api/v1/kpis", with("campaign", "spring", "source", "google")))
		if got := must[struct{ Total kpi.KPIs }](t, r.Data["flat"]); got.Total != wantFlat || wantFlat.Conversions == 0 {
			t.Errorf("kpis of google:\nGraphQL %+v\nREST    %+v", got.Total, wantFlat)
		}

		wantSeries := must[api.SeriesResponse](t, e.rest(t, token, "/api/v1/series", with("metric", "clicks,uniques,revenue,ctr", "step", "15m", "by", "campaign")))
		gotSeries := must[struct {
			Campaign *string
			Step     string
			From, To time.Time
			By       string
			Metrics  []string
			Series   []struct {
				Key    string
				Points []struct {
					T      time.Time
					Values []struct {
						Metric string
						Value  float64
					}
				}
			}
		}](t, r.Data["series"])
		asREST := api.SeriesResponse{Step: gotSeries.Step, From: gotSeries.From, To: gotSeries.To, By: gotSeries.By, Metrics: gotSeries.Metrics}
		for _, s := range gotSeries.Series {
			rs := api.Series{Key: s.Key, Points: []api.SeriesPoint{}}
			for _, p := range s.Points {
				vals := map[string]float64{}
				for i, v := range p.Values {
					if v.Metric != gotSeries.Metrics[i] {
						t.Fatalf("values out of the metrics' order: %v", p.Values)
					}
					vals[v.Metric] = v.Value
				}
				rs.Points = append(rs.Points, api.SeriesPoint{T: p.T, Values: vals})
			}
			asREST.Series = append(asREST.Series, rs)
		}
		if gotSeries.Campaign != nil || !reflect.DeepEqual(asREST, wantSeries) || len(wantSeries.Series[0].Points) != 4 {
			t.Errorf("series:\nGraphQL %s\nREST    %s", mustJSON(t, asREST), mustJSON(t, wantSeries))
		}

		wantBots := must[api.BotsResponse](t, e.rest(t, token, "/api/v1/bots", with("campaign", "spring")))
		gotBots := must[struct {
			Total    uint64
			Share    float64
			ByReason []struct {
				Reason string
				Events uint64
			} `json:"by_reason"`
		}](t, r.Data["bots"])
		byReason := map[string]uint64{}
		for _, br := range gotBots.ByReason {
			byReason[br.Reason] = br.Events
		}
		if gotBots.Total != wantBots.Total || gotBots.Share != wantBots.Share || !reflect.DeepEqual(byReason, wantBots.ByReason) || wantBots.Total == 0 {
			t.Errorf("bots:\nGraphQL %+v\nREST    %+v", gotBots, wantBots)
		}

		wantPolls := must[api.PollsResponse](t, e.rest(t, token, "/api/v1/polls", with("campaign", "spring")))
		if got := must[[]api.Poll](t, r.Data["polls"]); !reflect.DeepEqual(got, wantPolls.Polls) || len(got) != 1 {
			t.Errorf("polls:\nGraphQL %+v\nREST    %+v", got, wantPolls.Polls)
		}
	}
}

// TestViewerRefusedForAnotherCampaign: the scope is checked inside the
// query, per field; the refused field is null and names nothing of the
// other campaign, the rest of the query answers, and the audit line
// names only what was read.
func TestViewerRefusedForAnotherCampaign(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig(), points()...)
	for _, q := range []string{
		`{ kpis(campaign: "autumn") { total { impressions } } mine: kpis(campaign: "spring") { total { clicks } } }`,
		`{ series(campaign: "autumn", metrics: [clicks]) { step } mine: kpis(campaign: "spring") { total { clicks } } }`,
		`{ bots(campaign: "autumn") { total } mine: kpis(campaign: "spring") { total { clicks } } }`,
		`{ polls(campaign: "autumn") { poll } mine: kpis(campaign: "spring") { total { clicks } } }`,
	} {
		before := e.src.count()
		code, body, r := e.query(t, viewerToken, q, nil)
		if code != 200 || len(r.Errors) != 1 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		ext := r.Errors[0].Extensions
		if ext["code"] != "FORBIDDEN" || ext["status"] != float64(403) || !strings.Contains(r.Errors[0].Message, "outside your scope") {
			t.Fatalf("%s: %s", q, body)
		}
		field := strings.Fields(strings.Trim(q, "{ "))[0]
		field = field[:strings.IndexByte(field, '(')]
		if string(r.Data[field]) != "null" || !strings.Contains(string(r.Data["mine"]), `"clicks":`) {
			t.Fatalf("%s: the refused field is not null or the allowed one is missing: %s", q, body)
		}
		if strings.Count(body, "autumn") != 1 { // in the error message only
			t.Fatalf("%s: %s", q, body)
		}
		if n := e.src.count() - before; n != 1 {
			t.Fatalf("%s: %d storage queries, want only spring's", q, n)
		}
	}
	line := lastAudit(t, e.audit)
	if line["route"] != "graphql" || line["subject"] != "alice" || fmt.Sprint(line["campaigns"]) != "[spring]" || line["outcome"] != "graphql_forbidden" {
		t.Fatalf("audit line %v", line)
	}
	// Two fields about one campaign: the audit names it once.
	if code, body, _ := e.query(t, viewerToken, `{ a: kpis(campaign: "spring") { campaign } b: bots(campaign: "spring") { total } }`, nil); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if line := lastAudit(t, e.audit); fmt.Sprint(line["campaigns"]) != "[spring]" {
		t.Fatalf("audit line %v", line)
	}
	// Without a campaign, series covers the viewer's campaigns only.
	_, body, r := e.query(t, viewerToken, `{ series(metrics: [impressions], by: campaign, range: {window: "1h"}) { series { key } } }`, nil)
	if string(r.Data["series"]) != `{"series":[{"key":"spring"}]}` {
		t.Fatalf("viewer's series of every campaign: %s", body)
	}
}

func lastAudit(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return must[map[string]any](t, lines[len(lines)-1])
}

// TestCallerRequired: GraphQL is behind the same guard as REST.
func TestCallerRequired(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig(), points()...)
	for _, token := range []string{"", "not-a-token-0123456789"} {
		if code, body, _ := e.query(t, token, `{ whoami { subject } }`, nil); code != 401 {
			t.Fatalf("token %q: %d %s", token, code, body)
		}
	}
	code, body, r := e.query(t, viewerToken, `{ whoami { subject role campaigns expires } }`, nil)
	if code != 200 || string(r.Data["whoami"]) != `{"subject":"alice","role":"viewer","campaigns":["spring"],"expires":null}` {
		t.Fatalf("whoami: %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, e.url+graphql.Path, strings.NewReader(`{"query":"{ whoami { role } }"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("answer headers: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ = http.NewRequest(http.MethodPost, e.url+graphql.Path+"?query=x", strings.NewReader(`{"query":"{ whoami { role } }"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("a query parameter: %d", resp.StatusCode)
	}
}

// TestTooDeepRefused: introspection's ofType nests without end; the
// limit refuses a deep query before anything runs, and admits the full
// introspection query that GraphiQL sends.
func TestTooDeepRefused(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig(), points()...)
	deep := `{ __schema { types { fields { type ` + strings.Repeat("{ ofType ", 20) + `{ name }` + strings.Repeat(" }", 20) + ` } } } }`
	code, body, r := e.query(t, adminToken, deep, nil)
	if code != 422 || len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "DEPTH_LIMIT_EXCEEDED" || r.Data != nil {
		t.Fatalf("deep introspection: %d %s", code, body)
	}
	// A deep query through fragments is as deep.
	frag := `query { __schema { types { ...A } } } fragment A on __Type { fields { type { ...B } } } fragment B on __Type ` +
		strings.Repeat("{ ofType ", 20) + `{ name }` + strings.Repeat(" }", 20)
	if code, body, r := e.query(t, adminToken, frag, nil); code != 422 || r.Errors[0].Extensions["code"] != "DEPTH_LIMIT_EXCEEDED" {
		t.Fatalf("deep through fragments: %d %s", code, body)
	}
	// A deep data query, with a lower limit.
	shallow := graphql.DefaultConfig()
	shallow.MaxDepth = 5
	e2 := newEnv(t, shallow, points()...)
	q := `{ series(campaign: "spring", metrics: [clicks]) { series { points { values { value } } } } }` // 5 deep
	if code, body, _ := e2.query(t, adminToken, q, nil); code != 200 {
		t.Fatalf("5 deep with a limit of 5: %d %s", code, body)
	}
	before := e2.src.count()
	q = `{ series(campaign: "spring", metrics: [clicks]) { step } __schema { types { fields { type { ofType { name } } } } } }`
	if code, body, _ := e2.query(t, adminToken, q, nil); code != 422 || !strings.Contains(body, "nests 6 fields deep") {
		t.Fatalf("6 deep with a limit of 5: %d %s", code, body)
	}
	if e2.src.count() != before {
		t.Fatal("a refused query reached storage")
	}
}

// TestIntrospection: the schema can be read, with GraphiQL's full
// introspection query.
func TestIntrospection(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig())
	code, body, r := e.query(t, viewerToken, introspection.Query, nil)
	if code != 200 || len(r.Errors) > 0 {
		t.Fatalf("introspection: %d %s", code, body)
	}
	s := must[struct {
		Schema struct {
			QueryType struct{ Name string }
			Types     []struct {
				Name   string
				Fields []struct{ Name string }
			}
		} `json:"__schema"`
	}](t, mustJSON(t, r.Data))
	var query []string
	for _, ty := range s.Schema.Types {
		if ty.Name == "Query" {
			for _, f := range ty.Fields {
				query = append(query, f.Name)
			}
		}
	}
	slices.Sort(query)
	if s.Schema.QueryType.Name != "Query" || fmt.Sprint(query) != "[alertConfig alerts bots campaigns forecast kpis polls series whoami]" {
		t.Fatalf("Query has %v", query)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTooComplexRefused: the cost of the storage fields bounds how many
// one request may ask; a query over it is refused before any runs.
func TestTooComplexRefused(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig(), points()...)
	fields := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			fmt.Fprintf(&b, ` k%d: kpis(campaign: "spring") { total { clicks impressions } }`, i)
		}
		return b.String() + " }"
	}
	code, body, r := e.query(t, adminToken, fields(9), nil)
	if code != 200 || len(r.Errors) > 0 || len(r.Data) != 9 {
		t.Fatalf("9 storage fields: %d %s", code, body)
	}
	before := e.src.count()
	code, body, r = e.query(t, adminToken, fields(10), nil)
	if code != 422 || len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "COMPLEXITY_LIMIT_EXCEEDED" || r.Data != nil {
		t.Fatalf("10 storage fields: %d %s", code, body)
	}
	if e.src.count() != before {
		t.Fatal("a refused query reached storage")
	}
	if !strings.Contains(metrics(t, e.reg), `tally_aggregator_graphql_errors_total{code="COMPLEXITY_LIMIT_EXCEEDED"} 1`) {
		t.Fatal("the refusal is not counted")
	}
	if line := lastAudit(t, e.audit); line["outcome"] != "graphql_complexity_limit_exceeded" || line["status"] != float64(422) {
		t.Fatalf("audit line %v", line)
	}
	// Fragments that each spread the previous one twice: 2^30 fields in
	// 1.3 KB. They are counted without being expanded (gqlgen's cost
	// walk would expand every spread, for minutes).
	var b strings.Builder
	b.WriteString("query { ...F30 }\nfragment F0 on Query { whoami { role } }\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "fragment F%d on Query { ...F%d ...F%d }\n", i, i-1, i-1)
	}
	code, body, r = e.query(t, adminToken, b.String(), nil)
	if code != 422 || r.Errors[0].Extensions["code"] != "COMPLEXITY_LIMIT_EXCEEDED" || !strings.Contains(body, "once its fragments are expanded") {
		t.Fatalf("fragment bomb: %d %s", code, body)
	}
}

// TestTooManyTokensRefused: a query's tokens are bounded as it is parsed,
// so validation (quadratic in fields of the same name) stays cheap.
func TestTooManyTokensRefused(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig(), points()...)
	q := "{" + strings.Repeat(" whoami { role }", 250) + " }" // 1,002 tokens
	code, body, r := e.query(t, adminToken, q, nil)
	if code != 422 || len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "GRAPHQL_PARSE_FAILED" || !strings.Contains(body, "token limit") {
		t.Fatalf("1,002 tokens: %d %.300s", code, body)
	}
	q = "{" + strings.Repeat(" whoami { role }", 249) + " }" // 998
	if code, body, _ := e.query(t, adminToken, q, nil); code != 200 {
		t.Fatalf("998 tokens: %d %.300s", code, body)
	}
}

func metrics(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if m.Counter != nil {
				fmt.Fprintf(&b, "%s{%s} %g\n", mf.GetName(), strings.Join(labels, ","), m.Counter.GetValue())
			}
		}
	}
	return b.String()
}

// TestOversizedRefused: a body over MaxQueryBytes is refused before it is
// parsed, whether it says its length or not.
func TestOversizedRefused(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig(), points()...)
	pad := strings.Repeat(" ", 16<<10)
	big := []byte(`{"query":"{ whoami { role }` + pad + `}"}`)
	code, body, r := e.post(t, adminToken, big)
	if code != 413 || len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "QUERY_TOO_LARGE" {
		t.Fatalf("oversized: %d %s", code, body)
	}
	// Chunked: no Content-Length to refuse on.
	req, _ := http.NewRequest(http.MethodPost, e.url+graphql.Path, io.MultiReader(bytes.NewReader(big)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || resp.ContentLength == 0 {
		t.Fatalf("oversized, chunked: %d", resp.StatusCode)
	}
	// Just under the bound is answered.
	ok := []byte(`{"query":"{ whoami { role }` + pad[:16<<10-40] + `}"}`)
	if code, body, _ := e.post(t, adminToken, ok); code != 200 || len(ok) > 16<<10 {
		t.Fatalf("%d bytes: %d %s", len(ok), code, body)
	}
	if line := lastAudit(t, e.audit); line["route"] != "graphql" {
		t.Fatalf("audit line %v", line)
	}
}

// TestPlaygroundOffByDefault: GET answers 405 unless the playground is
// on; the page itself is public and holds no data.
func TestPlaygroundOffByDefault(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig())
	resp, err := http.Get(e.url + graphql.Path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" || strings.Contains(strings.ToLower(string(b)), "<script") {
		t.Fatalf("playground by default: %d %s", resp.StatusCode, b)
	}
	cfg := graphql.DefaultConfig()
	cfg.Playground = true
	e = newEnv(t, cfg)
	resp, err = http.Get(e.url + graphql.Path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "graphiql") || !strings.Contains(string(b), graphql.Path) {
		t.Fatalf("playground on: %d %s", resp.StatusCode, b)
	}
}

// TestStorageQueriesOneAtATime: a request with several storage fields
// runs them one after another in its one query slot, and a subject over
// its share of slots gets 429 as on REST while another subject is served.
func TestStorageQueriesOneAtATime(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig(), points()...)
	e.src.block = make(chan struct{})
	q := `{ a: kpis(campaign: "spring") { total { clicks } } b: kpis(campaign: "autumn") { total { clicks } } c: bots(campaign: "spring") { total } }`
	var wg sync.WaitGroup
	answers := make(chan string, 3)
	ask := func(token, q string) {
		wg.Go(func() {
			code, body, r := e.query(t, token, q, nil)
			if code != 200 || len(r.Errors) > 0 {
				body = fmt.Sprintf("%d %s", code, body)
			} else {
				body = ""
			}
			answers <- body
		})
	}
	running := func() int { e.src.mu.Lock(); defer e.src.mu.Unlock(); return e.src.running }
	for range 2 { // the subject's share (MaxQueriesPerSubject 2)
		ask(adminToken, q)
	}
	waitFor(t, func() bool { return running() >= 2 })
	if code, body, _ := e.query(t, adminToken, `{ kpis(campaign: "spring") { total { clicks } } }`, nil); code != 429 {
		t.Fatalf("a third request of the subject: %d %s", code, body)
	}
	ask(otherViewer, `{ kpis(campaign: "autumn") { total { clicks } } }`)
	waitFor(t, func() bool { return running() >= 3 })
	close(e.src.block)
	wg.Wait()
	close(answers)
	for a := range answers {
		if a != "" {
			t.Fatalf("a held request: %s", a)
		}
	}
	// Two requests of three fields each and one of one field ran at
	// once; one at a time per request, storage saw three.
	if e.src.peak != 3 || e.src.queries != 7 {
		t.Fatalf("storage queries: peak %d, total %d; want 3 and 7", e.src.peak, e.src.queries)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFieldErrors: a failed storage query is that field's error with
// REST's status, a bad argument is REST's 400 with REST's message, and
// the request's time is bounded as a whole.
func TestFieldErrors(t *testing.T) {
	cfg := graphql.DefaultConfig()
	cfg.Timeout = time.Second
	e := newEnv(t, cfg, points()...)
	code, body, r := e.query(t, adminToken, `{ kpis(campaign: "spring", range: {window: "fortnight"}) { campaign } whoami { role } }`, nil)
	if code != 200 || len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "BAD_REQUEST" || r.Errors[0].Extensions["status"] != float64(400) ||
		!strings.Contains(r.Errors[0].Message, `parameter "window"`) || string(r.Data["whoami"]) != `{"role":"admin"}` {
		t.Fatalf("bad window: %d %s", code, body)
	}
	code, body, r = e.query(t, adminToken, `{ series(campaign: "spring", metrics: [clicks], step: "1m", range: {window: "8d"}) { step } }`, nil)
	if code != 200 || r.Errors[0].Extensions["code"] != "BAD_REQUEST" || !strings.Contains(r.Errors[0].Message, "coarser step") {
		t.Fatalf("too many points: %d %s", code, body)
	}
	e.src.mu.Lock()
	e.src.err = fmt.Errorf("connection refused")
	e.src.mu.Unlock()
	code, body, r = e.query(t, adminToken, `{ kpis(campaign: "spring") { campaign } whoami { role } }`, nil)
	if code != 200 || len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "STORAGE_ERROR" || r.Errors[0].Extensions["status"] != float64(502) ||
		r.Errors[0].Message != "storage query failed: connection refused" || string(r.Data["kpis"]) != "null" {
		t.Fatalf("storage down: %d %s", code, body)
	}
	e.src.mu.Lock()
	e.src.err, e.src.block = nil, make(chan struct{})
	e.src.mu.Unlock()
	start := time.Now()
	code, body, r = e.query(t, adminToken, `{ a: kpis(campaign: "spring") { campaign } b: kpis(campaign: "autumn") { campaign } }`, nil)
	if code != 200 || len(r.Errors) != 2 || r.Errors[0].Extensions["code"] != "STORAGE_ERROR" || time.Since(start) > 5*time.Second {
		t.Fatalf("held storage: %d %s after %v", code, body, time.Since(start))
	}
	close(e.src.block)
}

func TestConfigValidate(t *testing.T) {
	if err := graphql.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tune := range []func(*graphql.Config){
		func(c *graphql.Config) { c.MaxDepth = 4 },
		func(c *graphql.Config) { c.MaxComplexity = 100 },
		func(c *graphql.Config) { c.MaxQueryBytes = 1 << 30 },
		func(c *graphql.Config) { c.Timeout = 0 },
		func(c *graphql.Config) { c.MaxQueryTokens = 100 },
	} {
		c := graphql.DefaultConfig()
		tune(&c)
		if c.Validate() == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
}

// TestOpenAPIDescribesGraphQL: the route is in the API's description.
func TestOpenAPIDescribesGraphQL(t *testing.T) {
	e := newEnv(t, graphql.DefaultConfig())
	resp, err := http.Get(e.url + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if _, ok := doc.Paths[graphql.Path]["post"]; !ok {
		t.Fatalf("openapi.json does not describe POST %s", graphql.Path)
	}
}

// TestGeneratedFromCurrentSchema: gqlgen embeds the schema it compiled;
// a schema file edited without go generate ./aggregator/graphql differs
// from it.
func TestGeneratedFromCurrentSchema(t *testing.T) {
	generated, err := os.ReadFile("internal/gen/generated.go")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("schema/*.graphqls")
	if err != nil || len(files) == 0 {
		t.Fatalf("schema files: %v %v", files, err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(generated, src) || !bytes.Contains(generated, []byte(`Name: "../../`+f+`"`)) {
			t.Errorf("%s changed since internal/gen was generated: run go generate ./aggregator/graphql", f)
		}
	}
}

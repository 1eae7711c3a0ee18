package api

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/sketch"
)

const (
	adminToken   = "admin-token-0123456789"
	analystToken = "analyst-token-0123456789"
	viewerToken  = "viewer-token-0123456789"
)

// now is the fixed clock of these tests: 10:30:20 UTC.
var now = time.Date(2026, 11, 22, 10, 30, 20, 0, time.UTC)

// fakeSource holds points and applies a Query's selection the way
// InfluxDB does, so that the tests see which campaigns the API asked for.
type fakeSource struct {
	mu      sync.Mutex
	pts     []sketch.Minute
	err     error
	queries []Query
	// block, when set, holds every query until it is closed (or the
	// query's context ends); running and peak count queries held.
	block         chan struct{}
	running, peak int
}

func (f *fakeSource) EachMinute(ctx context.Context, q Query, fn func(sketch.Minute) error) error {
	f.mu.Lock()
	f.queries = append(f.queries, q)
	pts, err, block := f.pts, f.err, f.block
	f.running++
	f.peak = max(f.peak, f.running)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
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
		s := p.Series
		if !q.AllCampaigns && !slices.Contains(q.Campaigns, s.Campaign) {
			continue
		}
		if p.Minute < q.From.Unix() || !time.Unix(p.Minute, 0).Before(q.To) {
			continue
		}
		if (q.Source != "" && q.Source != s.Source) || (q.Medium != "" && q.Medium != s.Medium) ||
			(q.Country != "" && q.Country != s.Country) || (q.Device != "" && q.Device != s.Device) ||
			(q.Region != "" && q.Region != s.Region) || (q.Type != "" && q.Type != s.Type) {
			continue
		}
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeSource) lastQuery() Query {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[len(f.queries)-1]
}

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// pt builds a point of campaign c, minute m (unix seconds), with visitors.
func pt(c, source, typ string, m int64, count uint64, visitors ...uint64) sketch.Minute {
	st := &sketch.State{Count: count}
	for _, v := range visitors {
		st.AddVisitor(mix(v))
	}
	return sketch.Minute{Series: sketch.Series{Campaign: c, Source: source, Type: typ, Country: "DE", Device: "mobile", Region: "eu"}, Minute: m, State: st}
}

// minute returns the start of the minute ago minutes before now's.
func minute(ago int64) int64 { return now.Unix() - now.Unix()%60 - ago*60 }

// liveMinute is the current minute of the real clock, which the hub keeps.
func liveMinute() int64 { return time.Now().Unix() / 60 * 60 }

type testEnv struct {
	src   *fakeSource
	srv   *Server
	hub   *live.Hub
	audit string
	reg   *prometheus.Registry
}

func newEnv(t *testing.T, pts ...sketch.Minute) *testEnv {
	t.Helper()
	return newEnvWith(t, nil, pts...)
}

// newEnvWith is newEnv with the API configuration changed by tune.
func newEnvWith(t *testing.T, tune func(*Config), pts ...sketch.Minute) *testEnv {
	t.Helper()
	a, err := auth.New(auth.Config{Tokens: []auth.StaticToken{
		{Token: adminToken, Subject: "root", Role: auth.Admin},
		{Token: analystToken, Subject: "ann", Role: auth.Analyst},
		{Token: viewerToken, Subject: "alice", Role: auth.Viewer, Campaigns: []string{"spring"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	audit, err := auth.OpenAudit(auth.AuditConfig{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { audit.Close() })
	reg := prometheus.NewRegistry()
	hub := live.NewHub(live.HubConfig{Interval: 10 * time.Millisecond}, reg)
	t.Cleanup(hub.Close)
	src := &fakeSource{pts: pts}
	cfg := Config{MaxWindow: 8 * 24 * time.Hour, Auth: a, Audit: audit, Hub: hub, Now: func() time.Time { return now }, Alerts: newFakeAlerts()}
	if tune != nil {
		tune(&cfg)
	}
	srv := New(cfg, src, func() error { return nil }, reg, reg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return &testEnv{src: src, srv: srv, hub: hub, audit: path, reg: reg}
}

func (e *testEnv) get(url, token string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	e.srv.ServeHTTP(w, r)
	return w
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("%v in %s", err, w.Body)
	}
	return v
}

func TestBadParameters(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		url, param string
	}{
		{"/api/v1/kpis", "campaign"},
		{"/api/v1/kpis?campaign=", "campaign"},
		{"/api/v1/kpis?campaign=c&from=yesterday", "from"},
		{"/api/v1/kpis?campaign=c&to=2026-13-01T00:00:00Z", "to"},
		{"/api/v1/kpis?campaign=c&from=2026-11-22T10:00:00Z&to=2026-11-22T09:00:00Z", "from"},
		{"/api/v1/kpis?campaign=c&from=2026-11-01T00:00:00Z&to=2026-11-22T00:00:00Z", "to"},
		{"/api/v1/kpis?campaign=c&window=15m&from=2026-11-22T09:00:00Z", "window"},
		{"/api/v1/kpis?campaign=c&window=fortnight", "window"},
		{"/api/v1/kpis?campaign=c&window=90s", "window"},
		{"/api/v1/kpis?campaign=c&window=30d", "window"},
		{"/api/v1/kpis?campaign=c&window=", "window"},
		{"/api/v1/kpis?campaign=c&by=browser", "by"},
		{"/api/v1/kpis?campaign=c&by=campaign", "by"},
		{"/api/v1/kpis?campaign=c&stp=1m", "stp"},
		{"/api/v1/kpis?campaign=c&campaign=d", "campaign"},
		{"/api/v1/kpis?campaign=c&source=" + strings.Repeat("x", 600), "source"},
		{"/api/v1/campaigns?window=2h&to=2026-11-22T09:00:00Z", "window"},
		{"/api/v1/campaigns?campaign=c", "campaign"},
		{"/api/v1/series?campaign=c", "metric"},
		{"/api/v1/series?campaign=c&metric=clicks,likes", "metric"},
		{"/api/v1/series?campaign=c&metric=clicks,clicks", "metric"},
		{"/api/v1/series?campaign=c&metric=clicks&step=90s", "step"},
		{"/api/v1/series?campaign=c&metric=clicks&step=2d", "step"},
		{"/api/v1/series?campaign=c&metric=clicks&step=soon", "step"},
		{"/api/v1/series?campaign=c&metric=clicks&step=1m&window=8d", "step"}, // 11,520 points
		{"/api/v1/series?campaign=c&metric=clicks&by=campaign", "by"},
		{"/api/v1/series?metric=clicks&by=os", "by"},
		{"/api/v1/bots", "campaign"},
		{"/api/v1/bots?campaign=c&step=1m", "step"},
		{"/api/v1/polls", "campaign"},
		{"/api/v1/polls?campaign=c&window=soon", "window"},
		{"/api/v1/polls?campaign=c&by=source", "by"},
		{"/api/v1/export.csv?campaign=c&step=0m", "step"},
		{"/api/v1/export.csv?campaign=c&by=campaign", "by"},
		{"/api/v1/stream?campaigns=a,,b", "campaigns"},
		{"/api/v1/stream?campaign=a", "campaign"},
		{"/api/v1/whoami?verbose=1", "verbose"},
	} {
		w := e.get(tc.url, adminToken)
		want := `parameter \"` + tc.param + `\"`
		if w.Code != 400 || !strings.Contains(w.Body.String(), want) {
			t.Fatalf("%s: %d %s; want 400 naming %s", tc.url, w.Code, w.Body, tc.param)
		}
	}
}

// TestRolesAgainstRoutes calls every route as every kind of caller: who
// is let in, who is refused, and that a viewer's answers never mention a
// campaign outside its scope.
func TestRolesAgainstRoutes(t *testing.T) {
	var pts []sketch.Minute
	for i := int64(0); i < 5; i++ {
		pts = append(pts, pt("spring", "google", "click", minute(i), 3, uint64(i)), pt("autumn", "bing", "impression", minute(i), 7, 100+uint64(i)))
	}
	e := newEnv(t, pts...)
	e.hub.Publish([]live.Update{{Campaign: "spring", Minute: liveMinute()}, {Campaign: "autumn", Minute: liveMinute(), KPIs: kpi.KPIs{Clicks: 1}}})
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)

	routes := []struct {
		url string
		// viewer is the viewer's status; 0 means the route is for
		// admin and analyst only.
		viewer int
	}{
		{"/api/v1/whoami", 200},
		{"/api/v1/campaigns?window=15m", 200},
		{"/api/v1/kpis?campaign=spring&window=15m", 200},
		{"/api/v1/kpis?campaign=autumn&window=15m", 403},
		{"/api/v1/kpis?campaign=spring&by=source", 200},
		{"/api/v1/kpis?campaign=autumn&by=source", 403},
		{"/api/v1/series?metric=clicks,impressions&window=15m", 200},
		{"/api/v1/series?metric=clicks&by=campaign&window=15m", 200},
		{"/api/v1/series?campaign=spring&metric=uniques", 200},
		{"/api/v1/series?campaign=autumn&metric=uniques", 403},
		{"/api/v1/bots?campaign=spring", 200},
		{"/api/v1/bots?campaign=autumn", 403},
		{"/api/v1/polls?campaign=spring", 200},
		{"/api/v1/polls?campaign=autumn", 403},
		{"/api/v1/export.csv?window=15m", 200},
		{"/api/v1/export.csv?campaign=spring&by=source", 200},
		{"/api/v1/export.csv?campaign=autumn", 403},
		{"/api/v1/stream", 200},
		{"/api/v1/stream?campaigns=spring", 200},
		{"/api/v1/stream?campaigns=spring,autumn", 403},
		{"/api/v1/alerts", 200},
		{"/api/v1/alerts?campaign=spring&state=firing", 200},
		{"/api/v1/alerts?campaign=autumn", 403},
		{"/api/v1/alerts/config", 403},
		{"/api/v1/forecast?campaign=spring", 200},
		{"/api/v1/forecast?campaign=autumn", 403},
	}
	// Every registered route is in the table.
	for _, rt := range e.srv.Routes() {
		if rt.Public || rt.Method != http.MethodGet { // POST routes: TestLinksAndSessions
			continue
		}
		if !slices.ContainsFunc(routes, func(r struct {
			url    string
			viewer int
		}) bool {
			return strings.HasPrefix(r.url, rt.Path)
		}) {
			t.Fatalf("route %s is missing from the table", rt.Path)
		}
	}
	for _, rt := range routes {
		for _, caller := range []struct {
			name, token string
		}{{"admin", adminToken}, {"analyst", analystToken}, {"viewer", viewerToken}, {"none", ""}, {"unknown", "not-a-token-0123456789"}} {
			want := 200
			switch caller.name {
			case "viewer":
				want = rt.viewer
			case "none", "unknown":
				want = 401
			}
			code, body := fetch(t, hs.URL+rt.url, caller.token)
			if code != want {
				t.Fatalf("%s as %s: %d %s, want %d", rt.url, caller.name, code, body, want)
			}
			// Only autumn has impressions: a viewer of spring must see
			// neither its name nor its numbers, even in aggregates.
			showsAutumn := strings.Contains(body, "autumn") || autumnNumbers.MatchString(body)
			if caller.name == "viewer" && code == 200 && showsAutumn {
				t.Fatalf("%s as viewer shows another campaign: %s", rt.url, body)
			}
			if caller.name == "admin" && code == 200 && !strings.Contains(rt.url, "campaign=") && !strings.Contains(rt.url, "campaigns=") &&
				!strings.Contains(rt.url, "whoami") && !showsAutumn {
				t.Fatalf("%s as admin misses campaign autumn: %s", rt.url, body)
			}
		}
	}
}

var autumnNumbers = regexp.MustCompile(`"impressions":[1-9]`)

// fetch gets url; a stream is read up to its snapshot event.
func fetch(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "data: ") && strings.Contains(b.String(), "event: snapshot") {
			break
		}
	}
	return resp.StatusCode, b.String()
}

func TestWhoami(t *testing.T) {
	e := newEnv(t)
	got := decode[map[string]any](t, e.get("/api/v1/whoami", viewerToken))
	if got["subject"] != "alice" || got["role"] != "viewer" || len(got["campaigns"].([]any)) != 1 {
		t.Fatalf("viewer: %v", got)
	}
	got = decode[map[string]any](t, e.get("/api/v1/whoami", analystToken))
	if _, ok := got["campaigns"]; ok || got["role"] != "analyst" {
		t.Fatalf("analyst: %v", got)
	}
}

// TestJWTThroughTheGuard signs a viewer JWT and uses it on the API.
func TestJWTThroughTheGuard(t *testing.T) {
	secret := []byte("an-hs256-secret-of-at-least-32-bytes!")
	a, err := auth.New(auth.Config{JWT: &auth.JWTConfig{HS256Secret: secret, Issuer: "idp", Audience: "tally"}})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, pt("spring", "s", "click", minute(1), 2), pt("autumn", "s", "impression", minute(1), 9))
	e.srv.guard.Auth = a
	sign := func(exp time.Duration) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "role": "viewer",
			"campaigns": []string{"spring"}, "exp": time.Now().Add(exp).Unix(), "iss": "idp", "aud": "tally"}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	got := decode[CampaignsResponse](t, e.get("/api/v1/campaigns", sign(time.Hour)))
	if len(got.Campaigns) != 1 || got.Campaigns[0].Campaign != "spring" || got.Campaigns[0].KPIs.Clicks != 2 {
		t.Fatalf("viewer JWT sees %+v", got)
	}
	if w := e.get("/api/v1/kpis?campaign=autumn", sign(time.Hour)); w.Code != 403 {
		t.Fatalf("viewer JWT on another campaign: %d", w.Code)
	}
	if w := e.get("/api/v1/campaigns", sign(-time.Hour)); w.Code != 401 {
		t.Fatalf("expired JWT: %d", w.Code)
	}
}

func TestKPIsAndBreakdown(t *testing.T) {
	e := newEnv(t,
		pt("c", "google", "impression", minute(1), 100, 1, 2, 3),
		pt("c", "google", "click", minute(1), 10, 2),
		pt("c", "bing", "impression", minute(2), 50, 3, 4),
		pt("c", "", "click", minute(3), 5, 5),
		pt("c", "google", "click", minute(120), 1000), // outside 1h
		pt("d", "google", "click", minute(1), 999),
	)
	k := decode[kpi.KPIs](t, e.get("/api/v1/kpis?campaign=c", adminToken))
	if k.Impressions != 150 || k.Clicks != 15 || k.Uniques != 5 || k.CTR != 0.1 {
		t.Fatalf("kpis %+v", k)
	}
	b := decode[BreakdownResponse](t, e.get("/api/v1/kpis?campaign=c&by=source&window=60m", adminToken))
	if b.Campaign != "c" || b.By != "source" || b.Total != k || len(b.Groups) != 3 {
		t.Fatalf("breakdown %+v", b)
	}
	want := map[string][3]uint64{"(none)": {0, 5, 1}, "bing": {50, 0, 2}, "google": {100, 10, 3}}
	for i, g := range b.Groups {
		w := want[g.Key]
		if (i > 0 && b.Groups[i-1].Key >= g.Key) || g.KPIs.Impressions != w[0] || g.KPIs.Clicks != w[1] || g.KPIs.Uniques != w[2] {
			t.Fatalf("group %+v, want %v (sorted by key)", g, w)
		}
	}
	// Filters reach the source; a sliding window ends now.
	e.get("/api/v1/kpis?campaign=c&window=5m&country=DE&device=mobile", adminToken)
	q := e.src.lastQuery()
	if q.Country != "DE" || q.Device != "mobile" || !q.To.Equal(now) || q.To.Sub(q.From) != 5*time.Minute {
		t.Fatalf("query %+v", q)
	}
}

func TestCampaignsWithPreviousWindow(t *testing.T) {
	e := newEnv(t,
		pt("b", "s", "click", minute(0), 4),
		pt("b", "s", "click", minute(14), 1),
		pt("b", "s", "click", minute(15), 10), // previous window
		pt("a", "s", "click", minute(29), 2),  // previous window only
		pt("a", "s", "click", minute(31), 99), // before both
	)
	got := decode[CampaignsResponse](t, e.get("/api/v1/campaigns?window=15m", analystToken))
	if len(got.Campaigns) != 2 || got.Campaigns[0].Campaign != "a" || got.Campaigns[1].Campaign != "b" {
		t.Fatalf("campaigns %+v", got)
	}
	a, b := got.Campaigns[0], got.Campaigns[1]
	if a.KPIs.Clicks != 0 || a.Previous.Clicks != 2 || b.KPIs.Clicks != 5 || b.Previous.Clicks != 10 {
		t.Fatalf("a %+v\nb %+v", a, b)
	}
	if !got.To.Equal(now) || !got.From.Equal(now.Add(-15*time.Minute)) {
		t.Fatalf("window %s..%s", got.From, got.To)
	}
	// A viewer's list asks the storage for its campaigns only.
	got = decode[CampaignsResponse](t, e.get("/api/v1/campaigns?window=15m", viewerToken))
	if q := e.src.lastQuery(); q.AllCampaigns || !slices.Equal(q.Campaigns, []string{"spring"}) || len(got.Campaigns) != 0 {
		t.Fatalf("viewer query %+v answer %+v", q, got)
	}
}

// TestCampaignsTotalMergesUniques: the list's total counts a visitor of
// two campaigns once, and its counters are the rows' sums.
func TestCampaignsTotalMergesUniques(t *testing.T) {
	e := newEnv(t,
		pt("a", "s", "pageview", minute(1), 3, 1, 2, 3),
		pt("b", "s", "pageview", minute(2), 2, 2, 3),
		pt("b", "s", "click", minute(2), 4, 4),
		pt("a", "s", "click", minute(20), 7, 9), // previous window
	)
	got := decode[CampaignsResponse](t, e.get("/api/v1/campaigns?window=15m", adminToken))
	var sumUniques, sumClicks uint64
	for _, c := range got.Campaigns {
		sumUniques += c.KPIs.Uniques
		sumClicks += c.KPIs.Clicks
	}
	if tot := got.Total.KPIs; tot.Uniques != 4 || sumUniques != 6 || tot.Clicks != sumClicks || tot.Pageviews != 5 {
		t.Fatalf("total %+v (rows: %d uniques, %d clicks)", tot, sumUniques, sumClicks)
	}
	if prev := got.Total.Previous; prev.Clicks != 7 || prev.Uniques != 1 {
		t.Fatalf("previous total %+v", prev)
	}
}

func TestSeriesMergesUniquesPerStep(t *testing.T) {
	// Step 5m from 10:00 to 10:15: visitors 1-3 in two minutes of the
	// same step count 3, not 6; a step without data is zero.
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).Unix()
	e := newEnv(t,
		pt("c", "google", "pageview", base, 3, 1, 2, 3),
		pt("c", "google", "pageview", base+60, 3, 1, 2, 3),
		pt("c", "bing", "click", base+120, 2, 3, 4),
		pt("c", "bing", "impression", base+120, 20),
		pt("c", "google", "pageview", base+600, 1, 9),
	)
	url := "/api/v1/series?campaign=c&metric=uniques,pageviews,ctr&step=5m&from=2026-11-22T10:00:00Z&to=2026-11-22T10:15:00Z"
	got := decode[SeriesResponse](t, e.get(url, adminToken))
	if got.Step != "5m" || len(got.Series) != 1 || got.Series[0].Key != "" || len(got.Series[0].Points) != 3 {
		t.Fatalf("series %+v", got)
	}
	wantT := []int64{base, base + 300, base + 600}
	wantV := []map[string]float64{{"uniques": 4, "pageviews": 6, "ctr": 0.1}, {"uniques": 0, "pageviews": 0, "ctr": 0}, {"uniques": 1, "pageviews": 1, "ctr": 0}}
	for i, p := range got.Series[0].Points {
		if p.T.Unix() != wantT[i] || len(p.Values) != 3 {
			t.Fatalf("point %d: %+v", i, p)
		}
		for m, v := range wantV[i] {
			if p.Values[m] != v {
				t.Fatalf("point %d %s = %v, want %v", i, m, p.Values[m], v)
			}
		}
	}
	if e.src.lastQuery().CountersOnly {
		t.Fatal("a series of uniques asked for counters only")
	}
	decode[SeriesResponse](t, e.get("/api/v1/series?campaign=c&metric=clicks", adminToken))
	if !e.src.lastQuery().CountersOnly {
		t.Fatal("a series without uniques asked for the sketches")
	}
	got = decode[SeriesResponse](t, e.get(url+"&by=source", adminToken))
	if len(got.Series) != 2 || got.Series[0].Key != "bing" || got.Series[1].Key != "google" ||
		got.Series[1].Points[0].Values["uniques"] != 3 || got.Series[0].Points[0].Values["uniques"] != 2 || len(got.Series[0].Points) != 3 {
		t.Fatalf("by source %+v", got)
	}
	// One day at 1m is 1,440 points; a week is the most.
	got = decode[SeriesResponse](t, e.get("/api/v1/series?campaign=c&metric=clicks&window=24h", adminToken))
	if n := len(got.Series[0].Points); n != 1440 {
		t.Fatalf("24h at 1m: %d points", n)
	}
	if w := e.get("/api/v1/series?campaign=c&metric=clicks&window=7d", adminToken); w.Code != 200 {
		t.Fatalf("7d at 1m: %d %s", w.Code, w.Body)
	}
}

func TestSeriesGroupBound(t *testing.T) {
	var pts []sketch.Minute
	for i := range 20 {
		pts = append(pts, pt("c", string(rune('a'+i)), "click", minute(1), 1))
	}
	e := newEnv(t, pts...)
	e.srv.cfg.MaxPoints = 10 * 1440
	w := e.get("/api/v1/series?campaign=c&metric=clicks&window=24h&by=source", adminToken)
	if w.Code != 400 || !strings.Contains(w.Body.String(), `parameter \"by\"`) {
		t.Fatalf("20 groups × 1440 points: %d %s", w.Code, w.Body)
	}
}

func TestExportCSV(t *testing.T) {
	// Two days at 1h: the export is read one day at a time.
	base := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC).Unix()
	e := newEnv(t,
		pt("c", "google", "click", base+30*60, 2, 1),
		pt("c", "google", "click", base+50*60, 3, 2),
		pt("c", "bing", "impression", base+86400+60, 40),
		pt("d", "bing", "impression", base+86400+120, 5),
	)
	w := e.get("/api/v1/export.csv?step=1h&by=source&from=2026-11-20T00:00:00Z&to=2026-11-22T00:00:00Z", analystToken)
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/csv; charset=utf-8" ||
		w.Header().Get("Content-Disposition") != `attachment; filename="tally-all-20261120T000000Z.csv"` {
		t.Fatalf("%d %v %s", w.Code, w.Header(), w.Body)
	}
	rows, err := csv.NewReader(w.Body).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"time", "campaign", "source", "impressions", "clicks", "conversions", "pageviews", "uniques", "revenue", "cost", "ctr", "cvr", "cpa", "roas", "bots_filtered"},
		{"2026-11-20T00:00:00Z", "c", "google", "0", "5", "0", "0", "2", "0", "0", "0", "0", "0", "0", "0"},
		{"2026-11-21T00:00:00Z", "c", "bing", "40", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0"},
		{"2026-11-21T00:00:00Z", "d", "bing", "5", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0"},
	}
	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Fatalf("rows\n%v\nwant\n%v", rows, want)
	}
	if n := len(e.src.queries); n != 2 {
		t.Fatalf("%d storage queries for two days, want one per day", n)
	}
	// A viewer's export holds its campaign only; the name is in the file name.
	w = e.get("/api/v1/export.csv?campaign=spring&window=1h", viewerToken)
	if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Disposition"), "tally-spring-") {
		t.Fatalf("viewer export: %d %v", w.Code, w.Header())
	}
	// The audit log names who exported what.
	e.srv.cfg.Audit.Close()
	raw, err := os.ReadFile(e.audit)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	if last["subject"] != "alice" || last["route"] != "export" || last["bytes"].(float64) < 100 ||
		last["params"] != "campaign=spring&window=1h" || last["campaigns"].([]any)[0] != "spring" {
		t.Fatalf("audit line %v", last)
	}
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	e := newEnv(t)
	w := e.get("/api/v1/openapi.json", "") // public
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Parameters []struct{ Name, In string } `json:"parameters"`
		} `json:"paths"`
	}
	if w.Code != 200 {
		t.Fatalf("%d", w.Code)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("%v %q", err, doc.OpenAPI)
	}
	for _, rt := range e.srv.Routes() {
		op, ok := doc.Paths[rt.Path][strings.ToLower(rt.Method)]
		if !ok {
			t.Fatalf("%s %s is not in openapi.json", rt.Method, rt.Path)
		}
		var documented []string
		for _, p := range op.Parameters {
			if p.In == "query" {
				documented = append(documented, p.Name)
			}
		}
		slices.Sort(documented)
		taken := slices.Clone(rt.Params)
		slices.Sort(taken)
		if !slices.Equal(documented, taken) {
			t.Fatalf("%s: openapi.json documents %v, the route takes %v", rt.Path, documented, taken)
		}
	}
}

func TestProbesMetricsAndStorageErrors(t *testing.T) {
	e := newEnv(t)
	e.src.err = errors.New("connection refused")
	if w := e.get("/healthz", ""); w.Code != 200 {
		t.Fatalf("healthz %d", w.Code)
	}
	if w := e.get("/api/v1/kpis?campaign=c", adminToken); w.Code != 502 {
		t.Fatalf("kpis with storage down: %d", w.Code)
	}
	if w := e.get("/metrics", ""); w.Code != 200 || !strings.Contains(w.Body.String(), "tally_aggregator_api_requests_total") {
		t.Fatalf("metrics %d", w.Code)
	}
	e.srv = New(Config{Auth: e.srv.cfg.Auth, MetricsToken: "scrape-me"}, e.src, func() error { return errors.New("rebuilding open minutes") },
		prometheus.NewRegistry(), prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	if w := e.get("/readyz", ""); w.Code != 503 || !strings.Contains(w.Body.String(), "rebuilding") {
		t.Fatalf("readyz %d %s", w.Code, w.Body)
	}
	if w := e.get("/metrics", ""); w.Code != 401 {
		t.Fatalf("metrics without its token: %d", w.Code)
	}
	if w := e.get("/metrics", "scrape-me"); w.Code != 200 {
		t.Fatalf("metrics with its token: %d", w.Code)
	}
	if w := e.get("/api/v1/stream", adminToken); w.Code != 503 {
		t.Fatalf("stream without a hub: %d", w.Code)
	}
}

func TestBotsByReason(t *testing.T) {
	bot := pt("c", "s", "click", minute(1), 6)
	bot.State.AddBot("crawler")
	bot.State.AddBot("crawler")
	bot.State.AddBot("datacenter")
	e := newEnv(t, bot, pt("c", "s", "impression", minute(2), 1))
	got := decode[BotsResponse](t, e.get("/api/v1/bots?campaign=c", adminToken))
	if got.Total != 3 || got.ByReason["crawler"] != 2 || got.ByReason["datacenter"] != 1 || got.Share != 0.3 {
		t.Fatalf("got %+v", got)
	}
}

// TestPollsByAnswer: votes of every minute and series of the campaign add
// up per poll and answer; other campaigns' votes stay out.
func TestPollsByAnswer(t *testing.T) {
	vote := func(campaign, source string, m int64, votes map[[2]string]uint64) sketch.Minute {
		var n uint64
		p := pt(campaign, source, "poll_vote", m, 0)
		for pa, v := range votes {
			p.State.AddVotes(sketch.VoteKey(pa[0], pa[1]), v)
			n += v
		}
		p.State.Count = n
		return p
	}
	e := newEnv(t,
		vote("c", "mail", minute(1), map[[2]string]uint64{{"launch", "yes"}: 3, {"launch", "no"}: 1, {"colour", "blue"}: 2}),
		vote("c", "web", minute(2), map[[2]string]uint64{{"launch", "yes"}: 2, {"launch", "later"}: 1}),
		vote("d", "web", minute(2), map[[2]string]uint64{{"launch", "no"}: 50}),
		pt("c", "web", "click", minute(2), 9))
	got := decode[PollsResponse](t, e.get("/api/v1/polls?campaign=c", adminToken))
	want := []Poll{
		{Poll: "colour", Total: 2, Answers: []Answer{{"blue", 2, 1}}},
		{Poll: "launch", Total: 7, Answers: []Answer{{"yes", 5, 5.0 / 7}, {"later", 1, 1.0 / 7}, {"no", 1, 1.0 / 7}}},
	}
	if !reflect.DeepEqual(got.Polls, want) {
		t.Fatalf("polls = %+v\nwant %+v", got.Polls, want)
	}
	if q := e.src.lastQuery(); q.Type != "poll_vote" || !q.CountersOnly {
		t.Fatalf("polls asked the storage for %+v, want poll_vote counters only", q)
	}
	if got := decode[PollsResponse](t, e.get("/api/v1/polls?campaign=c&source=web", adminToken)); len(got.Polls) != 1 || got.Polls[0].Total != 3 {
		t.Fatalf("source=web: %+v", got.Polls)
	}
	if got := decode[PollsResponse](t, e.get("/api/v1/polls?campaign=none", adminToken)); got.Polls == nil || len(got.Polls) != 0 {
		t.Fatalf("a campaign without votes: %+v, want an empty list", got.Polls)
	}
}

func TestStreamForViewerWithQueryToken(t *testing.T) {
	e := newEnv(t)
	e.hub.Publish([]live.Update{{Campaign: "spring", Minute: liveMinute()}, {Campaign: "autumn", Minute: liveMinute()}})
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	code, body := fetch(t, hs.URL+"/api/v1/stream?access_token="+viewerToken, "")
	if code != 200 || !strings.Contains(body, `"campaign":"spring"`) || strings.Contains(body, "autumn") ||
		!strings.Contains(body, "event: status") {
		t.Fatalf("%d %s", code, body)
	}
}

// TestClusterRouteRoles: the node's /api/v1/cluster goes through the same
// guard: admins and analysts read it, viewers get 403, no token 401.
func TestClusterRouteRoles(t *testing.T) {
	e := newEnv(t)
	e.srv.Handle(ClusterRoute, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"node":"n"}`)) }))
	for token, want := range map[string]int{adminToken: 200, analystToken: 200, viewerToken: 403, "": 401} {
		if w := e.get("/api/v1/cluster", token); w.Code != want {
			t.Errorf("token %q: status %d, want %d", token, w.Code, want)
		}
	}
}

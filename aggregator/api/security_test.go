package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
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

// campaignGauge is a metric labelled with campaign names, like the
// node's tally_aggregator_campaign_owner.
func campaignGauge(reg *prometheus.Registry) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "test_campaign_owner", Help: "h"}, []string{"campaign", "member"})
	g.WithLabelValues("secret_launch", "agg-1").Set(1)
	reg.MustRegister(g)
}

// TestMetricsNameNoCampaignWithoutCredential: a scrape without a
// credential never lists a campaign; the metrics token or an admin's
// API token gets everything; with a metrics token configured, a scrape
// without it is 401.
func TestMetricsNameNoCampaignWithoutCredential(t *testing.T) {
	e := newEnv(t)
	campaignGauge(e.reg)
	for _, tc := range []struct {
		token    string
		code     int
		campaign bool
	}{{"", 200, false}, {viewerToken, 200, false}, {analystToken, 200, false}, {"wrong-0123456789abcdef", 200, false}, {adminToken, 200, true}} {
		w := e.get("/metrics", tc.token)
		body := w.Body.String()
		if w.Code != tc.code || strings.Contains(body, "secret_launch") != tc.campaign || !strings.Contains(body, "tally_aggregator_stream_subscribers") {
			t.Fatalf("token %q: %d, campaign shown %v, want %d/%v:\n%s", tc.token, w.Code, strings.Contains(body, "secret_launch"), tc.code, tc.campaign, body)
		}
	}

	e = newEnvWith(t, func(c *Config) { c.MetricsToken = "scrape-token-0123456789" })
	campaignGauge(e.reg)
	for token, want := range map[string]int{"": 401, analystToken: 401, "scrape-token-0123456789": 200, adminToken: 200} {
		w := e.get("/metrics", token)
		if w.Code != want || (want == 200 && !strings.Contains(w.Body.String(), "secret_launch")) {
			t.Fatalf("metrics token set, caller %q: %d", token, w.Code)
		}
	}

	// On its own listener: not on the API's.
	e = newEnvWith(t, func(c *Config) { c.MetricsElsewhere = true })
	campaignGauge(e.reg)
	if w := e.get("/metrics", adminToken); w.Code != 404 {
		t.Fatalf("metrics elsewhere, API listener: %d", w.Code)
	}
	w := httptest.NewRecorder()
	e.srv.MetricsHandler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 200 || strings.Contains(w.Body.String(), "secret_launch") {
		t.Fatalf("metrics listener without a credential: %d\n%s", w.Code, w.Body)
	}
}

// parallelGet fires n requests at once and returns their status codes.
func parallelGet(t *testing.T, url, token string, n int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return codes
}

// waitRunning waits until n queries are held in the source.
func (f *fakeSource) waitRunning(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		r := f.running
		f.mu.Unlock()
		if r >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d queries running, want %d", r, n)
		}
	}
}

// TestQueryLimits: one subject cannot have more than its share of data
// requests admitted (429 at once beyond it), the node runs at most its
// total (503 after the wait), and another subject still gets answers
// while the first floods.
func TestQueryLimits(t *testing.T) {
	e := newEnvWith(t, func(c *Config) {
		c.MaxConcurrentQueries, c.MaxQueriesPerSubject, c.QueryWait = 3, 2, 300*time.Millisecond
	}, pt("spring", "s", "click", minute(1), 5))
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	e.src.mu.Lock()
	e.src.block = make(chan struct{})
	e.src.mu.Unlock()

	// ann (analyst) floods: 2 are held in storage, 18 refused at once.
	var flood map[int]int
	done := make(chan struct{})
	go func() {
		defer close(done)
		flood = parallelGet(t, hs.URL+"/api/v1/kpis?campaign=spring", analystToken, 20)
	}()
	e.src.waitRunning(t, 2)
	// root (admin) gets the third slot; alice (viewer) waits for a slot
	// and gives up with 503 after QueryWait.
	rootDone := make(chan int)
	go func() { c, _ := fetch(t, hs.URL+"/api/v1/kpis?campaign=spring", adminToken); rootDone <- c }()
	e.src.waitRunning(t, 3)
	start := time.Now()
	if code, body := fetch(t, hs.URL+"/api/v1/kpis?campaign=spring", viewerToken); code != 503 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("a query beyond the node's slots: %d %s after %v", code, body, time.Since(start))
	}
	e.src.mu.Lock()
	close(e.src.block)
	e.src.block = nil
	e.src.mu.Unlock()
	<-done
	if flood[200] != 2 || flood[429] != 18 {
		t.Fatalf("ann's flood: %v, want 2×200 and 18×429", flood)
	}
	if c := <-rootDone; c != 200 {
		t.Fatalf("root during the flood: %d", c)
	}
	if e.src.peak != 3 {
		t.Fatalf("peak concurrent queries %d, want 3", e.src.peak)
	}
	// Afterwards everybody is served, with the right numbers.
	got := decode[kpi.KPIs](t, e.get("/api/v1/kpis?campaign=spring", analystToken))
	if got.Clicks != 5 {
		t.Fatalf("after the flood: %+v", got)
	}
	w := e.get("/metrics", adminToken)
	if !strings.Contains(w.Body.String(), `tally_aggregator_api_limited_total{limit="subject_queries"} 18`) ||
		!strings.Contains(w.Body.String(), `tally_aggregator_api_limited_total{limit="queries"} 1`) {
		t.Fatalf("limits not counted:\n%s", grepMetric(w.Body.String(), "limited"))
	}
}

func grepMetric(text, sub string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// openStream opens a stream and returns its response once the status
// line is in (and the code when it is not 200).
func openStream(t *testing.T, ctx context.Context, url, token string) (*http.Response, int) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, resp.StatusCode
	}
	return resp, 200
}

// TestStreamLimits: streams per subject and per node are bounded; a
// stream that ends frees its slot.
func TestStreamLimits(t *testing.T) {
	e := newEnvWith(t, func(c *Config) { c.MaxStreams, c.MaxStreamsPerSubject = 4, 3 })
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var open []*http.Response
	for i := range 5 {
		resp, code := openStream(t, ctx, hs.URL+"/api/v1/stream", analystToken)
		if want := map[bool]int{true: 200, false: 429}[i < 3]; code != want {
			t.Fatalf("ann's stream %d: %d, want %d", i, code, want)
		}
		if resp != nil {
			open = append(open, resp)
		}
	}
	resp, code := openStream(t, ctx, hs.URL+"/api/v1/stream", adminToken)
	if code != 200 {
		t.Fatalf("root's first stream: %d", code)
	}
	open = append(open, resp)
	if _, code := openStream(t, ctx, hs.URL+"/api/v1/stream", viewerToken); code != 503 {
		t.Fatalf("a stream beyond the node's limit: %d", code)
	}
	open[0].Body.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, code := openStream(t, ctx, hs.URL+"/api/v1/stream", viewerToken)
		if code == 200 {
			open = append(open, resp)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the closed stream's slot was not freed: %d", code)
		}
	}
	for _, r := range open[1:] {
		r.Body.Close()
	}
}

// TestStreamCampaignsBounded: a campaigns= list is bounded in names and
// name length.
func TestStreamCampaignsBounded(t *testing.T) {
	e := newEnv(t)
	names := func(n, size int) string {
		var cs []string
		for i := range n {
			cs = append(cs, fmt.Sprintf("%0*d", size, i))
		}
		return strings.Join(cs, ",")
	}
	for _, tc := range []struct {
		list string
		want string
	}{
		{names(MaxFilterCampaigns+1, 4), "more than 100 names"},
		{names(2, auth.MaxNameBytes+1), "longer than 256 bytes"},
		{names(MaxFilterCampaigns, auth.MaxNameBytes+2), "longer than"},
	} {
		w := e.get("/api/v1/stream?campaigns="+tc.list, adminToken)
		if w.Code != 400 || !strings.Contains(w.Body.String(), tc.want) {
			t.Fatalf("%d bytes of campaigns: %d %s", len(tc.list), w.Code, w.Body)
		}
	}
	// 100 names of 200 bytes is a legitimate (long) list.
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	if code, _ := fetch(t, hs.URL+"/api/v1/stream?campaigns="+names(MaxFilterCampaigns, 200), adminToken); code != 200 {
		t.Fatalf("100 long names: %d", code)
	}
}

// TestStreamEndsWhenItsTokenExpires goes through the API with a JWT
// that expires in two seconds: the stream ends with "expired" then, its
// start is audited while it is open, and its end line says why it ended.
func TestStreamEndsWhenItsTokenExpires(t *testing.T) {
	secret := []byte("an-hs256-secret-of-at-least-32-bytes!")
	e := newEnvWith(t, func(c *Config) {
		a, err := auth.New(auth.Config{JWT: &auth.JWTConfig{HS256Secret: secret, Issuer: "idp", Audience: "tally", Leeway: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = a
		c.Hub = live.NewHub(live.HubConfig{Interval: 10 * time.Millisecond, Heartbeat: 100 * time.Millisecond}, nil)
		t.Cleanup(c.Hub.Close)
	})
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "role": "analyst", "exp": exp.Unix(),
		"iss": "idp", "aud": "tally"}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	resp, code := openStream(t, context.Background(), hs.URL+"/api/v1/stream", tok)
	if code != 200 {
		t.Fatalf("stream: %d", code)
	}
	defer resp.Body.Close()
	audit, _ := os.ReadFile(e.audit)
	if !strings.Contains(string(audit), `"msg":"stream_start"`) || !strings.Contains(string(audit), `"subject":"bob"`) {
		t.Fatalf("no stream_start line while the stream is open:\n%s", audit)
	}
	var last string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "event: ") {
			last = sc.Text()
		}
	}
	ended := time.Now()
	if last != "event: expired" || ended.Before(exp) || ended.After(exp.Add(2*time.Second)) {
		t.Fatalf("stream ended %v after exp with %q", ended.Sub(exp), last)
	}
	// Within the JWT leeway the token still authenticates, but the stream
	// is refused: it would end at once.
	if _, code := openStream(t, context.Background(), hs.URL+"/api/v1/stream", tok); code != 401 {
		t.Fatalf("a stream with an expired token: %d", code)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		audit, _ = os.ReadFile(e.audit)
		if strings.Contains(string(audit), `"outcome":"token_expired"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no end line with outcome token_expired:\n%s", audit)
		}
	}
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestLinksAndSessions: only admins mint links; a link opens exactly one
// session and nothing else; the session reads what its role may.
func TestLinksAndSessions(t *testing.T) {
	e := newEnv(t, pt("spring", "s", "click", minute(1), 4), pt("autumn", "s", "click", minute(1), 9))
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	body := `{"subject":"guest","role":"viewer","campaigns":["spring"],"ttl":"2m"}`
	for token, want := range map[string]int{analystToken: 403, viewerToken: 403, "": 401} {
		if code, b := post(t, hs.URL+"/api/v1/links", token, body); code != want {
			t.Fatalf("mint as %q: %d %s", token, code, b)
		}
	}
	for _, bad := range []string{`{"role":"viewer"}`, `{"role":"owner"}`, `{"role":"admin","ttl":"48h"}`, `{"role":"admin","extra":1}`,
		`{"role":"admin"}{"role":"admin"}`, `not json`, `{"role":"admin","subject":"` + strings.Repeat("s", maxLinkBody) + `"}`} {
		if code, b := post(t, hs.URL+"/api/v1/links", adminToken, bad); code != 400 {
			t.Fatalf("mint with body %.60q: %d %s", bad, code, b)
		}
	}
	code, b := post(t, hs.URL+"/api/v1/links", adminToken, body)
	if code != 200 {
		t.Fatalf("mint: %d %s", code, b)
	}
	var link LinkResponse
	if err := json.Unmarshal([]byte(b), &link); err != nil {
		t.Fatal(err)
	}
	if link.Path != "/?link="+link.LinkToken || !link.ThisNodeOnly || time.Until(link.Expires) > 2*time.Minute {
		t.Fatalf("link %+v", link)
	}
	if strings.Contains(b, adminToken) {
		t.Fatal("the link carries the admin token")
	}
	// The link opens no data route.
	if c, _ := fetch(t, hs.URL+"/api/v1/kpis?campaign=spring", link.LinkToken); c != 401 {
		t.Fatalf("a link token on kpis: %d", c)
	}
	// The session route takes nothing but a link.
	for _, tok := range []string{"", adminToken, "tlink_forged.abc.def"} {
		if c, b := post(t, hs.URL+"/api/v1/session", tok, ""); c != 401 {
			t.Fatalf("session with %q: %d %s", tok, c, b)
		}
	}
	code, b = post(t, hs.URL+"/api/v1/session", link.LinkToken, "")
	if code != 200 {
		t.Fatalf("exchange: %d %s", code, b)
	}
	var sess SessionResponse
	if err := json.Unmarshal([]byte(b), &sess); err != nil {
		t.Fatal(err)
	}
	if sess.Subject != "guest" || sess.Role != auth.Viewer || time.Until(sess.Expires) < 11*time.Hour {
		t.Fatalf("session %+v", sess)
	}
	if c, _ := post(t, hs.URL+"/api/v1/session", link.LinkToken, ""); c != 401 {
		t.Fatalf("a second exchange of the link: %d", c)
	}
	got := decode[kpi.KPIs](t, e.get("/api/v1/kpis?campaign=spring", sess.Token))
	if got.Clicks != 4 {
		t.Fatalf("session reads %+v", got)
	}
	if w := e.get("/api/v1/kpis?campaign=autumn", sess.Token); w.Code != 403 {
		t.Fatalf("session outside its scope: %d", w.Code)
	}
	who := decode[map[string]any](t, e.get("/api/v1/whoami", sess.Token))
	if who["subject"] != "guest" || who["expires"] == nil {
		t.Fatalf("whoami %v", who)
	}
	audit, _ := os.ReadFile(e.audit)
	if strings.Contains(string(audit), link.LinkToken) || strings.Contains(string(audit), sess.Token) ||
		!strings.Contains(string(audit), `"route":"session"`) || !strings.Contains(string(audit), `"outcome":"link_for_viewer"`) {
		t.Fatalf("audit of links and sessions:\n%s", audit)
	}
}

// TestHeaderAndWriteBounds: the server refuses oversized request headers
// (431), and a client that stops reading an export is disconnected
// within WriteTimeout, freeing its query slot.
func TestHeaderAndWriteBounds(t *testing.T) {
	// About 12 MB of CSV over 7 days: more than the kernel buffers
	// between a server and a client that does not read (4 MiB at most for
	// the sender here).
	var pts []sketch.Minute
	for m := range int64(7 * 24 * 60) {
		for c := range 6 {
			pts = append(pts, pt(fmt.Sprintf("campaign-with-a-long-name-%d", c), "s", "click", minute(m), 1))
		}
	}
	e := newEnvWith(t, func(c *Config) {
		c.WriteTimeout, c.MaxQueriesPerSubject, c.MaxConcurrentQueries = 500*time.Millisecond, 1, 1
	}, pts...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := HTTPServer(e.srv)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()

	req, _ := http.NewRequest("GET", base+"/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("X-Junk", strings.Repeat("j", MaxHeaderBytes+8<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized headers: %d", resp.StatusCode)
	}

	// A client that asks for a big export and never reads.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4 << 10)
	}
	fmt.Fprintf(conn, "GET /api/v1/export.csv?window=7d&step=1m HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", analystToken)
	// The stuck export holds ann's only slot until the write deadline
	// frees it; then ann is served again.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, _ := fetch(t, base+"/api/v1/whoami", analystToken) // not a query: never limited
		if c != 200 {
			t.Fatalf("whoami: %d", c)
		}
		c, _ = fetch(t, base+"/api/v1/kpis?campaign=campaign-with-a-long-name-1", analystToken)
		if c == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the unread export still holds the slot: %d", c)
		}
	}
}

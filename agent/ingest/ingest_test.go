package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tally-edge/tally/agent/botfilter"
	"github.com/tally-edge/tally/agent/edge"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/source"
)

// serverToken authenticates the tests' server senders.
const serverToken = "ingest-test-server-token"

// memSink is a unit-test sink that records what it accepts.
type memSink struct {
	mu     sync.Mutex
	events []event.Event
	busy   bool
}

func (s *memSink) Accept(evs []event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy {
		return &source.BusyError{Reason: "spool full", RetryAfter: 3 * time.Second}
	}
	s.events = append(s.events, evs...)
	return nil
}

// newHandler returns a handler over sink whose server senders hold
// serverToken; env, if not nil, adjusts the normalisation environment.
func newHandler(t testing.TB, cfg Config, sink source.Sink, env ...func(*source.Env)) (*Handler, *prometheus.Registry) {
	h, err := privacy.NewHasher("test-secret-0123456789", privacy.Day)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e := &source.Env{Region: "eu", MaxAge: 7 * 24 * time.Hour, MaxSkew: 5 * time.Minute, Hasher: h,
		Bots: botfilter.New(botfilter.Config{}), Devices: event.NewDeviceCache(0)}
	for _, f := range env {
		f(e)
	}
	if cfg.Tokens == nil {
		cfg.Tokens = edge.NewTokens(serverToken)
	}
	return New(cfg, e, sink, reg, slog.New(slog.NewTextHandler(io.Discard, nil))), reg
}

// asServer are the headers of a server sender.
var asServer = []string{"Authorization", "Bearer " + serverToken}

func post(h http.Handler, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(body))
	req.RemoteAddr = "192.0.2.10:5555"
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func TestContract(t *testing.T) {
	now := time.Now().UTC()
	good := fmt.Sprintf(`{"type":"click","campaign":"spring","source":"google","medium":"cpc","visitor":"v1","ts":%q}`, now.Format(time.RFC3339))
	for _, tc := range []struct {
		name         string
		body         string
		wantCode     int
		wantAccepted int
		wantRejected int
		wantErrIdx   []int
		wantMsg      string
	}{
		{"ndjson", good + "\n" + good + "\n", 202, 2, 0, nil, ""},
		{"array", "[" + good + "," + good + "]", 202, 2, 0, nil, ""},
		{"mixed lines", good + "\n{not json\n" + `{"type":"teleport"}` + "\n" + `{"campaign":"x"}` + "\n" + good, 202, 2, 3, []int{1, 2, 3}, ""},
		{"bad ts", `{"type":"click","ts":"yesterday"}` + "\n" + good, 202, 1, 1, []int{0}, ""},
		{"future ts", `{"type":"click","ts":4102444800000}`, 202, 0, 1, []int{0}, "future"},
		{"cost needs cost", `{"type":"cost","campaign":"c"}`, 202, 0, 1, []int{0}, "cost"},
		{"credit only on cost events", good + "\n" + `{"type":"click","campaign":"c","cost":-1.5}` + "\n" + `{"type":"cost","campaign":"c","cost":-1.5}`,
			202, 2, 1, []int{1}, "only taken on a cost event"},
		{"not json", "hello world\nfoo", 400, 0, 0, nil, "neither NDJSON nor a JSON array"},
		{"broken array", "[" + good + ",", 400, 0, 0, nil, "JSON array"},
		{"empty", "  \n", 400, 0, 0, nil, "empty body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &memSink{}
			h, _ := newHandler(t, Config{}, sink)
			w := post(h, tc.body)
			if w.Code != tc.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tc.wantCode, w.Body)
			}
			if tc.wantMsg != "" && !strings.Contains(w.Body.String(), tc.wantMsg) {
				t.Fatalf("body %s lacks %q", w.Body, tc.wantMsg)
			}
			if w.Code != 202 {
				if len(sink.events) != 0 {
					t.Fatalf("sink got events on %d", w.Code)
				}
				return
			}
			var resp Response
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Accepted != tc.wantAccepted || resp.Rejected != tc.wantRejected || len(sink.events) != tc.wantAccepted {
				t.Fatalf("resp %+v, sink %d; want accepted %d rejected %d", resp, len(sink.events), tc.wantAccepted, tc.wantRejected)
			}
			for i, idx := range tc.wantErrIdx {
				if resp.Errors[i].Index != idx {
					t.Fatalf("errors %+v, want indexes %v", resp.Errors, tc.wantErrIdx)
				}
			}
		})
	}
}

func TestNormalisationAndPrivacy(t *testing.T) {
	sink := &memSink{}
	h, reg := newHandler(t, Config{}, sink)
	body := `{"type":"pageview","url":"https://shop.example/p?utm_campaign=spring&utm_source=news&utm_medium=email","ua":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148","country":"de"}
{"type":"pageview","campaign":"spring","ua":"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
{"type":"conversion","campaign":"spring","visitor":"u-42","value":19.99}`
	if w := post(h, body, asServer...); w.Code != 202 {
		t.Fatalf("code %d: %s", w.Code, w.Body)
	}
	if len(sink.events) != 3 {
		t.Fatalf("got %d events", len(sink.events))
	}
	pv := sink.events[0]
	if pv.Series.Campaign != "spring" || pv.Series.Source != "news" || pv.Series.Medium != "email" ||
		pv.Series.Country != "DE" || pv.Series.Device != "mobile" || pv.Series.Region != "eu" || pv.Visitor == 0 {
		t.Fatalf("pageview normalised to %+v", pv)
	}
	if sink.events[1].Bot != botfilter.ReasonCrawler || sink.events[1].Series.Device != event.DeviceBot {
		t.Fatalf("googlebot not flagged as a bot device: %+v", sink.events[1])
	}
	if conv := sink.events[2]; conv.ValueMicros != 19_990_000 || !conv.HasValue {
		t.Fatalf("conversion %+v", conv)
	}
	if got := testutil.ToFloat64(h.m.bots.WithLabelValues("crawler")); got != 1 {
		t.Fatalf("bots metric %v", got)
	}
	_ = reg
}

func TestLimitsAndBackpressure(t *testing.T) {
	sink := &memSink{}
	h, _ := newHandler(t, Config{MaxBodyBytes: 1024, MaxEvents: 3}, sink)
	big := strings.Repeat(`{"type":"click"}`+"\n", 100)
	if w := post(h, big); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", w.Code)
	}
	// A chunked body (no Content-Length) must be cut off as well.
	req := httptest.NewRequest(http.MethodPost, "/v1/events", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked oversized body: %d", w.Code)
	}
	if w := post(h, strings.Repeat(`{"type":"click"}`+"\n", 4)); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("too many events: %d", w.Code)
	}
	if got := testutil.ToFloat64(h.m.rejected.WithLabelValues("body_too_large")); got != 2 {
		t.Fatalf("body_too_large counted %v", got)
	}
	sink.busy = true
	w = post(h, `{"type":"click"}`)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "3" {
		t.Fatalf("busy: %d Retry-After=%q", w.Code, w.Header().Get("Retry-After"))
	}
	if len(sink.events) != 0 {
		t.Fatal("events accepted while busy")
	}
}

// BenchmarkServeHTTP measures POST /v1/events end to end inside the
// process (parse, validate, hash, bot check, sink) with NDJSON bodies of
// 500 realistic events.
//
//	go test -run='^$' -bench=BenchmarkServeHTTP -benchmem -cpu=1 ./agent/ingest/
func BenchmarkServeHTTP(b *testing.B) {
	h, _ := newHandler(b, Config{}, discardSink{})
	body := benchBody(500)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodPost, "/v1/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+serverToken)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 202 {
			b.Fatalf("code %d: %s", w.Code, w.Body)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "events/s")
}

type discardSink struct{}

func (discardSink) Accept([]event.Event) error { return nil }

func benchBody(n int) []byte {
	uas := []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
	}
	types := []string{"impression", "impression", "click", "pageview", "conversion"}
	var buf bytes.Buffer
	ts := time.Now().UnixMilli()
	for i := range n {
		typ := types[i%len(types)]
		fmt.Fprintf(&buf, `{"type":%q,"ts":%d,"campaign":"camp-%d","source":"google","medium":"cpc","country":"US","visitor":"visitor-%d","ip":"198.51.100.%d","ua":%q,"url":"https://shop.example.com/landing?utm_campaign=camp-%d"`,
			typ, ts, i%20, i*7919%20000, i%250, uas[i%len(uas)], i%20)
		if typ == "conversion" {
			fmt.Fprintf(&buf, `,"value":%d.99`, i%200)
		}
		buf.WriteString("}\n")
	}
	return buf.Bytes()
}

type fakeGeo map[string]string

func (g fakeGeo) Country(ip string) string { return g[ip] }

func TestCountryFromClientIP(t *testing.T) {
	sink := &memSink{}
	h, _ := newHandler(t, Config{}, sink, func(e *source.Env) {
		e.Geo = fakeGeo{"203.0.113.5": "JP", "192.0.2.10": "FR"}
	})
	body := `{"type":"click","ip":"203.0.113.5"}
{"type":"click","ip":"203.0.113.5","country":"de"}
{"type":"click"}
{"type":"click","ip":"198.51.100.1"}
{"type":"click","ip":"203.0.113.5","country":"1!"}
{"type":"click","ip":"203.0.113.5","country":"QQ"}`
	// A server sender: the event's IP, else no IP (the backend's own
	// address says nothing about the visitor).
	if w := post(h, body, asServer...); w.Code != 202 {
		t.Fatalf("code %d: %s", w.Code, w.Body)
	}
	// A browser: the request's address (192.0.2.10) whatever the body says.
	if w := post(h, body); w.Code != 202 {
		t.Fatalf("code %d: %s", w.Code, w.Body)
	}
	want := []string{"JP", "DE", event.NoCountry, event.NoCountry, "JP", "JP",
		"FR", "DE", "FR", "FR", "FR", "FR"}
	for i, w := range want {
		if got := sink.events[i].Series.Country; got != w {
			t.Fatalf("event %d: country %q, want %q", i, got, w)
		}
	}
	// "1!" and "QQ" are not ISO 3166-1 codes: counted, twice each.
	if n := h.env.Counters.UnknownCountry.Load(); n != 4 {
		t.Fatalf("unknown countries counted %d, want 4", n)
	}
}

// TestSendersAndTheirIdentity: a server sender's events are judged by
// what they carry, never by its HTTP library's User-Agent (a click posted
// with curl counts as a click); a browser's are judged by the request,
// whatever their ip and ua fields say; a wrong token is refused.
func TestSendersAndTheirIdentity(t *testing.T) {
	const curl = "curl/8.5.0"
	const chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
	const googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	for _, tc := range []struct {
		name       string
		body       string
		hdr        []string
		wantCode   int
		wantBot    string
		wantDevice string
	}{
		{"server, no ua: unknown, not curl's", `{"type":"click","campaign":"c"}`, []string{"Authorization", "Bearer " + serverToken, "User-Agent", curl}, 202, "", event.NoDevice},
		{"server, visitor's ua", `{"type":"click","ua":"` + chrome + `"}`, []string{"Authorization", "Bearer " + serverToken, "User-Agent", curl}, 202, "", "desktop"},
		{"server, crawler in the event", `{"type":"click","ua":"` + googlebot + `"}`, []string{"Authorization", "Bearer " + serverToken, "User-Agent", chrome}, 202, botfilter.ReasonCrawler, event.DeviceBot},
		{"browser, curl is the client", `{"type":"click","ua":"` + chrome + `"}`, []string{"User-Agent", curl}, 202, botfilter.ReasonCrawler, event.DeviceBot},
		{"browser, body ua ignored", `{"type":"click","ua":"` + googlebot + `"}`, []string{"User-Agent", chrome}, 202, "", "desktop"},
		{"wrong token", `{"type":"click"}`, []string{"Authorization", "Bearer not-the-token-at-all", "User-Agent", chrome}, 401, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &memSink{}
			h, _ := newHandler(t, Config{}, sink)
			w := post(h, tc.body, tc.hdr...)
			if w.Code != tc.wantCode {
				t.Fatalf("code %d, want %d: %s", w.Code, tc.wantCode, w.Body)
			}
			if tc.wantCode != 202 {
				if len(sink.events) != 0 {
					t.Fatal("events accepted from a refused request")
				}
				return
			}
			if e := sink.events[0]; e.Bot != tc.wantBot || e.Series.Device != tc.wantDevice {
				t.Fatalf("bot %q device %q, want %q %q", e.Bot, e.Series.Device, tc.wantBot, tc.wantDevice)
			}
		})
	}
}

// TestBrowserCannotForgeIdentity: an anonymous client's ip and ua fields
// change neither its visitor hash nor its verdict, and are counted.
func TestBrowserCannotForgeIdentity(t *testing.T) {
	sink := &memSink{}
	h, _ := newHandler(t, Config{}, sink)
	plain := `{"type":"click","campaign":"c"}`
	forged := `{"type":"click","campaign":"c","ip":"203.0.113.77","ua":"Mozilla/5.0 (iPhone) Mobile"}`
	ua := []string{"User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0 Safari/537.36"}
	post(h, plain, ua...)
	post(h, forged, ua...)
	if len(sink.events) != 2 {
		t.Fatalf("%d events", len(sink.events))
	}
	if a, b := sink.events[0], sink.events[1]; a.Visitor != b.Visitor || a.Series != b.Series {
		t.Fatalf("forged identity changed the event: %+v vs %+v", a, b)
	}
	if n := h.env.Counters.IdentityIgnored.Load(); n != 1 {
		t.Fatalf("ignored identities counted %d, want 1", n)
	}
}

// TestRequireToken: a listener for server senders only refuses requests
// without a token.
func TestRequireToken(t *testing.T) {
	sink := &memSink{}
	h, _ := newHandler(t, Config{}, sink)
	only := edge.RequireToken(h.cfg.Tokens, h)
	if w := post(only, `{"type":"click"}`); w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d", w.Code)
	}
	if w := post(only, `{"type":"click"}`, asServer...); w.Code != 202 {
		t.Fatalf("with token: %d %s", w.Code, w.Body)
	}
}

// TestBytesInFlightBound: while requests hold the bound's bytes, another
// body gets 503 with Retry-After; once they finish, it is taken.
func TestBytesInFlightBound(t *testing.T) {
	sink := &memSink{}
	inflight := edge.NewInFlight(64 << 10)
	h, _ := newHandler(t, Config{InFlight: inflight}, sink)
	if !inflight.Acquire(60 << 10) { // a slow upload holding most of it
		t.Fatal("cannot reserve")
	}
	body := strings.Repeat(`{"type":"click","campaign":"c"}`+"\n", 200) // about 6 KiB
	w := post(h, body)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("over the bound: %d %s", w.Code, w.Body)
	}
	// Unknown length: refused as it grows past the bound.
	req := httptest.NewRequest(http.MethodPost, "/v1/events", io.MultiReader(strings.NewReader(body)))
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("chunked over the bound: %d", rec.Code)
	}
	if len(sink.events) != 0 || inflight.Bytes() != 60<<10 {
		t.Fatalf("%d events accepted, %d bytes reserved", len(sink.events), inflight.Bytes())
	}
	inflight.Release(60 << 10)
	if w := post(h, body); w.Code != 202 || inflight.Bytes() != 0 {
		t.Fatalf("after release: %d, %d bytes still reserved", w.Code, inflight.Bytes())
	}
}

// TestEventsOwnTheirLabels: the fields decoded without copies (url, ua,
// ip, visitor) never leak into what the sink keeps: labels read from a
// URL survive the next request reusing the parser's buffer.
func TestEventsOwnTheirLabels(t *testing.T) {
	sink := &memSink{}
	h, _ := newHandler(t, Config{}, sink)
	body := func(c string) string {
		return `{"type":"click","url":"https://s.example/?utm_campaign=` + c + `&utm_source=` + c + `&utm_medium=` + c + `","ua":"Mozilla/5.0 ` + c + `","ip":"192.0.2.1"}`
	}
	for _, c := range []string{"alpha", "bravo", "charl"} {
		if w := post(h, body(c)+"\n"+body(c), asServer...); w.Code != 202 {
			t.Fatalf("code %d: %s", w.Code, w.Body)
		}
	}
	for i, want := range []string{"alpha", "alpha", "bravo", "bravo", "charl", "charl"} {
		if s := sink.events[i].Series; s.Campaign != want || s.Source != want || s.Medium != want {
			t.Fatalf("event %d: series %+v, want labels %q", i, s, want)
		}
	}
}

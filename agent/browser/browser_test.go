package browser

import (
	"bytes"
	"compress/gzip"
	"errors"
	"hash/fnv"
	"image/gif"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/ingest"
	"github.com/tally-edge/tally/agent/source"
)

// fakeSink records accepted events, or fails with err.
type fakeSink struct {
	mu     sync.Mutex
	err    error
	events []event.Event
}

func (s *fakeSink) Accept(evs []event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.events = append(s.events, evs...)
	return nil
}

func (s *fakeSink) got() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Event(nil), s.events...)
}

// fakeHasher makes visitor hashes a test can recompute.
type fakeHasher struct{}

func hash(parts ...string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(strings.Join(parts, "|")))
	return h.Sum64()
}

func (fakeHasher) Visitor(_ int64, id string) uint64 { return hash("id", id) }
func (fakeHasher) Anonymous(_ int64, ip, ua, site string) uint64 {
	return hash("anon", ip, ua, site)
}

type botFunc func(ua, ip string) string

func (f botFunc) CheckEvent(ua, ip string, _ uint64, _ int64) string { return f(ua, ip) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// testEnv is the normalisation environment of the tests: region eu, the
// fake hasher, the given bot filter; opts adjust it.
func testEnv(bots event.BotFilter, opts ...func(*source.Env)) *source.Env {
	e := &source.Env{Region: "eu", MaxAge: 7 * 24 * time.Hour, MaxSkew: 5 * time.Minute, Hasher: fakeHasher{}, Bots: bots}
	for _, o := range opts {
		o(e)
	}
	return e
}

func newHandlers(t *testing.T, cfg Config, sink source.Sink, bots event.BotFilter, opts ...func(*source.Env)) (*Handlers, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := New(cfg, testEnv(bots, opts...), sink, reg, discard)
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

const browserUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

func pixelRequest(method, query string) *http.Request {
	r := httptest.NewRequest(method, "/v1/pixel.gif?"+query, nil)
	r.Header.Set("User-Agent", browserUA)
	return r
}

func checkGIF(t *testing.T, w *httptest.ResponseRecorder, body bool) {
	t.Helper()
	res := w.Result()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	for k, want := range map[string]string{"Content-Type": "image/gif", "Cache-Control": "no-store", "Content-Length": "43"} {
		if got := res.Header.Get(k); got != want {
			t.Fatalf("%s = %q, want %q", k, got, want)
		}
	}
	want := GIF
	if !body {
		want = nil
	}
	if got := w.Body.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("body = % x, want % x", got, want)
	}
}

func TestGIFIsOneTransparentPixel(t *testing.T) {
	if len(GIF) != 43 {
		t.Fatalf("GIF is %d bytes, want 43", len(GIF))
	}
	img, err := gif.Decode(bytes.NewReader(GIF))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1 || b.Dy() != 1 {
		t.Fatalf("bounds %v, want 1×1", b)
	}
	if _, _, _, a := img.At(0, 0).RGBA(); a != 0 {
		t.Fatalf("alpha %d, want 0 (transparent)", a)
	}
}

// TestPixelAlwaysAnswersTheGIF: whatever the query or the sink does, the
// answer is the image; the outcome shows only in the metrics.
func TestPixelAlwaysAnswersTheGIF(t *testing.T) {
	busy := &source.BusyError{Reason: "spool full", RetryAfter: time.Second}
	tests := []struct {
		name, query string
		sinkErr     error
		reason      string // "" means accepted
	}{
		{"valid", "type=email_open&campaign=spring&source=news&medium=email", nil, ""},
		{"default type", "campaign=spring", nil, ""},
		{"no query at all", "", nil, ""},
		{"conversion with value", "type=conversion&campaign=spring&value=49.90", nil, ""},
		{"unknown type", "type=purchase&campaign=spring", nil, "unknown_type"},
		{"cost is not for pixels", "type=cost&campaign=spring", nil, "type_not_allowed"},
		{"bad ts", "ts=yesterday", nil, "bad_ts"},
		{"ts too old", "ts=1000", nil, "ts_too_old"},
		{"ts in the future", "ts=" + strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10), nil, "ts_future"},
		{"bad value", "type=conversion&value=lots", nil, "bad_value"},
		{"infinite value", "type=conversion&value=Inf", nil, "bad_value"},
		{"bad escape", "campaign=%zz", nil, "bad_query"},
		{"sink busy", "campaign=spring", busy, "busy"},
		{"sink failure", "campaign=spring", errors.New("disk on fire"), "sink_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink := &fakeSink{err: tc.sinkErr}
			h, _ := newHandlers(t, DefaultConfig(), sink, nil)
			w := httptest.NewRecorder()
			h.Pixel().ServeHTTP(w, pixelRequest(http.MethodGet, tc.query))
			checkGIF(t, w, true)
			if got := testutil.ToFloat64(h.m.pixel); got != 1 {
				t.Fatalf("pixel requests = %v, want 1", got)
			}
			accepted := testutil.ToFloat64(h.m.accepted)
			if tc.reason == "" {
				if accepted != 1 || len(sink.got()) != 1 {
					t.Fatalf("accepted = %v, sink has %d events; want 1 and 1", accepted, len(sink.got()))
				}
				return
			}
			if got := testutil.ToFloat64(h.m.rejected.WithLabelValues(tc.reason)); got != 1 {
				t.Fatalf("rejected{reason=%q} = %v, want 1", tc.reason, got)
			}
			if accepted != 0 || len(sink.got()) != 0 {
				t.Fatalf("accepted = %v, sink has %d events; want none", accepted, len(sink.got()))
			}
		})
	}
}

func TestPixelMapsQueryToEvent(t *testing.T) {
	sink := &fakeSink{}
	cfg := DefaultConfig()
	h, _ := newHandlers(t, cfg, sink, nil, func(e *source.Env) { e.Region = "eu-west" })
	ts := time.Now().Add(-time.Minute).UnixMilli()
	r := pixelRequest(http.MethodGet, "type=email_open&campaign=spring&source=news&medium=email&visitor=v-1&country=de&cb=123&ts="+strconv.FormatInt(ts, 10))
	r.Header.Set("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148")
	h.Pixel().ServeHTTP(httptest.NewRecorder(), r)
	evs := sink.got()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	e := evs[0]
	s := e.Series
	if s.Type != "email_open" || s.Campaign != "spring" || s.Source != "news" || s.Medium != "email" ||
		s.Country != "DE" || s.Device != "mobile" || s.Region != "eu-west" {
		t.Fatalf("series %+v", s)
	}
	if e.UnixMillis != ts {
		t.Fatalf("time %d, want %d", e.UnixMillis, ts)
	}
	if e.Visitor != hash("id", "v-1") {
		t.Fatalf("visitor hash %d, want the hash of the explicit id", e.Visitor)
	}
}

func TestPixelAnonymousVisitorBehindTrustedProxy(t *testing.T) {
	sink := &fakeSink{}
	cfg := DefaultConfig()
	h, _ := newHandlers(t, cfg, sink, nil, func(e *source.Env) {
		e.Proxies.Trusted = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	r := pixelRequest(http.MethodGet, "campaign=spring&url="+"https%3A%2F%2Fshop.example.com%2Fp%3Futm_source%3Dnews")
	r.RemoteAddr = "10.1.2.3:4444"
	r.Header.Set("X-Forwarded-For", "198.51.100.7, 203.0.113.9")
	h.Pixel().ServeHTTP(httptest.NewRecorder(), r)
	evs := sink.got()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	if want := hash("anon", "203.0.113.9", browserUA, "shop.example.com"); evs[0].Visitor != want {
		t.Fatalf("visitor hash %d, want the hash of (203.0.113.9, UA, shop.example.com)", evs[0].Visitor)
	}
	if evs[0].Series.Type != "impression" || evs[0].Series.Source != "news" {
		t.Fatalf("series %+v: want an impression with the source read from url", evs[0].Series)
	}
}

func TestPixelBotsAreAcceptedAndCounted(t *testing.T) {
	sink := &fakeSink{}
	h, _ := newHandlers(t, DefaultConfig(), sink, botFunc(func(ua, _ string) string { return "crawler" }))
	w := httptest.NewRecorder()
	h.Pixel().ServeHTTP(w, pixelRequest(http.MethodGet, "campaign=spring"))
	checkGIF(t, w, true)
	if evs := sink.got(); len(evs) != 1 || evs[0].Bot != "crawler" {
		t.Fatalf("events %+v, want one flagged crawler", evs)
	}
	if got := testutil.ToFloat64(h.m.bots.WithLabelValues("crawler")); got != 1 {
		t.Fatalf("bots{crawler} = %v, want 1", got)
	}
}

func TestPixelHeadRecordsNothing(t *testing.T) {
	sink := &fakeSink{}
	h, _ := newHandlers(t, DefaultConfig(), sink, nil)
	w := httptest.NewRecorder()
	h.Pixel().ServeHTTP(w, pixelRequest(http.MethodHead, "campaign=spring"))
	checkGIF(t, w, false)
	if len(sink.got()) != 0 || testutil.ToFloat64(h.m.pixel) != 0 {
		t.Fatal("HEAD recorded an event")
	}
}

func TestOriginMatching(t *testing.T) {
	o, err := parseOrigins([]string{"https://shop.example.com", "https://*.example.org", "http://127.0.0.1:8080",
		"HTTPS://Secure.Example.NET:443", "http://[::1]:9000"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		origin string
		want   bool
	}{
		{"https://shop.example.com", true},
		{"https://SHOP.example.com", true},
		{"http://shop.example.com", false},       // scheme is part of the origin
		{"https://shop.example.com:8443", false}, // so is the port
		{"https://evil-shop.example.com", false},
		{"https://shop.example.com.evil.net", false},
		{"https://a.example.org", true},
		{"https://a.b.example.org", true},
		{"https://example.org", false}, // the wildcard needs a subdomain
		{"https://aexample.org", false},
		{"https://a.example.org:444", false},
		{"http://a.example.org", false},
		{"https://a..example.org", false},
		{"http://127.0.0.1:8080", true},
		{"http://127.0.0.1:8081", false},
		{"https://secure.example.net", true}, // default port dropped
		{"http://[::1]:9000", true},
		{"null", false},
		{"", false},
		{"https://shop.example.com/", false},
	}
	for _, tc := range tests {
		if got := o.match(tc.origin); got != tc.want {
			t.Errorf("match(%q) = %v, want %v", tc.origin, got, tc.want)
		}
	}
	var none origins
	if none.match("https://shop.example.com") {
		t.Error("an empty list allowed an origin")
	}
}

func TestValidateNamesBadOrigins(t *testing.T) {
	bad := []string{
		"shop.example.com",          // no scheme
		"ftp://shop.example.com",    // not http(s)
		"https://shop.example.com/", // trailing slash
		"https://shop.example.com/path",
		"*",
		"https://*",
		"https://*.org",
		"https://a.*.example.org",
		"https://*example.org",
		"https://shop.example.com:99999",
		"https://shop_example.com",
		"https://user@shop.example.com",
		"https://[::1",
	}
	for _, p := range bad {
		cfg := DefaultConfig()
		cfg.AllowedOrigins = []string{"https://good.example.com", p}
		err := cfg.Validate()
		if err == nil {
			t.Errorf("%q: accepted", p)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(p)) || strings.Contains(err.Error(), "good.example.com") {
			t.Errorf("%q: error %q should name this pattern and only it", p, err)
		}
		if _, err := New(cfg, testEnv(nil), &fakeSink{}, prometheus.NewRegistry(), discard); err == nil {
			t.Errorf("%q: New accepted it", p)
		}
	}
	cfg := DefaultConfig()
	cfg.ScriptMaxAge = -time.Second
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "script_max_age") {
		t.Errorf("negative script_max_age: %v", err)
	}
}

func TestCORS(t *testing.T) {
	const allowed = "https://shop.example.com"
	tests := []struct {
		name             string
		method, origin   string
		preflightMethod  string
		enforce          bool
		wantStatus       int
		wantAllow        string
		wantNext         bool
		wantKind, result string // metric labels; "" means not counted
	}{
		{"preflight allowed", http.MethodOptions, allowed, "POST", false, 204, allowed, false, "preflight", "allowed"},
		{"preflight wildcard", http.MethodOptions, "https://eu.example.org", "POST", false, 204, "https://eu.example.org", false, "preflight", "allowed"},
		{"preflight denied", http.MethodOptions, "https://evil.example", "POST", false, 403, "", false, "preflight", "denied"},
		{"post allowed", http.MethodPost, allowed, "", false, 202, allowed, true, "request", "allowed"},
		{"post denied passes without headers", http.MethodPost, "https://evil.example", "", false, 202, "", true, "request", "denied"},
		{"post denied enforced", http.MethodPost, "https://evil.example", "", true, 403, "", false, "request", "denied"},
		{"post from null origin", http.MethodPost, "null", "", false, 202, "", true, "request", "denied"},
		{"no origin (server, curl)", http.MethodPost, "", "", true, 202, "", true, "", ""},
		{"same host", http.MethodPost, "http://agent.example:8081", "", true, 202, "", true, "", ""},
		{"plain OPTIONS goes to the handler", http.MethodOptions, allowed, "", false, 202, allowed, true, "request", "allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.AllowedOrigins = []string{allowed, "https://*.example.org"}
			cfg.EnforceOrigins = tc.enforce
			cfg.PreflightMaxAge = 10 * time.Minute
			h, reg := newHandlers(t, cfg, &fakeSink{}, nil)
			called := false
			next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { called = true; w.WriteHeader(202) })
			r := httptest.NewRequest(tc.method, "http://agent.example:8081/v1/events", nil)
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.preflightMethod != "" {
				r.Header.Set("Access-Control-Request-Method", tc.preflightMethod)
				r.Header.Set("Access-Control-Request-Headers", "content-type")
			}
			w := httptest.NewRecorder()
			h.CORS(next).ServeHTTP(w, r)
			res := w.Result()
			if res.StatusCode != tc.wantStatus || called != tc.wantNext {
				t.Fatalf("status %d, next called %v; want %d, %v", res.StatusCode, called, tc.wantStatus, tc.wantNext)
			}
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != tc.wantAllow {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tc.wantAllow)
			}
			if tc.wantAllow != "" && res.Header.Get("Access-Control-Allow-Credentials") != "true" {
				t.Fatal("allowed origin without Access-Control-Allow-Credentials")
			}
			if tc.wantAllow == "" && res.Header.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatal("credentials allowed for a denied origin")
			}
			if tc.origin != "" && !strings.Contains(strings.Join(res.Header.Values("Vary"), ","), "Origin") {
				t.Fatal("answer depends on Origin but does not say Vary: Origin")
			}
			if tc.wantStatus == 204 {
				for k, want := range map[string]string{"Access-Control-Allow-Methods": "POST",
					"Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"} {
					if got := res.Header.Get(k); got != want {
						t.Fatalf("%s = %q, want %q", k, got, want)
					}
				}
			}
			n, err := testutil.GatherAndCount(reg, "tally_agent_browser_cors_requests_total")
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantKind == "" {
				if n != 0 {
					t.Fatalf("counted %d CORS series, want none", n)
				}
				return
			}
			if got := testutil.ToFloat64(h.m.cors.WithLabelValues(tc.wantKind, tc.result)); got != 1 {
				t.Fatalf("cors{%s,%s} = %v, want 1", tc.wantKind, tc.result, got)
			}
		})
	}
}

// TestBeaconBodyReachesIngest checks what the script relies on: POST
// /v1/events reads an NDJSON body sent as text/plain (the only type
// sendBeacon can send without a preflight) like any other.
func TestBeaconBodyReachesIngest(t *testing.T) {
	sink := &fakeSink{}
	cfg := DefaultConfig()
	cfg.AllowedOrigins = []string{"https://shop.example.com"}
	h, _ := newHandlers(t, cfg, sink, nil)
	ing := ingest.New(ingest.Config{}, testEnv(nil), sink, prometheus.NewRegistry(), discard)
	body := `{"type":"pageview","url":"https://shop.example.com/?utm_campaign=spring&utm_source=news&utm_medium=email"}` + "\n"
	r := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(body))
	r.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	r.Header.Set("Origin", "https://shop.example.com")
	w := httptest.NewRecorder()
	h.CORS(ing).ServeHTTP(w, r)
	if w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), `"accepted":1`) {
		t.Fatalf("status %d %s, want 202 with one accepted", w.Code, w.Body)
	}
	if got := w.Header().Get("Access-Control-Allow-Origin"); got != "https://shop.example.com" {
		t.Fatalf("Access-Control-Allow-Origin %q", got)
	}
	if evs := sink.got(); len(evs) != 1 || evs[0].Series.Campaign != "spring" || evs[0].Series.Medium != "email" {
		t.Fatalf("events %+v", evs)
	}
}

func getScript(t *testing.T, h *Handlers, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/v1/t.js", nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.Script().ServeHTTP(w, r)
	return w
}

func TestScriptServed(t *testing.T) {
	h, _ := newHandlers(t, DefaultConfig(), &fakeSink{}, nil)
	w := getScript(t, h)
	res := w.Result()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	for k, want := range map[string]string{"Content-Type": "text/javascript; charset=utf-8",
		"Cache-Control": "public, max-age=3600", "Vary": "Accept-Encoding"} {
		if got := res.Header.Get(k); got != want {
			t.Fatalf("%s = %q, want %q", k, got, want)
		}
	}
	if res.Header.Get("Content-Encoding") != "" {
		t.Fatal("encoded without Accept-Encoding")
	}
	js := w.Body.String()
	if len(js) >= MaxScriptBytes || len(js) < 500 {
		t.Fatalf("t.js is %d bytes, want a real script under %d", len(js), MaxScriptBytes)
	}
	t.Logf("t.js: %d bytes, %d gzipped", len(js), len(h.script.gz))
	for line := range strings.Lines(js) {
		if strings.HasPrefix(line, "//") || strings.HasPrefix(line, " ") {
			t.Fatalf("comment or indentation left in the served script: %q", line)
		}
	}
	for _, want := range []string{"sendBeacon", "keepalive", "text/plain;charset=UTF-8", "currentScript", "data-tally-click", "utm_"} {
		if !strings.Contains(js, want) {
			t.Errorf("t.js lacks %q", want)
		}
	}
	if strings.Contains(js, "cookie") || strings.Contains(js, "`") {
		t.Error("t.js mentions cookies or uses a template literal")
	}
}

func TestScriptRevalidates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ScriptMaxAge = 5 * time.Minute
	h, _ := newHandlers(t, cfg, &fakeSink{}, nil)
	first := getScript(t, h)
	etag := first.Header().Get("ETag")
	if !strings.HasPrefix(etag, `W/"`) || first.Header().Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("ETag %q, Cache-Control %q", etag, first.Header().Get("Cache-Control"))
	}
	for _, inm := range []string{etag, strings.TrimPrefix(etag, "W/"), `"other", ` + etag, "*"} {
		w := getScript(t, h, "If-None-Match", inm, "Accept-Encoding", "gzip")
		if w.Code != http.StatusNotModified || w.Body.Len() != 0 || w.Header().Get("ETag") != etag {
			t.Fatalf("If-None-Match %s: status %d, %d body bytes, ETag %q; want 304, empty, same ETag", inm, w.Code, w.Body.Len(), w.Header().Get("ETag"))
		}
	}
	if w := getScript(t, h, "If-None-Match", `W/"stale"`); w.Code != 200 || w.Body.Len() == 0 {
		t.Fatalf("stale ETag: status %d", w.Code)
	}
	if got := testutil.ToFloat64(h.m.script.WithLabelValues("304")); got != 4 {
		t.Fatalf("304s counted %v, want 4", got)
	}
}

func TestScriptGzip(t *testing.T) {
	h, _ := newHandlers(t, DefaultConfig(), &fakeSink{}, nil)
	plain := getScript(t, h).Body.Bytes()
	w := getScript(t, h, "Accept-Encoding", "br, gzip, deflate")
	if w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Content-Length") != strconv.Itoa(w.Body.Len()) {
		t.Fatalf("Content-Encoding %q, Content-Length %q for %d bytes", w.Header().Get("Content-Encoding"), w.Header().Get("Content-Length"), w.Body.Len())
	}
	zr, err := gzip.NewReader(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) || w.Body.Len() >= len(plain) {
		t.Fatalf("gzip body decodes to %d bytes (plain %d); want the same script, smaller", len(got), len(plain))
	}
	if w := getScript(t, h, "Accept-Encoding", "gzip;q=0, identity"); w.Header().Get("Content-Encoding") != "" {
		t.Fatal("gzip sent although refused")
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "deflate, gzip;q=0.5": true, "gzip;q=0": false,
		"*": true, "*;q=0": false, "gzip;q=0, *": false, "br": false, "x-gzip": false, " gzip ; q=1.0": true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestScriptBudget(t *testing.T) {
	if _, err := newScript(bytes.Repeat([]byte("x\n"), MaxScriptBytes), time.Hour); err == nil {
		t.Fatal("a script over the budget was accepted")
	}
}

func TestMetricNames(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AllowedOrigins = []string{"https://shop.example.com"}
	h, reg := newHandlers(t, cfg, &fakeSink{}, botFunc(func(string, string) string { return "crawler" }))
	h.Pixel().ServeHTTP(httptest.NewRecorder(), pixelRequest(http.MethodGet, "type=nope"))
	h.Pixel().ServeHTTP(httptest.NewRecorder(), pixelRequest(http.MethodGet, ""))
	getScript(t, h)
	r := httptest.NewRequest(http.MethodPost, "/v1/events", nil)
	r.Header.Set("Origin", "https://shop.example.com")
	h.CORS(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), r)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 6 {
		t.Errorf("%d metric families, want 6", len(families))
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "tally_agent_browser_") {
			t.Errorf("metric %s lacks the tally_agent_browser_ prefix", f.GetName())
		}
	}
	if _, err := New(cfg, testEnv(nil), &fakeSink{}, reg, discard); err == nil {
		t.Error("registering twice in one registry did not fail")
	}
}

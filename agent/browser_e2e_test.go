package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent"
	"github.com/tally-edge/tally/agent/botfilter"
	"github.com/tally-edge/tally/agent/browser"
	"github.com/tally-edge/tally/agent/browser/browsertest"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/source"
)

// browserArtifactDir keeps what browser tests leave for a human to look at
// (gitignored).
const browserArtifactDir = "../tests/e2e/artifacts"

// TestBrowserSnippet is the acceptance test of the browser sources: a real
// headless Chromium opens a landing page on one origin that loads t.js
// from another, the snippet sends a pageview on load and a click when the
// marked link is clicked, and a real agent journals, rolls up and ships
// them to a capturing QUIC server. The page also shows the pixel.
//
// Until agent.Run mounts the browser handlers, a front server plays that
// part: t.js and pixel.gif from browser.Handlers, /v1/events through
// Handlers.CORS to the agent's real ingest handler.
func TestBrowserSnippet(t *testing.T) {
	ctx := browsertest.Context(t) // skips before anything starts when there is no browser
	cfg, cap := captureSetup(t)
	// Uncompressed batches: wire's receiver rejects zstd payloads under
	// 256 bytes (klauspost/compress declares no content size for them, and
	// decompress requires one), and a flush holding only the pageview is
	// that small. Drop this line once wire accepts them.
	cfg.Aggregator.Compress = new(false)
	agentAddr, stop := runAgent(t, cfg)

	// The site's pages: their own port, so their origin is not the agent's.
	site := httptest.NewUnstartedServer(nil)
	siteOrigin := "http://" + site.Listener.Addr().String()

	bcfg := browser.DefaultConfig()
	bcfg.AllowedOrigins = []string{siteOrigin}
	hasher, err := privacy.NewHasher(cfg.Privacy.Secret, cfg.Privacy.SaltPeriod)
	if err != nil {
		t.Fatal(err)
	}
	pixelSink := &browserSink{}
	reg := prometheus.NewRegistry()
	env := &source.Env{Region: cfg.Region, MaxAge: cfg.HTTP.MaxEventAge, MaxSkew: cfg.HTTP.MaxClockSkew, Hasher: hasher,
		Bots: botfilter.New(botfilter.Config{})}
	h, err := browser.New(bcfg, env, pixelSink, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	posts := &beaconPosts{}
	front := http.NewServeMux()
	front.Handle("GET /v1/t.js", h.Script())
	front.Handle("GET /v1/pixel.gif", h.Pixel())
	front.Handle("/v1/events", posts.wrap(h.CORS(httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: agentAddr}))))
	agentFront := httptest.NewServer(front)
	defer agentFront.Close()

	pageHTML := fmt.Sprintf(`<!doctype html>
<html><head><meta charset="utf-8"><title>Spring sale</title>
<script async src="%[1]s/v1/t.js"></script></head>
<body style="font-family:sans-serif">
<h1>Spring sale</h1>
<p><a id="cta" data-tally-click href="#">Shop the spring sale</a></p>
<img id="px" alt="" src="%[1]s/v1/pixel.gif?type=impression&amp;campaign=spring&amp;source=news&amp;medium=email">
</body></html>`, agentFront.URL)
	siteMux := http.NewServeMux()
	siteMux.HandleFunc("GET /landing.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, pageHTML)
	})
	site.Config.Handler = siteMux
	site.Start()
	defer site.Close()

	page := siteOrigin + "/landing.html?utm_campaign=spring&utm_source=news&utm_medium=email"
	fail := func(step string, err error) {
		t.Helper()
		t.Fatalf("browser: %s: %v (requests at /v1/events: %+v)", step, err, posts.snapshot())
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS("#cta")),
		chromedp.Func(posts.waitFor(1)), // the pageview
		chromedp.Poll[chromedp.Void](`document.getElementById("px").complete`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	if err != nil {
		fail("load the page", err)
	}
	pixelWidth, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.getElementById("px").naturalWidth`))
	if err != nil {
		fail("read the pixel", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#cta")), chromedp.Func(posts.waitFor(2))); err != nil {
		fail("click", err)
	}
	cookies, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil {
		fail("read cookies", err)
	}
	storageItems, err := chromedp.Run(ctx, chromedp.Evaluate[int](`localStorage.length`))
	if err != nil {
		fail("read localStorage", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		fail("screenshot", err)
	}
	if err := os.MkdirAll(browserArtifactDir, 0o755); err != nil {
		t.Fatal(err)
	}
	shotPath := filepath.Join(browserArtifactDir, "browser-landing.png")
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shotPath)

	// What the browser sent: two CORS-simple beacons, no preflight, both
	// accepted with the page's origin echoed.
	sent := posts.snapshot()
	if len(sent) != 2 {
		t.Errorf("%d requests reached /v1/events, want 2 (pageview, click): %+v", len(sent), sent)
	}
	for i, p := range sent {
		if p.method != http.MethodPost || p.contentType != "text/plain;charset=UTF-8" || p.status != http.StatusAccepted ||
			p.origin != siteOrigin || p.allowOrigin != siteOrigin {
			t.Errorf("request %d: %+v; want a POST of text/plain;charset=UTF-8 from %s answered 202 with Access-Control-Allow-Origin", i, p, siteOrigin)
		}
	}
	if n := browserCounter(t, reg, "tally_agent_browser_cors_requests_total", map[string]string{"kind": "request", "result": "allowed"}); n != 2 {
		t.Errorf("CORS allowed requests = %v, want 2", n)
	}
	if cookies != "" || storageItems != 0 {
		t.Errorf("the snippet left state in the browser: cookies %q, %d localStorage items", cookies, storageItems)
	}
	if pixelWidth != 1 {
		t.Errorf("pixel naturalWidth = %d, want 1 (Chromium could not decode the GIF)", pixelWidth)
	}
	if evs := pixelSink.snapshot(); len(evs) != 1 || evs[0].Series.Type != "impression" || evs[0].Series.Campaign != "spring" ||
		evs[0].Series.Source != "news" || evs[0].Series.Medium != "email" || evs[0].Bot != "" {
		t.Errorf("pixel events = %+v, want one impression for spring/news/email", evs)
	}

	stop() // graceful: final flush, drain to the capturing server

	type key struct{ typ, campaign, source, medium string }
	got := map[key]uint64{}
	var total, bots uint64
	for _, c := range cap.latest() {
		s := c.Series
		got[key{s.Type, s.Campaign, s.Source, s.Medium}] += c.State.Count
		total += c.State.Count
		for _, n := range c.State.Bots {
			bots += n
		}
	}
	want := map[key]uint64{
		{"pageview", "spring", "news", "email"}: 1,
		{"click", "spring", "news", "email"}:    1,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%+v: shipped %d events, want %d", k, got[k], n)
		}
	}
	if total != 2 || bots != 0 {
		t.Errorf("shipped %d events and %d bots, want exactly 2 and 0: %+v", total, bots, got)
	}
}

// runAgent runs a real agent with cfg (from captureSetup) and returns its
// HTTP address and a graceful stop.
func runAgent(t *testing.T, cfg config.Config) (addr string, stop func()) {
	t.Helper()
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(l agent.Listeners) { ready <- l.HTTP })
	}()
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("agent exited: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("agent did not start within 30s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		})
	}
	t.Cleanup(stop) // when the test fails before stopping it
	return addr, stop
}

// beaconPosts records what reaches /v1/events, after the CORS middleware.
type beaconPosts struct {
	mu    sync.Mutex
	posts []beaconPost
}

type beaconPost struct {
	method, contentType, origin, allowOrigin string
	status                                   int
}

func (l *beaconPosts) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &beaconStatus{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		l.mu.Lock()
		l.posts = append(l.posts, beaconPost{method: r.Method, contentType: r.Header.Get("Content-Type"), origin: r.Header.Get("Origin"),
			allowOrigin: w.Header().Get("Access-Control-Allow-Origin"), status: rec.status})
		l.mu.Unlock()
	})
}

func (l *beaconPosts) snapshot() []beaconPost {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]beaconPost(nil), l.posts...)
}

// waitFor returns a chromedp action that waits until n requests were
// answered, bounded by the browser context.
func (l *beaconPosts) waitFor(n int) func(context.Context, *chromedp.Target) error {
	return func(ctx context.Context, _ *chromedp.Target) error {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for len(l.snapshot()) < n {
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for request %d at /v1/events: %w", n, ctx.Err())
			case <-tick.C:
			}
		}
		return nil
	}
}

type beaconStatus struct {
	http.ResponseWriter
	status int
}

func (s *beaconStatus) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// browserSink is a source.Sink that keeps what it accepts.
type browserSink struct {
	mu     sync.Mutex
	events []event.Event
}

func (s *browserSink) Accept(evs []event.Event) error {
	s.mu.Lock()
	s.events = append(s.events, evs...)
	s.mu.Unlock()
	return nil
}

func (s *browserSink) snapshot() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Event(nil), s.events...)
}

// counter reads one counter from a registry.
func browserCounter(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

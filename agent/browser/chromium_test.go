package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/browser/browsertest"
	"github.com/tally-edge/tally/agent/ingest"
)

// beaconLog keeps every event line a browser posted to /v1/events, with
// the request's content type, before the ingest handler sees it.
type beaconLog struct {
	mu     sync.Mutex
	events []map[string]any
	types  []string
	other  []string // requests that were not POSTs
}

func (b *beaconLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
		b.mu.Lock()
		defer b.mu.Unlock()
		if r.Method != http.MethodPost {
			b.other = append(b.other, r.Method)
			return
		}
		for line := range strings.Lines(string(body)) {
			var ev map[string]any
			if json.Unmarshal([]byte(line), &ev) == nil {
				b.events = append(b.events, ev)
				b.types = append(b.types, r.Header.Get("Content-Type"))
			}
		}
	})
}

func (b *beaconLog) snapshot() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]map[string]any(nil), b.events...)
}

func (b *beaconLog) waitFor(n int) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for len(b.snapshot()) < n {
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for event %d: %w (have %v)", n, ctx.Err(), b.snapshot())
			case <-tick.C:
			}
		}
		return nil
	})
}

// TestScriptInChromium runs t.js in a real browser and checks what it
// sends: UTM and page fields, the opt-in visitor id, click attributes,
// outbound UTM links, tally.track, the fetch fallback, and that it leaves
// no cookie and, by default, nothing in localStorage. The agent-level
// acceptance test (agent/browser_e2e_test.go) follows the events through
// a real agent.
func TestScriptInChromium(t *testing.T) {
	ctx := browsertest.Context(t)

	// One site server reached as two origins: 127.0.0.1 and localhost.
	site := httptest.NewUnstartedServer(nil)
	port := site.Listener.Addr().(*net.TCPAddr).Port
	siteA := fmt.Sprintf("http://127.0.0.1:%d", port)
	siteB := fmt.Sprintf("http://localhost:%d", port)

	sink := &fakeSink{}
	cfg := DefaultConfig()
	cfg.AllowedOrigins = []string{siteA, siteB}
	h, _ := newHandlers(t, cfg, sink, nil)
	ing := ingest.New(ingest.Config{}, testEnv(nil), sink, prometheus.NewRegistry(), discard)
	beacons := &beaconLog{}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/t.js", h.Script())
	mux.Handle("/v1/events", beacons.wrap(h.CORS(ing)))
	agent := httptest.NewServer(mux)
	defer agent.Close()

	pages := map[string]string{
		// Opted in to a stored visitor id and to outbound UTM links.
		"/a.html": `<script src="` + agent.URL + `/v1/t.js" data-visitor="storage" data-utm-links></script>
<a id="buy" data-tally-click data-tally-campaign="summer" data-tally-value="12.5" href="#">Buy</a>
<a id="inside" href="/a.html?utm_campaign=internal" onclick="event.preventDefault()">Inside</a>
<a id="out" href="https://partner.invalid/p?utm_campaign=collab&amp;utm_source=shop&amp;utm_medium=referral" onclick="event.preventDefault()">Partner</a>`,
		// Defaults, and a browser whose sendBeacon refuses: fetch keepalive.
		"/b.html": `<script>navigator.sendBeacon = function () { return false; };</script>
<script async src="` + agent.URL + `/v1/t.js"></script>
<a id="out" href="https://partner.invalid/p?utm_campaign=collab" onclick="event.preventDefault()">Partner</a>`,
	}
	site.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><html><body>"+body+"</body></html>")
	})
	site.Start()
	defer site.Close()

	pageA := siteA + "/a.html?utm_campaign=spring&utm_source=news&utm_medium=email&utm_content=hero&utm_term=shoes"
	err := chromedp.Do(ctx,
		chromedp.Navigate(pageA),
		beacons.waitFor(1),
		chromedp.Click(chromedp.CSS("#buy")),
		beacons.waitFor(2),
		chromedp.Click(chromedp.CSS("#inside")), // same host: not tracked
		chromedp.Click(chromedp.CSS("#out")),
		beacons.waitFor(3),
	)
	if err != nil {
		t.Fatalf("page a: %v", err)
	}
	sent, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`tally.track("form_submit", {campaign: "newsletter"})`))
	if err != nil || !sent {
		t.Fatalf("tally.track: %v, %v", sent, err)
	}
	if err := chromedp.Do(ctx, beacons.waitFor(4)); err != nil {
		t.Fatal(err)
	}
	vid, err := chromedp.Run(ctx, chromedp.Evaluate[string](`localStorage.getItem("tally_vid")`))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(vid) {
		t.Fatalf("stored visitor id %q, want 32 hex digits", vid)
	}

	pageB := siteB + "/b.html?utm_campaign=spring"
	if err := chromedp.Do(ctx, chromedp.Navigate(pageB), beacons.waitFor(5), chromedp.Click(chromedp.CSS("#out"))); err != nil {
		t.Fatalf("page b: %v", err)
	}
	type state struct {
		Cookie  string `json:"cookie"`
		Storage int    `json:"storage"`
	}
	st, err := chromedp.Run(ctx, chromedp.Evaluate[state](`({cookie: document.cookie, storage: localStorage.length})`))
	if err != nil {
		t.Fatal(err)
	}
	// Give a wrongly tracked click (the outbound link without
	// data-utm-links) time to arrive before counting.
	time.Sleep(300 * time.Millisecond)

	evs := beacons.snapshot()
	want := []map[string]any{
		{"type": "pageview", "url": pageA, "campaign": "spring", "source": "news", "medium": "email", "content": "hero", "term": "shoes", "visitor": vid},
		{"type": "click", "url": pageA, "campaign": "summer", "source": "news", "medium": "email", "content": "hero", "term": "shoes", "visitor": vid, "value": 12.5},
		{"type": "click", "url": pageA, "campaign": "collab", "source": "shop", "medium": "referral", "content": "hero", "term": "shoes", "visitor": vid},
		{"type": "form_submit", "url": pageA, "campaign": "newsletter", "source": "news", "medium": "email", "content": "hero", "term": "shoes", "visitor": vid},
		{"type": "pageview", "url": pageB, "campaign": "spring"},
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events sent, want %d: %v", len(evs), len(want), evs)
	}
	for i := range want {
		if fmt.Sprint(evs[i]) != fmt.Sprint(want[i]) {
			t.Errorf("event %d:\n got %v\nwant %v", i, evs[i], want[i])
		}
	}
	beacons.mu.Lock()
	for i, ct := range beacons.types {
		if ct != "text/plain;charset=UTF-8" {
			t.Errorf("event %d sent as %q: a preflight would be needed", i, ct)
		}
	}
	if len(beacons.other) != 0 {
		t.Errorf("requests other than POST reached /v1/events: %v", beacons.other)
	}
	beacons.mu.Unlock()
	if st.Cookie != "" || st.Storage != 0 {
		t.Errorf("default snippet left state: cookie %q, %d localStorage items", st.Cookie, st.Storage)
	}
	if n := len(sink.got()); n != len(want) {
		t.Errorf("ingest accepted %d events, want %d", n, len(want))
	}
}

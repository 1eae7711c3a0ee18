// Package browser drives Tally's dashboard in a real headless Chromium
// (Debian's /usr/bin/chromium, over the DevTools protocol with chromedp):
// signing in, tiles and charts, drill-down, CSV export, a viewer's
// scope, the stream-down state, 500 campaigns at one update a second, the
// layout at four widths (layout_test.go), an axe-core accessibility check,
// and the view in the address: links shared between browser profiles,
// back and forward, the keyboard (view_test.go).
//
// The scenarios talk to a backend (backend_test.go): an in-test fake of
// the API contract that serves the real embedded dashboard
// (fakeapi_test.go), and real InfluxDB, aggregator and agent processes
// (realbackend_test.go).
//
// One Chromium serves every scenario, each in its own tab (a tab may have
// a browser context of its own, as another profile). Screenshots go to
// tests/browser/artifacts/. The tests need the dashboard bundle and
// axe-core: run `make dashboard` first (make test does).
package browser

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tally-edge/tally/agent/browser/browsertest"
	"github.com/tally-edge/tally/dashboard"
)

// artifactsDir holds screenshots (and downloads) for people to look at.
const artifactsDir = "artifacts"

// chrome is the one browser the scenarios share.
var chrome struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	err    error
	dir    string
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if chrome.cancel != nil {
		chrome.cancel() // closes the browser and waits for its process
	}
	if chrome.dir != "" {
		os.RemoveAll(chrome.dir)
	}
	if realBins.dir != "" {
		os.RemoveAll(realBins.dir)
	}
	os.Exit(code)
}

// requireBundle fails the test when the esbuild bundle is not in the
// embedded assets, saying how to build it.
func requireBundle(t testing.TB) {
	t.Helper()
	for _, name := range []string{"app.js", "app.css"} {
		if _, err := fs.Stat(dashboard.Assets(), name); err != nil {
			t.Fatalf("the dashboard bundle is missing (dashboard/static/%s): run `make dashboard` (npm ci + esbuild) before these tests", name)
		}
	}
}

// browserContext returns the shared Chromium, starting it on first use.
// It skips in -short mode and when Chromium is missing, unless
// TALLY_REQUIRE_BROWSER is set.
func browserContext(t testing.TB) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test: skipped in -short mode")
	}
	requireBundle(t)
	if _, err := os.Stat(browsertest.ExecPath); err != nil {
		if os.Getenv(browsertest.RequireEnv) != "" {
			t.Fatalf("%s is required (%s is set) but missing: %v; install it with apt-get install -y chromium (make test-deps)", browsertest.ExecPath, browsertest.RequireEnv, err)
		}
		t.Skipf("%s not installed (apt-get install -y chromium); set %s to make this a failure", browsertest.ExecPath, browsertest.RequireEnv)
	}
	chrome.once.Do(func() {
		dir, err := os.MkdirTemp("", "tally-dashboard-chromium-")
		if err != nil {
			chrome.err = err
			return
		}
		chrome.dir = dir
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(browsertest.ExecPath),
			chromedp.Headless,
			chromedp.NoSandbox,
			chromedp.DisableGPU,
			chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			// Tabs in the background must keep their animation frames.
			chromedp.Flag("disable-background-timer-throttling", true),
			chromedp.Flag("disable-renderer-backgrounding", true),
			chromedp.UserDataDir(dir),
			chromedp.WindowSize(1400, 1000),
		)
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, cancelBrowser := chromedp.NewContext(actx)
		chrome.ctx = bctx
		chrome.cancel = func() { cancelBrowser(); cancelAlloc() }
		chrome.err = chromedp.Do(bctx)
	})
	if chrome.err != nil {
		t.Fatalf("start %s: %v", browsertest.ExecPath, chrome.err)
	}
	return chrome.ctx
}

// tab is one browser tab of a scenario.
type tab struct {
	t   testing.TB
	ctx context.Context
	mu  sync.Mutex
	exc []string // uncaught exceptions of the page
}

// newTab opens a tab in the shared browser, closed at cleanup; the whole
// scenario is bounded by timeout. Uncaught page exceptions fail the test.
func newTab(t testing.TB, timeout time.Duration) *tab {
	t.Helper()
	return newTabIn(t, timeout, false)
}

// newTabIn opens a tab as newTab does; with isolated, in a browser context
// of its own (like another browser profile: no cookies, storage or
// session shared with any other tab), disposed with the tab.
func newTabIn(t testing.TB, timeout time.Duration, isolated bool) *tab {
	t.Helper()
	var opts []chromedp.ContextOption
	if isolated {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	tctx, cancelTab := chromedp.NewContext(browserContext(t), opts...)
	if err := chromedp.Do(tctx); err != nil {
		cancelTab()
		t.Fatalf("open a tab: %v", err)
	}
	ctx, cancel := context.WithTimeout(tctx, timeout)
	tb := &tab{t: t, ctx: ctx}
	console := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == "error" {
				tb.mu.Lock()
				tb.exc = append(tb.exc, m.String())
				tb.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelTab()
		<-done
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, e := range tb.exc {
			// Failed fetches while a test takes the node down are
			// expected console errors; exceptions are not.
			if strings.HasPrefix(e, "exception") {
				t.Errorf("page: %s", e)
			} else {
				t.Logf("page console: %s", e)
			}
		}
	})
	return tb
}

// do runs actions and fails the test on error.
func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, actions...); err != nil {
		tb.shot("failed-" + safeName(what))
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// press clicks the element sel selects as a script does (el.click()),
// once it is visible. A mouse click at the element's coordinates could
// land elsewhere when arriving figures move the layout between finding
// the element and clicking.
func press(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(chromedp.CSS(sel)),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).click()`, sel)),
	)
}

// eval evaluates a JS expression.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until the JS expression is truthy.
func (tb *tab) waitJS(what, expr string, timeout time.Duration) {
	tb.t.Helper()
	_, err := chromedp.Run(tb.ctx, chromedp.Poll[any](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		tb.shot("timeout-" + safeName(what))
		tb.t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// waitUntil polls check (in Go) until it returns nil, or fails with its
// last error after timeout.
func (tb *tab) waitUntil(what string, timeout time.Duration, check func() error) {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.shot("timeout-" + safeName(what))
			tb.t.Fatalf("waiting for %s: %v", what, err)
		}
		select {
		case <-tb.ctx.Done():
			tb.t.Fatalf("waiting for %s: %v (last: %v)", what, tb.ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// shot saves a full-page PNG screenshot as artifacts/<test>-<name>.png.
func (tb *tab) shot(name string) {
	tb.t.Helper()
	// From the top, so the sticky header sits where it belongs.
	_, _ = chromedp.Run(tb.ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.MkdirAll(artifactsDir, 0o755); err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(artifactsDir, safeName(tb.t.Name())+"-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
		return
	}
	tb.t.Logf("screenshot: tests/browser/%s", path)
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// tileValue is the raw number behind a KPI tile.
func (tb *tab) tileValue(kpi string) (float64, error) {
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector('[data-kpi=%q] .value') || {dataset: {}}).dataset.value || ""`, kpi)))
	if err != nil {
		return 0, err
	}
	if v == "" {
		return 0, errors.New("tile " + kpi + " has no value yet")
	}
	var f float64
	_, err = fmt.Sscan(v, &f)
	return f, err
}

// canvasInk counts the painted pixels of the chart canvases under sel: a
// chart with data draws lines, an empty one only its axes.
func canvasInk(tb *tab, sel string) int {
	return eval[int](tb, fmt.Sprintf(`(() => {
		let n = 0;
		for (const c of document.querySelectorAll(%q)) {
			const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
			for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
		}
		return n;
	})()`, sel+" canvas"))
}

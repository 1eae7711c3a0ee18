// Package browsertest starts a real headless Chromium for tests of the
// browser sources, driven over the DevTools protocol with chromedp.
//
// The browser is the Debian `chromium` package at ExecPath (`make test`
// installs it). Tests skip when it is absent, unless TALLY_REQUIRE_BROWSER
// is set (CI sets it, so a missing browser fails instead of passing
// silently).
package browsertest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ExecPath is where the Debian package installs Chromium.
const ExecPath = "/usr/bin/chromium"

// RequireEnv, when set to anything, turns a missing browser into a failure.
const RequireEnv = "TALLY_REQUIRE_BROWSER"

// UserAgent is a plain desktop Chrome user agent. Headless Chromium
// announces itself as HeadlessChrome, which the agent's bot filter rightly
// counts as a bot; tests that check traffic numbers send this instead.
const UserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// Timeout bounds a whole browser session.
const Timeout = 30 * time.Second

// Context starts Chromium with a fresh profile in t.TempDir() and returns
// a chromedp context for one tab, bounded by Timeout. The browser is
// stopped at cleanup. It skips the test when Chromium is missing and
// RequireEnv is unset, and in -short mode.
func Context(t testing.TB) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test: skipped in -short mode")
	}
	if _, err := os.Stat(ExecPath); err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%s is required (%s is set) but missing: %v; install it with apt-get install -y chromium", ExecPath, RequireEnv, err)
		}
		t.Skipf("%s not installed (apt-get install -y chromium); set %s to make this a failure", ExecPath, RequireEnv)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ExecPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// This machine's network is closed: without these Chromium's own
		// connections (updates, sync, QUIC probes) are refused and slow
		// everything down.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.UserAgent(UserAgent),
		chromedp.WindowSize(1024, 768),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), Timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser() // closes the tab and the browser, waits for the process
		cancelAlloc()
		cancelTimeout()
	})
	// Start the browser now, so a broken installation fails here and
	// names itself.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", ExecPath, err)
	}
	return bctx
}

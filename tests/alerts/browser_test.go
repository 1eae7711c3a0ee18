package alerts

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tally-edge/tally/agent/browser/browsertest"
	"github.com/tally-edge/tally/dashboard"
)

// artifactsDir holds the screenshots of the dashboard's alerts.
const artifactsDir = "artifacts"

// dashboardCheck is what the dashboard of a node must show: alert lines
// in the list (each "campaign · what", as the list writes them), text in
// the banner, and, for campaign, its forecast.
type dashboardCheck struct {
	campaign string
	lines    []string
	banner   string
	forecast string
}

// checkDashboard opens node n's dashboard in headless Chromium as the
// admin, on campaign, and waits until it shows what c says; it saves a
// screenshot to artifacts/ and follows the first line's link to the
// alert's time range. It skips when Chromium is missing, unless
// TALLY_REQUIRE_BROWSER is set. It returns when the page showed it (zero
// when skipped).
func checkDashboard(t *testing.T, n *node, c dashboardCheck) time.Time {
	t.Helper()
	if _, err := fs.Stat(dashboard.Assets(), "app.js"); err != nil {
		t.Fatalf("the dashboard bundle is missing: run `make dashboard` first")
	}
	if _, err := os.Stat(browsertest.ExecPath); err != nil {
		if os.Getenv(browsertest.RequireEnv) != "" {
			t.Fatalf("%s is required but missing: %v", browsertest.ExecPath, err)
		}
		t.Logf("dashboard not checked: %s not installed", browsertest.ExecPath)
		return time.Time{}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browsertest.ExecPath), chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	shot := func(name string) {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			err = os.MkdirAll(artifactsDir, 0o755)
		}
		if err == nil {
			path := filepath.Join(artifactsDir, t.Name()+"-"+name+".png")
			err = os.WriteFile(path, png, 0o644)
			t.Logf("screenshot: %s", path)
		}
		if err != nil {
			t.Logf("screenshot %s: %v", name, err)
		}
	}
	link := "http://" + n.http + "/?campaign=" + url.QueryEscape(c.campaign) + "&token=" + url.QueryEscape(adminToken)
	if err := chromedp.Do(ctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#tiles .tile"))); err != nil {
		shot("failed-open")
		t.Fatalf("open the dashboard: %v", err)
	}
	// Everything the check names, in one condition polled in the page.
	var conds []string
	for _, l := range c.lines {
		conds = append(conds, fmt.Sprintf(`[...document.querySelectorAll("#alert-list li b")].some((b) => b.textContent === %q)`, l))
	}
	conds = append(conds, fmt.Sprintf(`!document.querySelector("#alert-banner").hidden && document.querySelector("#alert-banner-text").textContent.includes(%q)`, c.banner))
	if c.forecast != "" {
		conds = append(conds, fmt.Sprintf(`!document.querySelector("#forecast").hidden && document.querySelector("#forecast-summary").textContent.includes(%q)`, c.forecast))
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[any](strings.Join(conds, " && "), chromedp.WithPollingTimeout(60*time.Second),
		chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
		shot("timeout")
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#alert-list").innerText + " | banner: " +
			document.querySelector("#alert-banner-text").textContent + " | forecast: " + document.querySelector("#forecast-summary").textContent`))
		t.Fatalf("the dashboard does not show %+v: %v; it shows %s", c, err, got)
	}
	shown := time.Now()
	shot("alerts")
	// An alert's link opens its campaign and time range in the page.
	click := fmt.Sprintf(`[...document.querySelectorAll("#alert-list li")].find((li) => li.querySelector("b").textContent === %q).querySelector("a[data-alert]").click()`, c.lines[0])
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](click)); err != nil {
		t.Fatalf("click the alert's link: %v", err)
	}
	search, err := chromedp.Run(ctx, chromedp.Poll[string](`location.search.includes("range=custom") && location.search`,
		chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		shot("failed-link")
		t.Fatalf("the alert's link did not open its time range: %v", err)
	}
	q, _ := url.ParseQuery(strings.TrimPrefix(search, "?"))
	from, err1 := time.Parse(time.RFC3339, q.Get("from"))
	to, err2 := time.Parse(time.RFC3339, q.Get("to"))
	if q.Get("campaign") != c.campaign || err1 != nil || err2 != nil || !from.Before(to) || !from.Before(time.Now()) {
		t.Fatalf("the alert's link opened %s", search)
	}
	return shown
}

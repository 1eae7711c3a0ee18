package api

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tally-edge/tally/agent/browser/browsertest"
	"github.com/tally-edge/tally/dashboard"
)

// mintLink runs `tally-aggregator link` against the deployment's
// configuration and returns the printed URL.
func mintLink(t *testing.T, d *deployment, args ...string) *url.URL {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "tally-aggregator"),
		append([]string{"link", "-config", d.cfgPath, "-url", "http://" + d.aggHTTP}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("tally-aggregator link: %v\n%s", err, stderr)
	}
	u, err := url.Parse(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("printed %q: %v", out, err)
	}
	return u
}

// exchange posts a link token to /api/v1/session.
func exchange(t *testing.T, d *deployment, link string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+d.aggHTTP+"/api/v1/session", nil)
	req.Header.Set("Authorization", "Bearer "+link)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&s)
	return resp.StatusCode, s.Token
}

// TestAttackDashboardLink: a dashboard link must not carry a long-lived
// credential (on main the demo prints ?token=<admin token>, and there is
// no other way to make a link). The link token opens no route by
// itself, opens exactly one session, expires, and the session it opens
// reads exactly what its role may.
func TestAttackDashboardLink(t *testing.T) {
	d := hardenedDeployment(t)
	u := mintLink(t, d)
	link := u.Query().Get("link")
	for _, secret := range []string{adminToken, annToken, bobToken, veraToken, jwtSecret, linkSecret} {
		if strings.Contains(u.String(), secret) {
			t.Fatalf("the dashboard link carries a configured secret: %s", u)
		}
	}
	if !strings.HasPrefix(link, "tlink_") || u.Query().Has("token") {
		t.Fatalf("link %s", u)
	}
	// The link token opens nothing but a session.
	for _, target := range []string{"/api/v1/kpis?campaign=legit_a&window=60m", "/api/v1/whoami", "/api/v1/stream?access_token=" + link} {
		token := link
		if strings.Contains(target, "access_token") {
			token = ""
		}
		if code, body, _ := get(context.Background(), "http://"+d.aggHTTP+target, token); code != 401 {
			t.Errorf("the link token on %s: %d %s", target, code, body)
		}
	}
	code, session := exchange(t, d, link)
	if code != 200 || !strings.HasPrefix(session, "tsess_") {
		t.Fatalf("exchange: %d %q", code, session)
	}
	if code, _ := exchange(t, d, link); code != 401 {
		t.Errorf("the same link a second time: %d", code)
	}
	if err := d.legitRead(context.Background(), session); err != nil {
		t.Errorf("the session's reads: %v", err)
	}
	// A viewer link's session stays in its scope.
	vu := mintLink(t, d, "-role", "viewer", "-campaigns", "legit_a")
	_, vs := exchange(t, d, vu.Query().Get("link"))
	if err := d.legitRead(context.Background(), vs, "legit_a"); err != nil {
		t.Errorf("viewer session: %v", err)
	}
	if code, _, _ := get(context.Background(), d.kpisURL("legit_b"), vs); code != 403 {
		t.Errorf("viewer session outside its scope: %d", code)
	}
	// An expired link opens nothing.
	short := mintLink(t, d, "-ttl", "1s")
	time.Sleep(2100 * time.Millisecond)
	if code, _ := exchange(t, d, short.Query().Get("link")); code != 401 {
		t.Errorf("an expired link: %d", code)
	}
	// A link signed with another secret opens nothing.
	forged := strings.TrimPrefix(link, "tlink_")
	parts := strings.Split(forged, ".")
	if code, _ := exchange(t, d, "tlink_"+parts[0]+"."+parts[1]+".AAAA"); code != 401 {
		t.Errorf("a forged link: %d", code)
	}
}

// TestAttackDashboardLinkInBrowser opens a printed link in Chromium: the
// dashboard signs in, the link leaves the address bar, the tab keeps a
// session token (not the link), and the same link opened again lands on
// the sign-in form.
func TestAttackDashboardLinkInBrowser(t *testing.T) {
	d := hardenedDeployment(t)
	for _, name := range []string{"app.js", "app.css"} {
		if _, err := fs.Stat(dashboard.Assets(), name); err != nil {
			if os.Getenv(browsertest.RequireEnv) != "" {
				t.Fatalf("the dashboard bundle is missing (run make dashboard): %v", err)
			}
			t.Skip("the dashboard bundle is missing (make dashboard)")
		}
	}
	ctx := browsertest.Context(t)
	u := mintLink(t, d, "-subject", "browser-admin")
	js := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	waitJS := func(expr string, d time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[any](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
			t.Fatalf("waiting for %s: %v", expr, err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(u.String()+"#top"), chromedp.WaitVisible(chromedp.CSS("#app"))); err != nil {
		t.Fatalf("open the link: %v", err)
	}
	waitJS(`document.getElementById("whoami").textContent.includes("browser-admin")`, 15*time.Second)
	// The view's own state (range, breakdown, comparison) may follow in the
	// query; the link may not, and the fragment is kept.
	if loc := js(`location.href`); strings.Contains(loc, "link") || !strings.HasSuffix(loc, "#top") {
		t.Errorf("address bar after sign-in: %s", loc)
	}
	if stored := js(`sessionStorage.getItem("tally.token") || ""`); !strings.HasPrefix(stored, "tsess_") {
		t.Errorf("the tab keeps %.20q…, want a session token", stored)
	}
	if n := js(`String(localStorage.length)`); n != "0" {
		t.Errorf("a link sign-in left %s items in local storage", n)
	}
	// The same link again, in a fresh tab state: refused, address cleaned.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`sessionStorage.clear(); localStorage.clear()`),
		chromedp.Navigate(u.String()), chromedp.WaitVisible(chromedp.CSS("#token-input"))); err != nil {
		t.Fatalf("open the link again: %v", err)
	}
	waitJS(`document.getElementById("signin-error").textContent.includes("used already")`, 10*time.Second)
	if loc := js(`location.href`); strings.Contains(loc, "link=") {
		t.Errorf("the used link is still in the address bar: %s", loc)
	}
}

// TestAttackAuditRotation: a flood of authenticated requests with long
// parameters keeps the audit files within audit_max_bytes ×
// (audit_max_files + 1) (on main the file grows without end, and the
// configuration key does not exist).
func TestAttackAuditRotation(t *testing.T) {
	d := hardenedDeployment(t)
	// whoami takes no parameters: each request is a 400, audited with
	// its (clipped) parameters, and costs the node no storage query.
	long := "?campaign=legit_a&source=" + strings.Repeat("s", 700)
	d.duringAttack(t, func(ctx context.Context) {
		done := make(chan struct{})
		for w := range 6 {
			go func() {
				defer func() { done <- struct{}{} }()
				for range 200 {
					get(ctx, "http://"+d.aggHTTP+"/api/v1/whoami"+long, []string{bobToken, veraToken}[w%2])
				}
			}()
		}
		for range 6 {
			<-done
		}
	})
	files := []string{d.audit, d.audit + ".1", d.audit + ".2", d.audit + ".3"}
	var total int64
	for _, f := range files {
		size := fileSize(f)
		total += size
		if size > 64<<10 {
			t.Errorf("%s: %d bytes, more than audit_max_bytes", f, size)
		}
	}
	if fileSize(d.audit+".3") != 0 || fileSize(d.audit+".2") == 0 {
		t.Errorf("rotated files: want .1 and .2 only (audit_max_files: 2)")
	}
	lines, longest := auditLines(t, files...)
	t.Logf("1200 requests with 700-byte parameters: %d bytes in %d lines kept (longest %d bytes)", total, len(lines), longest)
}

// TestAttackMetricsListener: with http.metrics_listen, the public API
// listener serves no /metrics at all, and the metrics listener names no
// campaign without a credential.
func TestAttackMetricsListener(t *testing.T) {
	d := hardenedDeployment(t)
	ctx := context.Background()
	if code, _, _ := get(ctx, "http://"+d.aggHTTP+"/metrics", adminToken); code != 404 {
		t.Errorf("/metrics on the API listener: %d, want 404", code)
	}
	code, body, err := get(ctx, "http://"+d.metrics+"/metrics", "")
	if err != nil || code != 200 || strings.Contains(string(body), "legit_") || !strings.Contains(string(body), "tally_aggregator_") {
		t.Errorf("metrics listener without a credential: %d %v\n%s", code, err, grep(string(body), "legit_"))
	}
	code, body, _ = get(ctx, "http://"+d.metrics+"/metrics", adminToken)
	if code != 200 || !strings.Contains(string(body), `campaign="legit_a"`) {
		t.Errorf("metrics listener with the admin token: %d", code)
	}
}

package browser

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/tally-edge/tally/aggregator/api"
)

// scenario is one user story, written against the backend interface only.
type scenario struct {
	name string
	run  func(t *testing.T, b backend)
	// pageOnly marks a story about the page's own behaviour (keys,
	// history, parsing a link) whose figures the fake proves as well as a
	// real stack: it runs on the fake only, to keep the real suite short.
	pageOnly bool
}

// scenarios run against every backend.
var scenarios = []scenario{
	{name: "SignInWithForm", run: testSignInWithForm},
	{name: "SignInWithLink", run: testSignInWithLink},
	{name: "DrillDownAndRanges", run: testDrillDownAndRanges},
	{name: "ExportCSV", run: testExportCSV},
	{name: "ViewerSeesOnlyItsCampaigns", run: testViewerScope},
	{name: "StreamDown", run: testStreamDown},
	{name: "NodeDown", run: testNodeDown},
	{name: "FailedRequestIsRetried", run: testFailedRequest},
	{name: "LayoutAtEveryWidth", run: testLayoutAtEveryWidth},
	{name: "Accessibility", run: testAccessibility},
	{name: "LinkInAnotherProfile", run: testLinkInAnotherProfile},
	{name: "ViewerLinkOutsideScope", run: testViewerLinkOutsideScope},
	{name: "BackAndForward", run: testBackAndForward, pageOnly: true},
	{name: "Keyboard", run: testKeyboard, pageOnly: true},
	{name: "CustomRange", run: testCustomRange, pageOnly: true},
	{name: "HostileLink", run: testHostileLink, pageOnly: true},
	{name: "ProvisionalFigures", run: testProvisionalFigures, pageOnly: true},
}

// TestDashboardOnFakeAPI runs every scenario against the in-test fake of
// the API contract.
func TestDashboardOnFakeAPI(t *testing.T) {
	browserContext(t) // skip or fail early, before building data
	b := newFakeBackend(t, fakeOptions{Campaigns: 6, HistoryDays: 8, Seed: 1})
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) { s.run(t, b) })
	}
}

// restWait bounds a wait for figures that come from REST: on a loaded
// 2-core machine one query of a real node to InfluxDB can take seconds,
// and a refresh round makes several. A wait ends as soon as its condition
// holds, so a long bound costs nothing when things are quick.
const restWait = 30 * time.Second

// signInByLink opens the dashboard with ?token= in a new tab that lives
// for at most 90 s, and waits for it to show.
func signInByLink(t testing.TB, b backend, role string) *tab {
	return signInByLinkFor(t, b, role, 90*time.Second)
}

func signInByLinkFor(t testing.TB, b backend, role string, timeout time.Duration) *tab {
	tb := newTab(t, timeout)
	tb.do("open the dashboard with a token link",
		chromedp.Navigate(signInLink(b, role, "")),
		chromedp.WaitVisible(chromedp.CSS("#tiles .tile")),
	)
	return tb
}

// signInLink is a link that signs the role in and opens the view of
// search ("?campaign=…&range=…", or ""): the one place that knows how a
// link carries sign-in.
func signInLink(b backend, role, search string) string {
	sep := "?"
	if search != "" {
		sep = "&"
	}
	return b.URL() + "/" + search + sep + "token=" + url.QueryEscape(b.Token(role))
}

// waitTile waits until the KPI tile shows what the API says, asking the
// API again on every try (a real node's REST answers may trail its
// stream by a write interval). atLeast, when not 0, is also the least
// the API must say (traffic the test sent must be in).
func (tb *tab) waitTile(kpi string, truth func() float64, atLeast float64, timeout time.Duration) {
	tb.t.Helper()
	tb.waitUntil(kpi+" tile", timeout, func() error {
		want := truth()
		if want < atLeast {
			return fmt.Errorf("the API says %v, still below %v", want, atLeast)
		}
		got, err := tb.tileValue(kpi)
		if err != nil {
			return err
		}
		return sameNumber(got, want)
	})
}

// clicksOf is the API's clicks of the campaigns (all if nil) over window.
func clicksOf(t testing.TB, b backend, window string, campaigns []string) func() float64 {
	return func() float64 { return truthClicks(t, b, roleAdmin, window, campaigns) }
}

// clickRow picks a campaign by clicking its row in the campaign table.
// The click goes to the row element itself: a mouse click at the row's
// coordinates could land on another row when live updates re-sort the
// table in between.
func clickRow(campaign string) chromedp.Action[chromedp.Void] {
	return press(fmt.Sprintf("#campaigns tr[data-campaign=%q]", campaign))
}

func testSignInWithForm(t *testing.T, b backend) {
	tb := newTab(t, 90*time.Second)
	tb.do("open the sign-in form",
		chromedp.Navigate(b.URL()+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token-input")),
	)
	tb.shot("signin")

	// A wrong token is refused and says so.
	tb.do("submit a wrong token",
		chromedp.SendKeys(chromedp.CSS("#token-input"), "not-a-token"),
		chromedp.Click(chromedp.CSS("#signin-button")),
	)
	tb.waitJS("the refusal", `document.getElementById("signin-error").textContent.includes("not accepted")`, 10*time.Second)

	tb.do("sign in",
		chromedp.SendKeys(chromedp.CSS("#token-input"), b.Token(roleAdmin)),
		chromedp.Click(chromedp.CSS("#signin-button")),
		chromedp.WaitVisible(chromedp.CSS("#app")),
	)
	tb.waitJS("who is signed in", `document.getElementById("whoami").textContent.endsWith("· admin")`, 10*time.Second)
	tb.waitJS("the live state", `document.getElementById("status").textContent === "live"`, 10*time.Second)

	// Tiles fill with the API's numbers for all campaigns.
	tb.waitTile("clicks", clicksOf(t, b, "60m", nil), 0, 10*time.Second)
	// Uniques of all campaigns are merged by the API, not the campaigns' sum.
	tb.waitTile("uniques", truthTotal(t, b, roleAdmin, "60m", "uniques"), 1, 10*time.Second)
	for _, k := range []string{"impressions", "conversions", "uniques", "revenue", "cost", "ctr", "cvr", "cpa", "roas", "bots"} {
		if _, err := tb.tileValue(k); err != nil {
			t.Errorf("tile %s: %v", k, err)
		}
	}
	// The change against the previous window comes with the campaigns
	// list, which may answer after the live stream filled the value.
	tb.waitJS("the clicks tile's change against the previous window",
		`document.querySelector('[data-kpi=clicks] .delta').textContent.includes("vs previous 60 min")`, 10*time.Second)
	// Charts fill.
	tb.waitJS("the traffic chart", `+document.getElementById("chart-traffic").dataset.points > 0`, 10*time.Second)
	tb.waitJS("the money chart", `+document.getElementById("chart-money").dataset.points > 0`, 10*time.Second)
	if ink := canvasInk(tb, "#chart-traffic"); ink == 0 {
		t.Errorf("traffic chart canvas is blank")
	}
	tb.shot("live")

	// New traffic shows up in the tile; the time from sending it to the
	// tile changing is logged (a figure, not an assertion).
	campaign := b.Campaigns()[1]
	before := truthClicks(t, b, roleAdmin, "60m", nil)
	eval[bool](tb, `(() => {
		const el = document.querySelector('[data-kpi=clicks] .value');
		window.tileChangedAt = 0;
		new MutationObserver(() => { if (!window.tileChangedAt) window.tileChangedAt = Date.now(); })
			.observe(el, {attributes: true, attributeFilter: ["data-value"]});
		return true;
	})()`)
	sent := time.Now()
	if err := b.SendClicks(tb.ctx, campaign, 7); err != nil {
		t.Fatal(err)
	}
	tb.waitTile("clicks", clicksOf(t, b, "60m", nil), before+7, 15*time.Second)
	changed := eval[float64](tb, `window.tileChangedAt`)
	t.Logf("event sent → clicks tile updated: %d ms", int64(changed)-sent.UnixMilli())

	// Sign out forgets the token.
	tb.do("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#token-input")))
	if n := eval[int](tb, `sessionStorage.length + localStorage.length`); n != 0 {
		t.Errorf("after sign-out %d items are still stored", n)
	}
}

func testSignInWithLink(t *testing.T, b backend) {
	tb := newTab(t, 60*time.Second)
	tb.do("open a link with a token",
		chromedp.Navigate(b.URL()+"/?campaign=x&token="+url.QueryEscape(b.Token(roleAnalyst))+"#top"),
		chromedp.WaitVisible(chromedp.CSS("#tiles .tile")),
	)
	loc := eval[string](tb, `location.href`)
	if strings.Contains(loc, "token") || strings.Contains(loc, b.Token(roleAnalyst)) {
		t.Errorf("the token is still in the address bar: %s", loc)
	}
	// The rest of the link stays: the view it names (written out in
	// full) and the fragment.
	if u, err := url.Parse(loc); err != nil || u.Query().Get("campaign") != "x" || u.Fragment != "top" {
		t.Errorf("the rest of the address changed: %s", loc)
	}
	if got := eval[string](tb, `sessionStorage.getItem("tally.token") || ""`); got != b.Token(roleAnalyst) {
		t.Errorf("session storage holds %q, want the token", got)
	}
	tb.waitJS("who is signed in", `document.getElementById("whoami").textContent.endsWith("· analyst")`, 10*time.Second)
	// The link names a campaign without traffic: the page says so.
	tb.waitJS("the notice of a campaign without traffic", `document.getElementById("notice").textContent.includes("“x” has no traffic")`, restWait)

	// A reload keeps the session.
	tb.do("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#tiles .tile")))
	tb.waitJS("who is signed in after reload", `document.getElementById("whoami").textContent.endsWith("· analyst")`, 10*time.Second)
	tb.do("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#token-input")))

	// A link with a bad token lands on the sign-in form, address cleaned.
	tb.do("open a link with a bad token",
		chromedp.Navigate(b.URL()+"/?token=wrong"),
		chromedp.WaitVisible(chromedp.CSS("#token-input")),
	)
	tb.waitJS("the refusal", `document.getElementById("signin-error").textContent.includes("not accepted")`, 10*time.Second)
	if loc := eval[string](tb, `location.href`); strings.Contains(loc, "wrong") {
		t.Errorf("the bad token is still in the address bar: %s", loc)
	}
}

type byBody struct {
	Groups []struct {
		Key  string `json:"key"`
		KPIs kpiSet `json:"kpis"`
	} `json:"groups"`
}

// drillRows reads the breakdown table: key -> clicks text.
func drillRows(tb *tab) map[string]string {
	return eval[map[string]string](tb, `Object.fromEntries([...document.querySelectorAll("#drill-table tbody tr")].map(r => [r.dataset.key, r.cells[2].textContent]))`)
}

// checkPolls waits until the poll panel shows the API's votes of the
// campaign over window, answer by answer.
func checkPolls(tb *tab, b backend, campaign, window string) {
	tb.t.Helper()
	tb.waitUntil("the poll results", 10*time.Second, func() error {
		var want api.PollsResponse
		apiGet(tb.t, b, roleAdmin, "polls", url.Values{"campaign": {campaign}, "window": {window}}, &want)
		if len(want.Polls) == 0 {
			return fmt.Errorf("the API has no votes for %s over %s: the test data is too thin", campaign, window)
		}
		got := eval[map[string]string](tb, `Object.fromEntries([...document.querySelectorAll("#polls table tr")].map(r => [r.closest("table").dataset.poll + "/" + r.dataset.answer, r.cells[1].textContent]))`)
		n := 0
		for _, p := range want.Polls {
			for _, a := range p.Answers {
				n++
				if k := p.Poll + "/" + a.Answer; got[k] != fmtCount(float64(a.Votes)) {
					return fmt.Errorf("%s: the page shows %q votes, the API %d", k, got[k], a.Votes)
				}
			}
		}
		if len(got) != n {
			return fmt.Errorf("the page shows %d answers, the API %d: %v", len(got), n, got)
		}
		return nil
	})
}

func testDrillDownAndRanges(t *testing.T, b backend) {
	tb := signInByLink(t, b, roleAdmin)
	campaign := b.Campaigns()[3]
	tb.do("pick a campaign in the table",
		clickRow(campaign),
	)
	tb.waitJS("the campaign selected", fmt.Sprintf(`document.getElementById("campaign").value === %q`, campaign), 5*time.Second)

	check := func(window, dim string) {
		t.Helper()
		var want byBody
		apiGet(t, b, roleAdmin, "kpis", url.Values{"campaign": {campaign}, "window": {window}, "by": {dim}}, &want)
		if len(want.Groups) == 0 {
			t.Fatalf("no %s groups for %s over %s: the test data is too thin", dim, campaign, window)
		}
		tb.waitUntil("the breakdown by "+dim+" over "+window, restWait, func() error {
			got := drillRows(tb)
			if len(got) != len(want.Groups) {
				return fmt.Errorf("%d rows, API has %d groups (%v)", len(got), len(want.Groups), got)
			}
			for _, g := range want.Groups {
				if got[g.Key] != fmtCount(g.KPIs.Clicks) {
					return fmt.Errorf("%s: %q clicks, API says %v", g.Key, got[g.Key], g.KPIs.Clicks)
				}
			}
			return nil
		})
		tb.waitJS("the breakdown chart", `+document.getElementById("chart-drill").dataset.points > 0`, 10*time.Second)
	}
	check("60m", "source")
	tb.do("break down by country", press(`#dims [data-dim=country]`))
	check("60m", "country")
	tb.waitJS("the bot share", `document.getElementById("bots").textContent.includes("of events")`, 10*time.Second)
	tb.waitTile("bots", func() float64 {
		var bots struct {
			Share float64 `json:"share"`
		}
		apiGet(t, b, roleAdmin, "bots", url.Values{"campaign": {campaign}, "window": {"60m"}}, &bots)
		return bots.Share
	}, 0, 10*time.Second)
	checkPolls(tb, b, campaign, "60m")
	tb.shot("country")

	for _, r := range []struct{ button, window string }{{"24h", "24h"}, {"7d", "7d"}, {"1h", "1h"}} {
		tb.do("pick "+r.button, press(fmt.Sprintf(`#range [data-range=%q]`, r.button)))
		check(r.window, "country")
		tb.waitTile("clicks", clicksOf(t, b, r.window, []string{campaign}), 0, 10*time.Second)
		tb.waitJS("the traffic chart", `+document.getElementById("chart-traffic").dataset.points > 0`, 10*time.Second)
		tb.shot(r.button)
	}
	tb.do("break down by device", press(`#dims [data-dim=device]`))
	check("1h", "device")

	// All campaigns: the breakdown is added up from series?by=.
	tb.do("back to all campaigns", chromedp.SetValue(chromedp.CSS("#campaign"), ""),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("campaign").dispatchEvent(new Event("change"))`))
	tb.waitUntil("an all-campaign breakdown", restWait, func() error {
		if n := len(drillRows(tb)); n == 0 {
			return fmt.Errorf("no rows")
		}
		return nil
	})
}

// fmtCount formats a count as the dashboard does (en-US grouping).
func fmtCount(v float64) string {
	s := strconv.FormatInt(int64(v), 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func testExportCSV(t *testing.T, b backend) {
	tb := signInByLink(t, b, roleAdmin)
	dir := t.TempDir()
	tb.do("allow downloads", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir,
		})
		return err
	}))
	if dis := eval[bool](tb, `document.getElementById("export").disabled`); !dis {
		t.Errorf("export is enabled without a campaign")
	}
	campaign := b.Campaigns()[2]
	tb.do("pick a campaign and 24 h",
		clickRow(campaign),
		press(`#range [data-range="24h"]`),
	)
	tb.waitJS("export enabled", `!document.getElementById("export").disabled`, 5*time.Second)
	tb.do("export", press("#export"))

	var file string
	tb.waitUntil("the downloaded CSV", 15*time.Second, func() error {
		m, _ := filepath.Glob(filepath.Join(dir, "tally-"+campaign+"-*.csv"))
		if len(m) == 0 {
			return fmt.Errorf("nothing in %s yet", dir)
		}
		file = m[0]
		return nil
	})
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatalf("%s is not CSV: %v", file, err)
	}
	wantHead := "time,campaign,impressions,clicks,conversions,pageviews,uniques,revenue,cost,ctr,cvr,cpa,roas,bots_filtered"
	if len(rows) < 2 || strings.Join(rows[0], ",") != wantHead {
		t.Fatalf("CSV header %v, want %s", rows[:min(1, len(rows))], wantHead)
	}
	// 24 h in 15-minute steps: at most 97 buckets (the current one partly).
	if n := len(rows) - 1; n > 97 {
		t.Errorf("CSV has %d rows, want at most 97 steps of 15 minutes", n)
	}
	clicks := 0.0
	for _, r := range rows[1:] {
		if r[1] != campaign {
			t.Fatalf("row of another campaign: %v", r)
		}
		v, err := strconv.ParseFloat(r[3], 64)
		if err != nil {
			t.Fatalf("clicks %q: %v", r[3], err)
		}
		clicks += v
	}
	var want kpiSet
	apiGet(t, b, roleAdmin, "kpis", url.Values{"campaign": {campaign}, "window": {"24h"}}, &want)
	if err := sameNumber(clicks, want.Clicks); err != nil {
		t.Errorf("CSV clicks: %v", err)
	}
	t.Logf("exported %s: %d rows, %d clicks", filepath.Base(file), len(rows)-1, int(clicks))
}

func testViewerScope(t *testing.T, b backend) {
	tb := signInByLink(t, b, roleViewer)
	want := slices.Clone(b.ViewerCampaigns())
	sort.Strings(want)
	tb.waitJS("who is signed in", `document.getElementById("whoami").textContent.endsWith("· viewer")`, 10*time.Second)
	tb.waitUntil("the viewer's campaigns", 10*time.Second, func() error {
		rows := eval[[]string](tb, `[...document.querySelectorAll("#campaigns tbody tr")].map(r => r.dataset.campaign)`)
		sort.Strings(rows)
		opts := eval[[]string](tb, `[...document.getElementById("campaign").options].slice(1).map(o => o.value)`)
		if !slices.Equal(rows, want) || !slices.Equal(opts, want) {
			return fmt.Errorf("table %v, picker %v, want %v", rows, opts, want)
		}
		return nil
	})
	// The totals are the viewer's campaigns' only, as an admin reads them.
	tb.waitTile("clicks", clicksOf(t, b, "60m", want), 0, 10*time.Second)
	if scope := eval[string](tb, `document.getElementById("scope").textContent`); !strings.Contains(scope, want[0]) {
		t.Errorf("scope line %q does not name the viewer's campaigns", scope)
	}
	tb.shot("viewer")
}

// signInLive signs in as an admin and waits for the live stream.
func signInLive(t *testing.T, b backend) *tab {
	t.Helper()
	tb := signInByLink(t, b, roleAdmin)
	tb.waitJS("the live state", `document.getElementById("status").textContent === "live"`, 10*time.Second)
	return tb
}

// testProvisionalFigures: while the stream marks a minute of the chosen
// campaign provisional (agents' live counters ahead of their flush), the
// tiles of counts, money and ratios say so and the uniques tile does not;
// when the flush lands (an update without the mark) the mark goes.
func testProvisionalFigures(t *testing.T, b backend) {
	pb, ok := b.(interface {
		SetProvisional(campaign string, on bool)
	})
	if !ok {
		t.Skip("this backend cannot mark figures provisional")
	}
	tb := signInLive(t, b)
	campaign := b.Campaigns()[0]
	tb.do("pick a campaign", clickRow(campaign))
	tb.waitJS("the campaign selected", fmt.Sprintf(`document.getElementById("campaign").value === %q`, campaign), 5*time.Second)
	pb.SetProvisional(campaign, true)
	tb.waitJS("clicks marked provisional", `document.querySelector('[data-kpi=clicks]').dataset.provisional === "1"`, 10*time.Second)
	if eval[bool](tb, `document.querySelector('[data-kpi=uniques]').dataset.provisional !== undefined`) {
		t.Error("the uniques tile is marked provisional; uniques come at flush cadence only")
	}
	label := eval[string](tb, `getComputedStyle(document.querySelector('[data-kpi=clicks] .label'), '::after').content`)
	if !strings.Contains(label, "provisional") {
		t.Errorf("the clicks tile's label does not say provisional (::after is %s)", label)
	}
	tb.shot("provisional")
	pb.SetProvisional(campaign, false)
	tb.waitJS("the mark gone once the flush lands", `document.querySelector('[data-kpi=clicks]').dataset.provisional === undefined`, 10*time.Second)
}

func testStreamDown(t *testing.T, b backend) {
	sb, ok := b.(streamBreaker)
	if !ok {
		t.Skip("this backend cannot take its stream down alone")
	}
	tb := signInLive(t, b)
	resumesBefore := len(sb.ResumeIDs())

	sb.SetStreamDown(true)
	tb.waitJS("the stream-down state", `document.getElementById("status").textContent === "stream down" && !document.getElementById("banner").hidden`, 10*time.Second)
	if msg := eval[string](tb, `document.getElementById("banner").textContent`); !strings.Contains(msg, "Live updates stopped") {
		t.Errorf("banner says %q", msg)
	}
	tb.shot("stream-down")
	// Traffic while the stream is down shows up through REST meanwhile,
	// and the stream's resume after the reconnect agrees.
	campaign := b.Campaigns()[0]
	before := truthClicks(t, b, roleAdmin, "60m", nil)
	if err := b.SendClicks(tb.ctx, campaign, 5); err != nil {
		t.Fatal(err)
	}
	tb.waitTile("clicks", clicksOf(t, b, "60m", nil), before+5, 15*time.Second)
	sb.SetStreamDown(false)
	tb.waitJS("live again", `document.getElementById("status").textContent === "live" && document.getElementById("banner").hidden`, 30*time.Second)
	tb.waitTile("clicks", clicksOf(t, b, "60m", nil), before+5, 10*time.Second)
	if ids := sb.ResumeIDs(); len(ids) <= resumesBefore {
		t.Errorf("the stream reconnected without Last-Event-ID")
	}
}

// testFailedRequest: when one request of a refresh fails at the node
// (a 503, a dropped connection, a network change) while the others get
// through, the page asks again within seconds, not at the range's next
// refresh (a minute for 24 h).
func testFailedRequest(t *testing.T, b backend) {
	rf, ok := b.(requestFailer)
	if !ok {
		t.Skip("this backend cannot fail single requests")
	}
	tb := signInLive(t, b)
	rf.FailRequests("/api/v1/series", 2) // the chart's and the breakdown's
	start := time.Now()
	tb.do("pick 24 h", press(`#range [data-range="24h"]`))
	tb.waitJS("the empty chart of a range not loaded yet", `+document.getElementById("chart-traffic").dataset.points === 0`, 5*time.Second)
	tb.waitJS("the traffic chart after the failed request", `+document.getElementById("chart-traffic").dataset.points > 0`, 15*time.Second)
	t.Logf("traffic chart filled %s after its request failed", time.Since(start).Round(100*time.Millisecond))
}

func testNodeDown(t *testing.T, b backend) {
	nb, ok := b.(nodeBreaker)
	if !ok {
		t.Skip("this backend cannot take its node down")
	}
	tb := signInLive(t, b)
	nb.SetNodeDown(t, true)
	tb.waitJS("the node-down state", `document.getElementById("status").textContent === "node down" && document.getElementById("banner").textContent.includes("Cannot reach")`, 15*time.Second)
	tb.shot("node-down")
	nb.SetNodeDown(t, false)
	tb.waitJS("live again", `document.getElementById("status").textContent === "live" && document.getElementById("banner").hidden`, 30*time.Second)
	tb.waitTile("clicks", clicksOf(t, b, "60m", nil), 0, 10*time.Second)
}

package browser

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// wantView is a view of the dashboard as the tests name it: what the
// address carries and what the controls must show.
type wantView struct {
	Campaign string            `json:"campaign"`
	Range    string            `json:"range"`
	From     string            `json:"from"`
	To       string            `json:"to"`
	By       string            `json:"by"`
	Compare  string            `json:"compare"`
	Filters  map[string]string `json:"filters"`
	// Find is the text that narrows the campaign table.
	Find string `json:"find"`
}

// presets are the dashboard's preset ranges: the API window and the
// chart step.
var presets = map[string]struct {
	window string
	d      time.Duration
	step   string
}{
	"live": {"60m", time.Hour, "1m"},
	"1h":   {"1h", time.Hour, "1m"},
	"24h":  {"24h", 24 * time.Hour, "15m"},
	"7d":   {"7d", 7 * 24 * time.Hour, "1h"},
}

// search is the view as a query string, written independently of the
// page's code (a link someone could have typed).
func (v wantView) search() string {
	q := url.Values{}
	if v.Campaign != "" {
		q.Set("campaign", v.Campaign)
	}
	q.Set("range", v.Range)
	if v.Range == "custom" {
		q.Set("from", v.From)
		q.Set("to", v.To)
	}
	q.Set("by", v.By)
	q.Set("compare", v.Compare)
	for d, val := range v.Filters {
		q.Set(d, val)
	}
	if v.Find != "" {
		q.Set("find", v.Find)
	}
	return "?" + q.Encode()
}

// params are the API parameters of the view's window and filters (plus
// the campaign when one is chosen).
func (v wantView) params() url.Values {
	q := url.Values{}
	if p, ok := presets[v.Range]; ok {
		q.Set("window", p.window)
	} else {
		q.Set("from", v.From)
		q.Set("to", v.To)
	}
	for d, val := range v.Filters {
		q.Set(d, val)
	}
	if v.Campaign != "" {
		q.Set("campaign", v.Campaign)
	}
	return q
}

// comparisonParams are the API parameters of the period the view is
// compared with at now: the period of the same length just before, or
// the same one a week earlier. A preset window holds the minutes that
// start in [now−length, now), now in whole seconds.
func (v wantView) comparisonParams(now time.Time) url.Values {
	var from, to time.Time
	if p, ok := presets[v.Range]; ok {
		to = now.Truncate(time.Second)
		if to2 := to.Truncate(time.Minute); !to2.Equal(to) {
			to = to2.Add(time.Minute)
		}
		from = to.Add(-p.d)
	} else {
		from, _ = time.Parse(time.RFC3339, v.From)
		to, _ = time.Parse(time.RFC3339, v.To)
	}
	shift := to.Sub(from)
	if v.Compare == "week" {
		shift = 7 * 24 * time.Hour
	}
	q := url.Values{}
	q.Set("from", from.Add(-shift).UTC().Format(time.RFC3339))
	q.Set("to", to.Add(-shift).UTC().Format(time.RFC3339))
	for d, val := range v.Filters {
		q.Set(d, val)
	}
	if v.Campaign != "" {
		q.Set("campaign", v.Campaign)
	}
	return q
}

// readViewJS reads the view from the page's controls (not from the
// address): what a person sees chosen.
const readViewJS = `(() => {
	const checked = (id, key) => {
		const on = [...document.querySelectorAll("#" + id + " [role=radio]")].filter(b => b.getAttribute("aria-checked") === "true");
		return on.length === 1 ? on[0].dataset[key] : "(" + on.length + " checked)";
	};
	const q = new URLSearchParams(location.search);
	return {
		campaign: document.getElementById("campaign").value,
		range: checked("range", "range"),
		from: q.get("range") === "custom" ? q.get("from") : "",
		to: q.get("range") === "custom" ? q.get("to") : "",
		by: checked("dims", "dim"),
		compare: document.getElementById("compare").value,
		filters: Object.fromEntries([...document.querySelectorAll("#filters .chip")].map(c => [c.dataset.dim, c.firstChild.textContent.replace(/^[^:]*: /, "")])),
		find: document.getElementById("filter").value,
	};
})()`

func (v wantView) String() string { return v.search() }

func (v wantView) equal(o wantView) bool {
	norm := func(m map[string]string) map[string]string {
		if m == nil {
			return map[string]string{}
		}
		return m
	}
	return v.Campaign == o.Campaign && v.Range == o.Range && v.From == o.From && v.To == o.To && v.By == o.By &&
		v.Compare == o.Compare && maps.Equal(norm(v.Filters), norm(o.Filters)) && v.Find == o.Find
}

// waitControls waits until the page's controls show v.
func (tb *tab) waitControls(v wantView, timeout time.Duration) {
	tb.t.Helper()
	tb.waitUntil("the controls of "+v.String(), timeout, func() error {
		got := eval[wantView](tb, readViewJS)
		if !got.equal(v) {
			return fmt.Errorf("the controls show %s", got)
		}
		return nil
	})
}

// waitViewData waits until the controls show v and the page's figures
// are the API's for v: the clicks tile and its comparison, and the
// breakdown, row by row.
func waitViewData(tb *tab, b backend, role string, v wantView) {
	tb.t.Helper()
	t := tb.t
	tb.waitControls(v, 10*time.Second)
	// The clicks tile: one campaign's KPIs, or every campaign's together.
	tb.waitTile("clicks", func() float64 { return viewClicks(t, b, role, v, v.params()) }, 0, restWait)
	if v.Compare != "none" {
		tb.waitUntil("the clicks tile's comparison", restWait, func() error {
			want := viewClicks(t, b, role, v, v.comparisonParams(time.Now()))
			title := eval[string](tb, `document.querySelector("[data-kpi=clicks] .delta").title`)
			_, rest, ok := strings.Cut(title, " now, ")
			if !ok {
				return fmt.Errorf("the clicks tile has no comparison yet (%q)", title)
			}
			if got := strings.Fields(rest)[0]; got != fmtCount(want) {
				return fmt.Errorf("the clicks tile compares with %s, the API says %s (%q)", got, fmtCount(want), title)
			}
			word := map[string]string{"week": "the same time last week", "prev": "in the previous period"}[v.Compare]
			if !strings.Contains(title, word) {
				return fmt.Errorf("the comparison is not with %s: %q", word, title)
			}
			return nil
		})
	} else if d := eval[string](tb, `document.querySelector("[data-kpi=clicks] .delta").textContent`); d != "" {
		t.Errorf("without a comparison the clicks tile still shows a change: %q", d)
	}
	tb.waitUntil("the breakdown of "+v.String(), restWait, func() error {
		want := viewBreakdown(t, b, role, v)
		got := drillRows(tb)
		if len(got) != len(want) {
			return fmt.Errorf("%d rows, the API has %d groups (page %v, API %v)", len(got), len(want), got, want)
		}
		for k, n := range want {
			if got[k] != fmtCount(n) {
				return fmt.Errorf("%s: %q clicks, the API says %v", k, got[k], n)
			}
		}
		return nil
	})
}

// viewClicks is the API's clicks of v's campaign (or of every campaign
// the role sees) with params' window and filters.
func viewClicks(t testing.TB, b backend, role string, v wantView, params url.Values) float64 {
	if v.Campaign != "" {
		var k kpiSet
		apiGet(t, b, role, "kpis", params, &k)
		return k.Clicks
	}
	var body struct {
		Total struct {
			KPIs kpiSet `json:"kpis"`
		} `json:"total"`
	}
	apiGet(t, b, role, "campaigns", params, &body)
	return body.Total.KPIs.Clicks
}

// viewBreakdown is the API's clicks per group of v's breakdown.
func viewBreakdown(t testing.TB, b backend, role string, v wantView) map[string]float64 {
	out := map[string]float64{}
	q := v.params()
	q.Set("by", v.By)
	if v.Campaign != "" {
		var body byBody
		apiGet(t, b, role, "kpis", q, &body)
		for _, g := range body.Groups {
			out[g.Key] = g.KPIs.Clicks
		}
		return out
	}
	step := "1h"
	if p, ok := presets[v.Range]; ok {
		step = p.step
	}
	q.Set("metric", "clicks")
	q.Set("step", step)
	var body struct {
		Series []struct {
			Key    string `json:"key"`
			Points []struct {
				Values map[string]float64 `json:"values"`
			} `json:"points"`
		} `json:"series"`
	}
	apiGet(t, b, role, "series", q, &body)
	for _, s := range body.Series {
		for _, p := range s.Points {
			out[s.Key] += p.Values["clicks"]
		}
	}
	return out
}

// firstGroup is the key of the breakdown's first row.
func firstGroup(tb *tab) string {
	tb.waitJS("a breakdown row", `!!document.querySelector("#drill-table tbody button[data-key]")`, restWait)
	return eval[string](tb, `document.querySelector("#drill-table tbody button[data-key]").dataset.key`)
}

// pick chooses value in the select id as a person does (change event),
// once the select offers it.
func pick(id, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitReady(chromedp.CSS(fmt.Sprintf(`#%s option[value=%q]`, id, value))),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
			const s = document.getElementById(%q);
			s.value = %q;
			s.dispatchEvent(new Event("change", {bubbles: true}));
		})()`, id, value)),
	)
}

// testLinkInAnotherProfile: a marketer sets up a view (a campaign, a
// range, a breakdown, a filter, a comparison), copies the address, and a
// colleague opens it in another browser profile (nothing shared: no
// storage, no session) and, once signed in, sees the same view with the
// same figures.
func testLinkInAnotherProfile(t *testing.T, b backend) {
	campaign := b.Campaigns()[1]
	tb := signInByLink(t, b, roleAdmin)
	tb.do("choose a campaign, 24 h, by country, compared with last week",
		pick("campaign", campaign),
		press(`#range [data-range="24h"]`),
		press(`#dims [data-dim="country"]`),
		pick("compare", "week"),
	)
	v := wantView{Campaign: campaign, Range: "24h", By: "country", Compare: "week"}
	waitViewData(tb, b, roleAdmin, v)
	key := firstGroup(tb)
	tb.do("filter by the first country", press(fmt.Sprintf(`#drill-table button[data-key=%q]`, key)))
	tb.do("then break down by source", press(`#dims [data-dim="source"]`))
	v.Filters = map[string]string{"country": key}
	v.By = "source"
	waitViewData(tb, b, roleAdmin, v)
	// Narrow the campaign table down to the chosen campaign.
	tb.do("find the campaign in the table", chromedp.SendKeys(chromedp.CSS("#filter"), campaign))
	v.Find = campaign
	tb.waitControls(v, 10*time.Second)
	link := eval[string](tb, `location.href`)
	if strings.Contains(link, "token") || strings.Contains(link, b.Token(roleAdmin)) {
		t.Fatalf("the address holds the token: %s", link)
	}
	t.Logf("shared link: %s", link)
	tb.shot("sender")

	other := newTabIn(t, 90*time.Second, true)
	other.do("open the link in another profile", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#token-input")))
	if n := eval[int](other, `localStorage.length + sessionStorage.length`); n != 0 {
		t.Fatalf("the other profile shares storage (%d items)", n)
	}
	other.do("sign in there",
		chromedp.SendKeys(chromedp.CSS("#token-input"), b.Token(roleAnalyst)),
		chromedp.Click(chromedp.CSS("#signin-button")),
		chromedp.WaitVisible(chromedp.CSS("#tiles .tile")),
	)
	waitViewData(other, b, roleAnalyst, v)
	if got := eval[string](other, `location.href`); got != link {
		t.Errorf("the other profile's address is %s, the link was %s", got, link)
	}
	rows := eval[[]string](other, `[...document.querySelectorAll("#campaigns tbody tr:not([hidden])")].map(r => r.dataset.campaign)`)
	if !slices.Equal(rows, []string{campaign}) {
		t.Errorf("the campaign table shows %v, want only %s", rows, campaign)
	}
	other.shot("receiver")
}

// testViewerLinkOutsideScope: a viewer opens a link to a campaign it may
// not see. The page says so in words, shows no empty figures, and offers
// the viewer's own campaigns; a link to one of those opens normally.
func testViewerLinkOutsideScope(t *testing.T, b backend) {
	mine := b.ViewerCampaigns()
	var other string
	for _, c := range b.Campaigns() {
		if !slices.Contains(mine, c) {
			other = c
			break
		}
	}
	v := wantView{Campaign: other, Range: "24h", By: "country", Compare: "prev"}
	tb := newTab(t, 90*time.Second)
	tb.do("open a link to another campaign as a viewer",
		chromedp.Navigate(signInLink(b, roleViewer, v.search())),
	)
	tb.waitJS("the notice", `!document.getElementById("notice").hidden`, 15*time.Second)
	msg := eval[string](tb, `document.getElementById("notice").textContent`)
	for _, want := range []string{"cannot see", other, mine[0]} {
		if !strings.Contains(msg, want) {
			t.Errorf("the notice does not say %q: %q", want, msg)
		}
	}
	if role := eval[string](tb, `document.getElementById("notice").getAttribute("role")`); role != "alert" {
		t.Errorf("the notice has role %q, want alert", role)
	}
	if shown := eval[bool](tb, `!document.getElementById("data").hidden`); shown {
		t.Errorf("the figures show beside the notice")
	}
	// The view stays in the address (the viewer can forward it to an
	// administrator), and the controls say which campaign it was.
	tb.waitControls(v, 5*time.Second)
	tb.shot("denied")
	checkAxe(tb, axeSource(t), "notice of a campaign outside the scope")

	// The picker lists the viewer's campaigns, and the notice offers them.
	tb.waitUntil("the viewer's campaigns in the picker", restWait, func() error {
		opts := eval[[]string](tb, `[...document.getElementById("campaign").options].slice(1).map(o => o.value)`)
		if want := append(slices.Sorted(slices.Values(mine)), other); !slices.Equal(opts, want) {
			return fmt.Errorf("the picker offers %v, want %v", opts, want)
		}
		return nil
	})
	if st := eval[string](tb, `document.getElementById("status").textContent`); st != "no access" {
		t.Errorf("the status says %q", st)
	}
	tb.do("show all my campaigns", press(`#notice button[data-pick=""]`))
	v.Campaign = ""
	tb.waitJS("the figures", `!document.getElementById("data").hidden && document.getElementById("notice").hidden`, restWait)
	waitViewData(tb, b, roleViewer, v)

	// A link to one of its own campaigns opens it.
	v.Campaign = mine[0]
	tb.do("open a link to its own campaign", chromedp.Navigate(b.URL()+"/"+v.search()), chromedp.WaitVisible(chromedp.CSS("#tiles .tile")))
	waitViewData(tb, b, roleViewer, v)
	if shown := eval[bool](tb, `!document.getElementById("notice").hidden`); shown {
		t.Errorf("a notice shows for the viewer's own campaign: %q", eval[string](tb, `document.getElementById("notice").textContent`))
	}
}

// testBackAndForward: each choice is a step in the browser's history;
// back and forward return to the views before and after, figures and all.
func testBackAndForward(t *testing.T, b backend) {
	tb := signInByLink(t, b, roleAdmin)
	campaign := b.Campaigns()[2]
	steps := []wantView{{Range: "live", By: "source", Compare: "prev"}}
	tb.waitControls(steps[0], 10*time.Second)
	tb.do("pick a campaign", clickRow(campaign))
	steps = append(steps, wantView{Campaign: campaign, Range: "live", By: "source", Compare: "prev"})
	tb.waitControls(steps[1], 10*time.Second)
	tb.do("pick 24 h", press(`#range [data-range="24h"]`))
	steps = append(steps, wantView{Campaign: campaign, Range: "24h", By: "source", Compare: "prev"})
	tb.waitControls(steps[2], 10*time.Second)
	tb.do("break down by device", press(`#dims [data-dim="device"]`))
	steps = append(steps, wantView{Campaign: campaign, Range: "24h", By: "device", Compare: "prev"})
	waitViewData(tb, b, roleAdmin, steps[3])
	key := firstGroup(tb)
	tb.do("filter by the first device", press(fmt.Sprintf(`#drill-table button[data-key=%q]`, key)))
	steps = append(steps, wantView{Campaign: campaign, Range: "24h", By: "device", Compare: "prev", Filters: map[string]string{"device": key}})
	waitViewData(tb, b, roleAdmin, steps[4])

	for i := len(steps) - 2; i >= 0; i-- {
		tb.do("back", chromedp.Evaluate[chromedp.Void](`history.back()`))
		if i == 0 || i == 2 || i == 3 {
			waitViewData(tb, b, roleAdmin, steps[i])
		} else {
			tb.waitControls(steps[i], 10*time.Second)
		}
	}
	for i := 1; i < len(steps); i++ {
		tb.do("forward", chromedp.Evaluate[chromedp.Void](`history.forward()`))
		tb.waitControls(steps[i], 10*time.Second)
	}
	waitViewData(tb, b, roleAdmin, steps[len(steps)-1])
	// Removing the filter is a step of its own, which back undoes.
	tb.do("remove the filter", press(`#filters button[data-remove="device"]`))
	waitViewData(tb, b, roleAdmin, steps[3])
	tb.do("back", chromedp.Evaluate[chromedp.Void](`history.back()`))
	waitViewData(tb, b, roleAdmin, steps[4])
}

// focused describes the focused element: its radio value or id.
const focusedJS = `(() => { const e = document.activeElement; return e ? (e.dataset.range || e.dataset.dim || e.id || e.tagName) : ""; })()`

// testKeyboard: the range and breakdown controls are radio groups with
// one tab stop each; the arrow keys move the choice, Home and End jump
// to the ends; and the tiles' changes say up or down and better or worse
// in text, not only in colour.
func testKeyboard(t *testing.T, b backend) {
	tb := signInByLink(t, b, roleAdmin)
	campaign := b.Campaigns()[4]
	tb.do("pick a campaign", pick("campaign", campaign))
	v := wantView{Campaign: campaign, Range: "live", By: "source", Compare: "prev"}
	tb.waitControls(v, 10*time.Second)
	for _, g := range []string{"range", "dims"} {
		roles := eval[[]string](tb, fmt.Sprintf(`[document.getElementById(%q).getAttribute("role"), ...[...document.querySelectorAll("#%s button")].map(b => b.getAttribute("role") + ":" + b.tabIndex)]`, g, g))
		if roles[0] != "radiogroup" {
			t.Errorf("#%s has role %q, want radiogroup", g, roles[0])
		}
		stops := 0
		for _, r := range roles[1:] {
			if !strings.HasPrefix(r, "radio:") {
				t.Errorf("#%s: a button is %q, want a radio", g, r)
			}
			if strings.HasSuffix(r, ":0") {
				stops++
			}
		}
		if stops != 1 {
			t.Errorf("#%s has %d tab stops, want 1: %v", g, stops, roles)
		}
	}
	key := func(what, k string, want wantView, focus string) {
		t.Helper()
		tb.do(what, chromedp.KeyEvent(k))
		tb.waitControls(want, 10*time.Second)
		if got := eval[string](tb, focusedJS); got != focus {
			t.Errorf("%s: focus on %q, want %q", what, got, focus)
		}
	}
	// Tab from the campaign picker lands on the chosen range.
	tb.do("focus the campaign picker", chromedp.Focus(chromedp.CSS("#campaign")))
	tb.do("tab", chromedp.KeyEvent(kb.Tab))
	if got := eval[string](tb, focusedJS); got != "live" {
		t.Fatalf("tab from the campaign picker: focus on %q, want the chosen range", got)
	}
	v.Range = "1h"
	key("arrow right", kb.ArrowRight, v, "1h")
	v.Range = "24h"
	key("arrow down", kb.ArrowDown, v, "24h")
	v.Range = "1h"
	key("arrow left", kb.ArrowLeft, v, "1h")
	// End is Custom, which freezes the window on screen and opens its form.
	tb.do("end", chromedp.KeyEvent(kb.End))
	tb.waitJS("the custom range", `document.querySelector('#range [data-range="custom"]').getAttribute("aria-checked") === "true" && !document.getElementById("custom").hidden && new URLSearchParams(location.search).get("range") === "custom"`, 10*time.Second)
	if got := eval[string](tb, focusedJS); got != "custom" {
		t.Errorf("end: focus on %q, want custom", got)
	}
	v.Range = "live"
	key("home", kb.Home, v, "live")
	v.Range = "7d"
	key("arrow up wraps to the end, arrow up again", kb.ArrowUp+kb.ArrowUp, v, "7d")
	if !strings.Contains(eval[string](tb, `location.search`), "range=7d") {
		t.Errorf("the address does not follow the keyboard: %s", eval[string](tb, `location.search`))
	}
	// The group is one tab stop: tab leaves it for the comparison.
	tb.do("tab", chromedp.KeyEvent(kb.Tab))
	if got := eval[string](tb, focusedJS); got != "compare" {
		t.Errorf("tab from the range: focus on %q, want the comparison", got)
	}
	tb.do("focus the breakdown choice", chromedp.Focus(chromedp.CSS(`#dims [aria-checked="true"]`)))
	v.By = "medium"
	key("arrow right in the breakdown", kb.ArrowRight, v, "medium")
	v.By = "source"
	key("home", kb.Home, v, "source")
	v.By = "device"
	key("arrow left wraps", kb.ArrowLeft, v, "device")
	v.By = "source"
	key("home again", kb.Home, v, "source")
	v.By = "country"
	tb.do("arrow right three times without choosing a value in between", chromedp.KeyEvent(kb.ArrowRight+kb.ArrowRight+kb.ArrowRight))
	waitViewData(tb, b, roleAdmin, v)
	if got := eval[string](tb, `document.getElementById("drill-dim").textContent`); got != "Country" {
		t.Errorf("the breakdown's heading says %q after the keyboard chose country", got)
	}

	// The tiles' changes carry their meaning in text: an arrow for the
	// direction and a word for the verdict, consistent with each other.
	type delta struct {
		KPI, Text, Word, Dir, Class string
	}
	better := map[string]int{"cost": -1, "cpa": -1}
	deltas := eval[[]delta](tb, `[...document.querySelectorAll("#tiles .tile")].filter(t => t.dataset.kpi !== "bots").map(t => {
		const d = t.querySelector(".delta");
		return {KPI: t.dataset.kpi, Text: d.querySelector(".text").textContent, Word: d.querySelector(".sr-only").textContent, Dir: d.dataset.dir, Class: d.className};
	})`)
	checked := 0
	for _, d := range deltas {
		if d.Text == "" {
			continue
		}
		checked++
		arrow := map[string]string{"up": "▲", "down": "▼", "flat": "±"}[d.Dir]
		if arrow == "" || !strings.HasPrefix(d.Text, arrow) {
			t.Errorf("tile %s: change %q does not start with the arrow of %q", d.KPI, d.Text, d.Dir)
		}
		sign := better[d.KPI]
		if sign == 0 {
			sign = 1
		}
		want := map[string]string{"flat": "unchanged"}[d.Dir]
		if d.Dir == "up" && sign > 0 || d.Dir == "down" && sign < 0 {
			want = "better"
		} else if d.Dir != "flat" {
			want = "worse"
		}
		if !strings.Contains(d.Word, want) {
			t.Errorf("tile %s: %q %q, want the word %q", d.KPI, d.Text, d.Word, want)
		}
		if cls := map[string]string{"better": "good", "worse": "bad", "unchanged": "flat"}[want]; !strings.Contains(d.Class, cls) {
			t.Errorf("tile %s: class %q, want %q", d.KPI, d.Class, cls)
		}
	}
	if checked == 0 {
		t.Errorf("no tile shows a change to check")
	}
}

// testCustomRange: a custom range is absolute (from/to in the address,
// in UTC), applies to every figure, and compares with the period just
// before it.
func testCustomRange(t *testing.T, b backend) {
	tb := signInByLink(t, b, roleAdmin)
	campaign := b.Campaigns()[0]
	tb.do("pick a campaign and 24 h", pick("campaign", campaign), press(`#range [data-range="24h"]`))
	tb.waitControls(wantView{Campaign: campaign, Range: "24h", By: "source", Compare: "prev"}, 10*time.Second)
	// Custom starts as the window on screen, frozen.
	tb.do("choose custom", press(`#range [data-range="custom"]`))
	tb.waitJS("the custom range form", `!document.getElementById("custom").hidden && new URLSearchParams(location.search).get("range") === "custom"`, 10*time.Second)
	// Then three hours, typed in the browser's time zone.
	now := time.Now().Truncate(time.Minute)
	from, to := now.Add(-150*time.Minute), now.Add(30*time.Minute)
	local := func(t time.Time) string { return t.Local().Format("2006-01-02T15:04") }
	tb.do("type a range and apply", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		document.getElementById("custom-from").value = %q;
		document.getElementById("custom-to").value = %q;
	})()`, local(from), local(to))), press("#custom-apply"))
	v := wantView{Campaign: campaign, Range: "custom", From: from.UTC().Format(time.RFC3339), To: to.UTC().Format(time.RFC3339), By: "source", Compare: "prev"}
	waitViewData(tb, b, roleAdmin, v)
	tb.waitJS("the traffic chart with its comparison", `+document.getElementById("chart-traffic").dataset.series === 6 && +document.getElementById("chart-traffic").dataset.points > 0`, 10*time.Second)
	// A range that ends before it starts is refused in words.
	tb.do("type a backwards range", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		document.getElementById("custom-from").value = %q;
		document.getElementById("custom-to").value = %q;
	})()`, local(to), local(from))), press("#custom-apply"))
	tb.waitJS("the refusal", `document.getElementById("custom-error").textContent.includes("after the start")`, 5*time.Second)
	tb.waitControls(v, 5*time.Second)
	// Without comparison the dashed lines and the changes go.
	tb.do("compare with nothing", pick("compare", "none"))
	v.Compare = "none"
	waitViewData(tb, b, roleAdmin, v)
	tb.waitJS("the traffic chart without comparison", `+document.getElementById("chart-traffic").dataset.series === 3`, 10*time.Second)
}

// testHostileLink: values a link should not carry are dropped and named;
// the rest of the view still applies.
func testHostileLink(t *testing.T, b backend) {
	tb := signInByLink(t, b, roleAdmin)
	campaign := b.Campaigns()[1]
	q := url.Values{"campaign": {campaign}, "range": {"forever"}, "by": {"password"}, "compare": {"week"},
		"source": {strings.Repeat("x", 300)}, "from": {"yesterday"}}
	tb.do("open a tampered link", chromedp.Navigate(b.URL()+"/?"+q.Encode()), chromedp.WaitVisible(chromedp.CSS("#tiles .tile")))
	v := wantView{Campaign: campaign, Range: "live", By: "source", Compare: "week"}
	waitViewData(tb, b, roleAdmin, v)
	msg := eval[string](tb, `document.getElementById("notice").textContent`)
	for _, p := range []string{"range", "by", "source", "from"} {
		if !strings.Contains(msg, p) {
			t.Errorf("the notice does not name %q: %q", p, msg)
		}
	}
	// The address now holds only what is shown.
	got, _ := url.ParseQuery(strings.TrimPrefix(eval[string](tb, `location.search`), "?"))
	if got.Get("range") != "live" || got.Has("source") || got.Has("from") || got.Get("campaign") != campaign {
		t.Errorf("the address was not cleaned: %v", got)
	}
}

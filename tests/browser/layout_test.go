package browser

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// layoutWidths are the viewport widths the layout must hold at: a small
// phone, a tablet, a laptop, a large desktop monitor.
var layoutWidths = []int64{360, 768, 1400, 2560}

// layoutProblemsJS measures the page as laid out and lists what breaks
// the layout rules, in words (an empty list: the layout holds):
//   - the page never scrolls sideways;
//   - no element sticks out of its card (.card, .tile) or out of the
//     viewport, counting only what its scroll containers let show (a
//     table scrolling inside its card is fine), and no two cards overlap,
//     so no element of one card can overlap another card's;
//   - no text of a tile is cut (its scrollWidth fits its box) or ends in
//     an ellipsis;
//   - every chart is as wide as its container, no wider.
const layoutProblemsJS = `(() => {
	const out = [];
	const vw = document.documentElement.clientWidth;
	const sw = document.documentElement.scrollWidth;
	if (sw > vw) out.push("the page scrolls sideways: " + sw + " px of content in " + vw + " px");
	const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
		(el.classList.length ? "." + [...el.classList].join(".") : "") + (el.dataset.kpi ? "[" + el.dataset.kpi + "]" : "");
	const shown = (el) => {
		const r = el.getBoundingClientRect();
		return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== "hidden";
	};
	// The part of el its ancestors up to (not including) stop let show.
	const visibleRect = (el, stop) => {
		const r = el.getBoundingClientRect();
		let x1 = r.left, y1 = r.top, x2 = r.right, y2 = r.bottom;
		for (let a = el.parentElement; a && a !== stop; a = a.parentElement) {
			const cs = getComputedStyle(a);
			const ar = a.getBoundingClientRect();
			if (cs.overflowX !== "visible") { x1 = Math.max(x1, ar.left); x2 = Math.min(x2, ar.right); }
			if (cs.overflowY !== "visible") { y1 = Math.max(y1, ar.top); y2 = Math.min(y2, ar.bottom); }
		}
		return { x1, y1, x2, y2, empty: x2 - x1 < 1 || y2 - y1 < 1 };
	};
	const app = document.getElementById("app");
	const cards = [...app.querySelectorAll(".card, .tile")].filter(shown);
	for (const c of cards) {
		const outer = c.parentElement.closest(".card, .tile");
		if (outer) out.push(name(c) + " is a card inside the card " + name(outer));
	}
	for (const c of cards) {
		const cr = c.getBoundingClientRect();
		for (const el of c.querySelectorAll("*")) {
			if (el.closest(".sr-only") || !shown(el)) continue;
			const v = visibleRect(el, c);
			if (v.empty) continue;
			const over = Math.max(cr.left - v.x1, v.x2 - cr.right, cr.top - v.y1, v.y2 - cr.bottom);
			if (over > 1) out.push(name(el) + " (" + (el.textContent || "").trim().slice(0, 30) + ") sticks out of its card " + name(c) + " by " + Math.round(over) + " px");
		}
	}
	for (let i = 0; i < cards.length; i++) {
		const a = cards[i].getBoundingClientRect();
		for (let j = i + 1; j < cards.length; j++) {
			const b = cards[j].getBoundingClientRect();
			const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
			const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
			if (w > 1 && h > 1) out.push(name(cards[i]) + " and " + name(cards[j]) + " overlap by " + Math.round(w) + "×" + Math.round(h) + " px");
		}
	}
	for (const el of app.querySelectorAll("*")) {
		if (el.closest(".sr-only") || !shown(el)) continue;
		const v = visibleRect(el, null);
		if (!v.empty && (v.x2 > vw + 1 || v.x1 < -1)) out.push(name(el) + " reaches beyond the viewport: " + Math.round(v.x1) + "…" + Math.round(v.x2) + " of " + vw + " px");
	}
	for (const t of app.querySelectorAll(".tile")) {
		for (const el of t.querySelectorAll(".label, .value, .delta, .help")) {
			if (el.scrollWidth > el.clientWidth + 1) out.push("the " + name(el) + " of tile " + t.dataset.kpi + " is cut: " + el.scrollWidth + " px of text in " + el.clientWidth + " px (" + el.textContent + ")");
			if (el.textContent.includes("…")) out.push("the " + name(el) + " of tile " + t.dataset.kpi + " ends in an ellipsis: " + el.textContent);
		}
	}
	for (const c of app.querySelectorAll(".chart")) {
		const u = c.querySelector(".uplot");
		if (!u || !shown(c)) continue;
		const uw = u.getBoundingClientRect().width, cw = c.clientWidth;
		if (uw > cw + 1 || (cw >= 200 && uw < cw - 2)) out.push("chart " + c.id + " is " + Math.round(uw) + " px wide in a " + cw + " px container");
	}
	return out;
})()`

// tileText is what a tile shows: the number on screen, its exact form
// (the title, shown on hover), the number behind it and whether the page
// shortened it.
type tileText struct {
	Shown string  `json:"shown"`
	Exact string  `json:"exact"`
	Value float64 `json:"value"`
	Short bool    `json:"short"`
}

const tileTextsJS = `Object.fromEntries([...document.querySelectorAll("#tiles .tile")].map(t => {
	const v = t.querySelector(".value");
	return [t.dataset.kpi, {shown: v.textContent, exact: v.title, value: +v.dataset.value, short: v.dataset.short === "1"}];
}))`

// testLayoutAtEveryWidth opens one view with every part of the page
// filled (a campaign, 7 days, a comparison, a breakdown with its chart,
// the polls) and checks the layout rules at each width: measured, not
// only pictured (the screenshots are for people).
func testLayoutAtEveryWidth(t *testing.T, b backend) {
	campaign := b.Campaigns()[3]
	tb := signInByLink(t, b, roleAdmin)
	t.Cleanup(func() { chromedp.Run(tb.ctx, chromedp.ResetViewport()) })
	v := wantView{Campaign: campaign, Range: "7d", By: "country", Compare: "prev"}
	tb.do("open a full view", chromedp.Navigate(b.URL()+"/"+v.search()), chromedp.WaitVisible(chromedp.CSS("#tiles .tile")))
	waitViewData(tb, b, roleAdmin, v)
	if _, fake := b.(*fakeBackend); fake {
		tb.waitJS("the polls", `!document.getElementById("polls").hidden`, restWait)
	}
	for _, w := range layoutWidths {
		tb.do(fmt.Sprintf("a %d px wide viewport", w), chromedp.EmulateViewport(w, 1000))
		tb.waitUntil(fmt.Sprintf("the layout at %d px", w), 15*time.Second, func() error {
			if got := eval[int64](tb, `document.documentElement.clientWidth`); got != w {
				return fmt.Errorf("the viewport is %d px wide", got)
			}
			if p := eval[[]string](tb, layoutProblemsJS); len(p) > 0 {
				return fmt.Errorf("%d problems:\n  %s", len(p), strings.Join(p, "\n  "))
			}
			return nil
		})
		// Tiles: the exact number, or a shorter form of the same number
		// with the exact one on hover; the exact one is also what the
		// campaign's row of the table says.
		tiles := eval[map[string]tileText](tb, tileTextsJS)
		row := eval[map[string]string](tb, fmt.Sprintf(`(() => {
			const tr = document.querySelector('#campaigns tr[data-campaign=%q]');
			const heads = [...document.querySelectorAll("#campaigns thead th")].map(th => th.dataset.sort);
			return tr ? Object.fromEntries([...tr.cells].map((td, i) => [heads[i], td.textContent])) : {};
		})()`, campaign))
		short := 0
		for kpi, tt := range tiles {
			if tt.Exact == "" {
				t.Errorf("%d px: tile %s has no exact value on hover", w, kpi)
				continue
			}
			if cell, ok := row[kpi]; ok && cell != tt.Exact {
				t.Errorf("%d px: tile %s says %q on hover, the table %q", w, kpi, tt.Exact, cell)
			}
			if tt.Shown == tt.Exact {
				continue
			}
			short++
			if err := sameAbbreviated(tt.Shown, tt.Exact); err != nil {
				t.Errorf("%d px: tile %s: %v", w, kpi, err)
			}
		}
		if _, fake := b.(*fakeBackend); fake && w == 360 && short == 0 {
			// The fake's seven days of money do not fit a phone's tile
			// exactly: if nothing was shortened, shortening never ran.
			t.Errorf("360 px: no tile number was shortened: %v", tiles)
		}
		t.Logf("%d px: %d of %d tile numbers shortened", w, short, len(tiles))
		tb.shot(fmt.Sprintf("%dpx", w))
	}
}

// sameAbbreviated checks that shown ("1.85M", "12.3 %", "1.2K×") is exact
// ("1,849,523.12", "12.34 %") written shorter: the same number to the
// precision shown.
func sameAbbreviated(shown, exact string) error {
	parse := func(s string) (float64, int, error) {
		s = strings.TrimSpace(strings.TrimRight(strings.TrimSpace(s), "%×"))
		mult := 1.0
		for suffix, m := range map[string]float64{"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12} {
			if strings.HasSuffix(s, suffix) {
				s, mult = strings.TrimSuffix(s, suffix), m
			}
		}
		s = strings.ReplaceAll(s, ",", "")
		decimals := 0
		if i := strings.IndexByte(s, '.'); i >= 0 {
			decimals = len(s) - i - 1
		}
		f, err := strconv.ParseFloat(s, 64)
		return f * mult, int(math.Log10(mult)) - decimals, err
	}
	got, exp, err := parse(shown)
	if err != nil {
		return fmt.Errorf("%q is not a number: %v", shown, err)
	}
	want, _, err := parse(exact)
	if err != nil {
		return fmt.Errorf("exact %q is not a number: %v", exact, err)
	}
	if math.Abs(got-want) > 0.5*math.Pow(10, float64(exp))+1e-9 {
		return fmt.Errorf("%q is not %q rounded", shown, exact)
	}
	if len(shown) >= len(exact) {
		return fmt.Errorf("%q is not shorter than %q", shown, exact)
	}
	return nil
}

// axeSource is axe-core's browser build, installed by npm ci from
// dashboard/package-lock.json (make dashboard).
func axeSource(t testing.TB) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "dashboard", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		t.Fatalf("axe-core is missing (%v): run `make dashboard` (npm ci) first", err)
	}
	return string(src)
}

// axeViolation is one failed axe-core rule.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target  []any  `json:"target"`
		Summary string `json:"failureSummary"`
	} `json:"nodes"`
}

// runAxe runs axe-core's WCAG 2.x A and AA rules and best practices on
// the page as it is and returns the violations.
func runAxe(tb *tab, src string) []axeViolation {
	tb.t.Helper()
	if !eval[bool](tb, `typeof window.axe === "object"`) {
		eval[chromedp.Void](tb, src)
	}
	return eval[[]axeViolation](tb, `axe.run(document, {
		runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]},
		resultTypes: ["violations"],
	}).then(r => r.violations)`)
}

// testAccessibility runs axe-core on the main view (a campaign, a
// comparison, filters, the breakdown and the polls showing), and on the
// sign-in form: no serious or critical finding. Minor and moderate ones
// are logged.
func testAccessibility(t *testing.T, b backend) {
	src := axeSource(t)
	tb := newTab(t, 90*time.Second)
	tb.do("open the sign-in form", chromedp.Navigate(b.URL()+"/"), chromedp.WaitVisible(chromedp.CSS("#token-input")))
	checkAxe(tb, src, "sign-in form")

	campaign := b.Campaigns()[3]
	v := wantView{Campaign: campaign, Range: "24h", By: "source", Compare: "week"}
	tb = signInByLink(t, b, roleAdmin)
	tb.do("open the main view", chromedp.Navigate(b.URL()+"/"+v.search()), chromedp.WaitVisible(chromedp.CSS("#tiles .tile")))
	waitViewData(tb, b, roleAdmin, v)
	// Filter by the first group of the breakdown, so the chips show too.
	key := eval[string](tb, `document.querySelector("#drill-table tbody button[data-key]").dataset.key`)
	tb.do("filter by a group", press(fmt.Sprintf(`#drill-table button[data-key=%q]`, key)))
	v.Filters = map[string]string{"source": key}
	waitViewData(tb, b, roleAdmin, v)
	checkAxe(tb, src, "main view")
}

func checkAxe(tb *tab, src, what string) {
	tb.t.Helper()
	bad := 0
	for _, v := range runAxe(tb, src) {
		var where []string
		for _, n := range v.Nodes {
			where = append(where, fmt.Sprintf("%v: %s", n.Target, strings.ReplaceAll(n.Summary, "\n", " ")))
		}
		msg := fmt.Sprintf("%s: axe %s (%s): %s, on %d element(s):\n    %s", what, v.ID, v.Impact, v.Help, len(v.Nodes), strings.Join(where, "\n    "))
		if v.Impact == "serious" || v.Impact == "critical" {
			bad++
			tb.t.Error(msg)
		} else {
			tb.t.Log(msg)
		}
	}
	if bad > 0 {
		tb.shot("axe-" + safeName(what))
	}
	tb.t.Logf("%s: axe-core found %d serious or critical problems", what, bad)
}

package logparse

import (
	"fmt"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

func TestRules(t *testing.T) {
	s := DefaultSpec()
	s.Site = "shop.example.com"
	s.Rules = []Rule{
		{Name: "click", Match: "/click", Type: "click", ValueParam: "value", CampaignParam: "cid"},
		{Name: "thanks", Match: "/checkout/thanks", Type: "conversion", ValueParam: "total"},
		{Name: "pixel", Regex: `^/t\.gif$`, TypeParam: "e", ValueParam: "v", CostParam: "c", SourceParam: "src"},
		{Name: "internal", Match: "/internal/", Type: "skip"},
		{Name: "spend", Match: "/spend", Methods: []string{"POST"}, Type: "cost", CostParam: "amount"},
		{Name: "form", Match: "/contact", Methods: []string{"POST"}, Status: []string{"200", "303"}, Type: "form_submit"},
	}
	p := mustCompile(t, s)
	at := ms(time.Date(2024, 3, 10, 12, 55, 36, 0, time.UTC))
	line := func(req string, status int) string {
		return fmt.Sprintf(`192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "%s HTTP/1.1" %d 0 "-" "ua"`, req, status)
	}
	ev := func(typ, url string) event.Raw {
		return event.Raw{Type: typ, TS: at, IP: "192.0.2.1", UA: "ua", URL: "https://shop.example.com" + url}
	}
	with := func(r event.Raw, f func(*event.Raw)) event.Raw { f(&r); return r }
	runCases(t, p, []parseCase{
		{name: "click with value and campaign param",
			line: line("GET /click?cid=spring&utm_campaign=ignored&utm_source=fb&value=1.5", 302),
			want: with(ev("click", "/click?cid=spring&utm_campaign=ignored&utm_source=fb&value=1.5"), func(r *event.Raw) {
				r.Campaign, r.Source, r.Value = "spring", "fb", f64(1.5)
			})},
		{name: "click falls back to utm_campaign", line: line("GET /click/ad-7?utm_campaign=brand", 302),
			want: with(ev("click", "/click/ad-7?utm_campaign=brand"), func(r *event.Raw) { r.Campaign = "brand" })},
		{name: "prefix stops at a segment boundary", line: line("GET /clicks", 200), want: ev("pageview", "/clicks")},
		{name: "click that failed", line: line("GET /click", 404), reason: SkipStatus},
		{name: "conversion", line: line("GET /checkout/thanks?total=49.90&utm_campaign=x", 200),
			want: with(ev("conversion", "/checkout/thanks?total=49.90&utm_campaign=x"), func(r *event.Raw) {
				r.Value, r.Campaign = f64(49.9), "x"
			})},
		{name: "conversion with a bad value", line: line("GET /checkout/thanks?total=abc", 200), reason: CodeBadValue},
		{name: "conversion with NaN", line: line("GET /checkout/thanks?total=NaN", 200), reason: CodeBadValue},
		{name: "pixel type from parameter", line: line("GET /t.gif?e=email_open&src=mailchimp&utm_source=other", 200),
			want: with(ev("email_open", "/t.gif?e=email_open&src=mailchimp&utm_source=other"), func(r *event.Raw) { r.Source = "mailchimp" })},
		{name: "pixel cost", line: line("GET /t.gif?e=cost&c=12.5", 200),
			want: with(ev("cost", "/t.gif?e=cost&c=12.5"), func(r *event.Raw) { r.Cost = f64(12.5) })},
		{name: "pixel unknown type", line: line("GET /t.gif?e=bogus", 200), reason: CodeBadType},
		{name: "pixel without type", line: line("GET /t.gif", 200), reason: SkipRule},
		{name: "pixel bad cost", line: line("GET /t.gif?e=cost&c=1e", 200), reason: CodeBadCost},
		{name: "explicit skip, any status", line: line("GET /internal/status", 500), reason: SkipRule},
		{name: "cost by POST", line: line("POST /spend?amount=12.5", 200),
			want: with(ev("cost", "/spend?amount=12.5"), func(r *event.Raw) { r.Cost = f64(12.5) })},
		{name: "GET of the cost path is a page", line: line("GET /spend", 200), want: ev("pageview", "/spend")},
		{name: "form with listed status", line: line("POST /contact", 303), want: ev("form_submit", "/contact")},
		{name: "form with other status", line: line("POST /contact", 302), reason: SkipMethod},

		// The default rule.
		{name: "root", line: line("GET /", 200), want: ev("pageview", "/")},
		{name: "html", line: line("GET /about.html", 200), want: ev("pageview", "/about.html")},
		{name: "upper-case php", line: line("GET /INDEX.PHP", 200), want: ev("pageview", "/INDEX.PHP")},
		{name: "jsp with session", line: line("GET /a.jsp;jsessionid=1", 200), want: ev("pageview", "/a.jsp;jsessionid=1")},
		{name: "not modified", line: line("GET /", 304), want: ev("pageview", "/")},
		{name: "redirect", line: line("GET /old", 301), reason: SkipStatus},
		{name: "server error", line: line("GET /", 500), reason: SkipStatus},
		{name: "css", line: line("GET /static/app.css", 200), reason: SkipAsset},
		{name: "js with query", line: line("GET /app.js?v=1.2", 200), reason: SkipAsset},
		{name: "favicon", line: line("GET /favicon.ico", 200), reason: SkipAsset},
		{name: "robots", line: line("GET /robots.txt", 200), reason: SkipAsset},
		{name: "dot file", line: line("GET /.env", 404), reason: SkipStatus},
		{name: "api", line: line("GET /api/cart", 200), reason: SkipPath},
		{name: "well-known", line: line("GET /.well-known/security.txt", 200), reason: SkipPath},
		{name: "health", line: line("GET /healthz", 200), reason: SkipPath},
		{name: "apiary is a page", line: line("GET /apiary", 200), want: ev("pageview", "/apiary")},
		{name: "HEAD", line: line("HEAD /", 200), reason: SkipMethod},
		{name: "OPTIONS", line: line("OPTIONS /", 204), reason: SkipMethod},
		{name: "POST", line: line("POST /search", 200), reason: SkipMethod},
	})

	// A custom default rule, and a disabled one.
	s.DefaultRule = DefaultRule{Type: "impression", Status: []string{"2xx"}, Extensions: []string{"*"}, SkipPaths: []string{}}
	runCases(t, mustCompile(t, s), []parseCase{
		{name: "any extension", line: line("GET /banner.png", 200), want: ev("impression", "/banner.png")},
		{name: "no skip paths", line: line("GET /api/x", 200), want: ev("impression", "/api/x")},
		{name: "304 not listed", line: line("GET /", 304), reason: SkipStatus},
	})
	s.DefaultRule = DefaultRule{Type: "pageview", Extensions: []string{"*"}, SkipPaths: []string{"/shop/", "/x", "/xy/z"}}
	runCases(t, mustCompile(t, s), []parseCase{
		{name: "below a prefix with a slash", line: line("GET /shop/cart", 200), reason: SkipPath},
		{name: "a prefix with a slash itself", line: line("GET /shop", 200), want: ev("pageview", "/shop")},
		{name: "prefixes sharing a first letter", line: line("GET /xy/z/1", 200), reason: SkipPath},
		{name: "a longer first segment", line: line("GET /xy", 200), want: ev("pageview", "/xy")},
		{name: "root is no prefix's", line: line("GET /", 200), want: ev("pageview", "/")},
	})
	s.DefaultRule = DefaultRule{Type: "pageview", SkipPaths: []string{"/"}}
	runCases(t, mustCompile(t, s), []parseCase{
		{name: "skip everything", line: line("GET /about", 200), reason: SkipPath},
	})
	s.DefaultRule = DefaultRule{Type: TypeSkip}
	runCases(t, mustCompile(t, s), []parseCase{
		{name: "disabled default", line: line("GET /", 200), reason: SkipDefault},
		{name: "rules still apply", line: line("GET /click", 302), want: ev("click", "/click")},
	})
}

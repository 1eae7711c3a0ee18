package logparse

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// Test helpers shared by the tests, the file test and the benchmarks: a
// generator of realistic access-log lines.

// genTables are the values generated lines draw from.
type genTables struct {
	uas, pages, assets, camps, srcs, meds, refs []string
}

func newGenTables() genTables {
	return genTables{
		uas: []string{
			"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
			"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
			"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
			"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.64 Mobile Safari/537.36",
			"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
		},
		pages:  []string{"/", "/products/shoe", "/products/bag", "/blog/spring-sale", "/about.html", "/search", "/cart"},
		assets: []string{"/static/app.css", "/static/app.js", "/img/logo.png", "/favicon.ico", "/robots.txt"},
		camps:  []string{"spring_sale", "summer_launch", "retarget_q2", "brand", "newsletter_42", "black%20friday"},
		srcs:   []string{"google", "facebook", "newsletter", "bing", "tiktok"},
		meds:   []string{"cpc", "email", "social", "display"},
		refs:   []string{"-", "https://www.google.com/", "https://www.example.com/products/shoe", "android-app://com.google.android.gm/"},
	}
}

// gen generates realistic access-log lines, deterministically from a seed.
type gen struct {
	rng *rand.Rand
	t   genTables
}

func newGen(seed uint64) *gen { return &gen{rng: rand.New(rand.NewPCG(seed, 7)), t: newGenTables()} }

func (g *gen) pick(list []string) string { return list[g.rng.IntN(len(list))] }

// genKind is what a generated line is expected to become.
type genKind int

const (
	genPageview genKind = iota
	genUTMPage
	genClick
	genConversion
	genAsset
	genNotFound
	genHead
	numGenKinds
)

// genTime is the time of generated line i: several lines per second, as
// in a busy log, from 2024-03-10 13:55 +01:00.
func genTime(i int) time.Time {
	return time.Date(2024, 3, 10, 13, 55, 0, 0, time.FixedZone("", 3600)).Add(time.Duration(i) * 7 * time.Millisecond)
}

// genRequest returns a request line and status of the given kind.
func (g *gen) request(k genKind) (req string, status int) {
	rng := g.rng
	utm := func() string {
		return fmt.Sprintf("utm_campaign=%s&utm_source=%s&utm_medium=%s",
			g.pick(g.t.camps), g.pick(g.t.srcs), g.pick(g.t.meds))
	}
	switch k {
	case genPageview:
		return "GET " + g.pick(g.t.pages) + " HTTP/1.1", []int{200, 200, 200, 304}[rng.IntN(4)]
	case genUTMPage:
		return "GET " + g.pick(g.t.pages) + "?" + utm() + " HTTP/2.0", 200
	case genClick:
		return fmt.Sprintf("GET /click?ad=%d&%s HTTP/1.1", rng.IntN(1000), utm()), 302
	case genConversion:
		return fmt.Sprintf("GET /checkout/thanks?total=%d.%02d&%s HTTP/1.1", rng.IntN(300), rng.IntN(100), utm()), 200
	case genAsset:
		return "GET " + g.pick(g.t.assets) + " HTTP/1.1", 200
	case genNotFound:
		return "GET /wp-login.php HTTP/1.1", 404
	default:
		return "HEAD / HTTP/1.1", 200
	}
}

// genIsEvent reports whether a kind maps to an event under testRules.
func genIsEvent(k genKind) bool { return k <= genConversion }

// genPickKind draws a kind with a realistic mix: mostly pages and assets.
func (g *gen) kind() genKind {
	switch n := g.rng.IntN(100); {
	case n < 35:
		return genPageview
	case n < 50:
		return genUTMPage
	case n < 58:
		return genClick
	case n < 61:
		return genConversion
	case n < 90:
		return genAsset
	case n < 96:
		return genNotFound
	default:
		return genHead
	}
}

func (g *gen) ip() string {
	rng := g.rng
	if rng.IntN(10) == 0 {
		return fmt.Sprintf("2001:db8:%x::%x", rng.IntN(0xffff), rng.IntN(0xffff))
	}
	return fmt.Sprintf("%d.%d.%d.%d", 1+rng.IntN(222), rng.IntN(256), rng.IntN(256), 1+rng.IntN(254))
}

// genCombined returns a combined-format line of kind k, i lines into the
// log (several lines per second, as in a busy log).
func (g *gen) combined(i int, k genKind) string {
	req, status := g.request(k)
	ts := genTime(i).Format("02/Jan/2006:15:04:05 -0700")
	return fmt.Sprintf(`%s - - [%s] "%s" %d %d "%s" "%s"`, g.ip(), ts, req, status, g.rng.IntN(50000),
		g.pick(g.t.refs), g.pick(g.t.uas))
}

// genNginxFormat is the nginx format of genNginx: the official image's
// "main" format plus host and timing.
const genNginxFormat = `log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                  '$status $body_bytes_sent "$http_referer" '
                  '"$http_user_agent" "$http_x_forwarded_for" host=$host rt=$request_time uct="$upstream_connect_time"';`

func (g *gen) nginx(i int, k genKind) string {
	rng := g.rng
	req, status := g.request(k)
	ts := genTime(i).Format("02/Jan/2006:15:04:05 -0700")
	return fmt.Sprintf(`10.0.%d.%d - - [%s] "%s" %d %d "%s" "%s" "%s, 10.1.0.7" host=www.example.com rt=0.%03d uct="0.001"`,
		rng.IntN(4), 1+rng.IntN(200), ts, req, status, rng.IntN(50000), g.pick(g.t.refs),
		g.pick(g.t.uas), g.ip(), rng.IntN(1000))
}

func (g *gen) json(i int, k genKind) string {
	rng := g.rng
	req, status := g.request(k)
	ts := genTime(i).Format("2006-01-02T15:04:05-07:00")
	ref := g.pick(g.t.refs)
	if ref == "-" {
		ref = ""
	}
	return fmt.Sprintf(`{"time":"%s","remote_addr":"%s","request":"%s","status":"%d","body_bytes_sent":"%d","request_time":"0.%03d","http_referer":"%s","http_user_agent":"%s","http_x_forwarded_for":""}`,
		ts, g.ip(), req, status, rng.IntN(50000), rng.IntN(1000), strings.ReplaceAll(ref, "/", `\/`), g.pick(g.t.uas))
}

// testRules are the rules the generated logs are written for.
func testRules() []Rule {
	return []Rule{
		{Name: "click", Match: "/click", Type: "click"},
		{Name: "thanks", Match: "/checkout/thanks", Type: "conversion", ValueParam: "total"},
	}
}

func mustCompile(tb testing.TB, s Spec) *Parser {
	tb.Helper()
	p, err := Compile(s)
	if err != nil {
		tb.Fatalf("Compile: %v", err)
	}
	return p
}

func specOf(format string) Spec {
	s := DefaultSpec()
	s.Format = format
	s.Rules = testRules()
	return s
}

func f64(v float64) *float64 { return &v }

func ms(t time.Time) event.Time { return event.Time{UnixMillis: t.UnixMilli(), Set: true} }

// checkRaw compares every field of two events.
func checkRaw(t *testing.T, name string, got, want event.Raw) {
	t.Helper()
	num := func(p *float64) string {
		if p == nil {
			return "nil"
		}
		return fmt.Sprint(*p)
	}
	if num(got.Value) != num(want.Value) || num(got.Cost) != num(want.Cost) {
		t.Fatalf("%s: value/cost = %s/%s, want %s/%s", name, num(got.Value), num(got.Cost), num(want.Value), num(want.Cost))
	}
	got.Value, got.Cost, want.Value, want.Cost = nil, nil, nil, nil
	if got != want {
		t.Fatalf("%s:\n got %+v\nwant %+v", name, got, want)
	}
}

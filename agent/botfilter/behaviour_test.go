package botfilter

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

const (
	firefoxUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
	chrome124 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)

var page = &event.BrowserRequest{Page: true}

// fakeClock is a settable clock for Config.Clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestNoScript(t *testing.T) {
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	f := New(Config{Behaviour: Behaviour{NoScript: true}, Clock: clock.now})
	defer f.Close()
	ms := clock.t.UnixMilli()
	f.ScriptFetched("203.0.113.5", chromeUA)
	f.ScriptFetched("2001:db8:1:2::1", chromeUA)
	for _, tc := range []struct {
		name, ua, ip, typ string
		req               *event.BrowserRequest
		want              string
	}{
		{"fetched t.js", chromeUA, "203.0.113.5", "pageview", page, ""},
		{"same /64, other address", chromeUA, "2001:db8:1:2::99", "pageview", page, ""},
		{"other address", chromeUA, "203.0.113.6", "pageview", page, ReasonNoScript},
		{"other user agent", iphoneUA, "203.0.113.5", "pageview", page, ReasonNoScript},
		{"not from a page (a server)", chromeUA, "203.0.113.6", "pageview", &event.BrowserRequest{}, ""},
		{"a click, long after the page loaded", chromeUA, "203.0.113.6", "click", page, ""},
		{"a log line", chromeUA, "203.0.113.6", "pageview", nil, ""},
	} {
		if got := f.CheckRequest(tc.ua, tc.ip, 0, ms, tc.typ, tc.req); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// Remembered for at least one generation, forgotten within two.
	clock.t = clock.t.Add(generationLength)
	if got := f.CheckRequest(chromeUA, "203.0.113.5", 0, ms, "pageview", page); got != "" {
		t.Fatalf("%v after the fetch: %q", generationLength, got)
	}
	clock.t = clock.t.Add(generationLength + time.Second)
	if got := f.CheckRequest(chromeUA, "203.0.113.5", 0, ms, "pageview", page); got != ReasonNoScript {
		t.Fatalf("%v after the fetch: %q, want %q", 2*generationLength+time.Second, got, ReasonNoScript)
	}

	// Off by default: ScriptFetched records nothing, nothing is flagged.
	off := New(Config{})
	off.ScriptFetched("203.0.113.5", chromeUA)
	if got := off.CheckRequest(chromeUA, "203.0.113.9", 0, ms, "pageview", page); got != "" {
		t.Fatalf("no_script off: %q", got)
	}
}

// TestNoScriptFull: a generation that could not remember every fetch
// gives no verdict on clients it does not know.
func TestNoScriptFull(t *testing.T) {
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	f := New(Config{Behaviour: Behaviour{NoScript: true, Slots: 1}, Clock: clock.now})
	defer f.Close()
	f.ScriptFetched("203.0.113.5", chromeUA)
	f.ScriptFetched("203.0.113.6", chromeUA) // refused: full
	if got := f.CheckRequest(chromeUA, "203.0.113.6", 0, 0, "pageview", page); got != "" {
		t.Fatalf("client refused by a full memory: %q, want no verdict", got)
	}
	if s := f.Stats(); s.BehaviourOverflows != 1 {
		t.Fatalf("overflows %d, want 1", s.BehaviourOverflows)
	}
}

func TestClientHints(t *testing.T) {
	f := New(Config{Behaviour: Behaviour{ClientHints: true}})
	const chromeHints = `"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"`
	hints := func(ua, mobile, platform string) *event.BrowserRequest {
		return &event.BrowserRequest{Page: true, SecCHUA: ua, SecCHUAMobile: mobile, SecCHUAPlatform: platform}
	}
	for _, tc := range []struct {
		name, ua string
		req      *event.BrowserRequest
		want     string
	}{
		{"Chrome, its own hints", chrome124, hints(chromeHints, "?0", `"Windows"`), ""},
		{"Edge", chrome124 + " Edg/124.0.0.0", hints(`"Chromium";v="124", "Microsoft Edge";v="124"`, "?0", `"Windows"`), ""},
		{"Android Chrome asking for the desktop site", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
			hints(chromeHints, "?0", `"Android"`), ""},
		{"Android phone", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
			hints(chromeHints, "?1", `"Android"`), ""},
		{"no hints (Firefox, Safari, plain HTTP)", firefoxUA, hints("", "", ""), ""},
		{"Chromium claiming Firefox", firefoxUA, hints(chromeHints, "?0", `"Windows"`), ReasonHints},
		{"another Chrome version", chrome124, hints(`"Chromium";v="120", "Google Chrome";v="120"`, "?0", `"Windows"`), ReasonHints},
		{"mobile hints, desktop user agent", chrome124, hints(chromeHints, "?1", `"Windows"`), ReasonHints},
		{"macOS hints, Windows user agent", chrome124, hints(chromeHints, "?0", `"macOS"`), ReasonHints},
		{"HeadlessChrome brand", chrome124, hints(`"HeadlessChrome";v="124", "Chromium";v="124"`, "?0", `"Linux"`), ReasonHeadless},
	} {
		if got := f.CheckRequest(tc.ua, "", 0, 0, "pageview", tc.req); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// Off by default, but a headless brand is no person's.
	off := New(Config{})
	if got := off.CheckRequest(firefoxUA, "", 0, 0, "pageview", hints(chromeHints, "?0", `"Windows"`)); got != "" {
		t.Fatalf("client_hints off: %q", got)
	}
	if got := off.CheckRequest(chrome124, "", 0, 0, "pageview", hints(`"HeadlessChrome";v="124"`, "", "")); got != ReasonHeadless {
		t.Fatalf("headless brand with client_hints off: %q, want %q", got, ReasonHeadless)
	}
}

func TestZeroTime(t *testing.T) {
	clock := &fakeClock{time.Unix(1_700_000_000, 0)}
	f := New(Config{Behaviour: Behaviour{ZeroTime: ZeroTime{Pageviews: 3, MinGap: time.Second}}, Clock: clock.now})
	defer f.Close()
	t0 := clock.t.UnixMilli()
	// A person: pageviews seconds apart, and clicks in between.
	for i, at := range []int64{0, 4000, 4100, 9000, 15000} {
		typ := "pageview"
		if i == 2 {
			typ = "click"
		}
		if got := f.CheckRequest(chromeUA, "", 1, t0+at, typ, nil); got != "" {
			t.Fatalf("person, event %d: %q", i, got)
		}
	}
	// A crawler: pageviews 200 ms apart; the third in a row is flagged,
	// and so are the next ones while the pace holds.
	for i, want := range []string{"", "", ReasonZeroTime, ReasonZeroTime} {
		if got := f.CheckRequest(chromeUA, "", 2, t0+int64(i)*200, "pageview", page); got != want {
			t.Fatalf("crawler, pageview %d: %q, want %q", i, got, want)
		}
	}
	// A pause resets the streak.
	if got := f.CheckRequest(chromeUA, "", 2, t0+5000, "pageview", page); got != "" {
		t.Fatalf("after a pause: %q", got)
	}
}

// TestBehaviourKeepsNothingPastAMinute: what no_script and zero_time
// remember (keyed hashes of addresses, user agents and visitors) is gone
// within two generations (a minute), even when no event comes to evict
// it, and Close drops it at once.
func TestBehaviourKeepsNothingPastAMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := New(Config{Behaviour: Behaviour{NoScript: true, ZeroTime: ZeroTime{Pageviews: 3}}})
		f.ScriptFetched("203.0.113.5", chromeUA)
		f.CheckRequest(chromeUA, "203.0.113.5", 7, time.Now().UnixMilli(), "pageview", page)
		if s := f.Stats(); s.BehaviourClients != 2 {
			t.Fatalf("remembered %d clients, want 2", s.BehaviourClients)
		}
		time.Sleep(2 * generationLength)
		synctest.Wait()
		if s := f.Stats(); s.BehaviourClients != 0 {
			t.Fatalf("%v later, %d clients still remembered", 2*generationLength, s.BehaviourClients)
		}
		if f.behaviour.scripts.expiry != nil || f.behaviour.visits.expiry != nil {
			t.Fatal("expiry timers still armed with nothing to drop")
		}

		f.ScriptFetched("203.0.113.5", chromeUA)
		f.Close()
		f.Close()
		if s := f.Stats(); s.BehaviourClients != 0 {
			t.Fatalf("after Close, %d clients remembered", s.BehaviourClients)
		}
	})
}

// TestNormalizeUsesRequest checks the event contract's hook: Normalize
// hands the event type and request to a RequestBotFilter.
func TestNormalizeUsesRequest(t *testing.T) {
	f := New(Config{Behaviour: Behaviour{ClientHints: true}})
	now := time.Now()
	ctx := event.Context{Now: now, ClientIP: "203.0.113.5", UserAgent: firefoxUA, Bots: f,
		Request: &event.BrowserRequest{Page: true, SecCHUA: `"Chromium";v="124"`}}
	var e event.Event
	if err := event.Normalize(&event.Raw{Type: "pageview"}, &ctx, &e); err != nil {
		t.Fatal(err)
	}
	if e.Bot != ReasonHints {
		t.Fatalf("Bot %q, want %q", e.Bot, ReasonHints)
	}
	ctx.Request = nil
	if err := event.Normalize(&event.Raw{Type: "pageview"}, &ctx, &e); err != nil {
		t.Fatal(err)
	}
	if e.Bot != "" {
		t.Fatalf("without a request: Bot %q", e.Bot)
	}
}

package agent

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// newAgent starts a stand-in and an agent named name with the given http
// section lines and extra configuration.
func newAgent(t *testing.T, name, httpExtra, extra string) (*standin, *agentProc) {
	t.Helper()
	s := startStandin(t, name)
	state := t.TempDir()
	return s, startAgent(t, name, agentConfig(t, s, name, state, httpExtra, extra), state)
}

// TestImportsAreNotAnonymous: an import rewrites spend or poll results,
// so no import route or webhook takes a request without a token, and none
// takes one a web page could have sent, whatever it carries.
// Attack of issue 9: "anyone can rewrite spend (CPA, ROAS) or poll
// results, even through a visitor's browser".
func TestImportsAreNotAnonymous(t *testing.T) {
	skipShort(t)
	s, a := newAgent(t, "agent-imp", proxyHTTP, "")
	day := time.Now().UTC().Format(time.DateOnly)
	report := []byte("date,campaign,source,cost\n" + day + ",victim,google,99999\n")
	polls := []byte("date,campaign,poll,answer,votes\n" + day + ",victim,launch,no,100000\n")
	hook := []byte(`[{"event":"open","id":"forged-1","email":"x@example.org","timestamp":` + fmt.Sprint(time.Now().Unix()) + `,"campaign":"victim"}]`)
	b := during(t, a, "", func() error {
		for _, r := range []struct {
			path string
			body []byte
			hdr  []string
		}{
			{"/v1/import/cost", report, []string{"Content-Type", "text/csv"}},
			{"/v1/import/cost", report, []string{"Content-Type", "text/plain;charset=UTF-8", "Origin", "https://evil.example"}},
			{"/v1/import/cost", report, nil},
			{"/v1/import/polls", polls, []string{"Content-Type", "text/csv"}},
			{"/v1/import/polls", polls, []string{"Content-Type", "text/plain"}},
			{"/v1/webhooks/email", hook, []string{"Content-Type", "application/json"}},
			{"/v1/webhooks/email", hook, []string{"Content-Type", "text/plain", "Origin", "https://evil.example"}},
		} {
			for _, send := range []func(string, []byte, ...string) (int, string, error){attack, post} {
				code, body, err := send(a.url(r.path), r.body, r.hdr...)
				if err != nil {
					return err
				}
				if code < 400 {
					return fmt.Errorf("anonymous %s (%v) answered %d: %s", r.path, r.hdr, code, body)
				}
			}
		}
		return nil
	})
	checkLegitExact(t, a, s, b)
	if got := s.totals()["victim"]; got != (counts{}) {
		t.Fatalf("the attacker's imports arrived: %+v", got)
	}
}

// TestImportsTakeOnlyServerSenders: with a token configured, the
// legitimate import goes through, and the same body from a web page (an
// Origin, text/plain) is refused even with the token.
func TestImportsTakeOnlyServerSenders(t *testing.T) {
	skipShort(t)
	s, a := newAgent(t, "agent-imp2", tokenHTTP, "")
	day := time.Now().UTC().Format(time.DateOnly)
	report := []byte("date,campaign,source,cost\n" + day + ",ours,google,12.5\n")
	b := during(t, a, serverToken, func() error {
		bearer := "Bearer " + serverToken
		for _, hdr := range [][]string{
			{"Authorization", bearer, "Content-Type", "text/plain"},
			{"Authorization", bearer, "Content-Type", "text/csv", "Origin", "https://evil.example"},
			{"Authorization", "Bearer not-the-token-0123456789", "Content-Type", "text/csv"},
		} {
			if code, body, err := attack(a.url("/v1/import/cost"), report, hdr...); err != nil || code < 400 {
				return fmt.Errorf("import %v answered %d %s (%v)", hdr, code, body, err)
			}
		}
		code, body, err := post(a.url("/v1/import/cost"), report, "Authorization", bearer, "Content-Type", "text/csv")
		if err != nil || code != http.StatusAccepted {
			return fmt.Errorf("the legitimate import: %d %s (%v)", code, body, err)
		}
		return nil
	})
	checkLegitExact(t, a, s, b)
	if got := s.totals()["ours"]; got.CostMicros != 12_500_000 {
		t.Fatalf("legitimate spend arrived as %d micros, want 12500000", got.CostMicros)
	}
}

// TestBrowsersCannotForgeIdentity: an anonymous client's ip and ua fields
// are ignored: it cannot inflate uniques with made-up addresses, nor pass
// a crawler off as a browser. Attack of issue 9: "Body ip/ua are believed
// from any client, bypassing deny-lists, datacenter and rate checks,
// forging country and inflating uniques".
func TestBrowsersCannotForgeIdentity(t *testing.T) {
	skipShort(t)
	s, a := newAgent(t, "agent-forge", proxyHTTP, "")
	const n = 2000
	b := during(t, a, "", func() error {
		var inflate, bypass bytes.Buffer
		for i := range n {
			fmt.Fprintf(&inflate, `{"type":"pageview","campaign":"inflate","ip":"203.0.%d.%d","ua":%q}`+"\n", i/250, i%250, browserUAs[0])
			fmt.Fprintf(&bypass, `{"type":"click","campaign":"bypass","ua":%q}`+"\n", browserUAs[1])
		}
		if code, body, err := attack(a.url("/v1/events"), inflate.Bytes(), "User-Agent", browserUAs[0]); err != nil || code != 202 {
			return fmt.Errorf("inflate: %d %s %v", code, body, err)
		}
		if code, body, err := attack(a.url("/v1/events"), bypass.Bytes(), "User-Agent", crawlerUA); err != nil || code != 202 {
			return fmt.Errorf("bypass: %d %s %v", code, body, err)
		}
		return nil
	})
	checkLegitExact(t, a, s, b)
	if u := s.uniquesOf("inflate"); u > 5 {
		t.Fatalf("one client with %d made-up addresses counts as %d visitors", n, u)
	}
	if got := s.totals()["inflate"]; got.Events != n {
		t.Fatalf("inflate: %d events, want all %d (counted, with the request's identity)", got.Events, n)
	}
	if got := s.totals()["bypass"]; got.Events != 0 || got.Bots != n {
		t.Fatalf("a crawler claiming a browser's ua: %d events, %d bots; want 0 and %d", got.Events, got.Bots, n)
	}
}

// TestServerSenderIsNotItsHTTPLibrary: the README's first example, a click
// posted with curl by a backend holding a token, counts as a click; the
// same request without a token is a browser's, judged by its user agent.
// Issue 17, point 3.
func TestServerSenderIsNotItsHTTPLibrary(t *testing.T) {
	skipShort(t)
	s, a := newAgent(t, "agent-curl", tokenHTTP, "")
	b := during(t, a, serverToken, func() error {
		click := []byte(`{"type":"click","campaign":"readme","source":"newsletter","medium":"email"}`)
		code, body, err := attack(a.url("/v1/events"), click, "User-Agent", "curl/8.5.0", "Authorization", "Bearer "+serverToken,
			"Content-Type", "application/json")
		if err != nil || code != 202 {
			return fmt.Errorf("server sender: %d %s %v", code, body, err)
		}
		anon := []byte(`{"type":"click","campaign":"anon-curl"}`)
		if code, body, err := attack(a.url("/v1/events"), anon, "User-Agent", "curl/8.5.0"); err != nil || code != 202 {
			return fmt.Errorf("browser: %d %s %v", code, body, err)
		}
		return nil
	})
	checkLegitExact(t, a, s, b)
	if got := s.totals()["readme"]; got.Events != 1 || got.Bots != 0 {
		t.Fatalf("the README's click: %+v, want 1 event and no bot", got)
	}
	if got := s.totals()["anon-curl"]; got.Events != 0 || got.Bots != 1 {
		t.Fatalf("curl without a token: %+v, want 1 bot", got)
	}
}

// TestDimensionsAreBounded: one body of 20,000 events with free-form
// devices and made-up countries makes a bounded number of series, and
// every event still counts. Attack of issue 9: "device is free-form (one
// 1 MB POST made 20,000 series); country is unchecked".
func TestDimensionsAreBounded(t *testing.T) {
	skipShort(t)
	s, a := newAgent(t, "agent-dims", proxyHTTP, "")
	const n = 20_000
	b := during(t, a, "", func() error {
		var body bytes.Buffer
		for i := range n {
			fmt.Fprintf(&body, `{"type":"click","campaign":"dims","device":"device-%d","country":"%c%c"}`+"\n",
				i, 'A'+i%26, 'A'+(i/26)%26)
		}
		code, answer, err := attack(a.url("/v1/events"), body.Bytes(), "User-Agent", browserUAs[0])
		if err != nil || code != 202 {
			return fmt.Errorf("%d %s %v", code, answer, err)
		}
		return nil
	})
	checkLegitExact(t, a, s, b)
	series := s.series("dims")
	devices, countries := map[string]bool{}, map[string]bool{}
	for sr := range series {
		devices[sr.Device], countries[sr.Country] = true, true
	}
	if len(series) > 260 || len(devices) > 1 || len(countries) > 250 {
		t.Fatalf("%d series (%d devices, %d countries) from one body", len(series), len(devices), len(countries))
	}
	if got := s.totals()["dims"]; got.Events != n {
		t.Fatalf("%d events counted, want every one of %d", got.Events, n)
	}
}

// TestSeriesBudget: within the per-dimension limits, a flood of distinct
// campaign × source pairs folds into (other) beyond the per-minute series
// budget; counts stay exact.
func TestSeriesBudget(t *testing.T) {
	skipShort(t)
	s, a := newAgent(t, "agent-budget", proxyHTTP, "cardinality:\n  max_series: 300\n")
	const n = 5000
	b := during(t, a, "", func() error {
		var body bytes.Buffer
		for i := range n {
			fmt.Fprintf(&body, `{"type":"click","campaign":"flood-%d","source":"s-%d"}`+"\n", i%900, i/900)
		}
		code, answer, err := attack(a.url("/v1/events"), body.Bytes(), "User-Agent", browserUAs[0])
		if err != nil || code != 202 {
			return fmt.Errorf("%d %s %v", code, answer, err)
		}
		return nil
	})
	checkLegitExact(t, a, s, b)
	var events uint64
	var flood int
	for camp, c := range s.totals() {
		if strings.HasPrefix(camp, "flood-") || camp == "(other)" {
			events += c.Events
		}
	}
	for sr := range s.series("") {
		if strings.HasPrefix(sr.Campaign, "flood-") {
			flood++
		}
	}
	// The legitimate series and the minute boundary may share the budget.
	if flood > 2*300 {
		t.Fatalf("%d flood series arrived; the budget is 300 a minute", flood)
	}
	if events != n {
		t.Fatalf("%d flood events counted, want %d", events, n)
	}
	if s.series("(other)") == nil || len(s.series("(other)")) == 0 {
		t.Fatal("nothing folded into (other)")
	}
}

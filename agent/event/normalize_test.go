package event

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// TestSplitURLAgreesWithNetURL checks the allocation-free URL scan against
// the standard library on the shapes beacons and logs produce.
func TestSplitURLAgreesWithNetURL(t *testing.T) {
	for _, raw := range []string{
		"https://shop.example.com/p/1?utm_campaign=spring&utm_source=google&utm_medium=cpc",
		"http://user:pw@shop.example.com:8080/p?utm_source=a%20b&utm_medium=x+y#frag?utm_campaign=no",
		"/landing?utm_campaign=c1&utm_campaign=c2",
		"https://example.org",
		"https://example.org/?",
		"https://example.org/path#only-fragment",
		"/p?utm_source=&utm_source=second",
		"/p?utm_medium=%zz&utm_medium=ok",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		host, query := splitURL(raw)
		if host != u.Host || query != u.RawQuery {
			t.Fatalf("%s: splitURL = (%q, %q), net/url = (%q, %q)", raw, host, query, u.Host, u.RawQuery)
		}
		var c, s, m string
		utm(query, &c, &s, &m)
		// net/url's Get returns the first value even when it is empty or
		// badly escaped; ours skips those (an empty UTM value says nothing).
		q, _ := url.ParseQuery(u.RawQuery)
		first := func(k string) string {
			for _, v := range q[k] {
				if v != "" {
					return v
				}
			}
			return ""
		}
		if c != first("utm_campaign") || s != first("utm_source") || m != first("utm_medium") {
			t.Fatalf("%s: utm = (%q, %q, %q), want (%q, %q, %q)", raw, c, s, m, first("utm_campaign"), first("utm_source"), first("utm_medium"))
		}
	}
}

func TestDeviceOf(t *testing.T) {
	for ua, want := range map[string]string{
		"": NoDevice,
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36":               "desktop",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148":             "mobile",
		"Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1":         "tablet",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0.0.0 Mobile Safari/537.36":     "mobile",
		"Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537": "tablet",
	} {
		if got := DeviceOf(ua); got != want {
			t.Fatalf("DeviceOf(%q) = %q, want %q", ua, got, want)
		}
	}
}

func TestRowFieldsSurviveTheJournal(t *testing.T) {
	in := []Event{
		{UnixMillis: 1, Weight: 120_000, Row: RowID("r1"), RowVersion: 99},
		{UnixMillis: 2, HasValue: true, ValueMicros: 5},
		{UnixMillis: 3, Vote: sketch.VoteKey("poll", "yes"), Series: sketch.Series{Type: PollVote}},
	}
	out, err := DecodeEvents(AppendEvents(nil, in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 || out[0].Weight != 120_000 || out[0].Row != RowID("r1") || out[0].RowVersion != 99 ||
		out[1].Row != 0 || !out[1].HasValue || out[1].ValueMicros != 5 || out[1].Vote != "" ||
		out[2].Vote != in[2].Vote || out[2].Series.Type != PollVote {
		t.Fatalf("decoded %+v", out)
	}
	if RowID("r1") == RowID("r2") || RowID("r1")>>62 != 3 {
		t.Fatal("row ids collide or lack their marker bits")
	}
}

func TestPollVotes(t *testing.T) {
	ctx := &Context{Now: time.Unix(1_700_000_000, 0), Region: "eu"}
	var e Event
	err := Normalize(&Raw{Type: PollVote, Poll: "p"}, ctx, &e)
	var ee *Error
	if !errors.As(err, &ee) || ee.Field != "answer" {
		t.Fatalf("a vote without an answer: %v", err)
	}
	if err := Normalize(&Raw{Type: PollVote, Answer: " yes\x1fno ", Poll: "launch"}, ctx, &e); err != nil {
		t.Fatal(err)
	}
	if p, a := sketch.SplitVote(e.Vote); p != "launch" || a != "yes no" {
		t.Fatalf("vote %q: poll %q answer %q", e.Vote, p, a)
	}
	if err := Normalize(&Raw{Type: PollVote, Answer: "yes"}, ctx, &e); err != nil || e.Vote != sketch.VoteKey(NoPoll, "yes") {
		t.Fatalf("vote without a poll: %q, %v", e.Vote, err)
	}
	if err := Normalize(&Raw{Type: "click", Answer: "yes", Poll: "p"}, ctx, &e); err != nil || e.Vote != "" {
		t.Fatalf("a click carries a vote: %q, %v", e.Vote, err)
	}
}

func TestCleanCountry(t *testing.T) {
	for in, want := range map[string]string{"de": "DE", " Fr ": "FR", "US": "US", "ZZ": NoCountry, "QQ": NoCountry,
		"XK": NoCountry, "D": NoCountry, "DEU": NoCountry, "1!": NoCountry, "é": NoCountry, "": NoCountry} {
		if got := CleanCountry(in); got != want {
			t.Errorf("CleanCountry(%q) = %q, want %q", in, got, want)
		}
	}
	if n := len(strings.Fields(countryCodes)); n != 249 {
		t.Fatalf("%d country codes, ISO 3166-1 assigns 249", n)
	}
}

// TestNegativeCostOnlyOnCostEvents: a credit (negative cost) is taken on a
// cost event and refused, with its field named, on any other, where cost
// may only grow (the aggregator stores a series' cost fields only once
// they are not zero); positive cost stays allowed everywhere.
func TestNegativeCostOnlyOnCostEvents(t *testing.T) {
	ctx := &Context{Now: time.Unix(1_700_000_000, 0), Region: "eu"}
	amount := func(v float64) *float64 { return &v }
	var e Event
	if err := Normalize(&Raw{Type: "cost", Campaign: "c", Cost: amount(-2.5)}, ctx, &e); err != nil || e.CostMicros != -2_500_000 {
		t.Fatalf("a credit on a cost event: %d, %v", e.CostMicros, err)
	}
	if err := Normalize(&Raw{Type: "click", Campaign: "c", Cost: amount(0.4)}, ctx, &e); err != nil || e.CostMicros != 400_000 {
		t.Fatalf("a click's cost: %d, %v", e.CostMicros, err)
	}
	err := Normalize(&Raw{Type: "click", Campaign: "c", Cost: amount(-0.4)}, ctx, &e)
	var ee *Error
	if !errors.As(err, &ee) || ee.Field != "cost" || ee.Code != "bad_cost" {
		t.Fatalf("a credit on a click: %v", err)
	}
}

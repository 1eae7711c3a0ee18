package logparse

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

const chromeUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36"

// parseCase is one line and what it must give: an event (want), or an
// error whose Reason is reason.
type parseCase struct {
	name   string
	line   string
	want   event.Raw
	reason string
}

func runCases(t *testing.T, p *Parser, cases []parseCase) {
	t.Helper()
	for _, tc := range cases {
		var r event.Raw
		err := p.Parse([]byte(tc.line), &r)
		if got := Reason(err); got != tc.reason {
			t.Fatalf("%s: Parse = %v (reason %q), want reason %q", tc.name, err, got, tc.reason)
		}
		if tc.reason != "" {
			if r != (event.Raw{}) {
				t.Fatalf("%s: r changed on error: %+v", tc.name, r)
			}
			if strings.HasPrefix(tc.reason, "skip_") != errors.Is(err, ErrSkip) {
				t.Fatalf("%s: errors.Is(%v, ErrSkip) = %v", tc.name, err, errors.Is(err, ErrSkip))
			}
			continue
		}
		checkRaw(t, tc.name, r, tc.want)
	}
}

func TestParseCombined(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi, s int) event.Time {
		return ms(time.Date(y, mo, d, h, mi, s, 0, time.UTC))
	}
	march := utc(2024, 3, 10, 12, 55, 36) // 13:55:36 +0100
	cases := []parseCase{
		{name: "nginx pageview with utm",
			line: `203.0.113.9 - - [10/Mar/2024:13:55:36 +0100] "GET /products/shoe?utm_campaign=spring_sale&utm_source=google&utm_medium=cpc HTTP/1.1" 200 5123 "https://www.google.com/" "` + chromeUA + `"`,
			want: event.Raw{Type: "pageview", TS: march, Campaign: "spring_sale", Source: "google", Medium: "cpc",
				IP: "203.0.113.9", UA: chromeUA, Referrer: "https://www.google.com/",
				URL: "https://www.example.com/products/shoe?utm_campaign=spring_sale&utm_source=google&utm_medium=cpc"}},
		{name: "apache with ident and user",
			line: `192.0.2.1 ident frank [10/Oct/2000:13:55:36 -0700] "GET /index.html HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"`,
			want: event.Raw{Type: "pageview", TS: utc(2000, 10, 10, 20, 55, 36), IP: "192.0.2.1",
				UA: "Mozilla/4.08 [en] (Win98; I ;Nav)", Referrer: "http://www.example.com/start.html",
				URL: "https://www.example.com/index.html"}},
		{name: "apache escaped quotes and backslash",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /search?q=\"red shoes\" HTTP/1.1" 200 10 "-" "Agent \"quoted\" \\ end\\"`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: `Agent "quoted" \ end\`,
				URL: `https://www.example.com/search?q="red shoes"`}},
		{name: "nginx \\x escapes",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /a\x22b HTTP/1.1" 200 10 "-" "curl\x22x \x5C y"`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: `curl"x \ y`,
				URL: `https://www.example.com/a"b`}},
		{name: "placeholders and missing UA",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 304 0 "-" "-"`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", URL: "https://www.example.com/"}},
		{name: "empty UA",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 0 "" ""`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", URL: "https://www.example.com/"}},
		{name: "ipv6 client",
			line: `2001:db8::8a2e:370:7334 - - [10/Mar/2024:13:55:36 +0100] "GET /blog/ HTTP/2.0" 200 512 "-" "` + chromeUA + `"`,
			want: event.Raw{Type: "pageview", TS: march, IP: "2001:db8::8a2e:370:7334", UA: chromeUA,
				URL: "https://www.example.com/blog/"}},
		{name: "url-encoded utm values",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /?utm_campaign=spring%20sale&utm_source=news+letter&utm_medium=e%2Dmail&utm_content=%E2%9C%93&utm_term=a%ZZb HTTP/1.1" 200 1 "-" "x"`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "x", Campaign: "spring sale", Source: "news letter",
				Medium: "e-mail", Content: "✓", Term: "a%ZZb",
				URL: "https://www.example.com/?utm_campaign=spring%20sale&utm_source=news+letter&utm_medium=e%2Dmail&utm_content=%E2%9C%93&utm_term=a%ZZb"}},
		{name: "first utm occurrence wins, encoded key",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /?utm%5Fcampaign=a&utm_campaign=b&&=x&utm_source HTTP/1.1" 200 1 "-" "x"`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "x", Campaign: "a",
				URL: "https://www.example.com/?utm%5Fcampaign=a&utm_campaign=b&&=x&utm_source"}},
		{name: "absolute-form request names its own host",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET http://shop.example.org/landing?utm_campaign=x HTTP/1.1" 200 1 "-" "x"`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "x", Campaign: "x",
				URL: "http://shop.example.org/landing?utm_campaign=x"}},
		{name: "HTTP/0.9 request without protocol, double slashes",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET //a//b/" 200 1 "-" "x"`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "x", URL: "https://www.example.com//a//b/"}},
		{name: "extra fields after the user agent (nginx main format)",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 1 "-" "` + chromeUA + `" "198.51.100.4" rt=0.004`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: chromeUA, URL: "https://www.example.com/"}},
		{name: "CRLF line end",
			line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 1 "-" "x"` + "\r\n",
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "x", URL: "https://www.example.com/"}},
		{name: "zone +0530", line: `192.0.2.1 - - [01/Jan/2024:05:29:59 +0530] "GET / HTTP/1.1" 200 1 "-" "x"`,
			want: event.Raw{Type: "pageview", TS: utc(2023, 12, 31, 23, 59, 59), IP: "192.0.2.1", UA: "x", URL: "https://www.example.com/"}},
		{name: "zone -0100 across new year", line: `192.0.2.1 - - [31/Dec/2023:23:30:00 -0100] "GET / HTTP/1.1" 200 1 "-" "x"`,
			want: event.Raw{Type: "pageview", TS: utc(2024, 1, 1, 0, 30, 0), IP: "192.0.2.1", UA: "x", URL: "https://www.example.com/"}},
		{name: "leap day", line: `192.0.2.1 - - [29/Feb/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"`,
			want: event.Raw{Type: "pageview", TS: utc(2024, 2, 29, 0, 0, 0), IP: "192.0.2.1", UA: "x", URL: "https://www.example.com/"}},
		{name: "click rule", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /click?ad=7&utm_campaign=brand HTTP/1.1" 302 0 "-" "x"`,
			want: event.Raw{Type: "click", TS: march, IP: "192.0.2.1", UA: "x", Campaign: "brand",
				URL: "https://www.example.com/click?ad=7&utm_campaign=brand"}},
		{name: "conversion with value", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /checkout/thanks?total=49.90 HTTP/1.1" 200 0 "-" "x"`,
			want: event.Raw{Type: "conversion", TS: march, IP: "192.0.2.1", UA: "x", Value: f64(49.9),
				URL: "https://www.example.com/checkout/thanks?total=49.90"}},

		// Skips.
		{name: "asset", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /static/app.css?v=3 HTTP/1.1" 200 1 "-" "x"`, reason: SkipAsset},
		{name: "404", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /nope HTTP/1.1" 404 1 "-" "x"`, reason: SkipStatus},
		{name: "HEAD", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "HEAD / HTTP/1.1" 200 0 "-" "x"`, reason: SkipMethod},
		{name: "no request (nginx 400/408)", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "-" 400 0 "-" "-"`, reason: SkipEmpty},
		{name: "OPTIONS *", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "OPTIONS * HTTP/1.1" 200 0 "-" "-"`, reason: SkipMethod},
		{name: "CONNECT", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "CONNECT example.com:443 HTTP/1.1" 400 0 "-" "-"`, reason: SkipMethod},
		{name: "blank line", line: "  \r\n", reason: SkipEmpty},

		// Malformed.
		{name: "garbage", line: `hello world`, reason: CodeNoMatch},
		{name: "truncated", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTT`, reason: CodeNoMatch},
		{name: "no time bracket", line: `192.0.2.1 - - 10/Mar/2024:13:55:36 +0100 "GET / HTTP/1.1" 200 1 "-" "x"`, reason: CodeNoMatch},
		{name: "bad month", line: `192.0.2.1 - - [10/Foo/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 1 "-" "x"`, reason: CodeBadTime},
		{name: "bad day", line: `192.0.2.1 - - [30/Feb/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 1 "-" "x"`, reason: CodeBadTime},
		{name: "bad zone", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +01:00] "GET / HTTP/1.1" 200 1 "-" "x"`, reason: CodeBadTime},
		{name: "bad status", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 2x0 1 "-" "x"`, reason: CodeBadStatus},
		{name: "tls handshake on plain port", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "\x16\x03\x01\x00\xF1\x01\x00\x00\xED\x03\x03" 400 157 "-" "-"`, reason: CodeBadRequest},
		{name: "method only", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET" 400 1 "-" "x"`, reason: CodeBadRequest},
		{name: "lower-case method", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "get / HTTP/1.1" 400 1 "-" "x"`, reason: CodeBadRequest},
		{name: "too long", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /` + strings.Repeat("a", MaxLineBytes) + `" 200 1 "-" "x"`, reason: CodeTooLong},
	}
	s := specOf(FormatCombined)
	s.Site = "www.example.com"
	runCases(t, mustCompile(t, s), cases)
}

func TestParseCommon(t *testing.T) {
	at := ms(time.Date(2000, 10, 10, 20, 55, 36, 0, time.UTC))
	cases := []parseCase{
		{name: "common", line: `127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.html HTTP/1.0" 200 2326`,
			want: event.Raw{Type: "pageview", TS: at, IP: "127.0.0.1", URL: "/apache_pb.html"}},
		{name: "user with a space", line: `127.0.0.1 - Frank Sinatra [10/Oct/2000:13:55:36 -0700] "GET /?utm_source=x HTTP/1.0" 200 -`,
			want: event.Raw{Type: "pageview", TS: at, IP: "127.0.0.1", Source: "x", URL: "/?utm_source=x"}},
		{name: "combined line read as common", line: `127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326 "-" "x"`,
			want: event.Raw{Type: "pageview", TS: at, IP: "127.0.0.1", URL: "/"}},
		{name: "asset", line: `127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326`, reason: SkipAsset},
	}
	runCases(t, mustCompile(t, specOf(FormatCommon)), cases)
}

// TestParseOwnership checks the documented ownership: owned fields survive
// the next line, Detach makes the others survive too.
func TestParseOwnership(t *testing.T) {
	p := mustCompile(t, specOf(FormatCombined))
	buf := []byte(`192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /?utm_campaign=spring%20sale&utm_source=g HTTP/1.1" 200 1 "https://r.example/" "UA one"`)
	var a, b event.Raw
	if err := p.Parse(buf, &a); err != nil {
		t.Fatal(err)
	}
	kept := a
	Detach(&kept)
	line2 := []byte(`198.51.100.2 - - [10/Mar/2024:13:55:37 +0100] "GET /x?utm_campaign=other&utm_source=h HTTP/1.1" 200 1 "-" "UA two"`)
	copy(buf, line2) // the reader reuses its buffer
	if err := p.Parse(buf[:len(line2)], &b); err != nil {
		t.Fatal(err)
	}
	if a.Campaign != "spring sale" || a.Source != "g" {
		t.Fatalf("owned fields changed after the next line: %+v", a)
	}
	if kept.IP != "192.0.2.1" || kept.UA != "UA one" || kept.Referrer != "https://r.example/" ||
		kept.URL != "/?utm_campaign=spring%20sale&utm_source=g" {
		t.Fatalf("detached fields changed: %+v", kept)
	}
}

// TestParseAllocs pins the steady-state allocation count of an event line.
func TestParseAllocs(t *testing.T) {
	p := mustCompile(t, specOf(FormatCombined))
	line := []byte(`203.0.113.9 - - [10/Mar/2024:13:55:36 +0100] "GET /products/shoe?utm_campaign=spring_sale&utm_source=google&utm_medium=cpc HTTP/1.1" 200 5123 "https://www.google.com/" "` + chromeUA + `"`)
	var r event.Raw
	if n := testing.AllocsPerRun(100, func() {
		if err := p.Parse(line, &r); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Parse allocates %v times per line, want 0", n)
	}
}

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errSkipAsset, SkipAsset},
		{&Error{Code: CodeBadTime}, CodeBadTime},
		{errors.New("x"), "other"},
	} {
		if got := Reason(tc.err); got != tc.want {
			t.Fatalf("Reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	seen := map[string]bool{}
	for _, r := range Reasons() {
		if seen[r] || r == "" {
			t.Fatalf("Reasons has %q twice or empty", r)
		}
		seen[r] = true
	}
}

// TestClone runs clones on several goroutines (under -race): they share
// only the immutable compiled spec.
func TestClone(t *testing.T) {
	p := mustCompile(t, specOf(FormatCombined))
	lines := benchLines(500, (*gen).combined)
	done := make(chan int)
	for range 4 {
		c := p.Clone()
		go func() {
			events := 0
			var r event.Raw
			for _, l := range lines {
				if c.Parse(l, &r) == nil {
					events++
				}
			}
			done <- events
		}()
	}
	first := <-done
	for range 3 {
		if n := <-done; n != first || n == 0 {
			t.Fatalf("clones found %d and %d events in the same lines", first, n)
		}
	}
}

package logparse

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

func TestParseNginxFormat(t *testing.T) {
	march := ms(time.Date(2024, 3, 10, 12, 55, 36, 0, time.UTC))
	for _, tc := range []struct {
		name   string
		format string
		cases  []parseCase
	}{
		{name: "the brief's format, bare",
			format: `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for" rt=$request_time`,
			cases: []parseCase{
				{name: "event", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /?utm_medium=email HTTP/1.1" 200 12 "-" "` + chromeUA + `" "-" rt=0.012`,
					want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: chromeUA, Medium: "email", URL: "/?utm_medium=email"}},
				{name: "no rt", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 12 "-" "x" "-"`, reason: CodeNoMatch},
			}},
		{name: "pasted directive over several pieces, host and scheme",
			format: `log_format  main  escape=default '$remote_addr - $remote_user [$time_local] "$request" '
			         '$status $body_bytes_sent "$http_referer" '
			         '"$http_user_agent" $scheme://$host ${upstream_response_time}s';`,
			cases: []parseCase{
				{name: "url from scheme and host", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /p?a=1 HTTP/1.1" 200 12 "-" "x" http://shop.example.com 0.003s`,
					want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "x", URL: "http://shop.example.com/p?a=1"}},
				{name: "spoofed host ignored", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /p HTTP/1.1" 200 12 "-" "x" https://evil/path -s`,
					want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "x", URL: "/p"}},
			}},
		{name: "iso time, method and uri with args",
			format: `$time_iso8601|$remote_addr|$request_method|$uri|$args|$status|$http_user_agent`,
			cases: []parseCase{
				{name: "event", line: `2024-03-10T13:55:36+01:00|192.0.2.1|GET|/landing|utm_campaign=a%20b&x=1|200|Mozilla x`,
					want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "Mozilla x", Campaign: "a b", URL: "/landing?utm_campaign=a%20b&x=1"}},
				{name: "no args", line: `2024-03-10T12:55:36Z|192.0.2.1|GET|/landing|-|200|-`,
					want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", URL: "/landing"}},
				{name: "head", line: `2024-03-10T12:55:36Z|192.0.2.1|HEAD|/landing|-|200|-`, reason: SkipMethod},
				{name: "bad iso", line: `2024-03-10 12:55:36|192.0.2.1|GET|/landing|-|200|-`, reason: CodeBadTime},
				{name: "bad method", line: `2024-03-10T12:55:36Z|192.0.2.1|G T|/landing|-|200|-`, reason: CodeBadRequest},
			}},
		{name: "msec and request_uri, tab separated",
			format: "$msec\t$remote_addr\t$request_method\t$request_uri\t$status\t$http_referer",
			cases: []parseCase{
				{name: "event", line: "1710075336.250\t192.0.2.1\tGET\t/a?utm_source=b\t200\thttps://ref.example/",
					want: event.Raw{Type: "pageview", TS: event.Time{UnixMillis: 1710075336250, Set: true}, IP: "192.0.2.1",
						Source: "b", Referrer: "https://ref.example/", URL: "/a?utm_source=b"}},
				{name: "bad msec", line: "17100a5336.250\t192.0.2.1\tGET\t/a\t200\t-", reason: CodeBadTime},
			}},
		{name: "escape=json format",
			format: `log_format j escape=json '{"t":"$time_local","ip":"$remote_addr","r":"$request","s":$status,"ua":"$http_user_agent"}';`,
			cases: []parseCase{
				{name: "event", line: `{"t":"10/Mar/2024:13:55:36 +0100","ip":"192.0.2.1","r":"GET / HTTP/1.1","s":200,"ua":"A \"b\" \u00e9"}`,
					want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: `A "b" é`, URL: "/"}},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultSpec()
			s.Format = FormatNginx
			s.NginxFormat = tc.format
			runCases(t, mustCompile(t, s), tc.cases)
		})
	}
}

func TestCompileNginxErrors(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{`$remote_addr [$time_local] "$request" $status $`, `column 47 (after "equest\" $status "): $ must be followed by a variable name`},
		{`$remote_addr [$time_local] "$request" ${status`, `column 39 (after "cal] \"$request\" "): ${ without a closing }`},
		{`$remote_addr [$time_local] "$request" ${st-atus}`, "${st-atus} is not a variable name"},
		{`$remote_addr$remote_user [$time_local] "$request" $status`, "$remote_addr is directly followed by $remote_user"},
		{`'$remote_addr [$time_local] "$request" $status`, "unterminated '-quoted string"},
		{`'$remote_addr [$time_local]' junk '"$request" $status'`, `unexpected "junk '\"$request\" $st…": the format pieces must be quoted strings`},
		{`log_format '$remote_addr'`, "a name must come before the format"},
		{`log_format x escape=yaml '$remote_addr'`, "escape=yaml: want default, json or none"},
		{`plain text`, "no $variables"},
		{`$remote_addr "$request" $status`, "no $time_local, $time_iso8601 or $msec"},
		{`$remote_addr [$time_local] $status`, "no $request"},
		{`$remote_addr [$time_local] "$request"`, "no $status"},
		{`''`, "empty format"},
	} {
		s := DefaultSpec()
		s.Format = FormatNginx
		s.NginxFormat = tc.format
		_, err := Compile(s)
		if err == nil || !strings.Contains(err.Error(), "nginx_format: ") || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Compile(%q) = %v, want an error containing %q", tc.format, err, tc.want)
		}
	}
}

func TestClientIP(t *testing.T) {
	const format = `$remote_addr [$time_local] "$request" $status "$http_x_forwarded_for"`
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	for _, tc := range []struct {
		name        string
		trusted     []netip.Prefix
		remote, xff string
		want        string
	}{
		{"no trusted proxies: remote_addr", nil, "10.0.0.1", "203.0.113.1", "10.0.0.1"},
		{"untrusted peer ignores the header", trusted, "198.51.100.7", "203.0.113.1", "198.51.100.7"},
		{"right-most untrusted hop", trusted, "10.0.0.1", "198.51.100.7, 203.0.113.1, 10.1.1.1", "203.0.113.1"},
		{"no header", trusted, "10.0.0.1", "-", "10.0.0.1"},
		{"all hops trusted: the left-most", trusted, "10.0.0.1", "10.0.0.5,10.0.0.6", "10.0.0.5"},
		{"garbage hop ends the walk", trusted, "10.0.0.1", "203.0.113.9, unknown, 10.0.0.2", "10.0.0.2"},
		{"hop with port", trusted, "10.0.0.1", "203.0.113.1:5555", "203.0.113.1"},
		{"ipv6 hop with port", trusted, "10.0.0.1", "[2001:db8::7]:443", "2001:db8::7"},
		{"ipv6 proxy", trusted, "2001:db8:ffff::1", "2001:db8:1::9", "2001:db8:1::9"},
		{"ipv4-mapped proxy", trusted, "::ffff:10.0.0.1", "203.0.113.1", "203.0.113.1"},
		{"remote not an address", trusted, "unix:", "203.0.113.1", "unix:"},
	} {
		s := DefaultSpec()
		s.Format = FormatNginx
		s.NginxFormat = format
		s.TrustedProxies = tc.trusted
		p := mustCompile(t, s)
		var r event.Raw
		line := tc.remote + ` [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 "` + tc.xff + `"`
		if err := p.Parse([]byte(line), &r); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.IP != tc.want {
			t.Fatalf("%s: IP = %q, want %q", tc.name, r.IP, tc.want)
		}
	}
}

func TestTimeParsers(t *testing.T) {
	at := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	for _, tc := range []struct {
		in   string
		want int64 // 0: invalid
	}{
		{"10/Mar/2024:13:55:36 +0100", at("2024-03-10T12:55:36Z")},
		{"10/Mar/2024:13:55:36 -1130", at("2024-03-11T01:25:36Z")},
		{"01/Jan/1970:00:00:00 +0000", 0},
		{"28/Feb/2023:23:59:60 +0000", at("2023-03-01T00:00:00Z")},
		{"29/Feb/2023:00:00:00 +0000", 0},
		{"10/Mar/2024:24:00:00 +0000", 0},
		{"10/mar/2024:13:55:36 +0100", 0},
		{"2024-03-10T13:55:36+01:00", at("2024-03-10T12:55:36Z")},
		{"2024-03-10T13:55:36.5+01:00", at("2024-03-10T12:55:36.5Z")},
		{"2024-03-10T12:55:36.123456Z", at("2024-03-10T12:55:36.123Z")},
		{"2024-03-10 13:55:36+0100", at("2024-03-10T12:55:36Z")},
		{"2024-03-10T13:55:36-05", at("2024-03-10T18:55:36Z")},
		{"2024-03-10T13:55:36", 0},
		{"2024-13-10T13:55:36Z", 0},
		{"2024-03-10T13:55:36.Z", 0},
		{"1710075336.250", 1710075336250},
		{"1710075336.2", 1710075336200},
		{"1710075336", 1710075336000},
		{"1710075336250", 1710075336250},
		{"1710075336.", 1710075336000},
		{"-1710075336", 0},
		{"1e9", 0},
		{"", 0},
	} {
		got, ok := parseAnyTime([]byte(tc.in))
		if tc.in == "01/Jan/1970:00:00:00 +0000" {
			if !ok || got != 0 {
				t.Fatalf("parseAnyTime(%q) = %d, %v; want the epoch", tc.in, got, ok)
			}
			continue
		}
		if ok != (tc.want != 0) || got != tc.want {
			t.Fatalf("parseAnyTime(%q) = %d, %v; want %d", tc.in, got, ok, tc.want)
		}
	}
	// Against the standard library over a spread of dates and zones.
	for sec := int64(-2e9); sec < 4e9; sec += 86400*37 + 3671 {
		for _, off := range []int{0, 3600, -7 * 3600, 5*3600 + 1800, 14 * 3600, -(9*3600 + 30*60)} {
			tm := time.Unix(sec, 0).In(time.FixedZone("", off))
			if tm.Year() < 1000 || tm.Year() > 9999 {
				continue
			}
			for _, layout := range []string{"02/Jan/2006:15:04:05 -0700", "2006-01-02T15:04:05-07:00"} {
				s := tm.Format(layout)
				if got, ok := parseAnyTime([]byte(s)); !ok || got != sec*1000 {
					t.Fatalf("parseAnyTime(%q) = %d, %v; want %d", s, got, ok, sec*1000)
				}
			}
		}
	}
}

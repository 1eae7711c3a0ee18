package logparse

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// fuzzParsers returns parsers covering every code path: the combined preset, an
// nginx format with proxies, host and iso time, and json with rules that
// read parameters.
func fuzzParsers(tb testing.TB) []*Parser {
	rules := []Rule{
		{Match: "/click", Type: "click", ValueParam: "v", CampaignParam: "c"},
		{Regex: `^/t\.gif$`, TypeParam: "e", ValueParam: "v", CostParam: "cost"},
		{Match: "/x/", Type: TypeSkip},
	}
	combined := specOf(FormatCombined)
	combined.Rules = rules
	nginx := DefaultSpec()
	nginx.Format = FormatNginx
	nginx.NginxFormat = genNginxFormat
	nginx.Rules = rules
	nginx.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	iso := DefaultSpec()
	iso.Format = FormatNginx
	iso.NginxFormat = `$time_iso8601|$remote_addr|$request_method|$uri|$args|$status|$scheme|$http_host`
	json := specOf(FormatJSON)
	json.Rules = rules
	common := specOf(FormatCommon)
	common.Rules = rules
	return []*Parser{mustCompile(tb, combined), mustCompile(tb, nginx), mustCompile(tb, iso), mustCompile(tb, json), mustCompile(tb, common)}
}

// fuzzHasher stands in for the privacy hasher in Normalize.
type fuzzHasher struct{}

func (fuzzHasher) Visitor(int64, string) uint64 { return 1 }
func (fuzzHasher) Anonymous(_ int64, ip, ua, site string) uint64 {
	return uint64(len(ip) + len(ua) + len(site))
}

// FuzzParse checks that no input makes Parse panic or break its contract:
// an event is complete, every error has a known reason, and the event
// passes through event.Normalize (the next step of the agent) safely.
//
//	go test -run='^$' -fuzz='^FuzzParse$' -fuzztime=30s ./agent/logparse/
func FuzzParse(f *testing.F) {
	g := newGen(1)
	for i := range 12 {
		k := genKind(i % int(numGenKinds))
		f.Add([]byte(g.combined(i, k)))
		f.Add([]byte(g.nginx(i, k)))
		f.Add([]byte(g.json(i, k)))
	}
	for _, s := range []string{
		`192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /search?q=\"red shoes\" HTTP/1.1" 200 10 "-" "Agent \"quoted\" \\ end\\"`,
		`192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /a\x22b HTTP/1.1" 200 10 "-" "curl\x22x \x5C y \u00e9"`,
		`192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET http://h.example/t.gif?e=cost&cost=1e3&v=NaN HTTP/1.1" 200 1 "-" "x"`,
		`10.0.0.1 - - [10/Mar/2024:13:55:36 +0100] "GET /click?c=%E2%9C%93&v=2 HTTP/1.1" 302 1 "-" "x" "[2001:db8::1]:80, unknown" host=a.example rt=0.1 uct="-"`,
		`2024-03-10T13:55:36.123+01:00|::1|GET|/x/y|utm_source=a%2|200|https|h.example:8080`,
		`{"time":"10/Mar/2024:13:55:36 +0100","request":"GET /t.gif?e=click HTTP/1.1","status":200,"x":[{"]":"}"}],"ua":"\ud800"}`,
		`{"ts":1710075336250,"uri":"/?utm_campaign=a","args":"b","status":"200","method":"GET"}`,
		`"-" 400`, `[]`, `{`, `{"a":`, "\x00\xff", "",
	} {
		f.Add([]byte(s))
	}
	parsers := fuzzParsers(f)
	reasons := Reasons()
	ctx := event.Context{Now: time.UnixMilli(1710075336000), Region: "test", Hasher: fuzzHasher{}, TrustBody: true}
	f.Fuzz(func(t *testing.T, line []byte) {
		for i, p := range parsers {
			var r event.Raw
			err := p.Parse(line, &r)
			if err != nil {
				reason := Reason(err)
				if !slices.Contains(reasons, reason) {
					t.Fatalf("parser %d: unknown reason %q for %v", i, reason, err)
				}
				if errors.Is(err, ErrSkip) != strings.HasPrefix(reason, "skip_") {
					t.Fatalf("parser %d: %v: skip and reason disagree", i, err)
				}
				continue
			}
			if _, ok := canonicalType(r.Type); !ok || !r.TS.Set {
				t.Fatalf("parser %d: incomplete event %+v", i, r)
			}
			for _, v := range []*float64{r.Value, r.Cost} {
				if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
					t.Fatalf("parser %d: non-finite amount in %+v", i, r)
				}
			}
			Detach(&r)
			var e event.Event
			_ = event.Normalize(&r, &ctx, &e)
		}
	})
}

// FuzzCompile checks that no nginx format makes Compile panic, and that a
// compiled format parses lines without panicking.
//
//	go test -run='^$' -fuzz='^FuzzCompile$' -fuzztime=30s ./agent/logparse/
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		combinedFormat, commonFormat, genNginxFormat,
		`$time_iso8601|$remote_addr|$request_method|$uri|$args|$status`,
		`log_format j escape=json '{"t":"$time_local","r":"$request","s":$status}';`,
		`${msec} "${request}" $status`, `'$a' "$b"`, `$`, `${`, `'`,
	} {
		f.Add(s, `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 1 "-" "x"`)
	}
	f.Fuzz(func(t *testing.T, format, line string) {
		s := DefaultSpec()
		s.Format = FormatNginx
		s.NginxFormat = format
		p, err := Compile(s)
		if err != nil {
			return
		}
		var r event.Raw
		for _, l := range []string{line, format} {
			if err := p.Parse([]byte(l), &r); err != nil && Reason(err) == "other" {
				t.Fatalf("Parse(%q) with format %q: %v", l, format, err)
			}
		}
	})
}

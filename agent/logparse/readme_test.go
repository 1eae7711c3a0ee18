package logparse

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/tally-edge/tally/agent/event"
	"gopkg.in/yaml.v3"
)

// logSource is how the agent configuration is expected to hold a source:
// its own keys next to the Spec, inline.
type logSource struct {
	Paths []string `yaml:"paths"`
	Spec  `yaml:",inline"`
}

// TestREADMEConfig decodes the README's YAML example strictly, as the agent
// does, and checks that every source compiles and behaves as its comments
// say: the integrator wires the configuration from that example.
func TestREADMEConfig(t *testing.T) {
	md, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(md), "```yaml\nsources:\n")
	if !ok {
		t.Fatal("README.md has no ```yaml block starting with sources:")
	}
	block, _, _ := strings.Cut(rest, "```")
	var cfg struct {
		Sources struct {
			Logs []logSource `yaml:"logs"`
		} `yaml:"sources"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte("sources:\n" + block)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("decode README example: %v", err)
	}
	logs := cfg.Sources.Logs
	if len(logs) != 3 {
		t.Fatalf("%d sources, want 3", len(logs))
	}
	var parsers []*Parser
	for i, src := range logs {
		if err := src.Spec.Validate(); err != nil {
			t.Fatalf("sources.logs[%d]: %v", i, err)
		}
		parsers = append(parsers, mustCompile(t, src.Spec))
	}
	if got := logs[0].TrustedProxies; len(got) != 2 || got[1].String() != "2001:db8:ffff::/48" {
		t.Fatalf("trusted_proxies decoded as %v", got)
	}
	if got := logs[0].DefaultRule.Status; len(got) != 2 || got[1] != "304" {
		t.Fatalf("status decoded as %q", got)
	}
	if logs[1].DefaultRule.SkipPaths != nil || logs[2].DefaultRule.SkipPaths == nil {
		t.Fatal("absent skip_paths must decode as nil and [] as empty")
	}

	for _, tc := range []struct {
		src          int
		line, reason string
		typ, ip, url string
	}{
		{src: 0, line: `10.1.2.3 - - [10/Mar/2024:13:55:36 +0100] "GET /click?cid=spring&value=0.5 HTTP/1.1" 302 0 "-" "ua" "203.0.113.7, 10.0.0.9"`,
			typ: "click", ip: "203.0.113.7", url: "https://www.example.com/click?cid=spring&value=0.5"},
		{src: 0, line: `10.1.2.3 - - [10/Mar/2024:13:55:36 +0100] "GET /search/suggest?q=a HTTP/1.1" 200 0 "-" "ua" "203.0.113.7"`,
			reason: SkipPath},
		{src: 0, line: `10.1.2.3 - - [10/Mar/2024:13:55:36 +0100] "GET /api/x HTTP/1.1" 200 0 "-" "ua" "203.0.113.7"`,
			reason: SkipPath},
		{src: 0, line: `10.1.2.3 - - [10/Mar/2024:13:55:36 +0100] "GET /blog/ HTTP/1.1" 200 0 "-" "ua" "203.0.113.7"`,
			typ: "pageview", ip: "203.0.113.7", url: "https://www.example.com/blog/"},
		{src: 0, line: `10.1.2.3 - - [10/Mar/2024:13:55:36 +0100] "GET /checkout/thanks?total=20 HTTP/1.1" 302 0 "-" "ua" "-"`,
			reason: SkipStatus},
		{src: 1, line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET /api/x HTTP/1.1" 200 0 "-" "ua"`, reason: SkipPath},
		{src: 2, line: `{"request_ts":"2024-03-10T12:55:36Z","request":"GET /api/x.json HTTP/1.1","status":200,"agent":"ua"}`,
			typ: "pageview", url: "/api/x.json"},
	} {
		var r event.Raw
		err := parsers[tc.src].Parse([]byte(tc.line), &r)
		if Reason(err) != tc.reason || err == nil && (r.Type != tc.typ || r.IP != tc.ip || r.URL != tc.url) {
			t.Fatalf("source %d, %s: %v %+v", tc.src, tc.line, err, r)
		}
	}
}

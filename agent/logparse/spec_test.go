package logparse

import (
	"net/netip"
	"strings"
	"testing"
)

func TestSpecValidate(t *testing.T) {
	if err := DefaultSpec().Validate(); err != nil {
		t.Fatalf("DefaultSpec: %v", err)
	}
	xff := `$remote_addr [$time_local] "$request" $status "$http_x_forwarded_for"`
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		want []string // every one must appear in the error
	}{
		{"no format", func(s *Spec) { s.Format = "" }, []string{"format: required (combined, common, nginx or json)"}},
		{"unknown format", func(s *Spec) { s.Format = "apache" }, []string{`format "apache": want combined, common, nginx or json`}},
		{"nginx without format", func(s *Spec) { s.Format = FormatNginx }, []string{"nginx_format: required with format nginx"}},
		{"nginx_format on combined", func(s *Spec) { s.NginxFormat = xff }, []string{`nginx_format: only used with format nginx (format is "combined")`}},
		{"json_fields on combined", func(s *Spec) { s.JSONFields = map[string]string{"time": "t"} }, []string{"json_fields: only used with format json"}},
		{"site with scheme", func(s *Spec) { s.Site = "https://x.example" }, []string{`site "https://x.example": want a host name`}},
		{"scheme", func(s *Spec) { s.Scheme = "ftp" }, []string{`scheme "ftp": want http or https`}},
		{"zero prefix", func(s *Spec) {
			s.Format, s.NginxFormat, s.TrustedProxies = FormatNginx, xff, []netip.Prefix{{}}
		}, []string{"trusted_proxies[0]: not a CIDR"}},
		{"proxies without xff", func(s *Spec) { s.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} },
			[]string{"trusted_proxies: the format logs no $http_x_forwarded_for"}},
		{"rule problems, all reported", func(s *Spec) {
			s.Rules = []Rule{
				{Name: "both", Match: "/a", Regex: "^/a", Type: "click"},
				{Match: "click", Type: "clik"},
				{Name: "re", Regex: "(", Type: "click", Methods: []string{"G ET"}, Status: []string{"2yy"}},
				{Match: "/a"},
				{Match: "/spend", Type: "cost"},
				{Match: "/x", Type: TypeSkip, ValueParam: "v", TypeParam: "e"},
				{Match: "/y", Type: "click", ValueParam: "a=b"},
			}
		}, []string{
			`rules[0] "both": match and regex: set one, not both`,
			`rules[1]: match "click": must start with /`,
			`rules[1]: type "clik": want skip or one of impression, click,`,
			`rules[2] "re": regex "(": error parsing regexp`,
			`rules[2] "re": methods[0] "G ET": not an HTTP method`,
			`rules[2] "re": status[0] "2yy": want a class like 2xx or a code like 304`,
			`rules[3]: type: required (an event type or skip) unless type_param is set`,
			`rules[4]: cost_param: required for a cost rule`,
			`rules[5]: type_param: not with type skip`,
			`rules[5]: value_param: a skip rule produces no event to fill`,
			`rules[6]: value_param "a=b": not a query parameter name`,
		}},
		{"default rule problems", func(s *Spec) {
			s.DefaultRule = DefaultRule{Type: "bogus", Status: []string{"999"}, Extensions: []string{"css"}, SkipPaths: []string{"api"}}
		}, []string{
			`default_rule.type "bogus": want skip or one of`,
			`default_rule.status[0] "999": want a class like 2xx or a code like 304`,
			`default_rule.extensions[0] "css": want "", "*" or a dot and a suffix like .html`,
			`default_rule.skip_paths[0] "api": must start with /`,
		}},
		{"default cost", func(s *Spec) { s.DefaultRule.Type = "cost" }, []string{"default_rule.type cost: the default rule has no cost amount"}},
	} {
		s := DefaultSpec()
		tc.edit(&s)
		err := s.Validate()
		if err == nil {
			t.Fatalf("%s: Validate = nil", tc.name)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: Validate =\n%v\nwant it to contain %q", tc.name, err, w)
			}
		}
		if got, want := strings.Count(err.Error(), "\n")+1, len(tc.want); got != want {
			t.Fatalf("%s: %d problems reported, want %d:\n%v", tc.name, got, want, err)
		}
		if _, cerr := Compile(s); cerr == nil || cerr.Error() != err.Error() {
			t.Fatalf("%s: Compile = %v, want the Validate error", tc.name, cerr)
		}
	}
}

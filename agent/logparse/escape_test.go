package logparse

import (
	"strings"
	"testing"
)

func TestUnescapeLog(t *testing.T) {
	p := mustCompile(t, DefaultSpec())
	for _, tc := range []struct{ in, want string }{
		{`plain`, `plain`},
		{`a\x22b\x5Cc\x7f`, "a\"b\\c\x7f"},
		{`\"q\" \\ \/ \n\t\r`, "\"q\" \\ / \n\t\r"},
		{`\u00e9\u20AC \ud800`, "é€ \uFFFD"},
		{`\xZZ \x4 \q \u12 end\`, `\xZZ \x4 \q \u12 end\`},
	} {
		if got := string(p.unescapeLog([]byte(tc.in))); got != tc.want {
			t.Fatalf("unescapeLog(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestValidNumber(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"0", true}, {"-0", true}, {"200", true}, {"1.5", true}, {"1e9", true}, {"1.5E-3", true}, {"-12.25e+2", true},
		{"", false}, {"-", false}, {"01", false}, {"1.", false}, {".5", false}, {"1e", false}, {"1e+", false}, {"0x10", false}, {"NaN", false},
	} {
		if got := validNumber([]byte(tc.in)); got != tc.ok {
			t.Fatalf("validNumber(%q) = %v", tc.in, got)
		}
	}
}

func TestErrorText(t *testing.T) {
	e := newError(CodeBadTime, "cannot read time", []byte(strings.Repeat("x", 100)))
	if got := e.Error(); !strings.HasPrefix(got, `logparse: bad_time: cannot read time "xxxx`) || !strings.HasSuffix(got, `…"`) ||
		len(got) > 120 || e.Reason() != CodeBadTime {
		t.Fatalf("Error() = %q", got)
	}
	if got := errSkipAsset.Error(); got != "logparse: no event (skip_asset)" {
		t.Fatalf("skip Error() = %q", got)
	}
}

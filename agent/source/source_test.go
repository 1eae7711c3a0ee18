package source

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestClientIP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
		header  string
		xff     string
		want    string
	}{
		{"untrusted peer ignores header", nil, "", "198.51.100.7", "192.0.2.10"},
		{"trusted peer uses right-most untrusted hop", []string{"192.0.2.0/24", "10.0.0.0/8"}, "", "198.51.100.7, 203.0.113.1, 10.1.1.1", "203.0.113.1"},
		{"all hops trusted: the left-most", []string{"192.0.2.0/24", "10.0.0.0/8"}, "", "10.9.9.9, 10.1.1.1", "10.9.9.9"},
		{"garbage hop stops the walk", []string{"192.0.2.0/24"}, "", "198.51.100.7, not-an-ip", "192.0.2.10"},
		{"other header", []string{"192.0.2.0/24"}, "X-Real-IP", "203.0.113.9", "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Proxies{Header: tc.header}
			for _, s := range tc.trusted {
				p.Trusted = append(p.Trusted, netip.MustParsePrefix(s))
			}
			req := httptest.NewRequest(http.MethodPost, "/", nil)
			req.RemoteAddr = "192.0.2.10:1234"
			h := tc.header
			if h == "" {
				h = DefaultProxyHeader
			}
			req.Header.Set(h, tc.xff)
			if got := p.ClientIP(req); got != tc.want {
				t.Fatalf("ClientIP = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRequestContexts: who sent a request decides whose address and user
// agent an event gets and whether its own fields are believed.
func TestRequestContexts(t *testing.T) {
	env := &Env{Region: "eu", Proxies: Proxies{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	req := func(peer string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = peer + ":1000"
		r.Header.Set("User-Agent", "curl/8")
		r.Header.Set("X-Forwarded-For", "203.0.113.5")
		return r
	}
	now := time.Now()
	c := env.Request(req("192.0.2.1"), now, Browser)
	if c.ClientIP != "192.0.2.1" || c.UserAgent != "curl/8" || c.TrustBody || c.Region != "eu" {
		t.Fatalf("browser context %+v", c)
	}
	c = env.Request(req("10.1.1.1"), now, Browser)
	if c.ClientIP != "203.0.113.5" || c.UserAgent != "curl/8" || !c.TrustBody {
		t.Fatalf("trusted proxy context %+v", c)
	}
	c = env.Request(req("192.0.2.1"), now, Server)
	if c.ClientIP != "" || c.UserAgent != "" || !c.TrustBody {
		t.Fatalf("server sender context %+v", c)
	}
	if c := env.Context(now); !c.TrustBody || c.Counters != &env.Counters || !c.Now.Equal(now) {
		t.Fatalf("trusted input context %+v", c)
	}
}

package browser

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// scriptBots is a bot filter that records t.js fetches, as botfilter's
// no_script signal does.
type scriptBots struct {
	botFunc
	fetched []string
}

func (s *scriptBots) ScriptFetched(ip, ua string) { s.fetched = append(s.fetched, ip+" "+ua) }

// TestScriptTellsTheBotFilter: every GET of t.js (200 or 304) tells a bot
// filter that records fetches who fetched it; HEAD does not.
func TestScriptTellsTheBotFilter(t *testing.T) {
	bots := &scriptBots{botFunc: func(string, string) string { return "" }}
	h, _ := newHandlers(t, DefaultConfig(), &fakeSink{}, bots)
	for _, tc := range []struct {
		method, etag string
		code         int
	}{{http.MethodGet, "", 200}, {http.MethodGet, h.script.etag, 304}, {http.MethodHead, "", 200}} {
		req := httptest.NewRequest(tc.method, "/v1/t.js", nil)
		req.RemoteAddr = "203.0.113.5:4711"
		req.Header.Set("User-Agent", "Mozilla/5.0 test")
		if tc.etag != "" {
			req.Header.Set("If-None-Match", tc.etag)
		}
		w := httptest.NewRecorder()
		h.Script().ServeHTTP(w, req)
		if w.Code != tc.code {
			t.Fatalf("%s: code %d, want %d", tc.method, w.Code, tc.code)
		}
	}
	if len(bots.fetched) != 2 || bots.fetched[0] != "203.0.113.5 Mozilla/5.0 test" {
		t.Fatalf("recorded fetches %q, want the two GETs from 203.0.113.5", bots.fetched)
	}
}

package ingest

import (
	"encoding/json"
	"net/http"
	"testing"
)

// FuzzEvents: no body makes POST /v1/events panic or answer outside the
// contract, from a browser or a server sender, and a 202 accounts for
// every event it saw.
//
//	go test -run='^$' -fuzz='^FuzzEvents$' -fuzztime=30s ./agent/ingest/
func FuzzEvents(f *testing.F) {
	for _, s := range []string{
		`{"type":"click","campaign":"spring","ua":"Mozilla/5.0","ip":"203.0.113.9","country":"de","device":"Mobile"}`,
		`[{"type":"pageview","url":"https://s.example/?utm_campaign=a%20b&utm_source=x"},{"type":"conversion","value":1e300}]`,
		"{\"type\":\"poll_vote\",\"poll\":\"p\",\"answer\":\"a\\u001fb\"}\n{bad\n{\"type\":\"cost\",\"cost\":-1}\n",
		`{"type":"click","ts":"2024-13-45T99:00:00Z"}`, `{"type":"click","ts":1e30}`, `[`, `]`, "\xef\xbb\xbf{}", "",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	sink := &memSink{}
	h, _ := newHandler(f, Config{MaxBodyBytes: 1 << 16, MaxEvents: 200}, sink)
	f.Fuzz(func(t *testing.T, body []byte, server bool) {
		sink.events = sink.events[:0]
		var hdr []string
		if server {
			hdr = asServer
		}
		w := post(h, string(body), hdr...)
		switch w.Code {
		case http.StatusAccepted:
			var r Response
			if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
				t.Fatalf("202 with a body that is not a Response: %v", err)
			}
			if r.Accepted != len(sink.events) || r.Accepted < 0 || r.Rejected < 0 {
				t.Fatalf("answer %+v, sink got %d", r, len(sink.events))
			}
			for _, e := range sink.events {
				if len(e.Series.Campaign) > 128 || len(e.Series.Country) != 2 || e.Series.Type == "" {
					t.Fatalf("event escaped normalisation: %+v", e.Series)
				}
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if len(sink.events) != 0 {
				t.Fatalf("%d with events accepted", w.Code)
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}

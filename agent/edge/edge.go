// Package edge is the agent's HTTP perimeter, shared by every route that
// takes a body: who the sender is (a browser, or a server sender holding
// a token), how many body bytes all requests together may hold in memory,
// and which routes only server senders may call.
//
// The agent faces two kinds of client. Browsers load t.js and the pixel
// and post beacons to /v1/events; they are anonymous, so what they say
// about themselves (an ip or ua field) is not believed. Server senders —
// a site's backend posting events, an ad tool posting a spend report, an
// email provider calling a webhook — authenticate with a bearer token
// (http.server_tokens); imports and webhooks take nothing else.
package edge

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/tally-edge/tally/agent/source"
)

// MinTokenLength is the shortest token accepted in the configuration.
const MinTokenLength = 16

// Tokens are the bearer tokens of server senders. The zero value (and
// nil) holds none. Safe for concurrent use.
type Tokens struct {
	sums [][sha256.Size]byte
}

// NewTokens returns the set of tokens.
func NewTokens(tokens ...string) *Tokens {
	t := &Tokens{}
	for _, s := range tokens {
		if s != "" {
			t.sums = append(t.sums, sha256.Sum256([]byte(s)))
		}
	}
	return t
}

// Empty reports whether no token is configured.
func (t *Tokens) Empty() bool { return t == nil || len(t.sums) == 0 }

// Match reports, in time independent of where the tokens differ, whether
// got is one of the tokens.
func (t *Tokens) Match(got string) bool {
	if t.Empty() || got == "" {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	ok := 0
	for i := range t.sums {
		ok |= subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
	}
	return ok == 1
}

// Bearer returns the token of an "Authorization: Bearer TOKEN" header, or
// "" when there is none.
func Bearer(r *http.Request) string {
	a := r.Header.Get("Authorization")
	if len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
}

// ErrBadToken is a request that presents a token none of the configured
// ones matches.
var ErrBadToken = errors.New("wrong token (Authorization: Bearer …)")

// Sender returns who sent r: source.Server when it carries one of the
// tokens, source.Browser when it carries none, and ErrBadToken when it
// carries a wrong one (a misconfigured backend must hear so, not be
// counted as a browser).
func (t *Tokens) Sender(r *http.Request) (source.Sender, error) {
	got := Bearer(r)
	switch {
	case got == "":
		return source.Browser, nil
	case t.Match(got):
		return source.Server, nil
	}
	return source.Browser, ErrBadToken
}

// BrowserCanSend reports whether r could have been sent by a page of
// another site without the page being allowed to: a request naming an
// Origin (browsers send one with every cross-origin POST, and with
// same-origin ones too), or a body type a cross-origin page may post
// without a CORS preflight (text/plain, forms). Routes that change data
// for server senders refuse such requests, so a visitor's browser can
// never be made to call them.
func BrowserCanSend(r *http.Request) (why string, ok bool) {
	if r.Header.Get("Origin") != "" {
		return "requests from web pages (with an Origin header) are not accepted here", true
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "none" {
		return "requests from web pages (Sec-Fetch-Site " + site + ") are not accepted here", true
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return "unreadable Content-Type", true
		}
		switch mt {
		case "text/plain", "application/x-www-form-urlencoded", "multipart/form-data":
			return "Content-Type " + mt + " is not accepted here: send text/csv, application/json or application/x-ndjson", true
		}
	}
	return "", false
}

// InFlight bounds the request body bytes held in memory by all requests
// together. Safe for concurrent use. The zero value (and nil) bounds
// nothing.
type InFlight struct {
	max int64
	cur atomic.Int64
}

// NewInFlight returns a bound of max bytes (0: none).
func NewInFlight(max int64) *InFlight { return &InFlight{max: max} }

// Acquire reserves n bytes, or reports false (reserving nothing) when
// that would exceed the bound.
func (f *InFlight) Acquire(n int64) bool {
	if f == nil || f.max <= 0 {
		return true
	}
	for {
		cur := f.cur.Load()
		if cur+n > f.max {
			return false
		}
		if f.cur.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// Release gives back n bytes acquired before.
func (f *InFlight) Release(n int64) {
	if f == nil || f.max <= 0 {
		return
	}
	f.cur.Add(-n)
}

// Bytes returns the bytes reserved now.
func (f *InFlight) Bytes() int64 {
	if f == nil {
		return 0
	}
	return f.cur.Load()
}

// RequireToken passes on only requests carrying one of tokens (401
// otherwise): the server senders' listener puts it before /v1/events.
func RequireToken(tokens *Tokens, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !tokens.Match(Bearer(r)) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"this listener takes server senders only: send Authorization: Bearer TOKEN"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

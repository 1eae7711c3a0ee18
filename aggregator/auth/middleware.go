package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// Route describes one protected route for Guard.Wrap.
type Route struct {
	// Name is the route's short name in the audit log and metrics.
	Name string
	// Roles may call the route; others get 403.
	Roles []Role
	// QueryToken also accepts the token as ?access_token= (RFC 6750 §2.3),
	// for clients that cannot set headers, such as the browser's
	// EventSource. The token never reaches the audit log.
	QueryToken bool
}

// AllRoles is every role, for routes every caller may use (viewers then
// see only their campaigns).
var AllRoles = []Role{Admin, Analyst, Viewer}

// Guard is the middleware every /api/v1 route passes through: it
// authenticates (401), checks the route's roles (403), hands the
// principal to the handler in the request context and writes one audit
// line per request. It is safe for concurrent use.
type Guard struct {
	Auth  *Authenticator
	Audit *Audit // nil: no audit log
}

// Wrap protects next.
func (g *Guard) Wrap(rt Route, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{ResponseWriter: w}
		note := &Note{audit: g.Audit, route: rt.Name}
		r = r.WithContext(withNote(r.Context(), note))
		var p *Principal
		token := BearerToken(r.Header.Get("Authorization"))
		if token == "" && rt.QueryToken {
			token = r.URL.Query().Get("access_token")
		}
		pr, err := (*Principal)(nil), error(ErrUnauthenticated)
		if g.Auth != nil {
			pr, err = g.Auth.Authenticate(token)
		}
		switch {
		case err != nil:
			cw.Header().Set("WWW-Authenticate", `Bearer realm="tally"`)
			WriteError(cw, http.StatusUnauthorized, err.Error())
		case !pr.Allowed(rt.Roles):
			p = pr
			WriteError(cw, http.StatusForbidden, "role "+string(pr.Role)+" may not use "+rt.Name)
		default:
			p = pr
			note.p = p
			next.ServeHTTP(cw, r.WithContext(WithPrincipal(r.Context(), pr)))
		}
		g.Audit.Record(r, rt.Name, p, note, cw.status(), cw.bytes, time.Since(start))
	})
}

// WriteError answers {"error": msg} with the status code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

// countingWriter remembers the status and counts the body bytes.
// Unwrap lets http.ResponseController reach Flush and deadlines.
type countingWriter struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.bytes += int64(n)
	return n, err
}

// Flush implements http.Flusher for handlers that check for it.
func (c *countingWriter) Flush() { _ = c.FlushError() }

// FlushError flushes and reports failure (http.ResponseController uses
// it), so a stream learns that its client is gone or too slow.
func (c *countingWriter) FlushError() error {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return http.NewResponseController(c.ResponseWriter).Flush()
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *countingWriter) status() int {
	if c.code == 0 {
		return http.StatusOK
	}
	return c.code
}

// Note is what a handler tells the audit log about a request: the
// campaigns it read (NoteCampaigns) and how a long request ended
// (NoteOutcome). StreamStarted writes a stream's opening line.
type Note struct {
	mu        sync.Mutex
	campaigns []string
	seen      map[string]struct{} // campaigns, as a set
	outcome   string

	audit *Audit
	route string
	p     *Principal
}

type noteKey struct{}

func withNote(ctx context.Context, n *Note) context.Context {
	return context.WithValue(ctx, noteKey{}, n)
}

// NoteCampaigns records, for the audit line of the request r belongs to,
// that it read campaigns. It is a no-op outside Guard.
func NoteCampaigns(r *http.Request, campaigns ...string) {
	NoteCampaignsContext(r.Context(), campaigns...)
}

// NoteCampaignsContext is NoteCampaigns for code that holds the request's
// context (or one derived from it) rather than the request, such as a
// GraphQL resolver. It is safe for concurrent use.
func NoteCampaignsContext(ctx context.Context, campaigns ...string) {
	n, _ := ctx.Value(noteKey{}).(*Note)
	if n == nil {
		return
	}
	n.mu.Lock()
	for _, c := range campaigns {
		// A request that reads a campaign twice (two GraphQL fields)
		// names it once.
		if _, dup := n.seen[c]; dup {
			continue
		}
		if n.seen == nil {
			n.seen = map[string]struct{}{}
		}
		n.seen[c] = struct{}{}
		n.campaigns = append(n.campaigns, c)
	}
	n.mu.Unlock()
}

// NoteOutcome records, for the audit line of r, how it ended (a short
// reason code such as "token_expired"). It is a no-op outside Guard.
func NoteOutcome(r *http.Request, outcome string) {
	n, _ := r.Context().Value(noteKey{}).(*Note)
	if n == nil {
		return
	}
	n.mu.Lock()
	n.outcome = outcome
	n.mu.Unlock()
}

// StreamStarted writes the audit line of a stream about to send its
// first event (who opened it, which campaigns, until when its token is
// good), so that a long stream is on record when it starts rather than
// only when it ends. Call it after NoteCampaigns. It is a no-op outside
// Guard or without an audit log.
func StreamStarted(r *http.Request) {
	n, _ := r.Context().Value(noteKey{}).(*Note)
	if n == nil || n.audit == nil {
		return
	}
	n.audit.recordStart(r, n.route, n.p, n)
}

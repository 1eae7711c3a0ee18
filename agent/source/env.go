package source

import (
	"net/http"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// Env is what every source needs to normalise events: the one place an
// event.Context is built. The pipeline makes one per process and hands it
// to every source; its fields are set before the first use and never
// changed after, so it is safe for concurrent use.
type Env struct {
	// Region is the agent's region label, stamped on every series.
	Region string
	// MaxAge rejects events older than this; MaxSkew events further in
	// the future than this.
	MaxAge, MaxSkew time.Duration
	// Geo looks up the country of events that carry none; nil: none.
	Geo event.Geo
	// Devices caches device classes per user agent.
	Devices *event.DeviceCache
	// Hasher hashes visitors; Bots classifies events (nil: no bot filter).
	Hasher event.Hasher
	Bots   event.BotFilter
	// Proxies says which HTTP peers are proxies whose forwarded client
	// address and whose events' ip and ua fields are believed.
	Proxies Proxies
	// Counters counts what normalisation replaced (unknown devices and
	// countries, truncated user agents, ignored identities).
	Counters event.Counters
}

// Sender says who sent an HTTP request, which decides whose client
// address and user agent an event gets.
type Sender int

const (
	// Browser is an unauthenticated request, as browsers send them: the
	// request's address and User-Agent are the visitor's, and the event's
	// own ip and ua fields are ignored (unless the peer is a trusted
	// proxy, which may forward them).
	Browser Sender = iota
	// Server is a request authenticated as a server sender (a backend
	// posting events with a token). Its address and User-Agent are the
	// backend's, never the visitor's, so neither is used: the event's own
	// ip and ua are, and an event without them counts with the user agent
	// unknown, its bot checks limited to what it carries.
	Server
)

// Context returns the context of inputs that carry the visitor's identity
// themselves and are trusted to: log lines, backfills, imports.
func (e *Env) Context(now time.Time) event.Context {
	return event.Context{Now: now, Region: e.Region, MaxAge: e.MaxAge, MaxSkew: e.MaxSkew,
		Geo: e.Geo, Devices: e.Devices, Hasher: e.Hasher, Bots: e.Bots, TrustBody: true, Counters: &e.Counters}
}

// Request returns the context of the events of one HTTP request.
func (e *Env) Request(r *http.Request, now time.Time, from Sender) event.Context {
	c := e.Context(now)
	switch {
	case from == Server:
		// Neither the backend's address nor its HTTP library's user
		// agent says anything about the visitor.
	case e.Proxies.PeerTrusted(r):
		c.ClientIP, c.UserAgent, c.Request = e.Proxies.ClientIP(r), r.UserAgent(), browserRequest(r)
	default:
		c.ClientIP, c.UserAgent, c.TrustBody, c.Request = e.Proxies.ClientIP(r), r.UserAgent(), false, browserRequest(r)
	}
	return c
}

// browserRequest returns what r says about its client for the bot
// filter's behavioural signals (event.BrowserRequest): whether a page
// sent it, and the client hints. Server senders get none.
func browserRequest(r *http.Request) *event.BrowserRequest {
	return &event.BrowserRequest{
		Page:            r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "",
		SecCHUA:         r.Header.Get("Sec-CH-UA"),
		SecCHUAMobile:   r.Header.Get("Sec-CH-UA-Mobile"),
		SecCHUAPlatform: r.Header.Get("Sec-CH-UA-Platform"),
	}
}

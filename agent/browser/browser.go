// Package browser is the agent's browser-facing event sources (edge agent
// issue §3): the first-party script GET /v1/t.js, the tracking pixel
// GET /v1/pixel.gif, and the CORS policy that lets configured sites post
// to /v1/events from their pages.
//
// The script sends events to the ordinary ingest contract (NDJSON to
// POST /v1/events), so everything it sends is validated, journaled and
// counted there. The pixel turns its query string into one event.Raw and
// runs it through event.Normalize like any JSON event, so the two paths
// cannot drift apart. See README.md for what a site owner pastes.
package browser

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/source"
)

// Config configures the browser sources. The yaml tags are the keys under
// `browser:` in the agent configuration.
type Config struct {
	// AllowedOrigins are the sites whose pages may post to /v1/events:
	// "https://shop.example.com" (exact; a port is part of the origin) or
	// "https://*.example.org" (any subdomain of example.org, not the apex).
	// Empty means no cross-origin browser may read the answer.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// EnforceOrigins answers 403 to a POST whose Origin header names a
	// site that is not allowed, instead of only withholding the CORS
	// headers. Browsers send the script's beacons (text/plain, no
	// preflight) whatever the answer's CORS headers say, so without this
	// any site embedding t.js is counted. Requests without an Origin
	// (servers, curl) always pass. Default false.
	EnforceOrigins bool `yaml:"enforce_origins"`
	// ScriptMaxAge is how long browsers and CDNs may cache t.js before
	// revalidating (ETag makes that a 304). Longer saves requests; shorter
	// rolls a new script out faster. Default 1h.
	ScriptMaxAge time.Duration `yaml:"script_max_age"`
	// PreflightMaxAge is how long a browser may cache a CORS preflight
	// answer (Chromium caps it at 2h). Default 1h.
	PreflightMaxAge time.Duration `yaml:"preflight_max_age"`
}

// DefaultConfig returns the defaults: no allowed origins, t.js cached for
// an hour, preflights for an hour.
func DefaultConfig() Config {
	return Config{ScriptMaxAge: time.Hour, PreflightMaxAge: time.Hour}
}

// Validate reports every problem at once; a bad origin pattern is named.
func (c *Config) Validate() error {
	_, err := parseOrigins(c.AllowedOrigins)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if c.ScriptMaxAge < 0 || c.ScriptMaxAge > 365*24*time.Hour {
		errs = append(errs, fmt.Errorf("browser.script_max_age %s: want 0 to 8760h", c.ScriptMaxAge))
	}
	if c.PreflightMaxAge < 0 || c.PreflightMaxAge > 24*time.Hour {
		errs = append(errs, fmt.Errorf("browser.preflight_max_age %s: want 0 to 24h", c.PreflightMaxAge))
	}
	return errors.Join(errs...)
}

// Handlers serves the browser sources. Build it with New; its handlers are
// safe for concurrent use and own no goroutines.
type Handlers struct {
	cfg     Config
	origins origins
	env     *source.Env
	sink    source.Sink
	log     *slog.Logger
	now     func() time.Time
	script  script
	m       metrics
}

type metrics struct {
	script   *prometheus.CounterVec // by code
	pixel    prometheus.Counter
	accepted prometheus.Counter
	rejected *prometheus.CounterVec // by reason
	bots     *prometheus.CounterVec // by reason
	cors     *prometheus.CounterVec // by kind, result
}

// New validates cfg and returns the handlers, registering their metrics
// (tally_agent_browser_*) with reg. The pixel normalises its events with
// env and hands them to sink, as POST /v1/events does.
func New(cfg Config, env *source.Env, sink source.Sink, reg prometheus.Registerer, logger *slog.Logger) (*Handlers, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o, _ := parseOrigins(cfg.AllowedOrigins) // validated above
	sc, err := newScript(tallyJS, cfg.ScriptMaxAge)
	if err != nil {
		return nil, err
	}
	h := &Handlers{cfg: cfg, origins: o, env: env, sink: sink, log: logger.With("component", "browser"), now: time.Now, script: sc}
	h.m = metrics{
		script: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_browser_script_requests_total",
			Help: "GET /v1/t.js answers by status code (304: revalidated from cache)."}, []string{"code"}),
		pixel: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_browser_pixel_requests_total",
			Help: "GET /v1/pixel.gif requests; every one is answered with the GIF."}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_browser_pixel_events_accepted_total",
			Help: "Pixel events accepted (journaled), bots included."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_browser_pixel_events_rejected_total",
			Help: "Pixel requests that produced no event, by reason."}, []string{"reason"}),
		bots: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_browser_pixel_bots_total",
			Help: "Accepted pixel events classified as bots, by reason."}, []string{"reason"}),
		cors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_browser_cors_requests_total",
			Help: "Cross-origin requests to /v1/events by kind (preflight, request) and result (allowed, denied)."},
			[]string{"kind", "result"}),
	}
	for _, c := range []prometheus.Collector{h.m.script, h.m.pixel, h.m.accepted, h.m.rejected, h.m.bots, h.m.cors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register browser metrics: %w", err)
		}
	}
	return h, nil
}

// Script serves GET /v1/t.js.
func (h *Handlers) Script() http.Handler { return http.HandlerFunc(h.serveScript) }

// Pixel serves GET /v1/pixel.gif.
func (h *Handlers) Pixel() http.Handler { return http.HandlerFunc(h.servePixel) }

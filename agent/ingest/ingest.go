// Package ingest is the agent's HTTP event source: POST /v1/events with the
// contract of ARCHITECTURE §2.
//
// A request body is NDJSON (one event per line) or a JSON array. Each event
// is validated and normalised on its own: good events are accepted even
// when others in the same body are rejected, and the 202 answer lists every
// rejection by index. A body that is not JSON at all gets 400, one over the
// size limit 413, and 503 with Retry-After when the agent cannot make events
// durable right now (spool or journal full). Nothing is accepted unless it
// is journaled first, so a 202 is a promise the agent keeps across crashes.
package ingest

import (
	"bytes"
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/event"
)

// Config tunes the HTTP source.
type Config struct {
	// Region is the agent's region label, stamped on every series.
	Region string
	// MaxBodyBytes caps a request body; larger bodies get 413. Default 8 MiB.
	MaxBodyBytes int64
	// MaxEvents caps the events in one body; larger bodies get 413.
	// Default 20,000.
	MaxEvents int
	// MaxAge rejects events older than this. Default 7 days.
	MaxAge time.Duration
	// MaxSkew rejects events further in the future than this. Default 5m.
	MaxSkew time.Duration
	// TrustedProxies are the peers whose ProxyHeader is believed for the
	// client IP. Empty means the TCP peer is always the client.
	TrustedProxies []netip.Prefix
	// ProxyHeader names the header carrying the client IP chain when the
	// peer is a trusted proxy. Default X-Forwarded-For.
	ProxyHeader string
	// MaxErrors caps the per-event errors listed in one answer. Default 100.
	MaxErrors int
	// Geo looks up the country of events that carry none; nil: none.
	Geo event.Geo
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxBodyBytes: 8 << 20, MaxEvents: 20_000, MaxAge: 7 * 24 * time.Hour,
		MaxSkew: 5 * time.Minute, ProxyHeader: "X-Forwarded-For", MaxErrors: 100}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxEvents <= 0 {
		c.MaxEvents = d.MaxEvents
	}
	if c.MaxAge <= 0 {
		c.MaxAge = d.MaxAge
	}
	if c.MaxSkew <= 0 {
		c.MaxSkew = d.MaxSkew
	}
	if c.ProxyHeader == "" {
		c.ProxyHeader = d.ProxyHeader
	}
	if c.MaxErrors <= 0 {
		c.MaxErrors = d.MaxErrors
	}
}

// Sink takes accepted events. Accept must make them durable (journal)
// before it returns nil, and must be safe for concurrent use. It returns a
// *BusyError when it cannot take events now.
type Sink interface {
	Accept(events []event.Event) error
}

// BusyError tells the client to come back later (HTTP 503).
type BusyError struct {
	Reason     string
	RetryAfter time.Duration
}

func (e *BusyError) Error() string { return "busy: " + e.Reason }

// Handler serves POST /v1/events.
type Handler struct {
	cfg     Config
	sink    Sink
	hasher  event.Hasher
	bots    event.BotFilter
	log     *slog.Logger
	now     func() time.Time
	devices *event.DeviceCache
	m       metrics

	scratch sync.Pool // *scratch

	lastSample atomic.Int64 // unix ns of the last logged rejection sample
}

type scratch struct {
	raw    event.Raw
	events []event.Event
	errs   []EventError
}

type metrics struct {
	requests *prometheus.CounterVec // by code
	received prometheus.Counter
	accepted prometheus.Counter
	rejected *prometheus.CounterVec // by reason
	bots     *prometheus.CounterVec // by reason
	bytes    prometheus.Counter
}

// New returns a Handler and registers its metrics with reg.
func New(cfg Config, sink Sink, hasher event.Hasher, bots event.BotFilter, reg prometheus.Registerer, logger *slog.Logger) *Handler {
	cfg.setDefaults()
	h := &Handler{cfg: cfg, sink: sink, hasher: hasher, bots: bots, now: time.Now,
		devices: event.NewDeviceCache(0), log: logger.With("component", "ingest")}
	h.scratch.New = func() any { return &scratch{} }
	h.m = metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_http_requests_total",
			Help: "Ingest HTTP requests by status code."}, []string{"code"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_events_received_total",
			Help: "Events received in request bodies that were parsed."}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_events_accepted_total",
			Help: "Events accepted (journaled), bots included."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_events_rejected_total",
			Help: "Events rejected, by reason."}, []string{"reason"}),
		bots: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_bots_filtered_total",
			Help: "Accepted events classified as bots, by reason."}, []string{"reason"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_http_request_bytes_total",
			Help: "Request body bytes read."}),
	}
	reg.MustRegister(h.m.requests, h.m.received, h.m.accepted, h.m.rejected, h.m.bots, h.m.bytes)
	return h
}

// EventError is one rejected event in a 202 answer.
type EventError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// Response is the body of a 202 answer.
type Response struct {
	Accepted int          `json:"accepted"`
	Rejected int          `json:"rejected"`
	Errors   []EventError `json:"errors"`
	// ErrorsTruncated is set when more events were rejected than listed.
	ErrorsTruncated bool `json:"errors_truncated,omitempty"`
}

type problem struct {
	Error string `json:"error"`
}

func (h *Handler) fail(w http.ResponseWriter, code int, msg string) {
	h.m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(problem{Error: msg})
}

// ServeHTTP implements POST /v1/events.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		h.m.rejected.WithLabelValues("body_too_large").Inc()
		h.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the limit of %d", r.ContentLength, h.cfg.MaxBodyBytes))
		return
	}
	body, err := readBody(r.Body, h.cfg.MaxBodyBytes)
	h.m.bytes.Add(float64(len(body)))
	if err != nil {
		if errors.Is(err, errTooLarge) {
			h.m.rejected.WithLabelValues("body_too_large").Inc()
			h.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes", h.cfg.MaxBodyBytes))
			return
		}
		h.fail(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	defer putBody(body)

	sc := h.scratch.Get().(*scratch)
	defer h.scratch.Put(sc)
	sc.events, sc.errs = sc.events[:0], sc.errs[:0]

	ctx := event.Context{Now: h.now(), Region: h.cfg.Region, ClientIP: h.clientIP(r), Geo: h.cfg.Geo,
		UserAgent: r.UserAgent(), MaxAge: h.cfg.MaxAge, MaxSkew: h.cfg.MaxSkew, Devices: h.devices,
		Request: browserRequest(r)}

	n, status, msg := h.decode(body, sc, &ctx)
	if status != 0 {
		h.fail(w, status, msg)
		return
	}
	h.m.received.Add(float64(n))

	if len(sc.events) > 0 {
		if err := h.sink.Accept(sc.events); err != nil {
			var busy *BusyError
			if errors.As(err, &busy) {
				w.Header().Set("Retry-After", strconv.Itoa(max(1, int(busy.RetryAfter.Round(time.Second)/time.Second))))
				h.fail(w, http.StatusServiceUnavailable, busy.Error())
				return
			}
			h.log.Error("accepting events failed", "err", err)
			h.fail(w, http.StatusInternalServerError, "could not make events durable; nothing was accepted")
			return
		}
	}
	for i := range sc.events {
		if b := sc.events[i].Bot; b != "" {
			h.m.bots.WithLabelValues(b).Inc()
		}
	}
	h.m.accepted.Add(float64(len(sc.events)))

	resp := Response{Accepted: len(sc.events), Rejected: n - len(sc.events), Errors: sc.errs}
	if resp.Errors == nil {
		resp.Errors = []EventError{}
	}
	if len(resp.Errors) > h.cfg.MaxErrors {
		resp.Errors, resp.ErrorsTruncated = resp.Errors[:h.cfg.MaxErrors], true
	}
	h.m.requests.WithLabelValues("202").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(resp)
}

// decode parses body into sc.events and sc.errs. It returns the number of
// events seen, or a non-zero HTTP status for a body that fails as a whole.
func (h *Handler) decode(body []byte, sc *scratch, ctx *event.Context) (n int, status int, msg string) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return 0, http.StatusBadRequest, "empty body: send NDJSON or a JSON array of events"
	}
	if trimmed[0] == '[' {
		var elems []json.RawMessage
		if err := json.Unmarshal(trimmed, &elems); err != nil {
			return 0, http.StatusBadRequest, "body is not a valid JSON array: " + err.Error()
		}
		if len(elems) > h.cfg.MaxEvents {
			return 0, http.StatusRequestEntityTooLarge, fmt.Sprintf("%d events exceed the limit of %d per request", len(elems), h.cfg.MaxEvents)
		}
		for i, el := range elems {
			h.one(i, el, sc, ctx)
		}
		return len(elems), 0, ""
	}
	malformed := 0
	rest := body
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if n >= h.cfg.MaxEvents {
			return 0, http.StatusRequestEntityTooLarge, fmt.Sprintf("more than %d events in one request", h.cfg.MaxEvents)
		}
		if !h.one(n, line, sc, ctx) {
			malformed++
		}
		n++
	}
	if n > 0 && malformed == n {
		// Not one line was JSON: this is not an NDJSON body at all.
		sc.events, sc.errs = sc.events[:0], sc.errs[:0]
		h.m.rejected.WithLabelValues("malformed_json").Add(float64(n))
		return 0, http.StatusBadRequest, "body is neither NDJSON nor a JSON array: " + firstErr(sc, body)
	}
	return n, 0, ""
}

func firstErr(_ *scratch, body []byte) string {
	var v any
	line := body
	if i := bytes.IndexByte(body, '\n'); i >= 0 {
		line = body[:i]
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return err.Error()
	}
	return "no event objects"
}

// one decodes and normalises event i. It returns false when the input was
// not a JSON object (as opposed to a JSON event that failed validation).
func (h *Handler) one(i int, data []byte, sc *scratch, ctx *event.Context) bool {
	sc.raw.Reset()
	if err := json.Unmarshal(data, &sc.raw); err != nil {
		code, text := "malformed_json", "malformed JSON: "+err.Error()
		var te *json.UnmarshalTypeError
		isJSON := false
		if errors.As(err, &te) || errors.Is(err, event.ErrBadTime) {
			code, text, isJSON = "bad_field", err.Error(), true
			if errors.Is(err, event.ErrBadTime) {
				code, text = "bad_ts", "ts: "+err.Error()
			}
		}
		h.reject(i, code, text, sc)
		return isJSON
	}
	sc.events = append(sc.events, event.Event{})
	e := &sc.events[len(sc.events)-1]
	if err := event.Normalize(&sc.raw, ctx, h.hasher, h.bots, e); err != nil {
		sc.events = sc.events[:len(sc.events)-1]
		code := "invalid"
		var ee *event.Error
		if errors.As(err, &ee) {
			code = ee.Code
		}
		h.reject(i, code, err.Error(), sc)
	}
	return true
}

func (h *Handler) reject(i int, code, text string, sc *scratch) {
	h.m.rejected.WithLabelValues(code).Inc()
	sc.errs = append(sc.errs, EventError{Index: i, Error: text})
	// One sample every 10 s keeps the log useful without logging per event.
	now := time.Now().UnixNano()
	last := h.lastSample.Load()
	if now-last > int64(10*time.Second) && h.lastSample.CompareAndSwap(last, now) {
		h.log.Warn("rejected event (sample; see tally_agent_events_rejected_total)", "reason", code, "error", text)
	}
}

// browserRequest returns what r says for the bot filter's behavioural
// signals (event.BrowserRequest).
func browserRequest(r *http.Request) *event.BrowserRequest {
	return &event.BrowserRequest{
		Page:            r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "",
		SecCHUA:         r.Header.Get("Sec-CH-UA"),
		SecCHUAMobile:   r.Header.Get("Sec-CH-UA-Mobile"),
		SecCHUAPlatform: r.Header.Get("Sec-CH-UA-Platform"),
	}
}

// clientIP returns the request's client address (see ClientIP).
func (h *Handler) clientIP(r *http.Request) string {
	return ClientIP(r, h.cfg.TrustedProxies, h.cfg.ProxyHeader)
}

// ClientIP returns the client address of r: the TCP peer, or, when the
// peer is one of the trusted proxies, the right-most address of the proxy
// header (X-Forwarded-For when header is "") that is not itself trusted.
// Every HTTP source of the agent uses it, so they hash visitors alike.
func ClientIP(r *http.Request, trusted []netip.Prefix, header string) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(trusted) == 0 {
		return host
	}
	isTrusted := func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !isTrusted(peer) {
		return host
	}
	if header == "" {
		header = DefaultConfig().ProxyHeader
	}
	hops := strings.Split(strings.Join(r.Header.Values(header), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		if !isTrusted(a) {
			return a.String()
		}
		host = a.String()
	}
	return host
}

var errTooLarge = errors.New("body too large")

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// readBody reads at most limit bytes into a pooled buffer.
func readBody(r io.Reader, limit int64) ([]byte, error) {
	bp := bodyPool.Get().(*[]byte)
	buf := (*bp)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			*bp = buf
			bodyPool.Put(bp)
			return nil, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			*bp = buf
			bodyPool.Put(bp)
			return nil, err
		}
	}
}

func putBody(b []byte) {
	if cap(b) > 16<<20 {
		return
	}
	b = b[:0]
	bodyPool.Put(&b)
}

// Package ingest is the agent's HTTP event source: POST /v1/events with the
// contract of ARCHITECTURE §2.
//
// A request body is NDJSON (one event per line) or a JSON array. Each event
// is validated and normalised on its own: good events are accepted even
// when others in the same body are rejected, and the 202 answer lists every
// rejection by index. A body that is not JSON at all gets 400, one over the
// size limit 413, and 503 with Retry-After when the agent cannot make events
// durable right now (spool or journal full) or holds too many request
// bytes already. Nothing is accepted unless it is journaled first, so a
// 202 is a promise the agent keeps across crashes.
//
// A request with "Authorization: Bearer TOKEN" is a server sender's (see
// agent/edge): its events' ip and ua fields are believed and its own
// address and User-Agent are not used; a wrong token gets 401. A request
// without one is a browser's: its address and User-Agent are the
// visitor's, and its events' ip and ua fields are ignored unless the peer
// is a trusted proxy.
package ingest

import (
	"bytes"
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fastjson"

	"github.com/tally-edge/tally/agent/edge"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
)

// Config tunes the HTTP source. What events are checked against (region,
// ages, proxies) is the pipeline's source.Env, shared with every source.
type Config struct {
	// MaxBodyBytes caps a request body; larger bodies get 413. Default 8 MiB.
	MaxBodyBytes int64
	// MaxEvents caps the events in one body; larger bodies get 413.
	// Default 20,000.
	MaxEvents int
	// MaxErrors caps the per-event errors listed in one answer. Default 100.
	MaxErrors int
	// Tokens authenticate server senders; nil or empty: every request is
	// a browser's.
	Tokens *edge.Tokens
	// InFlight bounds the body bytes all requests hold; nil: unbounded.
	InFlight *edge.InFlight
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxBodyBytes: 8 << 20, MaxEvents: 20_000, MaxErrors: 100}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxEvents <= 0 {
		c.MaxEvents = d.MaxEvents
	}
	if c.MaxErrors <= 0 {
		c.MaxErrors = d.MaxErrors
	}
}

// Handler serves POST /v1/events.
type Handler struct {
	cfg  Config
	env  *source.Env
	sink source.Sink
	log  *slog.Logger
	now  func() time.Time
	m    metrics

	scratch sync.Pool // *scratch
	botsBy  sync.Map  // reason → prometheus.Counter, to skip the label lookup per event

	lastSample atomic.Int64 // unix ns of the last logged rejection sample
}

type scratch struct {
	intern interner
	raw    event.Raw
	events []event.Event
	errs   []EventError
}

type metrics struct {
	requests *prometheus.CounterVec // by code
	senders  *prometheus.CounterVec // by sender
	received prometheus.Counter
	accepted prometheus.Counter
	rejected *prometheus.CounterVec // by reason
	bots     *prometheus.CounterVec // by reason
	bytes    prometheus.Counter
}

// New returns a Handler that normalises events with env and hands them to
// sink, and registers its metrics with reg.
func New(cfg Config, env *source.Env, sink source.Sink, reg prometheus.Registerer, logger *slog.Logger) *Handler {
	cfg.setDefaults()
	h := &Handler{cfg: cfg, env: env, sink: sink, now: time.Now, log: logger.With("component", "ingest")}
	h.scratch.New = func() any { return &scratch{} }
	h.m = metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_http_requests_total",
			Help: "Ingest HTTP requests by status code."}, []string{"code"}),
		senders: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_http_requests_by_sender_total",
			Help: "Ingest HTTP requests by sender (browser, server: authenticated with a token)."}, []string{"sender"}),
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
	reg.MustRegister(h.m.requests, h.m.senders, h.m.received, h.m.accepted, h.m.rejected, h.m.bots, h.m.bytes)
	return h
}

// botCounter returns the bots counter of reason.
func (h *Handler) botCounter(reason string) prometheus.Counter {
	if c, ok := h.botsBy.Load(reason); ok {
		return c.(prometheus.Counter)
	}
	c := h.m.bots.WithLabelValues(reason)
	h.botsBy.Store(reason, c)
	return c
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
	from, err := h.cfg.Tokens.Sender(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", "Bearer")
		h.fail(w, http.StatusUnauthorized, err.Error())
		return
	}
	if from == source.Server {
		h.m.senders.WithLabelValues("server").Inc()
	} else {
		h.m.senders.WithLabelValues("browser").Inc()
	}
	body, err := edge.ReadBody(r, h.cfg.MaxBodyBytes, h.cfg.InFlight)
	switch {
	case errors.Is(err, edge.ErrTooLarge):
		h.m.rejected.WithLabelValues("body_too_large").Inc()
		h.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes", h.cfg.MaxBodyBytes))
		return
	case errors.Is(err, edge.ErrBusy):
		h.m.rejected.WithLabelValues("bytes_in_flight").Inc()
		w.Header().Set("Retry-After", "1")
		h.fail(w, http.StatusServiceUnavailable, "busy: too many request bytes in flight")
		return
	case err != nil:
		h.fail(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	defer body.Release()
	h.m.bytes.Add(float64(len(body.Bytes)))

	sc := h.scratch.Get().(*scratch)
	defer h.scratch.Put(sc)
	sc.events, sc.errs = sc.events[:0], sc.errs[:0]

	ctx := h.env.Request(r, h.now(), from)

	n, status, msg := h.decode(body.Bytes, sc, &ctx)
	if status != 0 {
		h.fail(w, status, msg)
		return
	}
	h.m.received.Add(float64(n))

	if len(sc.events) > 0 {
		if err := h.sink.Accept(sc.events); err != nil {
			var busy *source.BusyError
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
			h.botCounter(b).Inc()
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
	p := parsers.Get()
	defer parsers.Put(p)
	if trimmed[0] == '[' {
		v, err := p.ParseBytes(trimmed)
		if err != nil {
			return 0, http.StatusBadRequest, "body is not a valid JSON array: " + err.Error()
		}
		elems, err := v.Array()
		if err != nil {
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
	var firstErr error
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
		v, err := p.ParseBytes(line)
		if err != nil {
			malformed++
			if firstErr == nil {
				firstErr = err
			}
			h.reject(n, "malformed_json", "malformed JSON: "+err.Error(), sc)
		} else {
			h.one(n, v, sc, ctx)
		}
		n++
	}
	if n > 0 && malformed == n {
		// Not one line was JSON: this is not an NDJSON body at all.
		sc.events, sc.errs = sc.events[:0], sc.errs[:0]
		h.m.rejected.WithLabelValues("malformed_json").Add(float64(n))
		return 0, http.StatusBadRequest, "body is neither NDJSON nor a JSON array: " + firstErr.Error()
	}
	return n, 0, ""
}

// parsers pools fastjson parsers: a parser reuses its tree between
// bodies.
var parsers fastjson.ParserPool

// one decodes and normalises event i, a parsed JSON value.
func (h *Handler) one(i int, v *fastjson.Value, sc *scratch, ctx *event.Context) {
	if v.Type() != fastjson.TypeObject {
		h.reject(i, "bad_field", "an event is a JSON object", sc)
		return
	}
	sc.raw.Reset()
	if err := fillRaw(v, &sc.raw, &sc.intern); err != nil {
		code, text := codeOf(err)
		h.reject(i, code, text, sc)
		return
	}
	sc.events = append(sc.events, event.Event{})
	e := &sc.events[len(sc.events)-1]
	if err := event.Normalize(&sc.raw, ctx, e); err != nil {
		sc.events = sc.events[:len(sc.events)-1]
		code := "invalid"
		var ee *event.Error
		if errors.As(err, &ee) {
			code = ee.Code
		}
		h.reject(i, code, err.Error(), sc)
	}
}

func (h *Handler) reject(i int, code, text string, sc *scratch) {
	h.m.rejected.WithLabelValues(code).Inc()
	sc.errs = append(sc.errs, EventError{Index: i, Error: text})
	// One sample every 10 s keeps the log useful without logging per
	// event. It names the reason and the event's index, never the text:
	// that quotes the input, and inputs carry addresses and user agents.
	now := time.Now().UnixNano()
	last := h.lastSample.Load()
	if now-last > int64(10*time.Second) && h.lastSample.CompareAndSwap(last, now) {
		h.log.Warn("rejected event (sample; see tally_agent_events_rejected_total)", "reason", code, "index", i)
	}
}

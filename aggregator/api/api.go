// Package api is the aggregator's HTTP surface: the REST API under
// /api/v1/, health and readiness probes, Prometheus metrics and the
// embedded dashboard.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tally-edge/tally/aggregator/kpi"
)

// Source answers queries for merged series-minutes. Implementations must
// be safe for concurrent use.
type Source interface {
	Minutes(ctx context.Context, f kpi.Filter) ([]kpi.Point, error)
}

// Config tunes the API.
type Config struct {
	// MaxWindow is the longest from..to span one query may ask for.
	// Default 31 days.
	MaxWindow time.Duration
	// QueryTimeout bounds one storage query. Default 30s.
	QueryTimeout time.Duration
}

// Server holds the handlers.
type Server struct {
	cfg    Config
	source Source
	ready  func() error
	log    *slog.Logger
	mux    *http.ServeMux

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New builds the API. ready reports whether the node can serve (nil when
// it can); gatherer is exported at /metrics; assets (may be nil) is the
// dashboard served at /.
func New(cfg Config, source Source, ready func() error, reg prometheus.Registerer, gatherer prometheus.Gatherer, assets fs.FS, logger *slog.Logger) *Server {
	if cfg.MaxWindow <= 0 {
		cfg.MaxWindow = 31 * 24 * time.Hour
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	s := &Server{cfg: cfg, source: source, ready: ready, log: logger.With("component", "api"), mux: http.NewServeMux()}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_api_requests_total",
		Help: "API requests by route and status code."}, []string{"route", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tally_aggregator_api_request_duration_seconds",
		Help: "API request latency by route.", Buckets: prometheus.DefBuckets}, []string{"route"})
	reg.MustRegister(s.requests, s.latency)

	s.handle("GET /healthz", "healthz", func(w http.ResponseWriter, r *http.Request) int {
		w.Write([]byte("ok\n"))
		return 200
	})
	s.handle("GET /readyz", "readyz", func(w http.ResponseWriter, r *http.Request) int {
		if err := s.ready(); err != nil {
			return writeError(w, http.StatusServiceUnavailable, err.Error())
		}
		w.Write([]byte("ready\n"))
		return 200
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	s.handle("GET /api/v1/kpis", "kpis", s.kpis)
	s.handle("GET /api/v1/bots", "bots", s.bots)
	if assets != nil {
		s.mux.Handle("GET /", http.FileServerFS(assets))
	}
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) handle(pattern, route string, h func(http.ResponseWriter, *http.Request) int) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		code := h(w, r)
		s.requests.WithLabelValues(route, fmt.Sprint(code)).Inc()
		s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiError{Error: msg})
	return code
}

func writeJSON(w http.ResponseWriter, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
	return 200
}

// paramError names the query parameter at fault.
type paramError struct{ param, msg string }

func (e *paramError) Error() string { return fmt.Sprintf("parameter %q: %s", e.param, e.msg) }

// parseFilter reads campaign, from, to and the dimension filters.
func (s *Server) parseFilter(r *http.Request) (kpi.Filter, error) {
	q := r.URL.Query()
	f := kpi.Filter{Campaign: q.Get("campaign"), Source: q.Get("source"), Medium: q.Get("medium"),
		Country: q.Get("country"), Device: q.Get("device"), Region: q.Get("region")}
	if f.Campaign == "" {
		return f, &paramError{"campaign", "required"}
	}
	now := time.Now()
	var err error
	if f.To, err = parseTime(q.Get("to"), now); err != nil {
		return f, &paramError{"to", err.Error()}
	}
	if f.From, err = parseTime(q.Get("from"), f.To.Add(-time.Hour)); err != nil {
		return f, &paramError{"from", err.Error()}
	}
	if !f.From.Before(f.To) {
		return f, &paramError{"from", "must be before to"}
	}
	if f.To.Sub(f.From) > s.cfg.MaxWindow {
		return f, &paramError{"to", fmt.Sprintf("window longer than the maximum of %s", s.cfg.MaxWindow)}
	}
	return f, nil
}

func parseTime(v string, def time.Time) (time.Time, error) {
	if v == "" {
		return def, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errors.New("want an RFC 3339 time such as 2026-11-22T10:00:00Z")
	}
	return t, nil
}

// query parses the window and filters and computes the KPIs of the
// matching series-minutes. On failure it has written the answer and
// returns its status code.
func (s *Server) query(w http.ResponseWriter, r *http.Request) (kpi.KPIs, kpi.Totals, int) {
	f, err := s.parseFilter(r)
	if err != nil {
		return kpi.KPIs{}, kpi.Totals{}, writeError(w, http.StatusBadRequest, err.Error())
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
	defer cancel()
	pts, err := s.source.Minutes(ctx, f)
	if err != nil {
		s.log.Error("storage query failed", "path", r.URL.Path, "campaign", f.Campaign, "err", err)
		return kpi.KPIs{}, kpi.Totals{}, writeError(w, http.StatusBadGateway, "storage query failed: "+err.Error())
	}
	k, t, err := kpi.Compute(pts)
	if err != nil {
		return kpi.KPIs{}, kpi.Totals{}, writeError(w, http.StatusInternalServerError, err.Error())
	}
	return k, t, 0
}

// kpis serves GET /api/v1/kpis: one flat object of numbers for one
// campaign over [from, to) (default: the last hour).
func (s *Server) kpis(w http.ResponseWriter, r *http.Request) int {
	k, _, code := s.query(w, r)
	if code != 0 {
		return code
	}
	return writeJSON(w, k)
}

// BotsResponse is the body of GET /api/v1/bots.
type BotsResponse struct {
	// Total is the number of bot events filtered at the edge.
	Total uint64 `json:"total"`
	// ByReason splits Total by the layer that caught them (crawler,
	// headless, datacenter, rate_ip, …).
	ByReason map[string]uint64 `json:"by_reason"`
	// Share is Total over all events, bots included (0 with no events).
	Share float64 `json:"share"`
}

// bots serves GET /api/v1/bots: filtered bot events of one campaign over
// [from, to), by reason. It takes the same parameters as kpis.
func (s *Server) bots(w http.ResponseWriter, r *http.Request) int {
	k, t, code := s.query(w, r)
	if code != 0 {
		return code
	}
	resp := BotsResponse{Total: k.BotsFiltered, ByReason: t.Bots}
	var all uint64
	for _, n := range t.ByType {
		all += n
	}
	if all+k.BotsFiltered > 0 {
		resp.Share = float64(k.BotsFiltered) / float64(all+k.BotsFiltered)
	}
	return writeJSON(w, resp)
}

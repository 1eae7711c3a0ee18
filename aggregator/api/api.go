// Package api is the aggregator's HTTP surface: the REST API and the live
// stream under /api/v1/, health and readiness probes, Prometheus metrics
// and the embedded dashboard.
//
// Every /api/v1 route but openapi.json and session passes through
// auth.Guard: a bearer token is required (401), the route's roles are
// checked (403), viewers see only their campaigns, and each request is
// audited. POST /api/v1/session takes a sign-in link token instead and
// audits itself. The dashboard's static files, /healthz and /readyz are
// public. /metrics without a credential leaves out every series labelled
// with a campaign (it is 401 when Config.MetricsToken is set); with the
// metrics token or an admin's API token it is complete.
//
// Storage queries and streams pass through gates that bound how many run
// at once on the node and for one subject (limits.go); answers are
// written within Config.WriteTimeout.
package api

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/tally-edge/tally/aggregator/alerting"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/live"
)

// DefaultMaxWindow is the longest window of one query unless configured:
// a year, leap day included. Rollups answer whole days and hours from
// daily and hourly points, so a year-long question of one campaign
// reads 365 points per series, not half a million minutes.
const DefaultMaxWindow = 366 * 24 * time.Hour

// Config tunes the API and names the parts it serves.
type Config struct {
	// MaxWindow is the longest window one query may ask for. Default
	// DefaultMaxWindow.
	MaxWindow time.Duration
	// QueryTimeout bounds one storage query. Default 30s.
	QueryTimeout time.Duration
	// MaxPoints bounds the points of one answer: steps × groups of a
	// series, rows of one day of an export, campaigns of a list. Default
	// 10,080 × 10 (a week of minutes for ten groups).
	MaxPoints int
	// MetricsToken, when set, is the bearer token /metrics requires;
	// without it, /metrics is public but leaves out every series labelled
	// with a campaign. An admin's API token also opens the full metrics.
	MetricsToken string
	// MetricsElsewhere leaves /metrics out of this handler: the node
	// serves MetricsHandler on its own listener.
	MetricsElsewhere bool
	// MaxConcurrentQueries bounds the storage queries (data routes)
	// running at once on the node; a request waits up to QueryWait for a
	// slot, then gets 503. Default 16.
	MaxConcurrentQueries int
	// MaxQueriesPerSubject bounds the data requests of one subject
	// admitted at once (running or waiting); beyond it: 429. Default 8.
	MaxQueriesPerSubject int
	// QueryWait is how long a data request waits for a query slot.
	// Default 5s.
	QueryWait time.Duration
	// MaxStreams bounds the open streams of the node (503 beyond);
	// MaxStreamsPerSubject those of one subject (429 beyond). Defaults
	// 1000 and 16.
	MaxStreams, MaxStreamsPerSubject int
	// WriteTimeout bounds writing one answer (or one day of an export) to
	// a client; a client that reads slower is disconnected, so it cannot
	// hold a query slot. Default 30s.
	WriteTimeout time.Duration

	// Auth authenticates API callers. Required: without it every API
	// request is refused.
	Auth *auth.Authenticator
	// Audit receives one line per API request; nil: no audit log.
	Audit *auth.Audit
	// Hub serves /api/v1/stream; nil: the stream answers 503.
	Hub *live.Hub
	// Status is sent as the stream's first event; nil: this node alone.
	Status func() live.Status
	// Alerts serves the alert, alerting object and forecast routes; nil:
	// they answer 503.
	Alerts AlertService
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// MaxSeriesPoints bounds the points of one series (a week of minutes).
const MaxSeriesPoints = 10080

// Server holds the handlers.
type Server struct {
	cfg    Config
	source Source
	ready  func() error
	log    *slog.Logger
	mux    *http.ServeMux
	guard  *auth.Guard
	routes []Route

	queries, streams *gate
	metrics          http.Handler

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// Route describes one /api/v1 route: what the OpenAPI document must
// describe and what the guard enforces.
type Route struct {
	Method, Path string
	// Name labels metrics and audit lines.
	Name  string
	Roles []auth.Role
	// Params are the query parameters the route takes; any other is a 400.
	Params []string
	// Public routes skip the guard (openapi.json; the session exchange
	// authenticates its link token itself).
	Public bool
	// QueryToken accepts ?access_token= (the stream, for EventSource).
	QueryToken bool
	// Query routes read storage: they pass the query gate.
	Query bool
	// Long routes (the stream) manage their own write deadlines.
	Long bool
}

// ClusterRoute is GET /api/v1/cluster (members and owners), for admins
// and analysts. The node serves it with Handle: the membership lives
// outside this package.
var ClusterRoute = Route{Method: http.MethodGet, Path: "/api/v1/cluster", Name: "cluster", Roles: []auth.Role{auth.Admin, auth.Analyst}}

// New builds the API. ready reports whether the node can serve (nil when
// it can; an error with a Degraded() method returning true when it serves
// but needs attention, which /readyz answers with 200 and the reason);
// gatherer is exported at /metrics; assets (may be nil) is the
// dashboard served at /.
func New(cfg Config, source Source, ready func() error, reg prometheus.Registerer, gatherer prometheus.Gatherer, assets fs.FS, logger *slog.Logger) *Server {
	if cfg.MaxWindow <= 0 {
		cfg.MaxWindow = DefaultMaxWindow
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	if cfg.MaxPoints <= 0 {
		cfg.MaxPoints = 10 * MaxSeriesPoints
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Status == nil {
		cfg.Status = func() live.Status { return live.Status{Members: 1} }
	}
	cfg.MaxConcurrentQueries = cmp.Or(cfg.MaxConcurrentQueries, DefaultMaxConcurrentQueries)
	cfg.MaxQueriesPerSubject = cmp.Or(cfg.MaxQueriesPerSubject, DefaultMaxQueriesPerSubject)
	cfg.QueryWait = cmp.Or(cfg.QueryWait, DefaultQueryWait)
	cfg.MaxStreams = cmp.Or(cfg.MaxStreams, DefaultMaxStreams)
	cfg.MaxStreamsPerSubject = cmp.Or(cfg.MaxStreamsPerSubject, DefaultMaxStreamsPerSubject)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, DefaultWriteTimeout)
	s := &Server{cfg: cfg, source: source, ready: ready, log: logger.With("component", "api"), mux: http.NewServeMux(),
		guard: &auth.Guard{Auth: cfg.Auth, Audit: cfg.Audit}}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_api_requests_total",
		Help: "API requests by route and status code."}, []string{"route", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tally_aggregator_api_request_duration_seconds",
		Help: "API request latency by route.", Buckets: prometheus.DefBuckets}, []string{"route"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_api_limited_total",
		Help: "API requests refused by a concurrency limit: queries or streams of the node (503), or of one subject (subject_queries, subject_streams: 429)."},
		[]string{"limit"})
	queriesInFlight := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_aggregator_api_queries_in_flight",
		Help: "Storage queries of the API running now."})
	streamsOpen := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_aggregator_api_streams_open",
		Help: "Streams admitted by the stream limit and open now."})
	reg.MustRegister(s.requests, s.latency, refused, queriesInFlight, streamsOpen)
	s.queries = newGate("queries", cfg.MaxConcurrentQueries, cfg.MaxQueriesPerSubject, cfg.QueryWait, refused, queriesInFlight)
	s.streams = newGate("streams", cfg.MaxStreams, cfg.MaxStreamsPerSubject, 0, refused, streamsOpen)
	s.metrics = s.metricsHandler(gatherer)

	s.mux.Handle("GET /healthz", s.measure("healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})))
	s.mux.Handle("GET /readyz", s.measure("readyz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.ready(); err != nil {
			// A degraded node serves (200) and says why.
			var d interface{ Degraded() bool }
			if errors.As(err, &d) && d.Degraded() {
				w.Write([]byte(err.Error() + "\n"))
				return
			}
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		w.Write([]byte("ready\n"))
	})))
	if !cfg.MetricsElsewhere {
		s.mux.Handle("GET /metrics", s.measure("metrics", s.metrics))
	}

	all := auth.AllRoles
	s.route(Route{Method: "GET", Path: "/api/v1/openapi.json", Name: "openapi", Public: true}, s.openAPI)
	s.route(Route{Method: "GET", Path: "/api/v1/whoami", Name: "whoami", Roles: all}, s.whoami)
	s.route(Route{Method: "GET", Path: "/api/v1/campaigns", Name: "campaigns", Roles: all, Params: campaignsParams, Query: true}, s.campaigns)
	s.route(Route{Method: "GET", Path: "/api/v1/kpis", Name: "kpis", Roles: all, Params: kpisParams, Query: true}, s.kpis)
	s.route(Route{Method: "GET", Path: "/api/v1/series", Name: "series", Roles: all, Params: seriesParams, Query: true}, s.series)
	s.route(Route{Method: "GET", Path: "/api/v1/bots", Name: "bots", Roles: all, Params: botsParams, Query: true}, s.bots)
	s.route(Route{Method: "GET", Path: "/api/v1/polls", Name: "polls", Roles: all, Params: pollsParams, Query: true}, s.polls)
	s.route(Route{Method: "GET", Path: "/api/v1/export.csv", Name: "export", Roles: all,
		Params: params([]string{pCampaign, pStep, pBy}, dataParams), Query: true, Long: true}, s.export)
	s.route(Route{Method: "GET", Path: "/api/v1/stream", Name: "stream", Roles: all, QueryToken: true,
		Params: []string{pCampaigns, pAccessToken}, Long: true}, s.stream)
	s.route(Route{Method: "POST", Path: "/api/v1/session", Name: "session", Public: true}, s.session)
	s.route(Route{Method: "POST", Path: "/api/v1/links", Name: "links", Roles: []auth.Role{auth.Admin}}, s.mintLink)
	s.alertRoutes()
	if assets != nil {
		s.mux.Handle("GET /", http.FileServerFS(assets))
	}
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Routes returns the /api/v1 routes registered so far.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// Handle registers another /api/v1 route (such as the cluster view) behind
// the same guard, audit and metrics. h sees the caller in the request
// context (auth.FromContext) and must refuse what the caller's scope
// excludes. Call it before serving.
func (s *Server) Handle(rt Route, h http.Handler) {
	s.route(rt, func(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
		h.ServeHTTP(w, r)
		return nil
	})
}

// handlerFunc answers one request; an error it returns has not been
// answered yet (400 for a *paramError, 502 otherwise).
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error

func (s *Server) route(rt Route, h handlerFunc) {
	s.routes = append(s.routes, rt)
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkParams(r.URL.Query(), rt.Params); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		p := auth.FromContext(r.Context())
		if rt.Query {
			release, err := s.queries.acquire(r.Context(), p.Subject)
			if err != nil {
				if r.Context().Err() == nil {
					writeBusy(w, err)
				}
				return
			}
			defer release()
		}
		if !rt.Long {
			// The answer is computed (within QueryTimeout), then written
			// within WriteTimeout.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.QueryTimeout + s.cfg.WriteTimeout))
		}
		if err := h(w, r, p); err != nil {
			s.answerError(w, r, rt.Name, err)
		}
	})
	var handler http.Handler = inner
	if !rt.Public {
		handler = s.guard.Wrap(auth.Route{Name: rt.Name, Roles: rt.Roles, QueryToken: rt.QueryToken}, inner)
	}
	s.mux.Handle(rt.Method+" "+rt.Path, s.measure(rt.Name, handler))
}

// errForbidden answers 403.
type errForbidden struct{ campaign string }

func (e errForbidden) Error() string {
	return fmt.Sprintf("campaign %q is outside your scope", e.campaign)
}

func (s *Server) answerError(w http.ResponseWriter, r *http.Request, route string, err error) {
	code := ErrorStatus(err)
	switch {
	case code == http.StatusBadGateway && r.Context().Err() != nil:
		// The client went away; nobody reads an answer.
	case code == http.StatusBadGateway:
		// The route, not the query: logs never carry what a client sent.
		s.log.Error("storage query failed", "route", route, "err", err)
		writeError(w, code, "storage query failed: "+err.Error())
	case errors.Is(err, errSubjectBusy), errors.Is(err, errBusy):
		writeBusy(w, err)
	case code == http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="tally"`)
		writeError(w, code, err.Error())
	case errors.Is(err, auth.ErrTooManyLinks):
		w.Header().Set("Retry-After", "60")
		writeError(w, code, err.Error())
	default:
		writeError(w, code, err.Error())
	}
}

// ErrorStatus is the HTTP status REST answers err with, err coming from
// a route or an answer function (Campaigns, KPIs, Series, Bots, Polls):
// 400 for a bad parameter or an answer beyond the bounds, 401 for a
// missing or expired credential, 403 for a campaign outside the caller's
// scope, 429 for the caller over its share of the query limit, 503 for
// the node over its own, and 502 for anything else (a failed storage
// query). GraphQL reports the same classes.
func ErrorStatus(err error) int {
	var (
		pe *paramError
		tl *tooLargeError
		fe errForbidden
		ro errRole
		re *requestError
		oe *alerting.ObjectError
	)
	switch {
	case errors.As(err, &oe):
		return oe.Status
	case errors.Is(err, errNoAlerting):
		return http.StatusServiceUnavailable
	case errors.Is(err, alerting.ErrNoData):
		return http.StatusNotFound
	case errors.As(err, &re), errors.As(err, &tl), errors.As(err, &pe):
		return http.StatusBadRequest
	case errors.As(err, &fe), errors.As(err, &ro):
		return http.StatusForbidden
	case errors.Is(err, errSubjectBusy):
		return http.StatusTooManyRequests
	case errors.Is(err, errNoStream), errors.Is(err, errBusy), errors.Is(err, auth.ErrTooManyLinks):
		return http.StatusServiceUnavailable
	case errors.Is(err, auth.ErrUnauthenticated):
		return http.StatusUnauthorized
	}
	return http.StatusBadGateway
}

// measure counts requests and their latency per route.
func (s *Server) measure(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		s.requests.WithLabelValues(route, fmt.Sprint(sw.status())).Inc()
		s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// MetricsHandler serves /metrics; the node mounts it on its own listener
// when Config.MetricsElsewhere is set.
func (s *Server) MetricsHandler() http.Handler { return s.metrics }

// HTTPServer returns the server for this handler, with the header bound
// and timeouts every listener of the API needs.
func HTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: MaxHeaderBytes}
}

// metricsHandler serves the whole registry to a caller with the metrics
// token or an admin's API token. Without either it is 401 when a metrics
// token is configured, else the registry without any series labelled
// with a campaign: campaign names are business data, and a scrape
// without a credential must not list them.
func (s *Server) metricsHandler(g prometheus.Gatherer) http.Handler {
	full := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	redacted := promhttp.HandlerFor(withoutLabel(g, "campaign"), promhttp.HandlerOpts{})
	want := []byte(s.cfg.MetricsToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := auth.BearerToken(r.Header.Get("Authorization"))
		if token != "" && len(want) > 0 && subtle.ConstantTimeCompare([]byte(token), want) == 1 {
			full.ServeHTTP(w, r)
			return
		}
		if token != "" && s.cfg.Auth != nil {
			if p, err := s.cfg.Auth.Authenticate(token); err == nil && p.Role == auth.Admin {
				full.ServeHTTP(w, r)
				return
			}
		}
		if len(want) > 0 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tally-metrics"`)
			writeError(w, http.StatusUnauthorized, "metrics need the metrics token")
			return
		}
		redacted.ServeHTTP(w, r)
	})
}

// withoutLabel gathers g and leaves out every metric that has the label.
func withoutLabel(g prometheus.Gatherer, label string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		out := mfs[:0]
		for _, mf := range mfs {
			kept := mf.Metric[:0]
			for _, m := range mf.Metric {
				if !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == label }) {
					kept = append(kept, m)
				}
			}
			if mf.Metric = kept; len(kept) > 0 {
				out = append(out, mf)
			}
		}
		return out, err
	})
}

// statusWriter remembers the status code; Unwrap keeps Flush and
// deadlines reachable for streams.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() { _ = w.FlushError() }

// FlushError flushes and reports failure (http.ResponseController uses it).
func (w *statusWriter) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
	return nil
}

package aggregator

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/aggregator/graphql"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/dashboard"
	"github.com/tally-edge/tally/internal/pki"
)

// httpSide is the node's HTTP surface: the API and dashboard server and,
// when http.metrics_listen is set, the metrics server on its own
// listener.
type httpSide struct {
	api     *api.Server
	authn   *auth.Authenticator
	audit   *auth.Audit
	metrics *http.Server // nil: /metrics is served by the API server
	mln     net.Listener
}

// newHTTPSide builds the authenticator, the audit log and the API (GraphQL
// included) from the configuration, and listens for metrics when they have their own
// address. close releases what it opened.
func newHTTPSide(cfg config.Config, hub *live.Hub, status func() live.Status, source api.Source, alerts api.AlertService, ready func() error,
	reg *prometheus.Registry, logger *slog.Logger) (*httpSide, error) {
	authCfg, err := cfg.Auth.AuthConfig()
	if err != nil {
		return nil, err
	}
	authn, err := auth.New(authCfg)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if !authn.Links().Shared() {
		logger.Info("auth.links.secret is not set: sign-in links minted with the admin API open sessions on this node only, until it restarts")
	}
	h := &httpSide{authn: authn}
	if cfg.HTTP.AuditLog != "" {
		if h.audit, err = auth.OpenAudit(auth.AuditConfig{Path: cfg.HTTP.AuditLog, MaxBytes: int64(cfg.HTTP.AuditMaxBytes),
			MaxFiles: cfg.HTTP.AuditMaxFiles, RefusedPerSecond: cfg.HTTP.AuditRefusedPerSecond}, reg); err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
	}
	c := cfg.HTTP
	h.api = api.New(api.Config{MaxWindow: c.MaxWindow, QueryTimeout: c.QueryTimeout, MaxPoints: c.MaxPoints,
		MetricsToken: c.MetricsToken, MetricsElsewhere: c.MetricsListen != "", Auth: authn, Audit: h.audit, Hub: hub, Status: status,
		MaxConcurrentQueries: c.MaxConcurrentQueries, MaxQueriesPerSubject: c.MaxQueriesPerSubject, QueryWait: c.QueryWait,
		MaxStreams: c.Stream.MaxStreams, MaxStreamsPerSubject: c.Stream.MaxPerSubject, WriteTimeout: c.WriteTimeout, Alerts: alerts},
		source, ready, reg, reg, dashboard.Assets(), logger)
	if err := graphql.Mount(h.api, c.GraphQLConfig(), reg, logger); err != nil {
		h.audit.Close()
		return nil, fmt.Errorf("graphql: %w", err)
	}
	if c.MetricsListen != "" {
		if h.mln, err = net.Listen("tcp", c.MetricsListen); err != nil {
			h.audit.Close()
			return nil, fmt.Errorf("listen metrics %s: %w", c.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", h.api.MetricsHandler())
		h.metrics = api.HTTPServer(mux)
	}
	return h, nil
}

// serveMetrics serves the metrics listener, if any, until Shutdown.
func (h *httpSide) serveMetrics(id *pki.Identity) error {
	if h.metrics == nil {
		return nil
	}
	return serveHTTP(h.metrics, h.mln, id)
}

func (h *httpSide) close() {
	if h.mln != nil {
		h.mln.Close()
	}
	h.audit.Close()
}

// Package graphql serves Tally's analytics as GraphQL at POST
// /api/v1/graphql, answered by the REST API's own code.
//
// # Same answers, same caller, same bounds
//
// Each data field of Query (campaigns, kpis, series, bots, polls), and
// each alert field (alerts, alertConfig, forecast), turns its arguments
// into the query parameters of the REST route of the same name and calls
// that route's answer function on *api.Server (Answers): the same
// parsing, bounds, viewer scoping, role rule, storage query and
// arithmetic. GraphQL adds no computation of its own; it reshapes maps
// into lists (a series point's values, bots by reason), and empty strings
// and the keys REST's JSON leaves out into nulls. It only reads: the
// alerting objects are edited through REST.
//
// The route is mounted on the API server (Mount), so it passes the same
// guard as REST: a bearer token (401), the caller's role (403), one audit
// line per request naming the campaigns read, and the query gate (429
// when the caller has its share of queries running, 503 when the node
// has). A viewer's question about another campaign is refused inside the
// query, by the answer function's scope check: that field is null with a
// FORBIDDEN error and the others still answer. So is a viewer's
// alertConfig, by AlertConfig's role check (REST's route refuses it in
// the guard as well).
//
// # Bounds of one request
//
// A GraphQL request can ask many questions at once, so it is bounded
// before anything runs:
//
//   - its body (query and variables) by Config.MaxQueryBytes (413), and
//     its query's tokens by Config.MaxQueryTokens (422, as it is parsed);
//   - its nesting by Config.MaxDepth, introspection included (422,
//     DEPTH_LIMIT_EXCEEDED);
//   - its cost by Config.MaxComplexity, where each field costs 1 and each
//     field that reads storage QueryCost more (422,
//     COMPLEXITY_LIMIT_EXCEEDED), which caps the storage queries of one
//     request; fields are counted with fragments expanded, in linear
//     time, before the cost is computed;
//   - its time by Config.Timeout, all its storage queries together.
//
// The storage queries of one request run one at a time: a request holds
// one slot of the query gate, as a REST request does, and never runs more
// than one query at once with it.
//
// Introspection is on. The GraphiQL playground is off unless
// Config.Playground is set. Subscriptions are not offered: the live
// stream is /api/v1/stream.
//
// # Adding a field
//
// A new kind of answer joins in four steps, without touching the others
// (the alert fields joined so: schema/alerts.graphqls, alerts.go):
//
//  1. its REST route's answer function on *api.Server, shaped as
//     func(context.Context, *auth.Principal, url.Values) (T, error);
//  2. a schema file in schema/ that extends Query ("extend type Query {
//     … }"), binding T's types in gqlgen.yml or reshaping T into the
//     generated models, and go generate ./aggregator/graphql;
//  3. the method in Answers, and a resolver that calls ask with it;
//  4. its cost in costs (QueryCost when it reads storage).
//
// The schema is compiled by gqlgen into internal/gen; the rest of the
// package is written by hand.
package graphql

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/99designs/gqlgen/graphql/playground"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/tally-edge/tally/aggregator/alerting"
	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/graphql/internal/gen"
)

// Path is where GraphQL is served: POST for queries, GET for the
// playground when it is on.
const Path = "/api/v1/graphql"

// Route is POST /api/v1/graphql: every role, with the query gate of the
// data routes (one slot per request) and no query parameters.
var Route = api.Route{Method: http.MethodPost, Path: Path, Name: "graphql", Roles: auth.AllRoles, Query: true}

// PlaygroundRoute is GET /api/v1/graphql: the GraphiQL page when
// Config.Playground is set, else 405. It is public: the page holds no
// data, and its queries go to Route with the token the user types into
// it.
var PlaygroundRoute = api.Route{Method: http.MethodGet, Path: Path, Name: "graphql_playground", Public: true}

// Answers computes the data routes' answers for a caller; args are the
// REST route's query parameters. *api.Server implements it, so GraphQL
// answers through REST's code. Implementations must be safe for
// concurrent use and note the campaigns read in ctx's audit note
// (auth.NoteCampaignsContext).
type Answers interface {
	Campaigns(ctx context.Context, p *auth.Principal, args url.Values) (api.CampaignsResponse, error)
	KPIs(ctx context.Context, p *auth.Principal, args url.Values) (api.BreakdownResponse, error)
	Series(ctx context.Context, p *auth.Principal, args url.Values) (api.SeriesResponse, error)
	Bots(ctx context.Context, p *auth.Principal, args url.Values) (api.BotsResponse, error)
	Polls(ctx context.Context, p *auth.Principal, args url.Values) (api.PollsResponse, error)
	Alerts(ctx context.Context, p *auth.Principal, args url.Values) (alerting.AlertList, error)
	AlertConfig(ctx context.Context, p *auth.Principal, args url.Values) (alerting.ObjectsView, error)
	Forecast(ctx context.Context, p *auth.Principal, args url.Values) (alerting.Forecast, error)
}

var _ Answers = (*api.Server)(nil)

// Config bounds the GraphQL endpoint.
type Config struct {
	// MaxDepth bounds how deeply a query's selections nest, counting
	// introspection's (__Type.ofType recurses). Our own types nest at
	// most 5 deep and the usual introspection query (gqlgen's, GraphiQL's)
	// 15, so the default, 20, admits both with room to spare.
	MaxDepth int
	// MaxComplexity bounds a query's cost: 1 per field plus QueryCost per
	// field that reads storage. The default, 1000, admits at most 9
	// storage fields in one request (with small selections; the five
	// data fields with every subfield cost 616 together, alerts,
	// alertConfig and forecast with every subfield 353).
	MaxComplexity int
	// MaxQueryBytes bounds a request's body (query, variables and
	// operation name); larger bodies get 413. Default 16 KiB.
	MaxQueryBytes int
	// MaxQueryTokens bounds the tokens of a query, checked as it is
	// parsed: validation compares fields of the same name pairwise, so
	// its time grows with the square of a query's size. The default,
	// 1000, admits the five data fields with every subfield (about 330
	// tokens) and the introspection query (180), and bounds validation
	// to tens of milliseconds.
	MaxQueryTokens int
	// Timeout bounds one request's execution, its storage queries
	// together. Default 30s (the node sets http.query_timeout).
	Timeout time.Duration
	// Playground serves the GraphiQL page at GET /api/v1/graphql. It loads
	// GraphiQL's scripts from a public CDN into the browser. Default off.
	Playground bool
}

// QueryCost is the complexity of a field that reads storage, on top of
// its selections.
const QueryCost = 100

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{MaxDepth: 20, MaxComplexity: 1000, MaxQueryBytes: 16 << 10, MaxQueryTokens: 1000, Timeout: 30 * time.Second}
}

// Validate reports a bound out of its range.
func (c Config) Validate() error {
	var errs []error
	if c.MaxDepth < 5 || c.MaxDepth > 100 {
		errs = append(errs, fmt.Errorf("max depth %d: want 5 to 100 (our types nest 5 deep)", c.MaxDepth))
	}
	if c.MaxComplexity < QueryCost+50 || c.MaxComplexity > 100*QueryCost {
		errs = append(errs, fmt.Errorf("max complexity %d: want %d (one storage field) to %d", c.MaxComplexity, QueryCost+50, 100*QueryCost))
	}
	if c.MaxQueryBytes < 4<<10 || c.MaxQueryBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("max query bytes %d: want 4 KiB to 1 MiB", c.MaxQueryBytes))
	}
	if c.MaxQueryTokens < 200 || c.MaxQueryTokens > 100_000 {
		errs = append(errs, fmt.Errorf("max query tokens %d: want 200 (introspection) to 100000", c.MaxQueryTokens))
	}
	if c.Timeout < time.Second {
		errs = append(errs, fmt.Errorf("timeout %s: at least 1s", c.Timeout))
	}
	return errors.Join(errs...)
}

// Mount builds the endpoint over srv's answers and registers it on srv
// (Route and PlaygroundRoute). Call it before serving.
func Mount(srv *api.Server, cfg Config, reg prometheus.Registerer, logger *slog.Logger) error {
	h, err := New(srv, cfg, reg, logger)
	if err != nil {
		return err
	}
	srv.Handle(Route, h)
	if cfg.Playground {
		srv.Handle(PlaygroundRoute, Playground())
	} else {
		srv.Handle(PlaygroundRoute, http.HandlerFunc(playgroundOff))
	}
	return nil
}

// playgroundOff answers GET when the playground is off: 405, so that the
// dashboard's file server (GET /) does not answer 404 for it.
func playgroundOff(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeJSONError(w, http.StatusMethodNotAllowed, "send GraphQL queries with POST; the playground page (GET) is off (http.graphql.playground)")
}

// Handler serves GraphQL queries. It expects to run behind the API's
// guard (auth.Guard via api.Server.Handle), which puts the caller in the
// request context; without a caller every data field is refused.
type Handler struct {
	cfg     Config
	srv     *handler.Server
	log     *slog.Logger
	errors  *prometheus.CounterVec
	tooBig  prometheus.Counter
	answers Answers
}

// New builds the handler. reg receives its metrics.
func New(answers Answers, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, answers: answers, log: logger.With("component", "graphql")}
	h.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_graphql_errors_total",
		Help: "Errors in GraphQL answers by code: refused operations (GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED, DEPTH_LIMIT_EXCEEDED, COMPLEXITY_LIMIT_EXCEEDED, QUERY_TOO_LARGE) and failed fields (BAD_REQUEST, FORBIDDEN, STORAGE_ERROR, …)."},
		[]string{"code"})
	reg.MustRegister(h.errors)

	es := gen.NewExecutableSchema(gen.Config{Resolvers: &resolver{answers: answers}, Complexity: costs()})
	s := handler.New(es)
	s.AddTransport(transport.POST{})
	s.SetQueryCache(lru.New[*ast.QueryDocument](100))
	s.SetParserTokenLimit(cfg.MaxQueryTokens)
	s.Use(extension.Introspection{})
	s.Use(shapeLimit{maxDepth: cfg.MaxDepth, maxFields: cfg.MaxComplexity})
	s.Use(extension.FixedComplexityLimit(cfg.MaxComplexity))
	s.SetErrorPresenter(h.presentError)
	s.SetRecoverFunc(h.recoverPanic)
	h.srv = s
	return h, nil
}

// ServeHTTP answers one GraphQL request: the body is bounded and read
// whole, then gqlgen parses, validates, bounds and executes it within
// Config.Timeout. The errors of the answer reach the audit line as its
// outcome.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := readBounded(w, r, h.cfg.MaxQueryBytes)
	if err != nil {
		h.errors.WithLabelValues(codeTooLarge).Inc()
		auth.NoteOutcome(r, "graphql_"+codeTooLarge)
		writeGraphQLError(w, http.StatusRequestEntityTooLarge, codeTooLarge, err.Error())
		return
	}
	r.Body = body
	w.Header().Set("Cache-Control", "no-store") // as REST's answers: business data
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	rec := &request{}
	ctx = withRequest(ctx, rec)
	h.srv.ServeHTTP(w, r.WithContext(ctx))
	if code := rec.first(); code != "" {
		auth.NoteOutcome(r, "graphql_"+code)
	}
}

// Playground serves the GraphiQL page for Path.
func Playground() http.Handler {
	return playground.Handler("Tally GraphQL", Path)
}

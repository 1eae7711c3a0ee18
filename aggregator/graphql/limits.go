package graphql

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tally-edge/tally/aggregator/api"
)

// Error codes this package sets in an error's extensions, beside gqlgen's
// (GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED,
// COMPLEXITY_LIMIT_EXCEEDED).
const (
	codeTooLarge = "QUERY_TOO_LARGE"
	codeTooDeep  = "DEPTH_LIMIT_EXCEEDED"
	// codeComplexity is gqlgen's code for a query over MaxComplexity.
	codeComplexity = "COMPLEXITY_LIMIT_EXCEEDED"
)

// The codes of a field's error, by the HTTP status REST answers the same
// question with (api.ErrorStatus).
var codeByStatus = map[int]string{
	http.StatusBadRequest:         "BAD_REQUEST",
	http.StatusUnauthorized:       "UNAUTHENTICATED",
	http.StatusForbidden:          "FORBIDDEN",
	http.StatusNotFound:           "NOT_FOUND",
	http.StatusTooManyRequests:    "RATE_LIMITED",
	http.StatusServiceUnavailable: "UNAVAILABLE",
	http.StatusBadGateway:         "STORAGE_ERROR",
}

// knownCodes are the values of the errors metric's code label; any other
// code counts as "other", so the label's values stay a closed set.
var knownCodes = map[string]bool{codeTooLarge: true, codeTooDeep: true, codeComplexity: true,
	errcode.ParseFailed: true, errcode.ValidationFailed: true}

func init() {
	for _, c := range codeByStatus {
		knownCodes[c] = true
	}
	// A query refused for its depth or cost is a protocol error, as a
	// query that fails validation is: 422 (400 for clients that accept
	// application/graphql-response+json), not 200 with no data.
	errcode.RegisterErrorType(codeTooDeep, errcode.KindProtocol)
	errcode.RegisterErrorType(codeComplexity, errcode.KindProtocol)
}

// answerError is an error of an answer function, to be shown with REST's
// status for it.
type answerError struct{ err error }

func (e answerError) Error() string { return e.err.Error() }
func (e answerError) Unwrap() error { return e.err }

// presentError gives each error a code (and, for a field's answer,
// REST's status), logs failed storage queries as REST does, and records
// the code for the metrics and the audit line.
func (h *Handler) presentError(ctx context.Context, err error) *gqlerror.Error {
	gerr := graphql.DefaultErrorPresenter(ctx, err)
	if ae, ok := errors.AsType[answerError](err); ok {
		status := api.ErrorStatus(ae.err)
		if status == http.StatusBadGateway {
			if !errors.Is(ctx.Err(), context.Canceled) { // else the client went away
				// The field, not the query: logs never carry what a client sent.
				h.log.Error("storage query failed", "route", "graphql", "field", fieldName(ctx), "err", ae.err)
			}
			gerr.Message = "storage query failed: " + ae.err.Error()
		}
		if gerr.Extensions == nil {
			gerr.Extensions = map[string]any{}
		}
		gerr.Extensions["code"] = codeByStatus[status]
		gerr.Extensions["status"] = status
	}
	code, _ := gerr.Extensions["code"].(string)
	if !knownCodes[code] {
		code = "other"
	}
	h.errors.WithLabelValues(code).Inc()
	if rec := requestOf(ctx); rec != nil {
		rec.add(code)
	}
	return gerr
}

// recoverPanic turns a resolver's panic into an error and logs it; the
// other fields still answer.
func (h *Handler) recoverPanic(ctx context.Context, v any) error {
	h.log.Error("graphql resolver panicked", "field", fieldName(ctx), "panic", fmt.Sprint(v))
	return errors.New("internal error")
}

func fieldName(ctx context.Context) string {
	if fc := graphql.GetFieldContext(ctx); fc != nil {
		return fc.Field.Name
	}
	return ""
}

// request is what one GraphQL request keeps beside gqlgen's context: the
// turn its storage queries take one at a time, and the codes of its
// errors. It is safe for concurrent use (fields resolve concurrently).
type request struct {
	turn chan struct{}

	mu    sync.Mutex
	codes []string
}

type requestKey struct{}

func withRequest(ctx context.Context, r *request) context.Context {
	r.turn = make(chan struct{}, 1)
	return context.WithValue(ctx, requestKey{}, r)
}

func requestOf(ctx context.Context) *request {
	r, _ := ctx.Value(requestKey{}).(*request)
	return r
}

func (r *request) add(code string) {
	r.mu.Lock()
	r.codes = append(r.codes, code)
	r.mu.Unlock()
}

// first is the code of the request's first error ("" with none), in
// lower case for the audit line's outcome.
func (r *request) first() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.codes) == 0 {
		return ""
	}
	return strings.ToLower(r.codes[0])
}

// takeTurn waits until no other storage query of the request runs: a
// request holds one slot of the API's query gate, so it runs one query
// at a time, as a REST request does. Outside a request (tests calling
// resolvers) there is no turn to take.
func takeTurn(ctx context.Context) (release func(), err error) {
	r := requestOf(ctx)
	if r == nil {
		return func() {}, nil
	}
	select {
	case r.turn <- struct{}{}:
		return func() { <-r.turn }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// readBounded reads r's body whole if it is at most max bytes.
func readBounded(w http.ResponseWriter, r *http.Request, max int) (io.ReadCloser, error) {
	tooLarge := fmt.Errorf("the request body is larger than %d bytes: send a smaller query", max)
	if r.ContentLength > int64(max) {
		return nil, tooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(max)))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, tooLarge
	}
	if err != nil {
		return nil, fmt.Errorf("read the request body: %w", err)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// writeJSONError answers {"error": msg}, as the REST routes do.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// writeGraphQLError answers a request refused before GraphQL ran, in
// GraphQL's shape.
func writeGraphQLError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{map[string]any{"message": msg, "extensions": map[string]any{"code": code}}}})
}

// shapeLimit refuses, before it runs, an operation whose selections nest
// deeper than maxDepth, or that holds more than maxFields fields once its
// fragments are expanded. Each field's complexity is at least 1, so such
// an operation is over the complexity limit anyway; counting first, in
// time linear in the query's text, keeps gqlgen's complexity walk (which
// expands every fragment spread anew) from spending exponential time on a
// small query whose fragments each spread the previous one twice.
// Validation has already refused fragment cycles.
type shapeLimit struct{ maxDepth, maxFields int }

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = shapeLimit{}

func (shapeLimit) ExtensionName() string                   { return "ShapeLimit" }
func (shapeLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (l shapeLimit) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	op := oc.Doc.Operations.ForName(oc.OperationName)
	if op == nil {
		return nil // gqlgen has refused it already
	}
	sh := (&shaper{cap: l.maxFields + 1, fragments: map[string]shape{}}).of(op.SelectionSet)
	if sh.depth > l.maxDepth {
		err := gqlerror.Errorf("operation nests %d fields deep, more than the limit of %d", sh.depth, l.maxDepth)
		errcode.Set(err, codeTooDeep)
		return err
	}
	if sh.fields > l.maxFields {
		err := gqlerror.Errorf("operation has more than %d fields once its fragments are expanded, which exceeds the complexity limit of %d",
			l.maxFields, l.maxFields)
		errcode.Set(err, codeComplexity)
		return err
	}
	return nil
}

// shape is the depth of the deepest field under a selection set (a field
// without selections is 1 deep) and the number of fields under it with
// fragments expanded, saturated at the shaper's cap.
type shape struct{ depth, fields int }

// shaper computes shapes, each named fragment's once.
type shaper struct {
	cap       int
	fragments map[string]shape
}

func (s *shaper) of(set ast.SelectionSet) shape {
	var out shape
	for _, sel := range set {
		var sh shape
		switch f := sel.(type) {
		case *ast.Field:
			sh = s.of(f.SelectionSet)
			sh.depth++
			sh.fields++
		case *ast.InlineFragment:
			sh = s.of(f.SelectionSet)
		case *ast.FragmentSpread:
			if f.Definition == nil {
				continue
			}
			known, ok := s.fragments[f.Name]
			if !ok {
				known = s.of(f.Definition.SelectionSet)
				s.fragments[f.Name] = known
			}
			sh = known
		}
		out.depth = max(out.depth, sh.depth)
		out.fields = min(out.fields+sh.fields, s.cap)
	}
	return out
}

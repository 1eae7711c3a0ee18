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
			// The field, not the query: logs never carry what a client sent.
			h.log.Error("storage query failed", "route", "graphql", "field", fieldName(ctx), "err", ae.err)
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

// writeGraphQLError answers a request refused before GraphQL ran, in
// GraphQL's shape.
func writeGraphQLError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{map[string]any{"message": msg, "extensions": map[string]any{"code": code}}}})
}

// depthLimit refuses an operation whose selections nest deeper than max,
// fragments expanded, before it runs. Validation has already refused
// fragment cycles; each fragment's depth is computed once.
type depthLimit struct{ max int }

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = depthLimit{}

func (depthLimit) ExtensionName() string                   { return "DepthLimit" }
func (depthLimit) Validate(graphql.ExecutableSchema) error { return nil }
func (d depthLimit) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	op := oc.Doc.Operations.ForName(oc.OperationName)
	if op == nil {
		return nil // gqlgen has refused it already
	}
	if depth := selectionDepth(op.SelectionSet, map[string]int{}); depth > d.max {
		err := gqlerror.Errorf("operation nests %d fields deep, more than the limit of %d", depth, d.max)
		errcode.Set(err, codeTooDeep)
		return err
	}
	return nil
}

// selectionDepth is the depth of the deepest field under set (a field
// with no selections is 1 deep). fragments memoizes named fragments.
func selectionDepth(set ast.SelectionSet, fragments map[string]int) int {
	deepest := 0
	for _, sel := range set {
		d := 0
		switch s := sel.(type) {
		case *ast.Field:
			d = 1 + selectionDepth(s.SelectionSet, fragments)
		case *ast.InlineFragment:
			d = selectionDepth(s.SelectionSet, fragments)
		case *ast.FragmentSpread:
			if s.Definition == nil {
				continue
			}
			known, ok := fragments[s.Name]
			if !ok {
				known = selectionDepth(s.Definition.SelectionSet, fragments)
				fragments[s.Name] = known
			}
			d = known
		}
		deepest = max(deepest, d)
	}
	return deepest
}

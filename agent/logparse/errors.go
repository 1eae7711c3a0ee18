package logparse

import (
	"errors"
	"strconv"
)

// Reason codes of malformed lines, as returned by Reason. They are stable:
// use them as metric labels.
const (
	// CodeNoMatch means the line does not have the shape of the format (a
	// separator or field is missing).
	CodeNoMatch = "no_match"
	// CodeBadTime means the time field is missing or not a valid time.
	CodeBadTime = "bad_time"
	// CodeBadRequest means the request line, method or URI is missing or
	// invalid.
	CodeBadRequest = "bad_request"
	// CodeBadStatus means the status is missing or not three digits.
	CodeBadStatus = "bad_status"
	// CodeBadJSON means a json line is not one flat JSON object, or a
	// mapped key holds an object or array.
	CodeBadJSON = "bad_json"
	// CodeBadValue means the rule's value_param is present but not a
	// finite number.
	CodeBadValue = "bad_value"
	// CodeBadCost means the rule's cost_param is present but not a finite
	// number.
	CodeBadCost = "bad_cost"
	// CodeBadType means the rule's type_param names no known event type.
	CodeBadType = "bad_type"
	// CodeTooLong means the line is longer than MaxLineBytes.
	CodeTooLong = "too_long"
)

// Skip reasons, as returned by Reason for lines that carry no event. Like
// the codes above they are stable metric labels.
const (
	// SkipEmpty means a blank line, or a request logged as "-" (a
	// connection closed before sending one).
	SkipEmpty = "skip_empty"
	// SkipRule means an explicit rule with type "skip" matched, or a rule
	// with only type_param matched a request without that parameter.
	SkipRule = "skip_rule"
	// SkipMethod means the default rule refused the method (HEAD, POST...).
	SkipMethod = "skip_method"
	// SkipStatus means the default rule refused the status (404, 301...).
	SkipStatus = "skip_status"
	// SkipAsset means the default rule refused the file extension (.css...).
	SkipAsset = "skip_asset"
	// SkipPath means the default rule refused the path: a skip_paths entry
	// or a target that is no path ("*", "host:443").
	SkipPath = "skip_path"
	// SkipDefault means no rule matched and the default rule is disabled
	// (type "skip").
	SkipDefault = "skip_default"
)

// Reasons returns every reason code Reason can return for a non-nil error
// from Parse, errors first, so metrics can be registered up front.
func Reasons() []string {
	return []string{
		CodeNoMatch, CodeBadTime, CodeBadRequest, CodeBadStatus, CodeBadJSON,
		CodeBadValue, CodeBadCost, CodeBadType, CodeTooLong,
		SkipEmpty, SkipRule, SkipMethod, SkipStatus, SkipAsset, SkipPath, SkipDefault,
	}
}

// ErrSkip is matched (errors.Is) by every error Parse returns for a
// well-formed line that maps to no event. Such lines are not failures:
// count them by Reason, do not log them.
var ErrSkip = errors.New("logparse: line maps to no event")

// skipError is a skip with its reason. The few values are allocated once,
// below, so skipping a line never allocates.
type skipError struct{ reason string }

func (e *skipError) Error() string        { return "logparse: no event (" + e.reason + ")" }
func (e *skipError) Is(target error) bool { return target == ErrSkip }

// The skip values are immutable after initialisation.
var (
	errSkipEmpty   = &skipError{SkipEmpty}
	errSkipRule    = &skipError{SkipRule}
	errSkipMethod  = &skipError{SkipMethod}
	errSkipStatus  = &skipError{SkipStatus}
	errSkipAsset   = &skipError{SkipAsset}
	errSkipPath    = &skipError{SkipPath}
	errSkipDefault = &skipError{SkipDefault}
)

// Error is a malformed line. Code is one of the Code* constants; Detail
// says what was wrong, quoting at most a short piece of the line.
type Error struct {
	// Code is the stable reason, e.g. "bad_time".
	Code string
	// Detail is a human-readable explanation for logs.
	Detail string
}

// Error implements error: "logparse: " + Code + ": " + Detail.
func (e *Error) Error() string { return "logparse: " + e.Code + ": " + e.Detail }

// Reason returns Code, so readers that label errors through a
// Reason() string method (agent/tail) count them by it.
func (e *Error) Reason() string { return e.Code }

// maxSnippet bounds how much of a line an error quotes: enough to
// recognise the problem, not enough to copy a whole line (which may hold
// personal data) into logs.
const maxSnippet = 48

// newError builds an *Error quoting b (shortened). It allocates, which is
// fine: it runs only for malformed lines.
func newError(code, what string, b []byte) *Error {
	if b == nil {
		return &Error{Code: code, Detail: what}
	}
	s := string(b)
	if len(s) > maxSnippet {
		s = s[:maxSnippet] + "…"
	}
	return &Error{Code: code, Detail: what + " " + strconv.Quote(s)}
}

// Reason returns the metric label for an error from Parse: "" for nil, a
// skip reason (Skip*, "skip_…") for ErrSkip, the Code of an *Error, and
// "other" for anything else.
func Reason(err error) string {
	switch e := err.(type) { // what Parse returns, without errors.As's reflection
	case nil:
		return ""
	case *skipError:
		return e.reason
	case *Error:
		return e.Code
	}
	var s *skipError
	if errors.As(err, &s) {
		return s.reason
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return "other"
}

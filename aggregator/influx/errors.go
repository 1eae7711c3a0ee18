package influx

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	influxhttp "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/tally-edge/tally/sketch"
)

// PermanentError reports a request that the server refused and that would
// be refused again: bad line protocol or field type conflict (400), bad
// credentials (401, 403), missing bucket (404), body too large (413). Write
// returns it at once, without retrying; match it with errors.As.
//
// Write also wraps a *PointTooLargeError or an invalid point in a
// PermanentError (StatusCode 0), so one errors.As answers "will retrying
// help?".
type PermanentError struct {
	// StatusCode is the HTTP status, or 0 when the write was refused
	// before any request was sent.
	StatusCode int
	// Message is the server's explanation, when it gave one.
	Message string
	// Err is the underlying error.
	Err error
}

// Error describes the refusal.
func (e *PermanentError) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("permanent: %v", e.Err)
	}
	if e.Message != "" {
		return fmt.Sprintf("permanent: influxdb answered HTTP %d: %s", e.StatusCode, e.Message)
	}
	return fmt.Sprintf("permanent: influxdb answered HTTP %d: %v", e.StatusCode, e.Err)
}

// Unwrap returns the underlying error.
func (e *PermanentError) Unwrap() error { return e.Err }

// RetryableError reports a failure that may pass: a network error or
// timeout, HTTP 408, 429 or any 5xx. Write retries these itself; it
// returns one (wrapped) only when MaxElapsed or the context ends first.
type RetryableError struct {
	// StatusCode is the HTTP status, or 0 for a network error.
	StatusCode int
	// RetryAfter is the server's Retry-After, or 0 when it sent none.
	RetryAfter time.Duration
	// Message is the server's explanation, when it gave one.
	Message string
	// Err is the underlying error.
	Err error
}

// Error describes the failure.
func (e *RetryableError) Error() string {
	switch {
	case e.StatusCode == 0:
		return fmt.Sprintf("retryable: %v", e.Err)
	case e.Message != "":
		return fmt.Sprintf("retryable: influxdb answered HTTP %d: %s", e.StatusCode, e.Message)
	default:
		return fmt.Sprintf("retryable: influxdb answered HTTP %d: %v", e.StatusCode, e.Err)
	}
}

// Unwrap returns the underlying error.
func (e *RetryableError) Unwrap() error { return e.Err }

// PointTooLargeError reports a point that InfluxDB would refuse or that
// would not be portable: a string field longer than MaxStringField bytes,
// or a series key longer than MaxSeriesKey bytes. Write checks every point
// before it sends anything, so nothing of that call was written.
//
// For a ContribPoint the fix is the caller's: spread its contributions over
// points whose Agent differs (see the package README); for a sketch.Minute
// it cannot happen with the deployment's sketch sizes (a dense HLL is
// 21.9 KB in base64).
type PointTooLargeError struct {
	Measurement string
	Series      sketch.Series
	Minute      int64
	// Agent is set for tally_contrib points.
	Agent string
	// Field names the string field, or is "" for the series key.
	Field string
	// Size is what the point would need; Limit is the cap.
	Size, Limit int
	// Contribs is the number of contributions in a tally_contrib point.
	Contribs int
}

// Error describes the oversized point.
func (e *PointTooLargeError) Error() string {
	what := "series key"
	if e.Field != "" {
		what = "field " + e.Field
	}
	s := fmt.Sprintf("%s point %s minute %d", e.Measurement, e.Series, e.Minute)
	if e.Agent != "" {
		s += fmt.Sprintf(" agent %q (%d contributions)", e.Agent, e.Contribs)
	}
	return fmt.Sprintf("%s: %s is %d bytes, over the %d-byte limit", s, what, e.Size, e.Limit)
}

// CorruptPointError reports stored points that could not be decoded (bad
// base64, msgpack or sketch encoding, or contributions that disagree with
// their point's tags). The loaders skip such points and return every other
// point together with this error, so one damaged point cannot stop an
// aggregator from rebuilding the rest; the caller decides whether to go on.
type CorruptPointError struct {
	// Skipped is the number of points left out.
	Skipped int
	// First is the first decode error, naming its point.
	First error
}

// Error summarises the skipped points.
func (e *CorruptPointError) Error() string {
	return fmt.Sprintf("%d stored points could not be decoded and were skipped; first: %v", e.Skipped, e.First)
}

// Unwrap returns the first decode error.
func (e *CorruptPointError) Unwrap() error { return e.First }

// maxRetryAfter caps a server's Retry-After, so a bogus value cannot park
// the writer for hours; the cap is still far above any sane hint.
const maxRetryAfter = 10 * time.Minute

// classify turns an error from the client library into a *PermanentError
// or a *RetryableError, by type and status code, never by message text.
// ctx errors are the caller's business and are checked before this.
func classify(err error) error {
	var he *influxhttp.Error
	if errors.As(err, &he) && he.StatusCode != 0 {
		msg := serverMessage(he)
		code := he.StatusCode
		if code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 {
			return &RetryableError{StatusCode: code, RetryAfter: retryAfter(he), Message: msg, Err: err}
		}
		return &PermanentError{StatusCode: code, Message: msg, Err: err}
	}
	// No HTTP status: the request did not complete. Transport failures
	// (refused, reset, EOF, timeouts, DNS) come wrapped in *url.Error by
	// net/http, or as net.Error from lower layers.
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return &RetryableError{Err: err}
	}
	return &PermanentError{Err: err}
}

// serverMessage extracts the server's explanation: InfluxDB 1.8 puts it
// in the X-Influxdb-Error header (the body is {"error": ...}, which the
// client library does not decode); 2.x fills Code and Message.
func serverMessage(he *influxhttp.Error) string {
	if he.Header != nil {
		if m := he.Header.Get("X-Influxdb-Error"); m != "" {
			return m
		}
	}
	if he.Message != "" {
		return strings.TrimSpace(he.Message)
	}
	return he.Code
}

// retryAfter reads the Retry-After hint: the library parses the
// delay-seconds form; the HTTP-date form is parsed here.
func retryAfter(he *influxhttp.Error) time.Duration {
	var d time.Duration
	if he.RetryAfter > 0 {
		d = time.Duration(he.RetryAfter) * time.Second
	} else if he.Header != nil {
		if v := he.Header.Get("Retry-After"); v != "" {
			if t, err := http.ParseTime(v); err == nil {
				d = time.Until(t)
			}
		}
	}
	if d < 0 {
		d = 0
	}
	return min(d, maxRetryAfter)
}

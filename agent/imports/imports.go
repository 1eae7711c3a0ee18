// Package imports brings data that is not a live event into the agent:
// ad spend reports (POST /v1/import/cost), poll results (POST
// /v1/import/polls) and email tools' event webhooks (POST
// /v1/webhooks/email). See README.md for the formats and the
// configuration keys.
//
// Both turn their input into event.Raw and run it through event.Normalize,
// so validation and the placeholders of absent dimensions are those of
// POST /v1/events. What differs is identity: every imported row becomes a
// contribution of its own, keyed by a row id derived from the row's
// natural key (event.RowID) and versioned by the import time. Importing
// the same report again, or a provider retrying the same webhook, replaces
// the earlier contribution instead of adding to it, at the agent and at
// the aggregator.
package imports

import (
	"crypto/ecdsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/ingest"
	"github.com/tally-edge/tally/internal/yamlconf"
)

// Config configures the import endpoints. The yaml tags are the keys under
// `imports:` in the agent configuration.
type Config struct {
	// MaxBodyBytes caps one request body (413 above). Spend reports are
	// larger than event batches: about 100 bytes a row. Default 16MiB.
	MaxBodyBytes yamlconf.ByteSize `yaml:"max_body_bytes"`
	// MaxRows caps the report rows or webhook events in one body (413
	// above). Default 100000.
	MaxRows int `yaml:"max_rows"`
	// MaxAge rejects rows and webhook events older than this. Spend is
	// often imported weeks late and corrected later still; the aggregator
	// merges old minutes with what InfluxDB holds, so only its retention
	// limits this. Default 8760h (a year).
	MaxAge time.Duration `yaml:"max_age"`
	// MaxClockSkew rejects rows with a `ts` and webhook events further in
	// the future than this. Rows given by `date` may start up to 24h
	// ahead, since the day has begun in time zones east of UTC. Default 5m.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// Currency, when set (ISO 4217, e.g. "EUR"), is the currency of every
	// cost Tally holds: a report row whose `currency` column names another
	// is rejected (Tally does not convert). Rows without the column are
	// taken to be in it. Empty accepts any currency and records none, so
	// mixing currencies is then the importer's responsibility. Default "".
	Currency string `yaml:"currency"`
	// WebhookToken, when set, is required on POST /v1/webhooks/email as
	// "Authorization: Bearer TOKEN" or "?token=TOKEN" (401 otherwise). At
	// least 16 characters; keep it out of the file with ${VAR}. Default ""
	// (no check: bind the agent to a private address).
	WebhookToken string `yaml:"webhook_token"`
	// SendGridVerificationKey, when set, is the public key of SendGrid's
	// Signed Event Webhook (base64, as SendGrid's settings page shows it):
	// SendGrid payloads must then carry a valid signature (401 otherwise),
	// and payloads of other formats are refused. Default "".
	SendGridVerificationKey string `yaml:"sendgrid_verification_key"`

	// Now is the clock: row versions and the age checks use it. Nil means
	// time.Now. For tests.
	Now func() time.Time `yaml:"-"`
}

// DefaultConfig returns the defaults: 16MiB bodies, 100,000 rows, rows up
// to a year old, any currency, no webhook authentication.
func DefaultConfig() Config {
	return Config{MaxBodyBytes: 16 << 20, MaxRows: 100_000, MaxAge: 365 * 24 * time.Hour, MaxClockSkew: 5 * time.Minute}
}

var currencyRe = regexp.MustCompile(`^[A-Z]{3}$`)

// Validate reports every problem at once, naming the key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.MaxBodyBytes < 1<<10 || c.MaxBodyBytes > 1<<30 {
		bad("imports.max_body_bytes %s: want 1KiB to 1GiB", c.MaxBodyBytes)
	}
	if c.MaxRows < 1 {
		bad("imports.max_rows %d: at least 1", c.MaxRows)
	}
	if c.MaxAge <= 0 {
		bad("imports.max_age %s: must be positive", c.MaxAge)
	}
	if c.MaxClockSkew < 0 {
		bad("imports.max_clock_skew %s: must not be negative", c.MaxClockSkew)
	}
	if c.Currency != "" && !currencyRe.MatchString(c.Currency) {
		bad("imports.currency %q: want an ISO 4217 code such as EUR", c.Currency)
	}
	if c.WebhookToken != "" && len(c.WebhookToken) < 16 {
		bad("imports.webhook_token: at least 16 characters (set it with ${TALLY_WEBHOOK_TOKEN})")
	}
	if c.SendGridVerificationKey != "" {
		if _, err := parseECDSAKey(c.SendGridVerificationKey); err != nil {
			bad("imports.sendgrid_verification_key: %v", err)
		}
	}
	return errors.Join(errs...)
}

// maxErrors caps the per-row errors listed in one answer.
const maxErrors = 100

// Handlers serves the import endpoints. It is safe for concurrent use.
type Handlers struct {
	cfg    Config
	sink   ingest.Sink
	hasher event.Hasher
	region string
	log    *slog.Logger
	sgKey  *ecdsa.PublicKey

	lastVersion atomic.Uint64 // the last row version handed out

	rows     *prometheus.CounterVec // by kind, result
	requests *prometheus.CounterVec // by kind, code
}

// New returns the import handlers and registers their metrics with reg.
// Accepted rows go to sink (the agent's collector), visitor identities
// (email addresses) are hashed with hasher, and every series is labelled
// with region. It fails only on a configuration Validate rejects.
func New(cfg Config, sink ingest.Sink, hasher event.Hasher, region string, reg prometheus.Registerer, logger *slog.Logger) (*Handlers, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handlers{cfg: cfg, sink: sink, hasher: hasher, region: region, log: logger.With("component", "imports")}
	if cfg.SendGridVerificationKey != "" {
		h.sgKey, _ = parseECDSAKey(cfg.SendGridVerificationKey) // checked by Validate
	}
	h.rows = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_import_rows_total",
		Help: "Imported report rows and webhook events by kind (cost, polls, email) and result (accepted, rejected, ignored)."},
		[]string{"kind", "result"})
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_import_requests_total",
		Help: "Import and webhook requests by kind (cost, polls, email) and status code."}, []string{"kind", "code"})
	reg.MustRegister(h.rows, h.requests)
	return h, nil
}

// Cost returns the handler of POST /v1/import/cost.
func (h *Handlers) Cost() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serveReport(w, r, costReport) })
}

// Polls returns the handler of POST /v1/import/polls.
func (h *Handlers) Polls() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serveReport(w, r, pollReport) })
}

// EmailWebhook returns the handler of POST /v1/webhooks/email.
func (h *Handlers) EmailWebhook() http.Handler { return http.HandlerFunc(h.serveEmail) }

// Result is the body of a 202 answer: what one import did.
type Result struct {
	// Accepted counts the rows (report rows or webhook events) that were
	// journaled.
	Accepted int `json:"accepted"`
	// Rejected counts the rows that failed validation; Errors lists them.
	Rejected int `json:"rejected"`
	// Ignored counts webhook events of kinds Tally does not record
	// (delivered, processed, …).
	Ignored int `json:"ignored,omitempty"`
	// Events counts the events journaled: up to three per cost row (cost,
	// impression, click), one per webhook event.
	Events int `json:"events"`
	// Summed counts cost rows that shared their row key with an earlier
	// row of the same report and were added to it (e.g. one row per ad
	// group of the same campaign and day).
	Summed int `json:"summed,omitempty"`
	// IgnoredColumns names report columns that mean nothing to Tally.
	IgnoredColumns []string `json:"ignored_columns,omitempty"`
	// Errors lists the first 100 rejections; ErrorsTruncated says when
	// there were more.
	Errors          []RowError `json:"errors"`
	ErrorsTruncated bool       `json:"errors_truncated,omitempty"`
}

// RowError is one rejected row.
type RowError struct {
	// Line is the 1-based line of the body where the row starts (the CSV
	// header is line 1).
	Line int `json:"line"`
	// Index is the 0-based position of the row among the body's rows or
	// array elements.
	Index int `json:"index"`
	// Error names the field at fault and why.
	Error string `json:"error"`
}

func (r *Result) reject(line, index int, err error) {
	r.Rejected++
	if len(r.Errors) >= maxErrors {
		r.ErrorsTruncated = true
		return
	}
	r.Errors = append(r.Errors, RowError{Line: line, Index: index, Error: err.Error()})
}

type problem struct {
	Error string `json:"error"`
}

func (h *Handlers) fail(w http.ResponseWriter, kind string, code int, msg string) {
	h.requests.WithLabelValues(kind, strconv.Itoa(code)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(problem{Error: msg})
}

// errTooLarge is a body over MaxBodyBytes.
var errTooLarge = errors.New("body too large")

// readBody reads the request body up to MaxBodyBytes, answering the
// failedBody answers a body that could not be read as rows: 413 for too
// many, 400 otherwise. It reports whether it answered (err != nil).
func (h *Handlers) failedBody(w http.ResponseWriter, kind string, err error) bool {
	var tooMany *errTooMany
	switch {
	case errors.As(err, &tooMany):
		h.fail(w, kind, http.StatusRequestEntityTooLarge, err.Error())
	case err != nil:
		h.fail(w, kind, http.StatusBadRequest, err.Error())
	default:
		return false
	}
	return true
}

// request itself when it cannot.
func (h *Handlers) readBody(w http.ResponseWriter, r *http.Request, kind string) ([]byte, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, kind, http.StatusMethodNotAllowed, "use POST")
		return nil, false
	}
	limit := int64(h.cfg.MaxBodyBytes)
	if r.ContentLength > limit {
		h.fail(w, kind, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the limit of %d (imports.max_body_bytes): split the report", r.ContentLength, limit))
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err == nil && int64(len(body)) > limit {
		err = errTooLarge
	}
	switch {
	case errors.Is(err, errTooLarge):
		h.fail(w, kind, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes (imports.max_body_bytes): split the report", limit))
		return nil, false
	case err != nil:
		h.fail(w, kind, http.StatusBadRequest, "reading body: "+err.Error())
		return nil, false
	}
	return body, true
}

// accept hands events to the sink and writes the answer: 202 with res,
// 503 with Retry-After when the agent is busy, 500 when the events could
// not be made durable. It reports whether the events were accepted.
func (h *Handlers) accept(w http.ResponseWriter, kind string, events []event.Event, res *Result) bool {
	if len(events) > 0 {
		if err := h.sink.Accept(events); err != nil {
			var busy *ingest.BusyError
			if errors.As(err, &busy) {
				w.Header().Set("Retry-After", strconv.Itoa(max(1, int(busy.RetryAfter.Round(time.Second)/time.Second))))
				h.fail(w, kind, http.StatusServiceUnavailable, busy.Error()+"; nothing was imported, send the same body again")
				return false
			}
			h.log.Error("import failed: events could not be journaled", "kind", kind, "err", err)
			h.fail(w, kind, http.StatusInternalServerError, "could not make the rows durable; nothing was imported")
			return false
		}
	}
	h.rows.WithLabelValues(kind, "accepted").Add(float64(res.Accepted))
	h.rows.WithLabelValues(kind, "rejected").Add(float64(res.Rejected))
	if res.Ignored > 0 {
		h.rows.WithLabelValues(kind, "ignored").Add(float64(res.Ignored))
	}
	res.Events = len(events)
	if res.Errors == nil {
		res.Errors = []RowError{}
	}
	h.requests.WithLabelValues(kind, "202").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(res)
	return true
}

// version returns the row version of one import: the import time in unix
// milliseconds, strictly increasing within the process so two imports in
// the same millisecond still order (the later replaces the earlier).
func (h *Handlers) version() uint64 {
	now := uint64(max(h.cfg.Now().UnixMilli(), 1))
	for {
		last := h.lastVersion.Load()
		v := max(now, last+1)
		if h.lastVersion.CompareAndSwap(last, v) {
			return v
		}
	}
}

// eventContext returns the normalisation context of an import. Imports carry
// no client identity: the request comes from a tool, not a visitor, so
// ClientIP and UserAgent stay empty and no anonymous visitor is derived.
func (h *Handlers) eventContext(now time.Time) event.Context {
	return event.Context{Now: now, Region: h.region, MaxAge: h.cfg.MaxAge, MaxSkew: h.cfg.MaxClockSkew}
}

// authorized checks the webhook token, in constant time.
func (h *Handlers) authorized(r *http.Request) bool {
	want := h.cfg.WebhookToken
	if want == "" {
		return true
	}
	var got string
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
		got = strings.TrimSpace(a[7:])
	} else {
		got = r.URL.Query().Get("token")
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// parseECDSAKey decodes a base64 DER (PKIX) ECDSA public key, with or
// without PEM armour.
func parseECDSAKey(s string) (*ecdsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "-----BEGIN PUBLIC KEY-----")
	s = strings.TrimSuffix(s, "-----END PUBLIC KEY-----")
	s = strings.Join(strings.Fields(s), "")
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a public key: %w", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, want an ECDSA key", k)
	}
	return ek, nil
}

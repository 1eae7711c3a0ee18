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
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/edge"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
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
	// WebhookToken is a token POST /v1/webhooks/email takes besides the
	// server senders' (http.server_tokens), as "Authorization: Bearer
	// TOKEN" or "?token=TOKEN", for email tools that can only be given a
	// URL. At least 16 characters; keep it out of the file with ${VAR}.
	// Default "": the webhook takes server tokens only, and with none
	// configured it is off (403).
	WebhookToken string `yaml:"webhook_token"`
	// SendGridVerificationKey, when set, is the public key of SendGrid's
	// Signed Event Webhook (base64, as SendGrid's settings page shows it):
	// SendGrid payloads must then carry a valid signature (401 otherwise),
	// and payloads of other formats are refused. Default "".
	SendGridVerificationKey string `yaml:"sendgrid_verification_key"`

	// Now is the clock: row versions and the age checks use it. Nil means
	// time.Now. For tests.
	Now func() time.Time `yaml:"-"`
	// Tokens are the server senders' tokens (http.server_tokens): every
	// import route requires one (401), and with none configured the
	// report routes are off (403). Set by the agent.
	Tokens *edge.Tokens `yaml:"-"`
	// InFlight bounds the body bytes all requests hold (503 beyond); nil:
	// unbounded. Set by the agent.
	InFlight *edge.InFlight `yaml:"-"`
}

// DefaultConfig returns the defaults: 16MiB bodies, 100,000 rows, rows up
// to a year old, any currency, no webhook token of its own.
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
	cfg          Config
	env          *source.Env
	sink         source.Sink
	log          *slog.Logger
	sgKey        *ecdsa.PublicKey
	webhookToken *edge.Tokens

	lastVersion atomic.Uint64 // the last row version handed out

	rows     *prometheus.CounterVec // by kind, result
	requests *prometheus.CounterVec // by kind, code
}

// New returns the import handlers and registers their metrics with reg.
// Rows are normalised with env (region; visitor identities such as email
// addresses are hashed with its hasher) and accepted rows go to sink (the
// agent's collector). It fails only on a configuration Validate rejects.
func New(cfg Config, env *source.Env, sink source.Sink, reg prometheus.Registerer, logger *slog.Logger) (*Handlers, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handlers{cfg: cfg, env: env, sink: sink, log: logger.With("component", "imports"),
		webhookToken: edge.NewTokens(cfg.WebhookToken)}
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

// admit checks what every import route requires before reading a body:
// POST, a sender holding a token (one of tokens, or the webhook's own
// when webhook), and no request a web page could have sent. It answers
// the request itself when it refuses it.
func (h *Handlers) admit(w http.ResponseWriter, r *http.Request, kind string, webhook bool) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, kind, http.StatusMethodNotAllowed, "use POST")
		return false
	}
	if h.cfg.Tokens.Empty() && (!webhook || h.webhookToken.Empty()) {
		what := "http.server_tokens"
		if webhook {
			what += " or imports.webhook_token"
		}
		h.fail(w, kind, http.StatusForbidden, "imports are off: they need a token, and none is configured ("+what+")")
		return false
	}
	got := edge.Bearer(r)
	if got == "" && webhook {
		got = r.URL.Query().Get("token")
	}
	if !h.cfg.Tokens.Match(got) && !(webhook && h.webhookToken.Match(got)) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tally"`)
		msg := "missing or wrong token (Authorization: Bearer …)"
		if webhook {
			msg = "missing or wrong webhook token (Authorization: Bearer … or ?token=…)"
		}
		h.fail(w, kind, http.StatusUnauthorized, msg)
		return false
	}
	if why, ok := edge.BrowserCanSend(r); ok {
		code := http.StatusForbidden
		if r.Header.Get("Origin") == "" && r.Header.Get("Sec-Fetch-Site") == "" {
			code = http.StatusUnsupportedMediaType
		}
		h.fail(w, kind, code, why)
		return false
	}
	return true
}

// readBody reads the request body up to MaxBodyBytes, answering the
// request itself when it cannot. The caller releases the body.
func (h *Handlers) readBody(w http.ResponseWriter, r *http.Request, kind string) (*edge.Body, bool) {
	limit := int64(h.cfg.MaxBodyBytes)
	body, err := edge.ReadBody(r, limit, h.cfg.InFlight)
	switch {
	case errors.Is(err, edge.ErrTooLarge):
		h.fail(w, kind, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes (imports.max_body_bytes): split the report", limit))
		return nil, false
	case errors.Is(err, edge.ErrBusy):
		w.Header().Set("Retry-After", "1")
		h.fail(w, kind, http.StatusServiceUnavailable, "busy: too many request bytes in flight; nothing was imported, send the same body again")
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
			var busy *source.BusyError
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

// eventContext returns the normalisation context of an import. Imports
// carry no client identity: the request comes from a tool, not a visitor,
// so there is no request address or user agent, and no bot check.
func (h *Handlers) eventContext(now time.Time) event.Context {
	c := h.env.Context(now)
	c.MaxAge, c.MaxSkew, c.Bots = h.cfg.MaxAge, h.cfg.MaxClockSkew, nil
	return c
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

package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// The audit log answers "who read or exported what". Every line is one
// JSON object; its "msg" says what it records:
//
//   - "api": one finished request (for a stream: when it ended);
//   - "stream_start": a stream that was just opened, written before its
//     first event so that a stream open for hours is on record at once;
//   - "refused_suppressed": how many refused requests (401, 429) were
//     not written one by one since the previous such line.
//
// It is hostile input's first stop, so it is bounded three ways: every
// field is clipped (a line is at most MaxAuditLineBytes), refused
// requests beyond AuditConfig.RefusedPerSecond are counted instead of
// written, and the file is rotated by size and keeps AuditConfig.MaxFiles
// old files. A line that cannot be written is counted
// (tally_aggregator_audit_write_errors_total); the request is still
// answered.

// Bounds of the audit log.
const (
	// MaxAuditLineBytes bounds one audit line.
	MaxAuditLineBytes = 4 << 10
	// MaxAuditCampaigns bounds the campaigns named on one audit line;
	// the line says how many more there were.
	MaxAuditCampaigns     = 32
	maxAuditCampaignBytes = 2 << 10
	maxAuditParamBytes    = 1 << 10
	maxAuditPathBytes     = 256
	maxAuditShortBytes    = 64

	// DefaultAuditMaxBytes is the size at which the file is rotated.
	DefaultAuditMaxBytes = 64 << 20
	// DefaultAuditMaxFiles is the number of rotated files kept.
	DefaultAuditMaxFiles = 5
	// DefaultAuditRefusedPerSecond is the rate of refused requests
	// written one by one.
	DefaultAuditRefusedPerSecond = 10
)

// AuditConfig configures the audit log.
type AuditConfig struct {
	// Path is the file; created mode 0600, appended to.
	Path string
	// MaxBytes rotates the file before a line would take it past this
	// size: Path becomes Path.1, Path.1 becomes Path.2, and so on.
	// Default 64 MiB, at least 64 KiB.
	MaxBytes int64
	// MaxFiles is how many rotated files are kept (Path.1 … Path.N); the
	// oldest is removed. Default 5, at least 1.
	MaxFiles int
	// RefusedPerSecond is how many refused requests (401, 429) per second
	// get a line each (with a burst of as many); the rest are counted and
	// summed up in "refused_suppressed" lines. Default 10; -1 writes
	// none one by one.
	RefusedPerSecond int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Audit writes the audit log. It is safe for concurrent use; a nil *Audit
// writes nothing.
type Audit struct {
	h       slog.Handler
	file    *rotatingFile
	now     func() time.Time
	refused *rate.Limiter

	suppressed  atomic.Int64 // refused requests not written since the last summary
	summaryMu   sync.Mutex
	lastSummary time.Time

	lines, writeErrors, suppressedTotal prometheus.Counter
}

// OpenAudit opens the audit log; its metrics go to reg (may be nil).
func OpenAudit(cfg AuditConfig, reg prometheus.Registerer) (*Audit, error) {
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultAuditMaxBytes
	}
	if cfg.MaxFiles == 0 {
		cfg.MaxFiles = DefaultAuditMaxFiles
	}
	if cfg.RefusedPerSecond == 0 {
		cfg.RefusedPerSecond = DefaultAuditRefusedPerSecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Path == "":
		return nil, errors.New("audit log: no path")
	case cfg.MaxBytes < 64<<10:
		return nil, fmt.Errorf("audit log: max bytes %d, at least 64KiB", cfg.MaxBytes)
	case cfg.MaxFiles < 1:
		return nil, fmt.Errorf("audit log: max files %d, at least 1", cfg.MaxFiles)
	}
	rf := &rotatingFile{path: cfg.Path, max: cfg.MaxBytes, keep: cfg.MaxFiles}
	if err := rf.open(); err != nil {
		return nil, err
	}
	a := &Audit{file: rf, now: cfg.Now, lastSummary: cfg.Now(),
		h: slog.NewJSONHandler(rf, &slog.HandlerOptions{ReplaceAttr: func(groups []string, at slog.Attr) slog.Attr {
			if at.Key == slog.LevelKey && len(groups) == 0 {
				return slog.Attr{} // every line is info; the level says nothing
			}
			return at
		}})}
	limit, burst := rate.Limit(cfg.RefusedPerSecond), cfg.RefusedPerSecond
	if cfg.RefusedPerSecond < 0 {
		limit, burst = 0, 0
	}
	a.refused = rate.NewLimiter(limit, burst)
	a.lines = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_audit_lines_total",
		Help: "Lines written to the API audit log."})
	a.writeErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_audit_write_errors_total",
		Help: "Audit lines that could not be written (the requests were answered)."})
	a.suppressedTotal = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_audit_refused_suppressed_total",
		Help: "Refused API requests (401, 429) beyond the audit log's rate, counted instead of written one by one."})
	rf.rotations = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_audit_rotations_total",
		Help: "Times the audit log file was rotated."})
	if reg != nil {
		reg.MustRegister(a.lines, a.writeErrors, a.suppressedTotal, rf.rotations)
	}
	return a, nil
}

// Close writes the last summary and closes the file; safe on nil and
// twice.
func (a *Audit) Close() error {
	if a == nil {
		return nil
	}
	a.summarize(true)
	return a.file.close()
}

// refusedStatus reports whether a status is a refusal that costs the
// caller nothing (no credential or no budget), so a flood of them is
// sampled.
func refusedStatus(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusTooManyRequests
}

// Record writes the line of one finished request. p is nil when the
// caller was not authenticated.
func (a *Audit) Record(r *http.Request, route string, p *Principal, n *Note, status int, bytes int64, d time.Duration) {
	if a == nil {
		return
	}
	a.summarize(false)
	if refusedStatus(status) && !a.refused.AllowN(a.now(), 1) {
		a.suppressed.Add(1)
		a.suppressedTotal.Inc()
		return
	}
	attrs := a.requestAttrs(r, route, p, n)
	attrs = append(attrs, slog.Int("status", status), slog.Int64("bytes", bytes),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000))
	if n != nil {
		n.mu.Lock()
		outcome := n.outcome
		n.mu.Unlock()
		if outcome != "" {
			attrs = append(attrs, slog.String("outcome", clip(outcome, maxAuditShortBytes)))
		}
	}
	a.write(r.Context(), "api", attrs)
}

// recordStart writes the line of a stream that was just opened.
func (a *Audit) recordStart(r *http.Request, route string, p *Principal, n *Note) {
	if a == nil {
		return
	}
	a.summarize(false)
	attrs := a.requestAttrs(r, route, p, n)
	if p != nil && !p.Expires.IsZero() {
		attrs = append(attrs, slog.Time("expires", p.Expires))
	}
	a.write(r.Context(), "stream_start", attrs)
}

// requestAttrs are the bounded fields every request line has. The query
// of an unauthenticated request is not written, only its length: it is
// whatever a stranger chose to send.
func (a *Audit) requestAttrs(r *http.Request, route string, p *Principal, n *Note) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("route", route),
		slog.String("method", clip(r.Method, maxAuditShortBytes)),
		slog.String("path", clip(r.URL.Path, maxAuditPathBytes)),
	}
	if p != nil {
		q := r.URL.Query()
		q.Del("access_token")
		attrs = append(attrs, slog.String("params", clip(canonicalQuery(q), maxAuditParamBytes)),
			slog.String("subject", clip(p.Subject, MaxNameBytes)), slog.String("role", string(p.Role)))
	} else {
		attrs = append(attrs, slog.Int("params_bytes", len(r.URL.RawQuery)), slog.String("subject", ""), slog.String("role", ""))
	}
	attrs = append(attrs, slog.String("remote", clip(r.RemoteAddr, maxAuditShortBytes)))
	var cs []string
	if n != nil {
		n.mu.Lock()
		cs = append(cs, n.campaigns...)
		n.mu.Unlock()
	}
	sort.Strings(cs)
	kept, size := 0, 0
	for kept < len(cs) && kept < MaxAuditCampaigns && size+len(cs[kept]) <= maxAuditCampaignBytes {
		size += len(cs[kept])
		kept++
	}
	if more := len(cs) - kept; more > 0 {
		attrs = append(attrs, slog.Int("campaigns_more", more))
	}
	return append(attrs, slog.Any("campaigns", nonNil(cs[:kept])))
}

// summarize writes a "refused_suppressed" line when refused requests
// were left out and a second has passed since the last one (or always,
// when final).
func (a *Audit) summarize(final bool) {
	if a.suppressed.Load() == 0 {
		return
	}
	now := a.now()
	a.summaryMu.Lock()
	defer a.summaryMu.Unlock()
	if !final && now.Sub(a.lastSummary) < time.Second {
		return
	}
	n := a.suppressed.Swap(0)
	if n == 0 {
		return
	}
	a.write(context.Background(), "refused_suppressed", []slog.Attr{slog.Int64("count", n),
		slog.Time("since", a.lastSummary)})
	a.lastSummary = now
}

func (a *Audit) write(ctx context.Context, msg string, attrs []slog.Attr) {
	rec := slog.NewRecord(a.now(), slog.LevelInfo, msg, 0)
	rec.AddAttrs(attrs...)
	if err := a.h.Handle(ctx, rec); err != nil {
		a.writeErrors.Inc()
		return
	}
	a.lines.Inc()
}

// clip cuts s to at most n bytes (on a rune boundary), marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…(+") - 12
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(+" + strconv.Itoa(len(s)-cut) + ")"
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// canonicalQuery encodes q with sorted keys (url.Values.Encode sorts).
func canonicalQuery(q url.Values) string { return q.Encode() }

// rotatingFile is an append-only file rotated by size: before a write
// would take it past max, path becomes path.1 (path.1 becomes path.2 …,
// the oldest beyond keep is removed) and a new path is opened. Each
// Write is one line, so lines are never split across files.
type rotatingFile struct {
	path string
	max  int64
	keep int

	mu        sync.Mutex
	f         *os.File
	size      int64
	closed    bool
	rotations prometheus.Counter
}

func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit log: %w", err)
	}
	r.f, r.size = f, st.Size()
	return nil
}

// Write appends p, rotating first when p would not fit. A line longer
// than max (it cannot be: lines are clipped) would still be written
// alone in a fresh file.
func (r *rotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, os.ErrClosed
	}
	if r.f == nil { // a previous rotation failed half-way: try again
		if err := r.open(); err != nil {
			return 0, err
		}
	}
	if r.size > 0 && r.size+int64(len(p)) > r.max {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

func (r *rotatingFile) rotate() error {
	if err := r.f.Close(); err != nil {
		r.f = nil
		return fmt.Errorf("audit log: close before rotating: %w", err)
	}
	r.f = nil
	_ = os.Remove(r.path + "." + strconv.Itoa(r.keep))
	for i := r.keep - 1; i >= 1; i-- {
		from := r.path + "." + strconv.Itoa(i)
		if err := os.Rename(from, r.path+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit log: rotate: %w", err)
		}
	}
	if err := os.Rename(r.path, r.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit log: rotate: %w", err)
	}
	if r.rotations != nil {
		r.rotations.Inc()
	}
	return r.open()
}

func (r *rotatingFile) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.f == nil {
		return nil
	}
	return r.f.Close()
}

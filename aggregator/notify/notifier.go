// Package notify delivers alerts: signed JSON webhooks with an idempotency
// key, Slack-compatible messages, and Alertmanager's v2 API; retries with
// exponential backoff and jitter, a bounded queue per target, and dead
// letters bounded on disk for what fails for good. One slow or failing
// target never holds back another, and a failing delivery never holds back
// the alerts behind it on the same target.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/alert"
)

// Reasons a delivery becomes a dead letter.
const (
	ReasonQueueFull     = "queue_full"
	ReasonPermanent     = "permanent"
	ReasonAttempts      = "attempts"
	ReasonPayload       = "payload"
	ReasonShutdown      = "shutdown"
	ReasonTooManyActive = "too_many_active"
)

type metrics struct {
	deliveries  *prometheus.CounterVec
	dead        *prometheus.CounterVec
	deadErrors  prometheus.Counter
	queueLength *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_alert_deliveries_total",
			Help: "Alert delivery attempts by target and result (delivered, retried, failed)."}, []string{"target", "result"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_alert_dead_letters_total",
			Help: "Alerts a target will never get, by reason (queue_full, permanent, attempts, payload, shutdown, too_many_active)."}, []string{"target", "reason"}),
		deadErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_alert_dead_letter_write_errors_total",
			Help: "Dead letters that could not be written to disk (or no dead_letter_dir is set)."}),
		queueLength: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_aggregator_alert_queue_length",
			Help: "Alerts waiting for a target (new or retrying)."}, []string{"target"}),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.dead, m.deadErrors, m.queueLength)
	}
	return m
}

// Notifier sends alerts to every configured target.
type Notifier struct {
	cfg    Config
	client *http.Client
	logger *slog.Logger
	dead   *deadLetters
	m      *metrics

	hooks []*hookWorker
	ams   []*amWorker

	mu     sync.Mutex
	closed bool
	// stop ends the delivery loops (soft stop); hardStop aborts requests
	// still in flight when the shutdown timeout is over.
	stop, hardStop context.CancelFunc
	wg             sync.WaitGroup
	closeMu        sync.Once
	now            func() time.Time
}

// New validates cfg and starts one delivery goroutine per target; Close
// stops them.
func New(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dead, err := openDeadLetters(cfg.DeadLetterDir, cfg.DeadLetterMaxBytes)
	if err != nil {
		return nil, err
	}
	n := &Notifier{cfg: cfg, logger: logger.With("component", "notify"), dead: dead, m: newMetrics(reg), now: time.Now,
		client: &http.Client{Timeout: cfg.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a receiver's redirect is an answer, not a new destination
		}}}
	loop, stop := context.WithCancel(context.Background())
	req, hardStop := context.WithCancel(context.Background())
	n.stop, n.hardStop = stop, hardStop
	for _, w := range cfg.Webhooks {
		h := &hookWorker{n: n, w: w, in: make(chan alert.Alert, cfg.QueueLength)}
		n.hooks = append(n.hooks, h)
		n.wg.Go(func() { h.run(loop, req) })
	}
	for _, a := range cfg.Alertmanagers {
		w := &amWorker{n: n, am: a, in: make(chan alert.Alert, cfg.QueueLength),
			active: map[string]alert.Alert{}, fresh: map[string]alert.Alert{}}
		n.ams = append(n.ams, w)
		n.wg.Go(func() { w.run(loop, req) })
	}
	return n, nil
}

// Send queues a for every target that takes it and returns how many do
// (Config.Done is called that many times for a). It never blocks: a
// target whose queue is full gets a dead letter instead.
func (n *Notifier) Send(a alert.Alert) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		n.deadLetter("*", a, ReasonShutdown, 0, "notifier closed")
		return 1
	}
	targets := 0
	for _, h := range n.hooks {
		if !h.wants(a) {
			continue
		}
		targets++
		select {
		case h.in <- a:
		default:
			n.deadLetter(h.w.Name, a, ReasonQueueFull, 0, "queue full")
		}
	}
	if a.Silenced {
		return targets // Alertmanager has its own silences; a Tally silence mutes it there too
	}
	for _, w := range n.ams {
		targets++
		select {
		case w.in <- a:
		default:
			n.deadLetter(w.am.Name, a, ReasonQueueFull, 0, "queue full")
		}
	}
	return targets
}

// done reports a target done with a.
func (n *Notifier) done(a alert.Alert, target string, delivered bool) {
	if n.cfg.Done != nil {
		n.cfg.Done(a, target, delivered)
	}
}

// Close stops accepting alerts, tries what is queued until the shutdown
// timeout, writes what remains to the dead letters and waits for the
// goroutines. It is safe to call more than once.
func (n *Notifier) Close() error {
	var err error
	n.closeMu.Do(func() {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		n.stop()
		hard := time.AfterFunc(n.cfg.ShutdownTimeout, n.hardStop)
		n.wg.Wait()
		hard.Stop()
		n.hardStop()
		if n.dead != nil {
			err = n.dead.close()
		}
	})
	return err
}

func (n *Notifier) deadLetter(target string, a alert.Alert, reason string, attempts int, detail string) {
	defer n.done(a, target, false)
	n.m.dead.WithLabelValues(target, reason).Inc()
	n.logger.Warn("alert not delivered", "target", target, "alert", a.ID, "state", a.State, "reason", reason, "attempts", attempts, "error", detail)
	if n.dead == nil {
		n.m.deadErrors.Inc()
		return
	}
	if err := n.dead.add(DeadLetter{Time: n.now().UTC(), Target: target, Reason: reason + ": " + clip(detail, 512), Attempts: attempts, Alert: a}); err != nil {
		n.m.deadErrors.Inc()
		n.logger.Error("dead letter not written", "target", target, "alert", a.ID, "error", err)
	}
}

// backoff is the wait before attempt number attempts+1: exponential from
// BackoffMin, capped at BackoffMax, with jitter in its upper half.
func (n *Notifier) backoff(attempts int) time.Duration {
	d := n.cfg.BackoffMin << min(max(attempts, 1)-1, 30)
	if d <= 0 || d > n.cfg.BackoffMax {
		d = n.cfg.BackoffMax
	}
	return d/2 + rand.N(d/2+1)
}

// outcome of one request.
type outcome struct {
	ok         bool
	permanent  bool
	retryAfter time.Duration
	detail     string
}

// post sends body to url and classifies the answer: 2xx delivered; 408,
// 425, 429 and 5xx (and network errors) worth another try; any other
// answer final.
func (n *Notifier) post(ctx context.Context, url string, body []byte, header http.Header) outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return outcome{permanent: true, detail: err.Error()}
	}
	req.Header = header
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tally-aggregator")
	resp, err := n.client.Do(req)
	if err != nil {
		return outcome{detail: err.Error()}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return outcome{ok: true}
	case c == 408 || c == 425 || c == 429 || c >= 500:
		return outcome{retryAfter: retryAfter(resp.Header.Get("Retry-After"), n.now()), detail: fmt.Sprintf("%s: %s", resp.Status, snippet)}
	default:
		return outcome{permanent: true, detail: fmt.Sprintf("%s: %s", resp.Status, snippet)}
	}
}

// retryAfter reads a Retry-After header (seconds or an HTTP date).
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// item is one alert on its way to one webhook.
type item struct {
	a        alert.Alert
	attempts int
	due      time.Time
}

type hookWorker struct {
	n       *Notifier
	w       Webhook
	in      chan alert.Alert
	pending []*item
}

func (h *hookWorker) wants(a alert.Alert) bool {
	if a.Silenced && !h.w.Silenced {
		return false
	}
	if severityRank[a.Severity] < severityRank[h.w.MinSeverity] {
		return false
	}
	return len(h.w.Campaigns) == 0 || slices.Contains(h.w.Campaigns, a.Campaign)
}

// run delivers until loop ends, with requests bound to req (cancelled
// only when the shutdown timeout is over), then drains.
func (h *hookWorker) run(loop, req context.Context) {
	n := h.n
	gauge := n.m.queueLength.WithLabelValues(h.w.Name)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		gauge.Set(float64(len(h.pending) + len(h.in)))
		// Take new alerts while there is room; wake for the earliest due.
		var in chan alert.Alert
		if len(h.pending) < n.cfg.QueueLength {
			in = h.in
		}
		wait := time.Hour
		if len(h.pending) > 0 {
			wait = max(0, h.pending[0].due.Sub(n.now()))
		}
		timer.Reset(wait)
		select {
		case a := <-in:
			h.add(&item{a: a, due: n.now()})
		case <-timer.C:
		case <-loop.Done():
			h.drain(req)
			return
		}
		for len(h.pending) > 0 && !h.pending[0].due.After(n.now()) && loop.Err() == nil {
			it := h.pending[0]
			h.pending = h.pending[1:]
			h.attempt(req, it)
		}
	}
}

// add keeps pending sorted by due time (stable for equal times).
func (h *hookWorker) add(it *item) {
	i, _ := slices.BinarySearchFunc(h.pending, it.due, func(p *item, t time.Time) int {
		if p.due.After(t) {
			return 1
		}
		return -1
	})
	h.pending = slices.Insert(h.pending, i, it)
}

// attempt delivers one item once; a failure is rescheduled or dead-lettered.
func (h *hookWorker) attempt(ctx context.Context, it *item) {
	n := h.n
	link := dashboardLink(n.cfg.DashboardURL, it.a)
	var body []byte
	var err error
	if h.w.Format == "slack" {
		body, err = slackBody(it.a, link, n.cfg.MaxPayloadBytes)
	} else {
		body, err = jsonBody(it.a, link, n.cfg.MaxPayloadBytes)
	}
	if err != nil {
		n.deadLetter(h.w.Name, it.a, ReasonPayload, it.attempts, err.Error())
		return
	}
	hdr := http.Header{}
	hdr.Set(HeaderIdempotencyKey, IdempotencyKey(it.a))
	hdr.Set(HeaderEvent, "alert")
	if h.w.Secret != "" {
		hdr.Set(HeaderSignature, Sign([]byte(h.w.Secret), n.now(), body))
	}
	it.attempts++
	out := n.post(ctx, h.w.URL, body, hdr)
	switch {
	case out.ok:
		n.m.deliveries.WithLabelValues(h.w.Name, "delivered").Inc()
		n.done(it.a, h.w.Name, true)
	case out.permanent:
		n.m.deliveries.WithLabelValues(h.w.Name, "failed").Inc()
		n.deadLetter(h.w.Name, it.a, ReasonPermanent, it.attempts, out.detail)
	case it.attempts >= n.cfg.Attempts:
		n.m.deliveries.WithLabelValues(h.w.Name, "failed").Inc()
		n.deadLetter(h.w.Name, it.a, ReasonAttempts, it.attempts, out.detail)
	default:
		n.m.deliveries.WithLabelValues(h.w.Name, "retried").Inc()
		wait := max(n.backoff(it.attempts), min(out.retryAfter, n.cfg.BackoffMax))
		n.logger.Debug("alert delivery failed; retrying", "target", h.w.Name, "alert", it.a.ID, "attempt", it.attempts, "wait", wait, "error", out.detail)
		it.due = n.now().Add(wait)
		h.add(it)
	}
}

// drain tries every queued alert once more within the shutdown timeout and
// dead-letters the rest.
func (h *hookWorker) drain(req context.Context) {
	n := h.n
	ctx, cancel := context.WithTimeout(req, n.cfg.ShutdownTimeout)
	defer cancel()
	for {
		select {
		case a := <-h.in:
			h.pending = append(h.pending, &item{a: a})
			continue
		default:
		}
		break
	}
	for _, it := range h.pending {
		if ctx.Err() != nil || it.attempts >= n.cfg.Attempts {
			n.deadLetter(h.w.Name, it.a, ReasonShutdown, it.attempts, "not delivered before shutdown")
			continue
		}
		before := len(h.pending)
		h.attempt(ctx, it)
		if len(h.pending) > before { // rescheduled: no time left to wait for it
			n.deadLetter(h.w.Name, it.a, ReasonShutdown, it.attempts, "not delivered before shutdown")
		}
	}
	h.pending = nil
}

// amWorker pushes to one Alertmanager: every firing alert again each
// ResendInterval (Alertmanager ends an alert it is not told about), each
// resolved alert once.
type amWorker struct {
	n      *Notifier
	am     Alertmanager
	in     chan alert.Alert
	active map[string]alert.Alert // firing, by id
	// fresh holds the transitions not yet pushed: what a push that fails
	// for good turns into dead letters.
	fresh    map[string]alert.Alert
	attempts int
}

func (w *amWorker) run(loop, req context.Context) {
	n := w.n
	gauge := n.m.queueLength.WithLabelValues(w.am.Name)
	resend := time.NewTicker(n.cfg.ResendInterval)
	defer resend.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	dirty, waiting := false, false
	for {
		gauge.Set(float64(len(w.fresh) + len(w.in)))
		select {
		case a := <-w.in:
			w.take(a)
			dirty = true
			// Take whatever else is queued: one push carries them all.
			for more := true; more; {
				select {
				case a := <-w.in:
					w.take(a)
				default:
					more = false
				}
			}
		case <-resend.C:
			dirty = len(w.active) > 0 || len(w.fresh) > 0
		case <-retry.C:
			waiting = false
			dirty = true
		case <-loop.Done():
			w.final(req)
			return
		}
		if !dirty || waiting {
			continue
		}
		if w.push(req) {
			dirty = false
			continue
		}
		waiting = true
		retry.Reset(n.backoff(w.attempts))
	}
}

func (w *amWorker) take(a alert.Alert) {
	if a.State == alert.StateFiring {
		if _, ok := w.active[a.ID]; !ok && len(w.active) >= w.n.cfg.MaxActive {
			w.n.deadLetter(w.am.Name, a, ReasonTooManyActive, 0, fmt.Sprintf("more than %d firing alerts", w.n.cfg.MaxActive))
			return
		}
		w.active[a.ID] = a
	} else {
		delete(w.active, a.ID)
	}
	if old, ok := w.fresh[a.ID+":"+a.State]; ok {
		// The same transition again: the first is done (the one push
		// that carries this one carries it), this one is now the fresh one.
		w.n.done(old, w.am.Name, true)
	} else if len(w.fresh) >= w.n.cfg.QueueLength {
		w.n.deadLetter(w.am.Name, a, ReasonQueueFull, 0, "queue full")
		return
	}
	w.fresh[a.ID+":"+a.State] = a
}

// push sends every firing alert and every fresh transition, in batches
// within MaxPayloadBytes. It reports whether all were accepted.
func (w *amWorker) push(ctx context.Context) bool {
	n := w.n
	now := n.now()
	ends := now.Add(4 * n.cfg.ResendInterval)
	var all []amAlert
	var src []alert.Alert
	for _, a := range w.fresh {
		src = append(src, a)
	}
	for id, a := range w.active {
		if _, ok := w.fresh[id+":"+alert.StateFiring]; !ok {
			src = append(src, a)
		}
	}
	slices.SortFunc(src, func(a, b alert.Alert) int { return a.Start.Compare(b.Start) })
	for _, a := range src {
		all = append(all, toAlertmanager(a, dashboardLink(n.cfg.DashboardURL, a), ends))
	}
	hdr := func() http.Header {
		h := http.Header{}
		if w.am.BearerToken != "" {
			h.Set("Authorization", "Bearer "+w.am.BearerToken)
		}
		return h
	}
	url := w.am.URL + "/api/v2/alerts"
	for len(all) > 0 {
		k, body := batch(all, n.cfg.MaxPayloadBytes)
		if k == 0 {
			n.deadLetter(w.am.Name, src[0], ReasonPayload, 0, "alert larger than max_payload_bytes")
			delete(w.fresh, src[0].ID+":"+src[0].State)
			all, src = all[1:], src[1:]
			continue
		}
		out := n.post(ctx, url, body, hdr())
		switch {
		case out.ok:
			n.m.deliveries.WithLabelValues(w.am.Name, "delivered").Inc()
			for _, a := range src[:k] {
				if _, ok := w.fresh[a.ID+":"+a.State]; ok {
					delete(w.fresh, a.ID+":"+a.State)
					n.done(a, w.am.Name, true)
				}
			}
			all, src = all[k:], src[k:]
			continue
		case out.permanent:
			n.m.deliveries.WithLabelValues(w.am.Name, "failed").Inc()
			for _, a := range src[:k] {
				if _, ok := w.fresh[a.ID+":"+a.State]; ok {
					n.deadLetter(w.am.Name, a, ReasonPermanent, w.attempts+1, out.detail)
					delete(w.fresh, a.ID+":"+a.State)
				}
			}
			all, src = all[k:], src[k:]
			continue
		}
		w.attempts++
		if w.attempts >= n.cfg.Attempts {
			n.m.deliveries.WithLabelValues(w.am.Name, "failed").Inc()
			for key, a := range w.fresh {
				n.deadLetter(w.am.Name, a, ReasonAttempts, w.attempts, out.detail)
				delete(w.fresh, key)
			}
			w.attempts = 0
			return false
		}
		n.m.deliveries.WithLabelValues(w.am.Name, "retried").Inc()
		return false
	}
	w.attempts = 0
	return true
}

// final pushes once more within the shutdown timeout and dead-letters the
// transitions that did not make it.
func (w *amWorker) final(req context.Context) {
	for {
		select {
		case a := <-w.in:
			w.take(a)
			continue
		default:
		}
		break
	}
	if len(w.fresh) > 0 {
		ctx, cancel := context.WithTimeout(req, w.n.cfg.ShutdownTimeout)
		defer cancel()
		w.attempts = 0
		if !w.push(ctx) {
			for key, a := range w.fresh {
				w.n.deadLetter(w.am.Name, a, ReasonShutdown, w.attempts, "not delivered before shutdown")
				delete(w.fresh, key)
			}
		}
	}
}

// batch returns how many leading alerts fit in max bytes, and their body.
func batch(all []amAlert, max int) (int, []byte) {
	k := len(all)
	for k > 0 {
		b, err := json.Marshal(all[:k])
		if err == nil && len(b) <= max {
			return k, b
		}
		if k == 1 {
			return 0, nil
		}
		k = (k + 1) / 2
	}
	return 0, nil
}

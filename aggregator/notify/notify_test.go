package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/aggregator/alert"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "0123456789abcdef-secret"

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func testAlert(i int) alert.Alert {
	a := alert.Alert{Campaign: "spring", Metric: "conversions", Rule: "anomaly", Kind: alert.KindAnomaly,
		Severity: alert.SeverityWarning, State: alert.StateFiring, Direction: "drop",
		Start: t0.Add(time.Duration(i) * time.Minute), At: t0.Add(time.Duration(i) * time.Minute), Value: 0, Expected: 60,
		Summary: fmt.Sprintf("spring: conversions is far below its usual level (%d)", i)}
	a.ID = alert.ID(a.Campaign, a.Metric, a.Rule, a.Start)
	return a
}

// receiver is a real HTTP server on loopback that records requests and
// answers with the status its script says for each arrival.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recorded
	script   func(n int, r *http.Request) int // n counts from 1
	got      chan recorded
}

type recorded struct {
	at     time.Time
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, script func(n int, r *http.Request) int) *receiver {
	rc := &receiver{script: script, got: make(chan recorded, 1000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec := recorded{at: time.Now(), header: r.Header.Clone(), body: body}
		rc.mu.Lock()
		rc.requests = append(rc.requests, rec)
		n := len(rc.requests)
		rc.mu.Unlock()
		rc.got <- rec // on arrival, before the answer
		status := http.StatusOK
		if rc.script != nil {
			status = rc.script(n, r)
		}
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// wait returns the next request, failing after a generous guard.
func (rc *receiver) wait(t *testing.T) recorded {
	t.Helper()
	select {
	case r := <-rc.got:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no request arrived")
	}
	return recorded{}
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.DeadLetterDir = t.TempDir()
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	cfg.Timeout = 5 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	return cfg
}

func start(t *testing.T, cfg Config) (*Notifier, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	n, err := New(cfg, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, reg
}

func readDead(t *testing.T, dir string) []DeadLetter {
	t.Helper()
	dls, err := ReadDeadLetters(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dls
}

// TestWebhookSignedIdempotentRetried: two 503s, then 200: three attempts,
// each signed over its own body and time, all with the same idempotency
// key, the payload the alert.
func TestWebhookSignedIdempotentRetried(t *testing.T) {
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	cfg := testConfig(t)
	cfg.DashboardURL = "https://tally.example.com/"
	cfg.Webhooks = []Webhook{{Name: "ops", URL: rc.URL + "/hook", Secret: secret}}
	n, reg := start(t, cfg)
	a := testAlert(1)
	n.Send(a)
	var keys []string
	for range 3 {
		r := rc.wait(t)
		if err := Verify([]byte(secret), r.header.Get(HeaderSignature), r.body, time.Now(), time.Minute); err != nil {
			t.Fatalf("signature: %v", err)
		}
		keys = append(keys, r.header.Get(HeaderIdempotencyKey))
		var p Payload
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		if p.Alert.ID != a.ID || p.IdempotencyKey != a.ID+":firing" || p.Version != "1" ||
			!strings.HasPrefix(p.URL, "https://tally.example.com/?") || !strings.Contains(p.URL, "campaign=spring") {
			t.Fatalf("payload %+v", p)
		}
	}
	if keys[0] != a.ID+":firing" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Fatalf("idempotency keys %v", keys)
	}
	n.Close()
	if got := testutil.ToFloat64(n.m.deliveries.WithLabelValues("ops", "delivered")); got != 1 {
		t.Fatalf("delivered %v", got)
	}
	if got := testutil.ToFloat64(n.m.deliveries.WithLabelValues("ops", "retried")); got != 2 {
		t.Fatalf("retried %v", got)
	}
	if dls := readDead(t, cfg.DeadLetterDir); len(dls) != 0 {
		t.Fatalf("dead letters %+v", dls)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// TestPermanentAndExhausted: a 400 is final at once; a receiver that keeps
// failing gets Attempts tries; both end as dead letters with the alert.
func TestPermanentAndExhausted(t *testing.T) {
	bad := newReceiver(t, func(int, *http.Request) int { return http.StatusBadRequest })
	down := newReceiver(t, func(int, *http.Request) int { return http.StatusInternalServerError })
	cfg := testConfig(t)
	cfg.Attempts = 3
	cfg.Webhooks = []Webhook{{Name: "bad", URL: bad.URL}, {Name: "down", URL: down.URL}}
	n, _ := start(t, cfg)
	n.Send(testAlert(1))
	bad.wait(t)
	for range 3 {
		down.wait(t)
	}
	n.Close()
	dls := readDead(t, cfg.DeadLetterDir)
	if len(dls) != 2 {
		t.Fatalf("dead letters %+v", dls)
	}
	byTarget := map[string]DeadLetter{dls[0].Target: dls[0], dls[1].Target: dls[1]}
	if d := byTarget["bad"]; d.Attempts != 1 || !strings.HasPrefix(d.Reason, ReasonPermanent) || d.Alert.ID != testAlert(1).ID {
		t.Fatalf("bad: %+v", d)
	}
	if d := byTarget["down"]; d.Attempts != 3 || !strings.HasPrefix(d.Reason, ReasonAttempts) || !strings.Contains(d.Reason, "500") {
		t.Fatalf("down: %+v", d)
	}
	bad.mu.Lock()
	defer bad.mu.Unlock()
	if len(bad.requests) != 1 {
		t.Fatalf("a 400 was retried: %d requests", len(bad.requests))
	}
}

// TestRetryAfter: a 429's Retry-After is waited for.
func TestRetryAfter(t *testing.T) {
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n == 1 {
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	})
	cfg := testConfig(t)
	cfg.BackoffMax = 5 * time.Second
	cfg.Webhooks = []Webhook{{Name: "ops", URL: rc.URL}}
	n, _ := start(t, cfg)
	n.Send(testAlert(1))
	first, second := rc.wait(t), rc.wait(t)
	if gap := second.at.Sub(first.at); gap < 900*time.Millisecond {
		t.Fatalf("retried after %v, Retry-After said 1s", gap)
	}
}

// TestNothingStalls: a receiver that hangs holds back neither another
// receiver nor, on its own target, the alerts behind a failing one.
func TestNothingStalls(t *testing.T) {
	release := make(chan struct{})
	hang := newReceiver(t, func(int, *http.Request) int { <-release; return http.StatusOK })
	t.Cleanup(func() { close(release) })
	var mu sync.Mutex
	failFirst := map[string]bool{}
	flaky := newReceiver(t, func(_ int, r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		key := r.Header.Get(HeaderIdempotencyKey)
		if key == testAlert(0).ID+":firing" && !failFirst[key] {
			failFirst[key] = true
			return http.StatusServiceUnavailable // alert 0 fails once, then waits its backoff
		}
		return http.StatusOK
	})
	cfg := testConfig(t)
	cfg.BackoffMin, cfg.BackoffMax = 2*time.Second, 2*time.Second
	cfg.Timeout = 30 * time.Second
	cfg.ShutdownTimeout = 100 * time.Millisecond
	cfg.Webhooks = []Webhook{{Name: "hang", URL: hang.URL}, {Name: "flaky", URL: flaky.URL}}
	n, _ := start(t, cfg)
	for i := range 5 {
		n.Send(testAlert(i))
	}
	// flaky: alert 0 fails, alerts 1..4 arrive before alert 0's retry.
	var order []string
	for range 6 {
		var p Payload
		json.Unmarshal(flaky.wait(t).body, &p)
		order = append(order, p.Alert.Summary[len(p.Alert.Summary)-2:len(p.Alert.Summary)-1])
	}
	if strings.Join(order, "") != "012340" {
		t.Fatalf("delivery order %v, want 0 (failed), 1-4, then 0 again", order)
	}
}

// TestQueueBound: Send never blocks; beyond the queue the alerts become
// dead letters, counted.
func TestQueueBound(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	hang := newReceiver(t, func(int, *http.Request) int { <-release; return http.StatusOK })
	t.Cleanup(free) // before the receiver closes, even when the test fails
	cfg := testConfig(t)
	cfg.QueueLength = 5
	cfg.Timeout = 30 * time.Second
	cfg.ShutdownTimeout = 10 * time.Millisecond
	cfg.Webhooks = []Webhook{{Name: "hang", URL: hang.URL}}
	n, _ := start(t, cfg)
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			n.Send(testAlert(i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Send blocked")
	}
	hang.wait(t) // one in flight
	// The queue takes 5; the worker may or may not have taken one off
	// it (the one in flight) before the loop ended, so 94 or 95 of 100
	// are refused (a little less leeway for scheduling).
	dropped := testutil.ToFloat64(n.m.dead.WithLabelValues("hang", ReasonQueueFull))
	if dropped < 100-1-2*5 || dropped > 100-5 {
		t.Fatalf("%v dropped for a full queue of 5", dropped)
	}
	free()
	n.Close()
	if dls := readDead(t, cfg.DeadLetterDir); len(dls) != int(dropped)+int(testutil.ToFloat64(n.m.dead.WithLabelValues("hang", ReasonShutdown))) {
		t.Fatalf("%d dead letters on disk, %v counted", len(dls), dropped)
	}
}

// TestRetryQueueBound: alerts waiting for a retry count against the queue
// too, so a receiver that fails fast cannot grow it without bound.
func TestRetryQueueBound(t *testing.T) {
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusServiceUnavailable })
	cfg := testConfig(t)
	cfg.QueueLength = 5
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
	cfg.ShutdownTimeout = 10 * time.Millisecond
	cfg.Webhooks = []Webhook{{Name: "down", URL: rc.URL}}
	n, _ := start(t, cfg)
	for i := range 5 {
		n.Send(testAlert(i))
		rc.wait(t) // each tried once, then waiting an hour
	}
	for i := 5; i < 100; i++ {
		n.Send(testAlert(i))
	}
	if dropped := testutil.ToFloat64(n.m.dead.WithLabelValues("down", ReasonQueueFull)); dropped != 100-2*5 {
		t.Fatalf("%v dropped, want 90 (5 waiting for a retry, 5 in the channel)", dropped)
	}
}

// TestDeadLettersBounded: the files never hold more than the bound, and the
// newest letters are the ones kept.
func TestDeadLettersBounded(t *testing.T) {
	dir := t.TempDir()
	const max = 64 << 10
	d, err := openDeadLetters(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if err := d.add(DeadLetter{Target: "x", Reason: "test", Alert: testAlert(i)}); err != nil {
			t.Fatal(err)
		}
	}
	d.close()
	var total int64
	for _, name := range []string{deadLetterFile, deadLetterOldFile} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	if total > max {
		t.Fatalf("dead letters take %d bytes, bound %d", total, max)
	}
	dls := readDead(t, dir)
	if len(dls) < 50 || dls[len(dls)-1].Alert.ID != testAlert(1999).ID {
		t.Fatalf("%d letters kept, last %+v", len(dls), dls[len(dls)-1].Alert.Summary)
	}
	// Reopened, it appends.
	d, err = openDeadLetters(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	d.add(DeadLetter{Target: "x", Alert: testAlert(5000)})
	d.close()
	if dls := readDead(t, dir); dls[len(dls)-1].Alert.ID != testAlert(5000).ID {
		t.Fatal("reopened dead letters did not append")
	}
}

// TestPayloadBound: a huge summary is cut so the body fits.
func TestPayloadBound(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := testConfig(t)
	cfg.MaxPayloadBytes = 8 << 10
	cfg.Webhooks = []Webhook{{Name: "ops", URL: rc.URL}, {Name: "slack", URL: rc.URL + "/slack", Format: "slack"}}
	n, _ := start(t, cfg)
	a := testAlert(1)
	a.Summary = strings.Repeat("é", 1<<20)
	n.Send(a)
	for range 2 {
		r := rc.wait(t)
		if len(r.body) > cfg.MaxPayloadBytes || !json.Valid(r.body) {
			t.Fatalf("body of %d bytes (valid JSON %v)", len(r.body), json.Valid(r.body))
		}
	}
}

// TestSlack: a Slack message has a text fallback and blocks, no signature
// without a secret, and says resolved when it is.
func TestSlack(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := testConfig(t)
	cfg.DashboardURL = "https://tally.example.com"
	cfg.Webhooks = []Webhook{{Name: "slack", URL: rc.URL, Format: "slack"}}
	n, _ := start(t, cfg)
	a := testAlert(1)
	a.State = alert.StateResolved
	n.Send(a)
	r := rc.wait(t)
	var msg struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(r.body, &msg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg.Text, "[RESOLVED] spring conversions") || len(msg.Blocks) != 3 || r.header.Get(HeaderSignature) != "" ||
		!strings.Contains(string(r.body), "Open in Tally") {
		t.Fatalf("slack message %s (signature %q)", r.body, r.header.Get(HeaderSignature))
	}
}

// TestFilters: campaigns, minimum severity and silences choose receivers.
func TestFilters(t *testing.T) {
	all := newReceiver(t, nil)
	crit := newReceiver(t, nil)
	cfg := testConfig(t)
	cfg.Webhooks = []Webhook{
		{Name: "all", URL: all.URL, Campaigns: []string{"spring"}, Silenced: true},
		{Name: "crit", URL: crit.URL, MinSeverity: "critical"},
	}
	n, _ := start(t, cfg)
	other := testAlert(1)
	other.Campaign = "autumn"
	n.Send(other) // neither: all wants spring only, crit wants critical
	silenced := testAlert(2)
	silenced.Silenced = true
	n.Send(silenced) // all (delivers silenced)
	critical := testAlert(3)
	critical.Severity = alert.SeverityCritical
	n.Send(critical) // both
	n.Close()
	count := func(rc *receiver) int { rc.mu.Lock(); defer rc.mu.Unlock(); return len(rc.requests) }
	if count(all) != 2 || count(crit) != 1 {
		t.Fatalf("all got %d, crit got %d; want 2 and 1", count(all), count(crit))
	}
}

// TestClose: Close delivers what is queued, is safe twice, and an alert
// sent afterwards is a dead letter.
func TestClose(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := testConfig(t)
	cfg.Webhooks = []Webhook{{Name: "ops", URL: rc.URL}}
	n, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		n.Send(testAlert(i))
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	got := len(rc.requests)
	rc.mu.Unlock()
	if got != 20 {
		t.Fatalf("%d of 20 delivered by Close", got)
	}
	n.Send(testAlert(99))
	if dls := readDead(t, cfg.DeadLetterDir); len(dls) != 0 {
		t.Fatalf("dead letters after a closed notifier's Send: %+v (its file is closed: counted only)", dls)
	}
	if testutil.ToFloat64(n.m.dead.WithLabelValues("*", ReasonShutdown)) != 1 {
		t.Fatal("a send after Close was not counted")
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"a":1}`)
	sig := Sign([]byte(secret), t0, body)
	if err := Verify([]byte(secret), sig, body, t0.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := Verify([]byte(secret), sig, []byte(`{"a":2}`), t0, time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered body: %v", err)
	}
	if err := Verify([]byte("another-secret-of-16"), sig, body, t0, time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("wrong secret: %v", err)
	}
	if err := Verify([]byte(secret), sig, body, t0.Add(time.Hour), 5*time.Minute); !errors.Is(err, ErrStale) {
		t.Fatalf("replayed an hour later: %v", err)
	}
	if err := Verify([]byte(secret), "v1=abc", body, t0, time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("no time: %v", err)
	}
	// The time is signed: moving it forward (to dodge the replay check)
	// breaks the signature.
	moved := strings.Replace(sig, fmt.Sprintf("t=%d", t0.Unix()), fmt.Sprintf("t=%d", t0.Add(time.Hour).Unix()), 1)
	if err := Verify([]byte(secret), moved, body, t0.Add(time.Hour), time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("moved time: %v", err)
	}
	// The format, computed independently: HMAC-SHA256 of "<t>.<body>".
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", t0.Unix(), body)
	if want := fmt.Sprintf("t=%d,v1=%x", t0.Unix(), m.Sum(nil)); sig != want {
		t.Fatalf("signature %s, want %s", sig, want)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(c *Config){
		"userinfo": func(c *Config) { c.Webhooks = []Webhook{{Name: "a", URL: "https://user:pw@example.com/"}} },
		"scheme":   func(c *Config) { c.Webhooks = []Webhook{{Name: "a", URL: "file:///etc/passwd"}} },
		"no host":  func(c *Config) { c.Webhooks = []Webhook{{Name: "a", URL: "http:///x"}} },
		"secret":   func(c *Config) { c.Webhooks = []Webhook{{Name: "a", URL: "https://x", Secret: "short"}} },
		"format":   func(c *Config) { c.Webhooks = []Webhook{{Name: "a", URL: "https://x", Format: "xml"}} },
		"dup": func(c *Config) {
			c.Webhooks = []Webhook{{Name: "a", URL: "https://x"}}
			c.Alertmanagers = []Alertmanager{{Name: "a", URL: "http://y"}}
		},
		"name":       func(c *Config) { c.Webhooks = []Webhook{{Name: "A B", URL: "https://x"}} },
		"severity":   func(c *Config) { c.Webhooks = []Webhook{{Name: "a", URL: "https://x", MinSeverity: "loud"}} },
		"long url":   func(c *Config) { c.Webhooks = []Webhook{{Name: "a", URL: "https://x/" + strings.Repeat("a", maxURL)}} },
		"queue":      func(c *Config) { c.QueueLength = 0 },
		"payload":    func(c *Config) { c.MaxPayloadBytes = 100 },
		"dead bytes": func(c *Config) { c.DeadLetterMaxBytes = 10 },
		"backoff":    func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond },
	} {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestAlertmanagerMapping: labels, and the end time of a firing alert (ahead,
// refreshed) and of a resolved one (its end, or its transition time).
func TestAlertmanagerMapping(t *testing.T) {
	a := testAlert(1)
	ahead := t0.Add(4 * time.Minute)
	m := toAlertmanager(a, "https://x/?alert=1", ahead)
	if m.Labels["alertname"] != "tally_anomaly" || m.Labels["alert_id"] != a.ID || m.Labels["direction"] != "drop" ||
		!m.EndsAt.Equal(ahead) || !m.StartsAt.Equal(a.Start) || m.GeneratorURL != "https://x/?alert=1" {
		t.Fatalf("firing: %+v", m)
	}
	a.State, a.At = alert.StateResolved, t0.Add(time.Hour)
	if m := toAlertmanager(a, "", ahead); !m.EndsAt.Equal(a.At) {
		t.Fatalf("resolved without End ends at %v, want %v", m.EndsAt, a.At)
	}
	end := t0.Add(50 * time.Minute)
	a.End = &end
	if m := toAlertmanager(a, "", ahead); !m.EndsAt.Equal(end) {
		t.Fatalf("resolved ends at %v, want %v", m.EndsAt, end)
	}
}

// TestDoneOncePerTarget: Send says how many targets took the alert, and
// Done reports each of them once: delivered, or given up on.
func TestDoneOncePerTarget(t *testing.T) {
	ok := newReceiver(t, nil)
	bad := newReceiver(t, func(int, *http.Request) int { return http.StatusBadRequest })
	am := newReceiver(t, nil)
	cfg := testConfig(t)
	type report struct {
		target    string
		delivered bool
	}
	reports := make(chan report, 10)
	cfg.Done = func(a alert.Alert, target string, delivered bool) { reports <- report{target, delivered} }
	cfg.Webhooks = []Webhook{{Name: "ok", URL: ok.URL}, {Name: "bad", URL: bad.URL}, {Name: "elsewhere", URL: ok.URL, Campaigns: []string{"other"}}}
	cfg.Alertmanagers = []Alertmanager{{Name: "am", URL: am.URL}}
	n, _ := start(t, cfg)
	if got := n.Send(testAlert(1)); got != 3 {
		t.Fatalf("Send: %d targets, want 3 (ok, bad, am)", got)
	}
	got := map[string]bool{}
	for range 3 {
		select {
		case r := <-reports:
			if _, dup := got[r.target]; dup {
				t.Fatalf("%s reported twice", r.target)
			}
			got[r.target] = r.delivered
		case <-time.After(30 * time.Second):
			t.Fatalf("only %v reported", got)
		}
	}
	if !got["ok"] || got["bad"] || !got["am"] {
		t.Fatalf("reports %v, want ok and am delivered, bad not", got)
	}
	n.Close()
	select {
	case r := <-reports:
		t.Fatalf("a fourth report: %+v", r)
	default:
	}
}

// TestDashboardLink: an alert links to the dashboard's own address of a
// custom range around it (whole minutes, UTC) with the alert named.
func TestDashboardLink(t *testing.T) {
	a := testAlert(0)
	a.Start, a.At = time.Date(2026, 3, 2, 10, 7, 0, 0, time.UTC), time.Date(2026, 3, 2, 10, 8, 20, 0, time.UTC)
	got := dashboardLink("https://tally.example.com/", a)
	want := "https://tally.example.com/?alert=" + a.ID + "&campaign=spring&from=2026-03-02T09%3A07%3A00Z&range=custom&to=2026-03-02T11%3A09%3A00Z"
	if got != want {
		t.Fatalf("link\n%s\nwant\n%s", got, want)
	}
	if dashboardLink("", a) != "" {
		t.Fatal("a link without a dashboard URL")
	}
}

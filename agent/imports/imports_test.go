package imports

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tally-edge/tally/agent/edge"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/internal/yamlconf"
)

// testNow is the clock of the unit tests: the fixtures hold rows of the
// days before it.
var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// memSink records what it accepts; it answers busy while busy > 0.
type memSink struct {
	mu      sync.Mutex
	batches [][]event.Event
	busy    int
	err     error
}

func (s *memSink) Accept(evs []event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy > 0 {
		s.busy--
		return &source.BusyError{Reason: "spool full", RetryAfter: 2 * time.Second}
	}
	if s.err != nil {
		return s.err
	}
	s.batches = append(s.batches, slices.Clone(evs))
	return nil
}

func (s *memSink) last() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.batches) == 0 {
		return nil
	}
	return s.batches[len(s.batches)-1]
}

type fixture struct {
	h      *Handlers
	sink   *memSink
	reg    *prometheus.Registry
	hasher *privacy.Hasher
	clock  *time.Time
}

func newFixture(t testing.TB, mutate func(*Config)) *fixture {
	t.Helper()
	hasher, err := privacy.NewHasher("imports-test-secret-0123456789", privacy.Day)
	if err != nil {
		t.Fatal(err)
	}
	now := testNow
	cfg := DefaultConfig()
	cfg.Now = func() time.Time { return now }
	if mutate != nil {
		mutate(&cfg)
	}
	if cfg.Tokens == nil {
		cfg.Tokens = edge.NewTokens(testToken)
	}
	f := &fixture{sink: &memSink{}, reg: prometheus.NewRegistry(), hasher: hasher, clock: &now}
	env := &source.Env{Region: "eu", Hasher: hasher}
	f.h, err = New(cfg, env, f.sink, f.reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// testToken is the server senders' token of the fixtures.
const testToken = "imports-test-server-token"

// post sends body to handler h as a server sender holding testToken; hdr
// are header name/value pairs, which may replace the Authorization.
func post(t testing.TB, h http.Handler, target string, body []byte, hdr ...string) (*httptest.ResponseRecorder, Result) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var res Result
	if w.Code == http.StatusAccepted {
		if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
			t.Fatalf("202 body %q: %v", w.Body, err)
		}
	}
	return w, res
}

func readFixture(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func counter(t testing.TB, c *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	return testutil.ToFloat64(c.WithLabelValues(labels...))
}

// TestConfigFiles decodes the imports: section of agent configuration
// files the way the agent does (strictly, with ${ENV}) and validates it.
func TestConfigFiles(t *testing.T) {
	for _, tc := range []struct {
		file    string
		wantErr []string // substrings; none means valid
	}{
		{"full.good.yaml", nil},
		{"empty.good.yaml", nil},
		{"unknown_key.bad.yaml", []string{"webhook_secret"}},
		{"invalid.bad.yaml", []string{"imports.max_body_bytes", "imports.max_rows", "imports.currency \"euro\"",
			"imports.webhook_token: at least 16", "imports.sendgrid_verification_key"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var file struct {
				Imports Config `yaml:"imports"`
			}
			file.Imports = DefaultConfig()
			err := yamlconf.Decode(readFixture(t, filepath.Join("config", tc.file)), &file)
			if err == nil {
				err = file.Imports.Validate()
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	var file struct {
		Imports Config `yaml:"imports"`
	}
	file.Imports = DefaultConfig()
	if err := yamlconf.Decode(readFixture(t, "config/full.good.yaml"), &file); err != nil {
		t.Fatal(err)
	}
	if c := file.Imports; c.MaxBodyBytes != 32<<20 || c.MaxRows != 250_000 || c.MaxAge != 90*24*time.Hour ||
		c.Currency != "EUR" || c.WebhookToken != "a-long-enough-webhook-token" {
		t.Fatalf("decoded %+v", c)
	}
	if err := (&Config{}).Validate(); err == nil {
		t.Fatal("the zero Config must not validate: New needs DefaultConfig's values")
	}
}

func TestMethodAndBusyAndFailure(t *testing.T) {
	f := newFixture(t, nil)
	req := httptest.NewRequest(http.MethodGet, CostPath, nil)
	w := httptest.NewRecorder()
	f.h.Cost().ServeHTTP(w, req)
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "POST" {
		t.Fatalf("GET: %d %v", w.Code, w.Header())
	}

	csv := readFixture(t, "cost_google_ads/report.csv")
	f.sink.busy = 1
	w, _ = post(t, f.h.Cost(), CostPath, csv)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("busy: %d Retry-After %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := counter(t, f.h.rows, "cost", "accepted"); n != 0 {
		t.Fatalf("a refused import counted %v accepted rows", n)
	}
	f.sink.err = errors.New("disk on fire")
	w, _ = post(t, f.h.EmailWebhook(), EmailWebhookPath, readFixture(t, "sendgrid/events.json"))
	if w.Code != http.StatusInternalServerError {
		t.Fatalf("sink failure: %d %s", w.Code, w.Body)
	}
	f.sink.err = nil
	w, _ = post(t, f.h.Cost(), CostPath, csv)
	if w.Code != http.StatusAccepted {
		t.Fatalf("after busy: %d %s", w.Code, w.Body)
	}
	if n := counter(t, f.h.requests, "cost", "503"); n != 1 {
		t.Fatalf("requests{cost,503} = %v", n)
	}
}

func TestVersionsIncrease(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.h.version(), f.h.version() // same clock reading
	if a != uint64(testNow.UnixMilli()) || b != a+1 {
		t.Fatalf("versions %d, %d", a, b)
	}
	*f.clock = testNow.Add(time.Hour)
	if c := f.h.version(); c != uint64(testNow.Add(time.Hour).UnixMilli()) {
		t.Fatalf("version after an hour %d", c)
	}
}

// TestImportRoutesRefuseBrowsersAndStrangers: every import route needs a
// server sender's token (the webhook also its own), refuses what a web
// page could send (an Origin, a text/plain or form body), and is off
// (403) when no token is configured at all; nothing reaches the sink.
func TestImportRoutesRefuseBrowsersAndStrangers(t *testing.T) {
	report := []byte("date,campaign,cost\n2026-11-21,spring,10\n")
	f := newFixture(t, nil)
	for _, tc := range []struct {
		name string
		hdr  []string
		code int
	}{
		{"no token", []string{"Authorization", "", "Content-Type", "text/csv"}, 401},
		{"wrong token", []string{"Authorization", "Bearer wrong-token-0123456789", "Content-Type", "text/csv"}, 401},
		{"cross-origin page", []string{"Origin", "https://evil.example", "Content-Type", "text/csv"}, 403},
		{"fetch metadata", []string{"Sec-Fetch-Site", "cross-site", "Content-Type", "text/csv"}, 403},
		{"text/plain body", []string{"Content-Type", "text/plain;charset=UTF-8"}, 415},
		{"form body", []string{"Content-Type", "application/x-www-form-urlencoded"}, 415},
		{"server sender", []string{"Content-Type", "text/csv"}, 202},
	} {
		for _, route := range []struct {
			path string
			h    http.Handler
		}{{CostPath, f.h.Cost()}, {PollsPath, f.h.Polls()}, {EmailWebhookPath, f.h.EmailWebhook()}} {
			if tc.code == 202 && route.path != CostPath {
				continue // the body is a spend report
			}
			w, _ := post(t, route.h, route.path, report, tc.hdr...)
			if w.Code != tc.code {
				t.Errorf("%s %s: %d, want %d: %s", tc.name, route.path, w.Code, tc.code, w.Body)
			}
		}
	}
	if n := len(f.sink.batches); n != 1 {
		t.Fatalf("%d batches reached the sink, want the server sender's one", n)
	}

	off := newFixture(t, func(c *Config) { c.Tokens = edge.NewTokens() })
	for _, h := range []http.Handler{off.h.Cost(), off.h.Polls(), off.h.EmailWebhook()} {
		if w, _ := post(t, h, CostPath, report, "Content-Type", "text/csv"); w.Code != http.StatusForbidden {
			t.Errorf("without any token configured: %d, want 403", w.Code)
		}
	}
}

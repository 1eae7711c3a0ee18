package influx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// fakeServer answers /api/v2/write with a scripted sequence of responses
// (the last one repeats) and records every request body.
type fakeServer struct {
	t     *testing.T
	srv   *httptest.Server
	mu    sync.Mutex
	steps []func(http.ResponseWriter)
	times []time.Time
	body  []string
}

func newFakeServer(t *testing.T, steps ...func(http.ResponseWriter)) *fakeServer {
	f := &fakeServer{t: t, steps: steps}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/write" {
			http.NotFound(w, r)
			return
		}
		if q := r.URL.Query(); q.Get("bucket") != "db/rp" || q.Get("precision") != "s" {
			t.Errorf("write query = %q, want bucket db/rp and precision s", r.URL.RawQuery)
		}
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		i := len(f.times)
		f.times = append(f.times, time.Now())
		f.body = append(f.body, string(b))
		step := f.steps[min(i, len(f.steps)-1)]
		f.mu.Unlock()
		step(w)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.times)
}

func status(code int, hdr ...string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		if code >= 400 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Influxdb-Error", fmt.Sprintf("scripted %d", code))
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":"scripted %d"}`, code)
			return
		}
		w.WriteHeader(code)
	}
}

func fastConfig(url string) Config {
	return Config{URL: url, Token: "user:password", Bucket: "db/rp",
		RetryInitial: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, Timeout: 5 * time.Second}
}

func newTestWriter(t *testing.T, cfg Config) *Writer {
	t.Helper()
	w, err := NewWriter(cfg, nil)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

func onePoint() []sketch.Minute {
	return []sketch.Minute{{Series: sketch.Series{Campaign: "c"}, Minute: 1_700_000_040, State: &sketch.State{Count: 1}}}
}

// TestClassification checks which answers are retried and which return a
// *PermanentError at once.
func TestClassification(t *testing.T) {
	for _, tc := range []struct {
		code      int
		permanent bool
	}{
		{400, true}, {401, true}, {403, true}, {404, true}, {413, true}, {422, true},
		{408, false}, {429, false}, {500, false}, {502, false}, {503, false}, {504, false},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			f := newFakeServer(t, status(tc.code), status(tc.code), status(http.StatusNoContent))
			w := newTestWriter(t, fastConfig(f.srv.URL))
			err := w.Write(context.Background(), onePoint(), nil)
			var perr *PermanentError
			if tc.permanent {
				if !errors.As(err, &perr) || perr.StatusCode != tc.code || perr.Message != fmt.Sprintf("scripted %d", tc.code) {
					t.Fatalf("Write = %v, want *PermanentError with status %d and the server's message", err, tc.code)
				}
				if n := f.requests(); n != 1 {
					t.Fatalf("%d requests, want 1 (no retry)", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("Write = %v, want success after retries", err)
			}
			if n, st := f.requests(), w.Stats(); n != 3 || st.Retries != 2 || st.PointsWritten != 1 || st.Requests != 3 {
				t.Fatalf("%d requests, stats %+v; want 3 requests, 2 retries", n, st)
			}
		})
	}
}

// TestRetryAfter checks that 429 and 503 wait as long as the server asks.
func TestRetryAfter(t *testing.T) {
	date := func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }
	for _, tc := range []struct {
		name string
		step func(http.ResponseWriter)
		min  time.Duration
	}{
		{"429 seconds", status(429, "Retry-After", "1"), 950 * time.Millisecond},
		{"503 seconds", status(503, "Retry-After", "1"), 950 * time.Millisecond},
		// HTTP dates have whole-second resolution: 2 s ahead is at least 1 s.
		{"429 http-date", func(w http.ResponseWriter) { status(429, "Retry-After", date())(w) }, 950 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeServer(t, tc.step, status(http.StatusNoContent))
			w := newTestWriter(t, fastConfig(f.srv.URL))
			if err := w.Write(context.Background(), onePoint(), nil); err != nil {
				t.Fatalf("Write: %v", err)
			}
			f.mu.Lock()
			gap := f.times[1].Sub(f.times[0])
			f.mu.Unlock()
			if gap < tc.min {
				t.Fatalf("retried after %s, want >= %s (Retry-After)", gap, tc.min)
			}
		})
	}
}

// TestRetryAfterBeyondDeadline gives up at once when the server asks for a
// wait longer than the caller's deadline allows.
func TestRetryAfterBeyondDeadline(t *testing.T) {
	f := newFakeServer(t, status(429, "Retry-After", "120"))
	w := newTestWriter(t, fastConfig(f.srv.URL))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	err := w.Write(ctx, onePoint(), nil)
	var rerr *RetryableError
	if !errors.As(err, &rerr) || rerr.StatusCode != 429 || rerr.RetryAfter != 120*time.Second {
		t.Fatalf("Write = %v, want the 429 *RetryableError with RetryAfter 120s", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Write took %s, want an early return", d)
	}
}

// TestMaxElapsed gives up on a persistent 500 after MaxElapsed.
func TestMaxElapsed(t *testing.T) {
	f := newFakeServer(t, status(500))
	cfg := fastConfig(f.srv.URL)
	cfg.MaxElapsed = 200 * time.Millisecond
	w := newTestWriter(t, cfg)
	start := time.Now()
	err := w.Write(context.Background(), onePoint(), nil)
	var rerr *RetryableError
	if !errors.As(err, &rerr) || rerr.StatusCode != 500 {
		t.Fatalf("Write = %v, want a *RetryableError with status 500", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %s, want about 200ms", d)
	}
	if f.requests() < 3 {
		t.Fatalf("%d requests, want several retries", f.requests())
	}
	var perr *PermanentError
	if errors.As(err, &perr) {
		t.Fatalf("a retryable failure matched *PermanentError: %v", err)
	}
}

// TestContextEndsRetries checks that cancelling ctx ends the retries with
// an error that wraps both the context's and the last attempt's.
func TestContextEndsRetries(t *testing.T) {
	f := newFakeServer(t, status(503))
	w := newTestWriter(t, fastConfig(f.srv.URL))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for f.requests() < 3 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	err := w.Write(ctx, onePoint(), nil)
	var rerr *RetryableError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &rerr) || rerr.StatusCode != 503 {
		t.Fatalf("Write = %v, want context.Canceled wrapping the 503", err)
	}
}

// TestNetworkErrorsAreRetried points the writer at a closed port.
func TestNetworkErrorsAreRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fastConfig("http://" + addr)
	cfg.MaxElapsed = 100 * time.Millisecond
	w := newTestWriter(t, cfg)
	err = w.Write(context.Background(), onePoint(), nil)
	var rerr *RetryableError
	if !errors.As(err, &rerr) || rerr.StatusCode != 0 {
		t.Fatalf("Write to a closed port = %v, want a network *RetryableError", err)
	}
	if st := w.Stats(); st.Retries == 0 || st.LastError == "" {
		t.Fatalf("Stats = %+v, want retries and a last error", st)
	}
	if err := w.Ping(context.Background()); err == nil {
		t.Fatalf("Ping of a closed port succeeded")
	}
}

// TestBackoff checks growth, cap and jitter bounds of the retry delay.
func TestBackoff(t *testing.T) {
	w := &Writer{cfg: Config{RetryInitial: 100 * time.Millisecond, RetryMax: 1 * time.Second}}
	for attempt, max := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		max *= time.Millisecond
		for i := 0; i < 50; i++ {
			if d := w.backoff(attempt); d < max/2 || d > max {
				t.Fatalf("backoff(%d) = %s, want in [%s, %s]", attempt, d, max/2, max)
			}
		}
	}
	if d := w.backoff(1000); d > time.Second {
		t.Fatalf("backoff(1000) = %s, want capped at 1s", d)
	}
}

// TestRequestSplitting checks that requests are cut by points and by bytes.
func TestRequestSplitting(t *testing.T) {
	var pts []sketch.Minute
	for i := 0; i < 40; i++ {
		pts = append(pts, sketch.Minute{Series: sketch.Series{Campaign: "c", Source: fmt.Sprint(i)}, Minute: 60,
			State: newState(uint64(i), 10, 20000, 50)}) // dense HLL: ~10 KB per line
	}
	t.Run("BatchSize", func(t *testing.T) {
		f := newFakeServer(t, status(http.StatusNoContent))
		cfg := fastConfig(f.srv.URL)
		cfg.BatchSize = 5
		w := newTestWriter(t, cfg)
		if err := w.Write(context.Background(), pts, nil); err != nil {
			t.Fatalf("Write: %v", err)
		}
		var lines []int
		for _, b := range f.body {
			lines = append(lines, strings.Count(b, "\n"))
		}
		if fmt.Sprint(lines) != "[5 5 5 5 5 5 5 5]" {
			t.Fatalf("lines per request = %v, want 8 of 5", lines)
		}
	})
	t.Run("MaxRequestBytes", func(t *testing.T) {
		f := newFakeServer(t, status(http.StatusNoContent))
		cfg := fastConfig(f.srv.URL)
		cfg.MaxRequestBytes = minRequestBytes
		w := newTestWriter(t, cfg)
		if err := w.Write(context.Background(), pts, nil); err != nil {
			t.Fatalf("Write: %v", err)
		}
		total := 0
		for _, b := range f.body {
			if len(b) > cfg.MaxRequestBytes {
				t.Fatalf("request of %d bytes, over %d", len(b), cfg.MaxRequestBytes)
			}
			total += strings.Count(b, "\n")
		}
		if len(f.body) < 2 || total != len(pts) {
			t.Fatalf("%d requests with %d lines, want >= 2 requests with %d lines", len(f.body), total, len(pts))
		}
	})
}

// TestEmptyWrite sends nothing.
func TestEmptyWrite(t *testing.T) {
	f := newFakeServer(t, status(http.StatusNoContent))
	w := newTestWriter(t, fastConfig(f.srv.URL))
	if err := w.Write(context.Background(), nil, nil); err != nil || f.requests() != 0 {
		t.Fatalf("empty Write = %v with %d requests, want nil and none", err, f.requests())
	}
}

// TestConfigValidate lists configs that must be refused.
func TestConfigValidate(t *testing.T) {
	good := Config{URL: "http://127.0.0.1:8086", Bucket: "db/rp"}
	if err := good.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no url":         func(c *Config) { c.URL = "" },
		"bad scheme":     func(c *Config) { c.URL = "udp://127.0.0.1:8086" },
		"no host":        func(c *Config) { c.URL = "http://" },
		"no bucket":      func(c *Config) { c.Bucket = "" },
		"negative":       func(c *Config) { c.Timeout = -time.Second },
		"max < initial":  func(c *Config) { c.RetryInitial, c.RetryMax = time.Second, time.Millisecond },
		"batch negative": func(c *Config) { c.BatchSize = -1 },
		"tiny requests":  func(c *Config) { c.MaxRequestBytes = 1000 },
	} {
		c := good
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Fatalf("%s: Validate accepted %+v", name, c)
		}
		if _, err := NewWriter(c, nil); err == nil {
			t.Fatalf("%s: NewWriter accepted %+v", name, c)
		}
	}
}

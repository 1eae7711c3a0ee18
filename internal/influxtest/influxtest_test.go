package influxtest

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLifecycle writes through the v2 API, reads back with Flux, and checks
// that the data survives Stop and Restart on the same URL.
func TestLifecycle(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if got, want := s.Bucket(), "db/rp"; got != want {
		t.Fatalf("Bucket() = %q, want %q", got, want)
	}
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL() = %q, want a loopback URL", s.URL())
	}
	post(t, ctx, s, "/api/v2/write?org=&bucket="+url.QueryEscape(s.Bucket())+"&precision=s",
		"text/plain", "m,k=v f=42i 1700000000", http.StatusNoContent)
	query := `from(bucket:"db/rp") |> range(start: 2023-11-14T00:00:00Z, stop: 2023-11-15T00:00:00Z) |> filter(fn: (r) => r._measurement == "m")`
	if body := flux(t, ctx, s, query); !strings.Contains(body, ",42,") {
		t.Fatalf("Flux answer lacks the written value:\n%s", body)
	}

	url1 := s.URL()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if s.Running() {
		t.Fatalf("Running() = true after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.URL() != url1 {
		t.Fatalf("URL changed across restart: %q -> %q", url1, s.URL())
	}
	if body := flux(t, ctx, s, query); !strings.Contains(body, ",42,") {
		t.Fatalf("data lost across restart:\n%s", body)
	}
}

// TestFindBinaryEnv checks the environment override and its error.
func TestFindBinaryEnv(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-influxd")
	t.Setenv(EnvBinary, missing)
	if _, err := FindBinary(); err == nil || !strings.Contains(err.Error(), "make influxdb") {
		t.Fatalf("FindBinary with missing %s = %v, want an error naming `make influxdb`", EnvBinary, err)
	}
	fake := filepath.Join(t.TempDir(), "influxd")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatalf("write fake binary: %v", err)
	}
	t.Setenv(EnvBinary, fake)
	if got, err := FindBinary(); err != nil || got != fake {
		t.Fatalf("FindBinary = %q, %v; want %q", got, err, fake)
	}
}

// TestLaunchFailureReportsLog starts a binary that exits at once and checks
// that Launch fails quickly with the log tail in its error.
func TestLaunchFailureReportsLog(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "influxd")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho boom-from-fake-influxd >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatalf("write fake binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Launch(ctx, Options{Binary: fake, StartTimeout: 20 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "boom-from-fake-influxd") {
		t.Fatalf("Launch = %v, want an error with the log tail", err)
	}
}

func post(t *testing.T, ctx context.Context, s *Server, path, ctype, body string, want int) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Token "+s.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: HTTP %d, want %d: %s", path, resp.StatusCode, want, b)
	}
	return string(b)
}

func flux(t *testing.T, ctx context.Context, s *Server, q string) string {
	t.Helper()
	return post(t, ctx, s, "/api/v2/query", "application/vnd.flux", q, http.StatusOK)
}

// TestStockKnobs starts a server as InfluxDB 1.8 ships (Flux off) with no
// database: Flux answers 403, InfluxQL answers, and there is no database
// until one is created.
func TestStockKnobs(t *testing.T) {
	s := StartWith(t, Options{DisableFlux: true, NoDatabase: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.Flux() {
		t.Fatalf("Flux() = true with DisableFlux")
	}
	post(t, ctx, s, "/api/v2/query", "application/vnd.flux", `buckets()`, http.StatusForbidden)
	body, err := s.Query(ctx, "", "SHOW DATABASES")
	if err != nil || strings.Contains(string(body), `"db"`) {
		t.Fatalf("SHOW DATABASES on a server without a database = %s, %v", body, err)
	}
	if err := s.CreateDatabase(ctx, s.Database(), s.RetentionPolicy()); err != nil {
		t.Fatal(err)
	}
	if body, err := s.Query(ctx, "", "SHOW DATABASES"); err != nil || !strings.Contains(string(body), `["db"]`) {
		t.Fatalf("SHOW DATABASES after CreateDatabase = %s, %v", body, err)
	}
}

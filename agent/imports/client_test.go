package imports

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func agentServer(t *testing.T, f *fixture) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("POST "+CostPath, f.h.Cost())
	mux.Handle("POST "+EmailWebhookPath, f.h.EmailWebhook())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestPostFile(t *testing.T) {
	const token = "s3cret-webhook-token-0123"
	f := newFixture(t, func(c *Config) { c.WebhookToken = token })
	srv := agentServer(t, f)
	ctx := context.Background()

	res, err := PostFile(ctx, srv.URL, testToken, filepath.Join("testdata", "cost_semicolon_bom", "report.csv"), "cost")
	if err != nil || res.Accepted != 3 || res.Events != 7 {
		t.Fatalf("cost: %+v, %v", res, err)
	}
	if got, want := res.String(), "imported 3 rows as 7 events; rejected 0\nignored columns: CTR\n"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	res, err = PostFile(ctx, srv.URL+"/", testToken, filepath.Join("testdata", "cost_errors", "report.csv"), "cost")
	if err != nil || res.Rejected != 10 || !strings.Contains(res.String(), "line 4: cost: \"abc\" is not a decimal number") {
		t.Fatalf("errors: %+v, %v", res, err)
	}

	// The webhook token travels in the agent address.
	events := filepath.Join("testdata", "sendgrid", "events.json")
	if _, err := PostFile(ctx, srv.URL, "", events, "email"); !isStatus(err, http.StatusUnauthorized) {
		t.Fatalf("without token: %v", err)
	}
	res, err = PostFile(ctx, srv.URL+"?token="+token, "", events, "email")
	if err != nil || res.Accepted != 4 || res.Ignored != 5 {
		t.Fatalf("email: %+v, %v", res, err)
	}

	// A busy agent is retried after its Retry-After (the fake's is 2s).
	f.sink.busy = 1
	res, err = PostFile(ctx, srv.URL, testToken, filepath.Join("testdata", "cost_google_ads", "report.csv"), "cost")
	if err != nil || res.Accepted != 4 || f.sink.busy != 0 {
		t.Fatalf("after busy: %+v, %v", res, err)
	}
	// ... but not beyond the context.
	f.sink.busy = 10
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := PostFile(cctx, srv.URL, testToken, filepath.Join("testdata", "cost_google_ads", "report.csv"), "cost"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	f.sink.busy = 0

	bad := filepath.Join(t.TempDir(), "report.csv")
	if err := os.WriteFile(bad, []byte("just text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := PostFile(ctx, srv.URL, testToken, bad, "cost"); !isStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "not a spend report") {
		t.Fatalf("bad file: %v", err)
	}
	for _, tc := range []struct{ url, path, kind, want string }{
		{srv.URL, bad, "poll", "want cost, email or polls"},
		{"127.0.0.1:8081", bad, "cost", "want http://host:port"},
		{srv.URL, filepath.Join(t.TempDir(), "missing.csv"), "cost", "no such file"},
	} {
		if _, err := PostFile(ctx, tc.url, testToken, tc.path, tc.kind); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("PostFile(%q, %q, %q) = %v, want %q", tc.url, tc.path, tc.kind, err, tc.want)
		}
	}
}

func isStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}

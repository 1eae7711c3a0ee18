package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/sketch"
)

type fakeSource struct {
	got kpi.Filter
	pts []kpi.Point
	err error
}

func (f *fakeSource) Minutes(_ context.Context, flt kpi.Filter) ([]kpi.Point, error) {
	f.got = flt
	return f.pts, f.err
}

func newServer(src Source, ready func() error) *Server {
	reg := prometheus.NewRegistry()
	return New(Config{MaxWindow: 48 * time.Hour}, src, ready, reg, reg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func get(h http.Handler, url string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, url, nil))
	return w
}

func TestKPIsParameters(t *testing.T) {
	src := &fakeSource{pts: []kpi.Point{{Series: sketch.Series{Type: "impression"}, State: &sketch.State{Count: 10}},
		{Series: sketch.Series{Type: "click"}, State: &sketch.State{Count: 2}}}}
	s := newServer(src, func() error { return nil })
	for _, tc := range []struct {
		url      string
		wantCode int
		wantMsg  string
	}{
		{"/api/v1/kpis", 400, `parameter \"campaign\": required`},
		{"/api/v1/kpis?campaign=c&from=yesterday", 400, `parameter \"from\"`},
		{"/api/v1/kpis?campaign=c&to=2026-13-01T00:00:00Z", 400, `parameter \"to\"`},
		{"/api/v1/kpis?campaign=c&from=2026-11-22T10:00:00Z&to=2026-11-22T09:00:00Z", 400, "before to"},
		{"/api/v1/kpis?campaign=c&from=2026-11-01T00:00:00Z&to=2026-11-22T00:00:00Z", 400, "maximum"},
		{"/api/v1/kpis?campaign=c&from=2026-11-22T09:00:00Z&to=2026-11-22T10:00:00Z&country=DE&region=eu", 200, `"ctr":0.2`},
	} {
		w := get(s, tc.url)
		if w.Code != tc.wantCode || !strings.Contains(w.Body.String(), tc.wantMsg) {
			t.Fatalf("%s: %d %s; want %d containing %s", tc.url, w.Code, w.Body, tc.wantCode, tc.wantMsg)
		}
	}
	if src.got.Country != "DE" || src.got.Region != "eu" || src.got.From.Hour() != 9 {
		t.Fatalf("filter passed on as %+v", src.got)
	}
	// The contract is one flat object of numbers.
	var obj map[string]any
	if err := json.Unmarshal(get(s, "/api/v1/kpis?campaign=c").Body.Bytes(), &obj); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"impressions", "clicks", "conversions", "pageviews", "uniques", "revenue", "cost", "ctr", "cvr", "cpa", "roas", "bots_filtered"} {
		if _, ok := obj[k].(float64); !ok {
			t.Fatalf("field %q missing or not a number in %v", k, obj)
		}
	}
}

func TestProbesAndStorageErrors(t *testing.T) {
	src := &fakeSource{err: errors.New("connection refused")}
	notReady := errors.New("rebuilding open minutes")
	s := newServer(src, func() error { return notReady })
	if w := get(s, "/healthz"); w.Code != 200 {
		t.Fatalf("healthz %d", w.Code)
	}
	if w := get(s, "/readyz"); w.Code != 503 || !strings.Contains(w.Body.String(), "rebuilding") {
		t.Fatalf("readyz %d %s", w.Code, w.Body)
	}
	if w := get(s, "/api/v1/kpis?campaign=c"); w.Code != 502 {
		t.Fatalf("kpis with storage down: %d", w.Code)
	}
	if w := get(s, "/metrics"); w.Code != 200 || !strings.Contains(w.Body.String(), "tally_aggregator_api_requests_total") {
		t.Fatalf("metrics %d", w.Code)
	}
}

func TestBotsByReason(t *testing.T) {
	bot := &sketch.State{Count: 6}
	bot.AddBot("crawler")
	bot.AddBot("crawler")
	bot.AddBot("datacenter")
	src := &fakeSource{pts: []kpi.Point{{Series: sketch.Series{Type: "click"}, State: bot},
		{Series: sketch.Series{Type: "impression"}, State: &sketch.State{Count: 1}}}}
	s := newServer(src, func() error { return nil })
	w := get(s, "/api/v1/bots?campaign=c")
	var got BotsResponse
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if got.Total != 3 || got.ByReason["crawler"] != 2 || got.ByReason["datacenter"] != 1 || got.Share != 0.3 {
		t.Fatalf("got %+v", got)
	}
	if w := get(s, "/api/v1/bots"); w.Code != 400 || !strings.Contains(w.Body.String(), "campaign") {
		t.Fatalf("missing campaign: %d %s", w.Code, w.Body)
	}
}

package graphql_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/introspection"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/graphql"
)

// handler is the API with GraphQL mounted over src, for benchmarks and
// fuzzing (no listener, no audit file).
func handler(tb testing.TB, src api.Source) http.Handler {
	tb.Helper()
	a, err := auth.New(auth.Config{Tokens: []auth.StaticToken{{Token: adminToken, Subject: "root", Role: auth.Admin}}})
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	srv := api.New(api.Config{Auth: a, Now: func() time.Time { return now }, MaxQueriesPerSubject: 64, MaxConcurrentQueries: 64},
		src, func() error { return nil }, reg, reg, nil, logger)
	if err := graphql.Mount(srv, graphql.DefaultConfig(), reg, logger); err != nil {
		tb.Fatal(err)
	}
	return srv
}

func post(h http.Handler, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, graphql.Path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+adminToken)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// BenchmarkQueries measures what one request costs the node, from the
// body to the answer, for legitimate questions (REST's kpis route for the
// same question is the baseline) and for the costliest shapes an attacker
// can send within the bounds (answered or refused). The storage is a fake
// holding 50 minutes of two campaigns, so these are GraphQL's own costs.
// Reproduce with
//
//	go test -run='^$' -bench=BenchmarkQueries -benchmem ./aggregator/graphql/
func BenchmarkQueries(b *testing.B) {
	h := handler(b, &source{pts: points()})
	breakdown := `kpis(campaign: "spring", range: {window: "1h"}, by: source) { total { ` + kpiFields + ` } groups { key kpis { ` + kpiFields + ` } } }`
	// Every data field with every subfield: what a dashboard would ask.
	five := `{ campaigns(range: {window: "1h"}) { from to campaigns { campaign kpis { ` + kpiFields + ` } previous { ` + kpiFields + ` } }
		total { kpis { ` + kpiFields + ` } previous { ` + kpiFields + ` } } } ` + breakdown + `
		series(campaign: "spring", metrics: [clicks, uniques], step: "5m", range: {window: "1h"}, by: source) {
			campaign step from to by metrics series { key points { t values { metric value } } } }
		bots(campaign: "spring", range: {window: "1h"}) { total share by_reason { reason events } }
		polls(campaign: "spring", range: {window: "1h"}) { poll total answers { answer votes share } } }`
	var bomb strings.Builder
	bomb.WriteString("query { ...F40 }\nfragment F0 on Query { whoami { role } }\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&bomb, "fragment F%d on Query { ...F%d ...F%d }\n", i, i-1, i-1)
	}
	for _, bc := range []struct {
		name, query string
		code        int
	}{
		{"kpis_by_source", "{ " + breakdown + " }", 200},
		{"five_data_fields", five, 200},
		{"introspection", introspection.Query, 200},
		{"same_field_990_tokens", "{" + strings.Repeat(" whoami { role }", 247) + " }", 200},
		{"fragment_bomb_2^40_refused", bomb.String(), 422},
		{"deep_300_refused", "{ __schema { types { fields { type " + strings.Repeat("{ ofType ", 300) + "{ name }" + strings.Repeat(" }", 300) + " } } } }", 422},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				// A query the parser cache has seen skips parsing and
				// validation; a comment that differs each time defeats
				// the cache, as an attacker would.
				n++
				body, _ := json.Marshal(map[string]string{"query": fmt.Sprintf("%s\n# %d", bc.query, n)})
				if w := post(h, body); w.Code != bc.code || (bc.code == 200 && strings.Contains(w.Body.String(), `"errors"`)) {
					b.Fatalf("%d %.300s", w.Code, w.Body)
				}
			}
		})
	}
	b.Run("kpis_by_source_cached", func(b *testing.B) {
		// The same query each time, as a client sends it: parsed and
		// validated once.
		b.ReportAllocs()
		body, _ := json.Marshal(map[string]string{"query": "{ " + breakdown + " }"})
		for b.Loop() {
			if w := post(h, body); w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	})
	b.Run("rest_kpis_by_source", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/kpis?campaign=spring&window=1h&by=source", nil)
			r.Header.Set("Authorization", "Bearer "+adminToken)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	})
}

// FuzzQuery sends arbitrary bodies: every answer is JSON with an expected
// status, never a panic. Run with make fuzz, or
//
//	go test -run='^$' -fuzz='^FuzzQuery$' -fuzztime=30s ./aggregator/graphql/
func FuzzQuery(f *testing.F) {
	for _, q := range []string{
		`{"query":"{ whoami { role } }"}`,
		`{"query":"{ kpis(campaign: \"spring\", by: source) { total { clicks } groups { key } } }"}`,
		`{"query":"query($c: String!) { bots(campaign: $c) { total by_reason { reason events } } }","variables":{"c":"spring"}}`,
		`{"query":"{ series(metrics: [clicks, uniques], step: \"15m\", by: campaign) { series { key points { t values { metric value } } } } }"}`,
		`{"query":"{ __schema { types { name fields { name type { ofType { name } } } } } }"}`,
		`{"query":"query { ...A } fragment A on Query { ...B ...B } fragment B on Query { whoami { role } }"}`,
		`{"query":"{ polls(campaign: \"spring\", range: {from: \"2026-11-22T09:00:00Z\", to: \"2026-11-22T10:00:00Z\"}) { poll } }"}`,
		`not json`, `{"query": 5}`, `{}`,
	} {
		f.Add([]byte(q))
	}
	h := handler(f, &source{pts: points()[:40]})
	f.Fuzz(func(t *testing.T, body []byte) {
		w := post(h, body)
		switch w.Code {
		case 200, 400, 413, 422, 429:
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("not JSON for %q: %s", body, w.Body)
		}
		_, _ = io.Copy(io.Discard, w.Body)
	})
}

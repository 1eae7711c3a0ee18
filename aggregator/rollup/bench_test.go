package rollup

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
)

// BenchmarkSeriesLatency: how long a daily series of one campaign takes
// to read and fold, over 1, 30 and 365 days, from the rollups (Source)
// and from minutes alone, against InfluxDB 1.8 read with InfluxQL. A year
// of one campaign: 6 series, 4 active minutes each per hour. Reports the
// p50 and p99 of 20 questions (5 from minutes over 365 days), folded as
// the API folds them (stored uniques, no value sketches), and of the
// 365-day read alone, and logs the points in InfluxDB per campaign-day
// at each resolution. Reproduce
// with
//
//	go test -run='^$' -bench=BenchmarkSeriesLatency -benchtime=1x -v ./aggregator/rollup/
func BenchmarkSeriesLatency(b *testing.B) {
	ctx := context.Background()
	s := influxtest.StartWith(b, influxtest.Options{DisableFlux: true})
	cfg := influx.DefaultConfig()
	cfg.URL, cfg.Token, cfg.Bucket = s.URL(), s.Token(), s.Bucket()
	cfg.Retention = influx.Retention{}
	reader, err := influx.NewReader(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer reader.Close()
	w, err := influx.NewWriter(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if _, err := reader.Setup(ctx, true); err != nil {
		b.Fatal(err)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	start := today.Add(-365 * 24 * time.Hour)
	c := &clock{t: today.Add(time.Hour)}
	r := New(Config{Now: c.Now}, storagePair{reader, w}, prometheus.NewRegistry(), nil)
	if err := r.Init(ctx); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var minutes int
	for d := range 365 {
		var ms []sketch.Minute
		for h := range 24 {
			for src := range 3 {
				for _, typ := range []string{"pageview", "conversion"} {
					for range 4 {
						st := &sketch.State{Count: uint64(1 + rng.IntN(9))}
						for range st.Count {
							st.AddVisitor(splitmix(uint64(rng.IntN(5000))))
						}
						if typ == "conversion" {
							st.AddValue(int64(rng.IntN(50_000_000)))
						}
						ms = append(ms, sketch.Minute{Series: sketch.Series{Campaign: "a", Source: fmt.Sprint("s", src), Type: typ},
							Minute: start.Add(time.Duration(d)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(rng.IntN(60))*time.Minute).Unix(),
							State:  st})
					}
				}
			}
		}
		slices.SortFunc(ms, func(x, y sketch.Minute) int { return int(x.Minute - y.Minute) })
		ms = slices.CompactFunc(ms, func(x, y sketch.Minute) bool { return x.Key() == y.Key() })
		minutes += len(ms)
		if err := r.Changing(ctx, ms); err != nil {
			b.Fatal(err)
		}
		if err := w.Write(ctx, ms, nil); err != nil {
			b.Fatal(err)
		}
		r.Changed(ms)
	}
	c.Add(time.Minute)
	for {
		n, err := r.Pass(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 && r.Pending() == 0 {
			break
		}
	}
	usage, err := reader.Usage(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, u := range usage.Buckets {
		b.Logf("%s: %.1f points per campaign-day, %d bytes on disk (not compacted)", u.Kind, float64(u.Points)/365, u.Bytes)
	}
	b.Logf("%d minute points over 365 days", minutes)

	rollups := &Source{Reader: reader}
	minutesOnly := minutesReader{reader}
	end := today
	// The read alone (InfluxDB, JSON, checking each HLL), without the
	// fold: what of a 365-day answer is not the fold's.
	b.Run("days=365/rollups-read-only", func(b *testing.B) {
		q := api.Query{Campaigns: []string{"a"}, From: end.Add(-365 * 24 * time.Hour), To: end, Step: 24 * time.Hour,
			StoredUniques: true, NoQuantiles: true}
		var took []time.Duration
		for range b.N {
			for range 20 {
				t0 := time.Now()
				n := 0
				if err := rollups.EachMinute(ctx, q, func(sketch.Minute) error { n++; return nil }); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
				if n != 365*6 {
					b.Fatalf("%d points, want %d", n, 365*6)
				}
			}
		}
		reportLatency(b, took)
	})
	// The whole API route for the 365-day question: the request through
	// the handler (token, parameters, rate limits, audit off) to the JSON
	// answer, over the same rollups.
	b.Run("days=365/rollups-api", func(b *testing.B) {
		h := seriesAPI(b, rollups, end)
		u := fmt.Sprintf("/api/v1/series?campaign=a&metric=clicks,pageviews,conversions,uniques,revenue&step=1d&from=%s&to=%s",
			end.Add(-365*24*time.Hour).Format(time.RFC3339), end.Format(time.RFC3339))
		var took []time.Duration
		for range b.N {
			for range 20 {
				r := httptest.NewRequest(http.MethodGet, u, nil)
				r.Header.Set("Authorization", "Bearer "+benchToken)
				w := httptest.NewRecorder()
				t0 := time.Now()
				h.ServeHTTP(w, r)
				took = append(took, time.Since(t0))
				var ans struct {
					Series []struct {
						Points []json.RawMessage `json:"points"`
					} `json:"series"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &ans); w.Code != http.StatusOK || err != nil ||
					len(ans.Series) != 1 || len(ans.Series[0].Points) != 365 {
					b.Fatalf("status %d (%v): %.300s", w.Code, err, w.Body)
				}
			}
		}
		reportLatency(b, took)
	})
	for _, days := range []int{1, 30, 365} {
		for _, src := range []struct {
			name string
			s    api.Source
		}{{"rollups", rollups}, {"minutes", minutesOnly}} {
			b.Run(fmt.Sprintf("days=%d/%s", days, src.name), func(b *testing.B) {
				q := api.Query{Campaigns: []string{"a"}, From: end.Add(-time.Duration(days) * 24 * time.Hour), To: end, Step: 24 * time.Hour}
				n := 20
				if days == 365 && src.name == "minutes" {
					n = 5
				}
				var took []time.Duration
				for range b.N {
					for range n {
						t0 := time.Now()
						got := fold(b, src.s, q)
						took = append(took, time.Since(t0))
						if len(got) != days {
							b.Fatalf("%d buckets, want %d", len(got), days)
						}
					}
				}
				reportLatency(b, took)
			})
		}
	}
}

const benchToken = "bench-admin-token-0123456789"

// seriesAPI is the REST API over src with one admin token and the
// default limits (http.max_window a year), its clock at now.
func seriesAPI(b *testing.B, src api.Source, now time.Time) http.Handler {
	b.Helper()
	a, err := auth.New(auth.Config{Tokens: []auth.StaticToken{{Token: benchToken, Subject: "bench", Role: auth.Admin}}})
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	return api.New(api.Config{Auth: a, Now: func() time.Time { return now }, MaxQueriesPerSubject: 64},
		src, func() error { return nil }, reg, reg, nil, slog.New(slog.DiscardHandler))
}

// reportLatency reports the p50 and p99 of took (with 20 questions, p99
// is the slowest) instead of ns/op.
func reportLatency(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(took[(len(took)*99)/100].Microseconds())/1000, "p99_ms")
	b.ReportMetric(0, "ns/op")
}

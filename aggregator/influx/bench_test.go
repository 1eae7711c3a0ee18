package influx

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// benchPoints returns n merged minutes of distinct series, each with a
// clone of one of a few states of the given visitors per minute (line
// sizes: 100 visitors ≈ 1 KB, 1000 ≈ 4.2 KB, 20000 (dense HLL) ≈ 22 KB).
func benchPoints(n, visitors int) []sketch.Minute {
	states := make([]*sketch.State, 8)
	for i := range states {
		states[i] = newState(uint64(i), 200, visitors, 20)
	}
	pts := make([]sketch.Minute, n)
	for i := range pts {
		pts[i] = sketch.Minute{
			Series: sketch.Series{Campaign: fmt.Sprintf("camp-%02d", i%50), Source: fmt.Sprintf("src-%d", i/50%10),
				Medium: "cpc", Type: "click", Country: []string{"DE", "FR", "US", "GB"}[i%4], Device: "mobile", Region: "eu-1"},
			Minute: baseMinute + int64(60*(i/2000)),
			State:  states[i%len(states)].Clone(),
		}
	}
	return pts
}

// BenchmarkWrite writes 5,000 merged minutes with sketches per operation
// to the real influxd (one shared server, default Config: one request of
// 5,000 points unless it passes 8 MiB) and reports points/s.
//
//	go test -run '^$' -bench BenchmarkWrite -benchtime 10x ./aggregator/influx/
func BenchmarkWrite(b *testing.B) {
	for _, visitors := range []int{100, 1000, 20000} {
		b.Run(fmt.Sprintf("visitors=%d", visitors), func(b *testing.B) {
			cfg := freshBucket(b)
			w, err := NewWriter(cfg, nil)
			if err != nil {
				b.Fatalf("NewWriter: %v", err)
			}
			defer w.Close()
			pts := benchPoints(5000, visitors)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			// The first write creates 5,000 series; measure the steady
			// state of rewriting minutes, which is what the aggregator does.
			if err := w.Write(ctx, pts, nil); err != nil {
				b.Fatalf("Write: %v", err)
			}
			before := w.Stats()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := w.Write(ctx, pts, nil); err != nil {
					b.Fatalf("Write: %v", err)
				}
			}
			b.StopTimer()
			st := w.Stats()
			points := float64(st.PointsWritten - before.PointsWritten)
			b.ReportMetric(points/b.Elapsed().Seconds(), "points/s")
			b.ReportMetric(float64(st.BytesWritten-before.BytesWritten)/points, "B/point")
			b.ReportMetric(float64(st.Requests-before.Requests)/float64(b.N), "requests/op")
		})
	}
}

// BenchmarkEncode measures the CPU side of Write alone: encoding 5,000
// merged minutes to line protocol (HLL estimate, quantiles, base64).
//
//	go test -run '^$' -bench BenchmarkEncode ./aggregator/influx/
func BenchmarkEncode(b *testing.B) {
	w := &Writer{cfg: DefaultConfig()}
	pts := benchPoints(5000, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	var n int
	for i := 0; i < b.N; i++ {
		reqs, err := w.encode(pts, nil)
		if err != nil {
			b.Fatalf("encode: %v", err)
		}
		n = 0
		for _, r := range reqs {
			n += len(r.body)
		}
	}
	b.SetBytes(int64(n))
	b.ReportMetric(float64(len(pts)*b.N)/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkQueryMinutes reads 1,500 merged minutes (1,000 visitors each,
// 500 series over 50 campaigns, 3 minutes) back with EachMinute, once per read
// path, from the same bucket of one influxd with Flux on, and reports
// points/s: the ratio of the two is the figure to quote (same server,
// same data, same process).
//
//	go test -run '^$' -bench BenchmarkQueryMinutes -benchtime 5x ./aggregator/influx/
func BenchmarkQueryMinutes(b *testing.B) {
	cfg := freshBucket(b)
	w, err := NewWriter(cfg, nil)
	if err != nil {
		b.Fatalf("NewWriter: %v", err)
	}
	defer w.Close()
	pts := benchPoints(5000, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := w.Write(ctx, pts, nil); err != nil {
		b.Fatalf("Write: %v", err)
	}
	// benchPoints repeats series within a minute; the stored points are
	// the distinct (series, minute) pairs.
	distinct := map[string]bool{}
	for _, p := range pts {
		distinct[fmt.Sprint(p.Series, p.Minute)] = true
	}
	q := MinuteQuery{AllCampaigns: true, From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+3600, 0)}
	for _, lang := range []string{QueryInfluxQL, QueryFlux} {
		for _, counters := range []bool{false, true} {
			name := lang + "/sketches"
			if counters {
				name = lang + "/counters-only"
			}
			b.Run(name, func(b *testing.B) {
				c := cfg
				c.QueryLanguage = lang
				r, err := NewReader(c, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				q := q
				q.CountersOnly = counters
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					n := 0
					if err := r.EachMinute(ctx, q, func(sketch.Minute) error { n++; return nil }); err != nil || n != len(distinct) {
						b.Fatalf("EachMinute: %d points, %v; want %d", n, err, len(distinct))
					}
				}
				b.ReportMetric(float64(len(distinct)*b.N)/b.Elapsed().Seconds(), "points/s")
			})
		}
	}
}

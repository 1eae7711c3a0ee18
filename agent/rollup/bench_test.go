package rollup

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// BenchmarkAdd measures the hot path from a decoded, normalised batch into
// the sketches: 500-event batches over 200 series and 20k visitors.
//
//	go test -run='^$' -bench=BenchmarkAdd -benchmem ./agent/rollup/
func BenchmarkAdd(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Truncate(time.Minute)
	batches := make([][]event.Event, 64)
	for i := range batches {
		batches[i] = genEvents(rng, 500, 200, 20000, base)
	}
	r := New(1, DefaultConfig())
	var out Slice
	// Warm: open every series-minute so the steady state is measured.
	for _, bt := range batches {
		_ = r.Add(bt, &out)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Add(batches[i%len(batches)], &out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/event")
}

// BenchmarkActiveSeriesMemory keeps 100k series active for five minutes
// of wall-clock time on a fake clock (one event per series per 15-second
// flush, the default interval, with the default 2-minute lateness) and
// reports the heap the open state needs.
//
//	go test -run='^$' -bench=BenchmarkActiveSeriesMemory -benchtime=1x ./agent/rollup/
func BenchmarkActiveSeriesMemory(b *testing.B) {
	const nSeries = 100_000
	series := make([]sketch.Series, nSeries)
	for i := range series {
		series[i] = sketch.Series{Campaign: fmt.Sprintf("campaign-%04d", i/50), Source: fmt.Sprintf("source-%02d", i%50),
			Medium: "cpc", Type: "pageview", Country: "DE", Device: "mobile", Region: "eu"}
	}
	for range b.N {
		now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
		r := New(1, DefaultConfig())
		var out Slice
		r.now = func() time.Time { return now }
		evs := make([]event.Event, nSeries)
		var peak uint64
		var ms runtime.MemStats
		for flush := range 20 { // 5 minutes of 15 s flushes
			for i := range evs {
				evs[i] = event.Event{Series: series[i], UnixMillis: now.UnixMilli(), Visitor: mix(uint64(i*31 + flush))}
			}
			if err := r.Add(evs, &out); err != nil {
				b.Fatal(err)
			}
			if err := r.Cut(&out); err != nil {
				b.Fatal(err)
			}
			out = out[:0]
			now = now.Add(15 * time.Second)
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		st := r.Stats()
		b.ReportMetric(float64(peak)/(1<<20), "peak_heap_MiB")
		b.ReportMetric(float64(st.Open), "open_series_minutes")
		runtime.KeepAlive(r)
	}
}

// countOutput counts contributions.
type countOutput struct{ n int }

func (o *countOutput) Add(*wire.Contribution) { o.n++ }

// BenchmarkCut measures a flush of 100,000 changed series-minutes (ten
// new events each, a thousand campaigns) into an Output that only counts:
// encoding each state, its register updates and putting them in order.
// One rollup takes every round, as an agent's does.
//
//	go test -run='^$' -bench=BenchmarkCut -benchmem ./agent/rollup/
func BenchmarkCut(b *testing.B) {
	const nSeries = 100_000
	rng := rand.New(rand.NewPCG(3, 4))
	types := []string{"impression", "click", "pageview", "conversion"}
	now := time.Date(2026, 11, 22, 10, 0, 30, 0, time.UTC)
	evs := make([]event.Event, 0, 10*nSeries)
	for i := range nSeries {
		s := sketch.Series{Campaign: fmt.Sprintf("campaign-%04d", rng.IntN(1000)), Source: fmt.Sprintf("source-%02d", rng.IntN(20)),
			Medium: "cpc", Type: types[rng.IntN(len(types))], Country: fmt.Sprintf("C%d", i%30), Device: "mobile", Region: "eu"}
		for range 10 {
			evs = append(evs, event.Event{Series: s, UnixMillis: now.UnixMilli()})
		}
	}
	r := New(1, DefaultConfig())
	r.now = func() time.Time { return now }
	b.ReportAllocs()
	var out countOutput
	for b.Loop() {
		b.StopTimer()
		for i := range evs {
			evs[i].Visitor = mix(rng.Uint64())
		}
		if err := r.Add(evs, &out); err != nil {
			b.Fatal(err)
		}
		out = countOutput{}
		b.StartTimer()
		if err := r.Cut(&out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*out.n), "ns/contribution")
}

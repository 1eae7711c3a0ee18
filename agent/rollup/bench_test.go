package rollup

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
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
	// Warm: open every series-minute so the steady state is measured.
	for _, bt := range batches {
		_ = r.Add(bt, nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Add(batches[i%len(batches)], nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/event")
}

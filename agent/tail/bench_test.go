package tail

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
)

// endSink takes everything and stops the run at the end of the file.
type endSink struct {
	end    int64
	cancel context.CancelFunc
}

func (s *endSink) AcceptAt(_ []event.Event, pos source.Position) error {
	if pos.Offset == s.end {
		s.cancel()
	}
	return nil
}

func (s *endSink) Positions() map[string]source.Position { return nil }

// BenchmarkTail measures the tailer alone: a 100k-line file read, split,
// decoded by a trivial decoder and batched into a sink that does nothing.
//
//	go test -run '^$' -bench Tail -benchmem ./agent/tail/
func BenchmarkTail(b *testing.B) {
	const n = 100_000
	p := filepath.Join(b.TempDir(), "access.log")
	content := lines(0, n)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
	end := int64(len(content))
	b.SetBytes(end)
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		tl, err := New(Config{Paths: []string{p}, PollInterval: time.Millisecond}, &endSink{end: end, cancel: cancel}, seqDecoder, discard)
		if err != nil {
			b.Fatal(err)
		}
		if err := tl.Run(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

package wire

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The figures in the report of this package come from:
//
//	go test -run='^$' -bench=. -benchmem -count=5 ./wire/ | tee bench.txt
//
// (benchstat bench.txt to summarise). The batch is a realistic flush: 200
// contributions, each with an HLL of 100-400 visitor hashes, conversions
// with a value sketch, a bot count on every tenth.

const benchContributions = 200

func benchBatch(b *testing.B) *Batch {
	b.Helper()
	return buildBatch(b, benchContributions, 42)
}

func BenchmarkEncodeBatch(b *testing.B) {
	batch := benchBatch(b)
	for _, mode := range []struct {
		name string
		opts EncodeOptions
	}{{"plain", EncodeOptions{}}, {"zstd", EncodeOptions{Compress: true}}, {"zstd-best", EncodeOptions{Compress: true, Best: true}}} {
		b.Run(mode.name, func(b *testing.B) {
			opts := mode.opts
			buf, err := AppendFrame(nil, KindBatch, batch, opts)
			if err != nil {
				b.Fatalf("AppendFrame: %v", err)
			}
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				if buf, err = AppendFrame(buf[:0], KindBatch, batch, opts); err != nil {
					b.Fatalf("AppendFrame: %v", err)
				}
			}
			b.ReportMetric(float64(len(buf)), "B/frame")
			b.ReportMetric(float64(len(buf))/benchContributions, "B/contribution")
		})
	}
}

func BenchmarkDecodeBatch(b *testing.B) {
	batch := benchBatch(b)
	for _, compress := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "zstd"}[compress], func(b *testing.B) {
			frame, err := EncodeBatch(batch, EncodeOptions{Compress: compress})
			if err != nil {
				b.Fatalf("EncodeBatch: %v", err)
			}
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			r := bytes.NewReader(frame)
			for b.Loop() {
				r.Reset(frame)
				f, err := ReadFrame(r, 0)
				if err != nil {
					b.Fatalf("ReadFrame: %v", err)
				}
				if _, err := DecodeBatch(f); err != nil {
					b.Fatalf("DecodeBatch: %v", err)
				}
			}
			b.ReportMetric(float64(len(frame)), "B/frame")
		})
	}
}

// BenchmarkQUICRoundTrip measures batches per second over loopback QUIC
// with mutual TLS: one connection, each batch on its own stream, answered
// by a handler that acks at once. "seq" sends one batch at a time (one
// round trip each); "pipelined" keeps 32 in flight.
func BenchmarkQUICRoundTrip(b *testing.B) {
	p := newTestPKI(b)
	srv := startServer(b, p, okHandler, nil)
	for _, size := range []int{10, benchContributions} {
		batch := buildBatch(b, size, 42)
		for _, mode := range []struct {
			name     string
			inFlight int
			compress bool
		}{
			{name: "seq", inFlight: 1},
			{name: "pipelined", inFlight: 32},
			{name: "pipelined-zstd", inFlight: 32, compress: true},
		} {
			b.Run(mode.name+"/contributions="+strconv.Itoa(size), func(b *testing.B) {
				c := dialServer(b, srv, p.clientTLS(b, "agent1"), ClientConfig{Compress: mode.compress})
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				b.ReportAllocs()
				before := c.Stats().BytesSent
				start := time.Now()
				work := make(chan struct{})
				var wg sync.WaitGroup
				errs := make(chan error, mode.inFlight)
				for range mode.inFlight {
					wg.Go(func() {
						for range work {
							ack, err := c.Send(ctx, batch)
							if err == nil && ack.Status != AckOK {
								b.Errorf("ack %+v", ack)
							}
							if err != nil {
								errs <- err
								return
							}
						}
					})
				}
				n := 0
				for b.Loop() {
					work <- struct{}{}
					n++
				}
				close(work)
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatalf("Send: %v", err)
				}
				elapsed := time.Since(start)
				sent := c.Stats().BytesSent - before
				b.ReportMetric(float64(n)/elapsed.Seconds(), "batches/s")
				b.ReportMetric(float64(n*size)/elapsed.Seconds(), "contributions/s")
				b.ReportMetric(float64(sent)/float64(n), "B/batch")
				b.SetBytes(int64(sent) / int64(max(n, 1)))
			})
		}
	}
}

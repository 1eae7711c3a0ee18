package spool

import (
	"context"
	"testing"
)

// BenchmarkCommit measures one flush of 10 batches of 32 KiB, fsync
// included. Every 50 flushes are shipped and acked off the clock so the
// spool does not grow without bound.
//
//	go test -run '^$' -bench BenchmarkCommit -benchtime 300x ./agent/spool/
func BenchmarkCommit(b *testing.B) {
	s, err := Open(b.TempDir(), Config{MaxBytes: 256 << 20}, nil)
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	defer s.Close()
	batches := make([][]byte, 10)
	for i := range batches {
		batches[i] = make([]byte, 32<<10)
	}
	ctx := context.Background()
	b.SetBytes(10 * 32 << 10)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Commit(payloads(batches...), CommitMeta{JournalPos: uint64(i)}); err != nil {
			b.Fatalf("Commit: %v", err)
		}
		if (i+1)%50 == 0 {
			b.StopTimer()
			for range 50 * len(batches) {
				it, err := s.Next(ctx)
				if err != nil {
					b.Fatalf("Next: %v", err)
				}
				if err := s.Ack(it.Seq); err != nil {
					b.Fatalf("Ack: %v", err)
				}
			}
			if _, err := s.checkpoint(); err != nil {
				b.Fatalf("checkpoint: %v", err)
			}
			b.StartTimer()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flushes/s")
}

// BenchmarkNextAck measures handing out and acking one 4 KiB batch (a
// pread from the page cache, a copy, and the bookkeeping).
//
//	go test -run '^$' -bench BenchmarkNextAck -benchtime 100000x ./agent/spool/
func BenchmarkNextAck(b *testing.B) {
	s, err := Open(b.TempDir(), Config{MaxBytes: 2 << 30, SegmentSize: 64 << 20}, nil)
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	defer s.Close()
	batches := make([][]byte, 100)
	for i := range batches {
		batches[i] = make([]byte, 4<<10)
	}
	for n := 0; n < b.N; n += len(batches) {
		if _, err := s.Commit(payloads(batches...), CommitMeta{}); err != nil {
			b.Fatalf("Commit: %v", err)
		}
	}
	ctx := context.Background()
	b.SetBytes(4 << 10)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		it, err := s.Next(ctx)
		if err != nil {
			b.Fatalf("Next: %v", err)
		}
		if err := s.Ack(it.Seq); err != nil {
			b.Fatalf("Ack: %v", err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "batches/s")
}

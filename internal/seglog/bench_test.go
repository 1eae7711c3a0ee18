package seglog

import (
	"fmt"
	"testing"
)

// BenchmarkAppend measures single-record Append throughput for small and
// page-sized records, without fsync and with a Sync every N records (the
// journal's group-commit policy is of this shape).
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 20000x ./internal/seglog/
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{64, 4096} {
		for _, syncEvery := range []int{0, 100, 1} {
			name := fmt.Sprintf("rec=%dB/sync=never", size)
			if syncEvery > 0 {
				name = fmt.Sprintf("rec=%dB/sync=every%d", size, syncEvery)
			}
			b.Run(name, func(b *testing.B) {
				l, err := Open(b.TempDir(), Options{})
				if err != nil {
					b.Fatalf("Open: %v", err)
				}
				defer l.Close()
				r := make([]byte, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if _, _, err := l.Append(r); err != nil {
						b.Fatalf("Append: %v", err)
					}
					if syncEvery > 0 && (i+1)%syncEvery == 0 {
						if err := l.Sync(); err != nil {
							b.Fatalf("Sync: %v", err)
						}
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// BenchmarkAppendBatch measures Append of 64 records per call (one write
// syscall), the shape of a journaled HTTP request.
//
//	go test -run '^$' -bench BenchmarkAppendBatch -benchtime 2000x ./internal/seglog/
func BenchmarkAppendBatch(b *testing.B) {
	for _, size := range []int{64, 4096} {
		b.Run(fmt.Sprintf("rec=%dB/x64", size), func(b *testing.B) {
			l, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatalf("Open: %v", err)
			}
			defer l.Close()
			recs := make([][]byte, 64)
			for i := range recs {
				recs[i] = make([]byte, size)
			}
			b.SetBytes(int64(size * len(recs)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, _, err := l.Append(recs...); err != nil {
					b.Fatalf("Append: %v", err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkRead measures sequential reading of 64-byte records.
//
//	go test -run '^$' -bench BenchmarkRead -benchtime 200000x ./internal/seglog/
func BenchmarkRead(b *testing.B) {
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	defer l.Close()
	r := make([]byte, 64)
	for range b.N {
		if _, _, err := l.Append(r); err != nil {
			b.Fatalf("Append: %v", err)
		}
	}
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	if err := l.Read(0, func(Pos, []byte) error { n++; return nil }); err != nil {
		b.Fatalf("Read: %v", err)
	}
	if n != b.N {
		b.Fatalf("read %d records, want %d", n, b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

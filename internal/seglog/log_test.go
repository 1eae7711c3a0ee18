package seglog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// rec returns a deterministic record for index i with a length between 1
// and 1+spread bytes.
func rec(i, spread int) []byte {
	n := 8
	if spread > 0 {
		n += (i * 7919) % spread
	}
	b := make([]byte, n)
	binary.BigEndian.PutUint64(b, uint64(i))
	for j := 8; j < n; j++ {
		b[j] = byte(i + j)
	}
	return b
}

func mustOpen(t *testing.T, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", dir, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

type posRec struct {
	pos Pos // position of the record
	rec []byte
}

// readAll reads every record from from and returns them with their start
// positions.
func readAll(t *testing.T, l *Log, from Pos) []posRec {
	t.Helper()
	var out []posRec
	err := l.Read(from, func(pos Pos, r []byte) error {
		out = append(out, posRec{pos: pos - HeaderSize - Pos(len(r)), rec: bytes.Clone(r)})
		return nil
	})
	if err != nil {
		t.Fatalf("Read(%d): %v", from, err)
	}
	return out
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatalf("glob: %v", err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		n       int
		spread  int
		perCall int
	}{
		{"one segment, single appends", Options{}, 200, 100, 1},
		{"many segments, single appends", Options{SegmentSize: 256}, 300, 100, 1},
		{"many segments, grouped appends", Options{SegmentSize: 1024}, 300, 200, 7},
		{"record larger than segment", Options{SegmentSize: 64}, 50, 300, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := mustOpen(t, dir, tc.opts)
			var want []posRec
			for i := 0; i < tc.n; i += tc.perCall {
				var group [][]byte
				for j := i; j < min(i+tc.perCall, tc.n); j++ {
					group = append(group, rec(j, tc.spread))
				}
				first, end, err := l.Append(group...)
				if err != nil {
					t.Fatalf("Append: %v", err)
				}
				p := first
				for _, r := range group {
					want = append(want, posRec{p, r})
					p += HeaderSize + Pos(len(r))
				}
				if p != end {
					t.Fatalf("Append returned end %d, records end at %d", end, p)
				}
			}
			check := func(l *Log) {
				t.Helper()
				got := readAll(t, l, 0)
				if len(got) != len(want) {
					t.Fatalf("read %d records, want %d", len(got), len(want))
				}
				for i := range want {
					if got[i].pos != want[i].pos || !bytes.Equal(got[i].rec, want[i].rec) {
						t.Fatalf("record %d: got pos %d %x, want pos %d %x", i, got[i].pos, got[i].rec, want[i].pos, want[i].rec)
					}
					r, next, err := l.ReadRecord(want[i].pos)
					if err != nil || !bytes.Equal(r, want[i].rec) || next != want[i].pos+HeaderSize+Pos(len(r)) {
						t.Fatalf("ReadRecord(%d) = %x, %d, %v", want[i].pos, r, next, err)
					}
				}
			}
			check(l)
			if err := l.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			end := l.End()
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			l2 := mustOpen(t, dir, tc.opts)
			if l2.End() != end || l2.Start() != 0 {
				t.Fatalf("after reopen Start, End = %d, %d; want 0, %d", l2.Start(), l2.End(), end)
			}
			if rc := l2.Recovered(); rc.Dropped != 0 {
				t.Fatalf("clean reopen recovered %+v", rc)
			}
			check(l2)
			// Appends continue at the old end.
			first, _, err := l2.Append([]byte("after reopen"))
			if err != nil || first != end {
				t.Fatalf("Append after reopen = %d, %v; want %d", first, err, end)
			}
		})
	}
}

func TestAppendErrors(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{MaxRecordSize: 10, MaxBytes: 100})
	tests := []struct {
		name string
		recs [][]byte
		want error
	}{
		{"empty record", [][]byte{[]byte("a"), {}}, ErrEmptyRecord},
		{"record over MaxRecordSize", [][]byte{make([]byte, 11)}, ErrTooLarge},
		{"group over MaxBytes", [][]byte{make([]byte, 10), make([]byte, 10), make([]byte, 10), make([]byte, 10), make([]byte, 10), make([]byte, 10), make([]byte, 10)}, ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := l.Append(tc.recs...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Append = %v, want %v", err, tc.want)
			}
			if l.End() != 0 || l.Size() != 0 {
				t.Fatalf("failed Append wrote something: end %d size %d", l.End(), l.Size())
			}
		})
	}
	if f, e, err := l.Append(); err != nil || f != 0 || e != 0 {
		t.Fatalf("Append() = %d, %d, %v", f, e, err)
	}
}

// writeRecords creates a log in dir with n records of segment size seg and
// returns the positions of every record and the end.
func writeRecords(t *testing.T, dir string, opts Options, n int) ([]Pos, Pos) {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var pos []Pos
	for i := range n {
		p, _, err := l.Append(rec(i, 40))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		pos = append(pos, p)
	}
	end := l.End()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return pos, end
}

func TestTornTail(t *testing.T) {
	// Cut the last record at every byte: each cut must recover to the
	// record before it, reporting exactly the bytes cut away.
	src := t.TempDir()
	pos, end := writeRecords(t, src, Options{}, 5)
	lastStart := pos[len(pos)-1]
	segment := filepath.Join(src, segmentName(0))
	full, err := os.ReadFile(segment)
	if err != nil {
		t.Fatalf("read segment: %v", err)
	}
	for cut := int64(lastStart) + 1; cut < int64(end); cut++ {
		t.Run(fmt.Sprintf("cut at %d", cut), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, segmentName(0)), full[:cut], 0o644); err != nil {
				t.Fatalf("write: %v", err)
			}
			l := mustOpen(t, dir, Options{})
			rc := l.Recovered()
			if rc.Dropped != cut-int64(lastStart) || rc.Cause == nil || rc.Cause.Pos != lastStart {
				t.Fatalf("Recovered = %+v (cause %v), want %d bytes dropped at %d", rc, rc.Cause, cut-int64(lastStart), lastStart)
			}
			if l.End() != lastStart {
				t.Fatalf("End = %d, want %d", l.End(), lastStart)
			}
			got := readAll(t, l, 0)
			if len(got) != len(pos)-1 {
				t.Fatalf("read %d records, want %d", len(got), len(pos)-1)
			}
			for i, g := range got {
				if !bytes.Equal(g.rec, rec(i, 40)) {
					t.Fatalf("record %d = %x", i, g.rec)
				}
			}
			// The file really was truncated and appends continue there.
			if p, _, err := l.Append([]byte("next")); err != nil || p != lastStart {
				t.Fatalf("Append after recovery = %d, %v; want %d", p, err, lastStart)
			}
		})
	}
}

func TestDamagedTail(t *testing.T) {
	tests := []struct {
		name   string
		damage func(b []byte, lastStart int) []byte
		// wantEnd is the index of the first record lost.
		lost int
	}{
		{"zero-filled tail", func(b []byte, _ int) []byte { return append(b, make([]byte, 4096)...) }, 5},
		{"garbage tail", func(b []byte, _ int) []byte { return append(b, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0) }, 5},
		{"crc flip in last record", func(b []byte, last int) []byte { b[last+HeaderSize] ^= 1; return b }, 4},
		{"crc flip in middle record", func(b []byte, _ int) []byte { b[HeaderSize+3] ^= 0x80; return b }, 0},
		{"huge length in last record", func(b []byte, last int) []byte {
			binary.BigEndian.PutUint32(b[last:], 1<<31)
			return b
		}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pos, end := writeRecords(t, dir, Options{}, 5)
			path := filepath.Join(dir, segmentName(0))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			b = tc.damage(b, int(pos[4]))
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatalf("write: %v", err)
			}
			l := mustOpen(t, dir, Options{})
			wantEnd := end
			if tc.lost < len(pos) {
				wantEnd = pos[tc.lost]
			}
			if l.End() != wantEnd {
				t.Fatalf("End = %d, want %d", l.End(), wantEnd)
			}
			if rc := l.Recovered(); rc.Dropped != int64(len(b))-int64(wantEnd) || !errors.Is(rc.Cause, ErrCorrupt) {
				t.Fatalf("Recovered = %+v, want %d bytes dropped", rc, int64(len(b))-int64(wantEnd))
			}
			if got := readAll(t, l, 0); len(got) != tc.lost {
				t.Fatalf("read %d records, want %d", len(got), tc.lost)
			}
		})
	}
}

func TestCorruptSealedSegment(t *testing.T) {
	tests := []struct {
		name       string
		damage     func(t *testing.T, path string)
		wantReason string
	}{
		{"crc flip", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			b[len(b)-1] ^= 0xff
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatalf("write: %v", err)
			}
		}, "checksum mismatch"},
		{"truncated", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatalf("stat: %v", err)
			}
			if err := os.Truncate(path, fi.Size()-3); err != nil {
				t.Fatalf("truncate: %v", err)
			}
		}, "partial payload"},
		{"whole record missing", func(t *testing.T, path string) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			valid, _, _ := scanSegment(f, path, 0, fi.Size())
			// Drop the last record exactly, leaving a gap to the next segment.
			var last int64
			for off := int64(0); off < valid; {
				var hdr [HeaderSize]byte
				f.ReadAt(hdr[:], off)
				last = off
				off += HeaderSize + int64(binary.BigEndian.Uint32(hdr[:4]))
			}
			if err := os.Truncate(path, last); err != nil {
				t.Fatalf("truncate: %v", err)
			}
		}, "next segment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeRecords(t, dir, Options{SegmentSize: 200}, 40)
			files := segFiles(t, dir)
			if len(files) < 3 {
				t.Fatalf("want at least 3 segments, got %v", files)
			}
			victim := filepath.Join(dir, files[1])
			before, _ := os.ReadFile(filepath.Join(dir, files[len(files)-1]))
			tc.damage(t, victim)
			_, err := Open(dir, Options{SegmentSize: 200})
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open = %v, want *CorruptError", err)
			}
			if ce.Segment != victim || !bytes.Contains([]byte(ce.Reason), []byte(tc.wantReason)) {
				t.Fatalf("CorruptError = %+v, want segment %q and reason %q", ce, victim, tc.wantReason)
			}
			// Nothing was repaired behind our back.
			after, _ := os.ReadFile(filepath.Join(dir, files[len(files)-1]))
			if !bytes.Equal(before, after) {
				t.Fatalf("Open modified the last segment despite failing")
			}
		})
	}
}

func TestFull(t *testing.T) {
	dir := t.TempDir()
	const max = 1000
	l := mustOpen(t, dir, Options{SegmentSize: 300, MaxBytes: max})
	r := make([]byte, 92) // 100 bytes framed
	for i := range 10 {
		if _, _, err := l.Append(r); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	end := l.End()
	if _, _, err := l.Append(r); !errors.Is(err, ErrFull) {
		t.Fatalf("Append past MaxBytes = %v, want ErrFull", err)
	}
	if l.End() != end || l.Size() != max {
		t.Fatalf("ErrFull append changed the log: end %d size %d", l.End(), l.Size())
	}
	// Releasing the first segments makes room again.
	if err := l.Release(end - 300); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if l.Size() >= max {
		t.Fatalf("Release freed nothing: size %d", l.Size())
	}
	if _, _, err := l.Append(r); err != nil {
		t.Fatalf("Append after Release: %v", err)
	}
}

func TestRelease(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 100}
	l := mustOpen(t, dir, opts)
	// Each record is 50 bytes framed, so two records fill a segment.
	var pos []Pos
	for i := range 10 {
		r := bytes.Repeat([]byte{byte(i)}, 42)
		p, _, err := l.Append(r)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		pos = append(pos, p)
	}
	steps := []struct {
		before    Pos
		wantStart Pos
		wantFiles int
	}{
		{0, 0, 5},
		{99, 0, 5},    // the first segment ends at 100
		{100, 100, 4}, // now it goes
		{350, 300, 2},
		{1000, 400, 1}, // never the active segment
		{2000, 400, 1},
	}
	for _, st := range steps {
		if err := l.Release(st.before); err != nil {
			t.Fatalf("Release(%d): %v", st.before, err)
		}
		if l.Start() != st.wantStart || len(segFiles(t, dir)) != st.wantFiles || l.Size() != int64(500-st.wantStart) {
			t.Fatalf("after Release(%d): start %d files %v size %d; want start %d, %d files",
				st.before, l.Start(), segFiles(t, dir), l.Size(), st.wantStart, st.wantFiles)
		}
		if st.wantStart > 0 {
			if _, _, err := l.ReadRecord(st.wantStart - 50); !errors.Is(err, ErrReleased) {
				t.Fatalf("ReadRecord before start = %v, want ErrReleased", err)
			}
		}
	}
	if got := readAll(t, l, l.Start()); len(got) != 2 || got[0].rec[0] != 8 {
		t.Fatalf("records after release = %v", got)
	}
	// Roll then Release frees everything; positions carry on.
	if err := l.Roll(); err != nil {
		t.Fatalf("Roll: %v", err)
	}
	if err := l.Release(l.End()); err != nil {
		t.Fatalf("Release all: %v", err)
	}
	if l.Size() != 0 || l.Start() != 500 || l.End() != 500 {
		t.Fatalf("after releasing all: size %d start %d end %d", l.Size(), l.Start(), l.End())
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	l2 := mustOpen(t, dir, opts)
	if l2.Start() != 500 || l2.End() != 500 {
		t.Fatalf("after reopen start %d end %d, want 500 500", l2.Start(), l2.End())
	}
	p, _, err := l2.Append([]byte("x"))
	if err != nil || p != 500 {
		t.Fatalf("Append after reopen = %d, %v; want 500", p, err)
	}
	if files := segFiles(t, dir); len(files) != 1 || files[0] != segmentName(500) {
		t.Fatalf("files = %v", files)
	}
}

func TestReleaseWhileReading(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, Options{SegmentSize: 100})
	for i := range 10 {
		if _, _, err := l.Append(bytes.Repeat([]byte{byte(i)}, 42)); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	r, err := l.NewReader(0)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer r.Close()
	if _, err := r.Next(); err != nil {
		t.Fatalf("Next: %v", err)
	}
	if err := l.Release(300); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// The reader still holds segment 0 and finishes it ...
	if b, err := r.Next(); err != nil || b[0] != 1 {
		t.Fatalf("Next in released segment = %v, %v", b, err)
	}
	// ... but the next segment is gone.
	if _, err := r.Next(); !errors.Is(err, ErrReleased) {
		t.Fatalf("Next into released segment = %v, want ErrReleased", err)
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		name  string
		to    int // keep this many records
		files int
	}{
		{"nothing", 10, 5},
		{"inside active", 9, 5},
		{"segment boundary", 8, 5},
		{"across segments", 3, 2},
		{"everything", 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentSize: 100}
			l := mustOpen(t, dir, opts)
			var pos []Pos
			for i := range 10 {
				p, _, err := l.Append(bytes.Repeat([]byte{byte(i)}, 42))
				if err != nil {
					t.Fatalf("Append: %v", err)
				}
				pos = append(pos, p)
			}
			to := l.End()
			if tc.to < 10 {
				to = pos[tc.to]
			}
			if err := l.Truncate(to); err != nil {
				t.Fatalf("Truncate(%d): %v", to, err)
			}
			if l.End() != to || len(readAll(t, l, 0)) != tc.to {
				t.Fatalf("after Truncate end %d records %d", l.End(), len(readAll(t, l, 0)))
			}
			if got := len(segFiles(t, dir)); got != tc.files {
				t.Fatalf("files = %v, want %d", segFiles(t, dir), tc.files)
			}
			if _, _, err := l.Append([]byte("again")); err != nil {
				t.Fatalf("Append after Truncate: %v", err)
			}
			l.Close()
			l2 := mustOpen(t, dir, opts)
			got := readAll(t, l2, 0)
			if len(got) != tc.to+1 || string(got[tc.to].rec) != "again" || got[tc.to].pos != to {
				t.Fatalf("after reopen: %d records, last %+v", len(got), got[len(got)-1])
			}
			if err := l2.Truncate(l2.End() + 1); !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("Truncate beyond end = %v", err)
			}
		})
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	l.Close()
	l2, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	l2.Close()
}

func TestClosed(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{})
	if _, _, err := l.Append([]byte("a")); err != nil {
		t.Fatalf("Append: %v", err)
	}
	l.Close()
	checks := map[string]error{}
	_, _, checks["Append"] = l.Append([]byte("b"))
	checks["Sync"] = l.Sync()
	checks["Release"] = l.Release(10)
	checks["Roll"] = l.Roll()
	checks["Read"] = l.Read(0, func(Pos, []byte) error { return nil })
	_, _, checks["ReadRecord"] = l.ReadRecord(0)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestReaderFollows(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{SegmentSize: 128})
	r, err := l.NewReader(l.End())
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer r.Close()
	next := 0
	for round := range 20 {
		for i := range round {
			if _, _, err := l.Append(rec(next+i, 50)); err != nil {
				t.Fatalf("Append: %v", err)
			}
		}
		for i := range round {
			b, err := r.Next()
			if err != nil || !bytes.Equal(b, rec(next+i, 50)) {
				t.Fatalf("round %d: Next = %x, %v", round, b, err)
			}
		}
		next += round
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("round %d: Next at end = %v, want io.EOF", round, err)
		}
		if r.Pos() != l.End() {
			t.Fatalf("reader at %d, end %d", r.Pos(), l.End())
		}
	}
}

func TestConcurrentAppendRead(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, Options{SegmentSize: 4096})
	const writers, perWriter = 4, 500
	var wg sync.WaitGroup
	errc := make(chan error, writers+2)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				// Record: writer id, index, padding.
				b := make([]byte, 16+(i%64))
				binary.BigEndian.PutUint64(b, uint64(w))
				binary.BigEndian.PutUint64(b[8:], uint64(i))
				if _, _, err := l.Append(b); err != nil {
					errc <- err
					return
				}
				if i%100 == 0 {
					if err := l.Sync(); err != nil {
						errc <- err
						return
					}
				}
			}
		})
	}
	// A following reader checks per-writer order while writes go on; a
	// releaser drops segments behind it.
	done := make(chan struct{})
	var rwg sync.WaitGroup
	rwg.Go(func() {
		r, err := l.NewReader(0)
		if err != nil {
			errc <- err
			return
		}
		defer r.Close()
		nextIdx := make([]uint64, writers)
		seen := 0
		for seen < writers*perWriter {
			b, err := r.Next()
			if err == io.EOF {
				runtime.Gosched()
				select {
				case <-done:
					if l.End() == r.Pos() {
						errc <- fmt.Errorf("reader stopped after %d of %d records", seen, writers*perWriter)
						return
					}
				default:
				}
				continue
			}
			if err != nil {
				errc <- err
				return
			}
			w, i := binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
			if i != nextIdx[w] {
				errc <- fmt.Errorf("writer %d: record %d after %d", w, i, nextIdx[w])
				return
			}
			nextIdx[w]++
			seen++
			if seen%200 == 0 {
				if err := l.Release(r.Pos()); err != nil {
					errc <- err
					return
				}
			}
		}
	})
	rwg.Go(func() {
		// Random-access and snapshot readers race with the writers too.
		for range 50 {
			err := l.Read(l.Start(), func(Pos, []byte) error { return nil })
			if err != nil && !errors.Is(err, ErrReleased) {
				errc <- err
				return
			}
		}
	})
	wg.Wait()
	close(done)
	rwg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("concurrent: %v", err)
	}
}

package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/tally-edge/tally/internal/seglog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func openSpool(t *testing.T, dir string, cfg Config) *Spool {
	t.Helper()
	s, err := Open(dir, cfg, nil)
	if err != nil {
		t.Fatalf("Open(%q): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func payload(seq int) []byte { return fmt.Appendf(nil, "batch-%d", seq) }

func commit(t *testing.T, s *Spool, journalPos uint64, batches ...[]byte) []uint64 {
	t.Helper()
	seqs, err := s.Commit(payloads(batches...), CommitMeta{JournalPos: journalPos})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return seqs
}

// next returns the next item that is ready now, failing the test if none is.
func next(t *testing.T, s *Spool) Item {
	t.Helper()
	it, ok := tryNext(t, s)
	if !ok {
		t.Fatalf("Next: nothing ready")
	}
	return it
}

// tryNext returns the next ready item without waiting.
func tryNext(t *testing.T, s *Spool) (Item, bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // Next still hands out what is ready; it only does not wait.
	it, err := s.Next(ctx)
	if errors.Is(err, context.Canceled) {
		return Item{}, false
	}
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return it, true
}

// drain returns the seqs of every item ready now.
func drain(t *testing.T, s *Spool) []uint64 {
	t.Helper()
	var seqs []uint64
	for {
		it, ok := tryNext(t, s)
		if !ok {
			return seqs
		}
		seqs = append(seqs, it.Seq)
	}
}

func TestCommitNextAck(t *testing.T) {
	s := openSpool(t, t.TempDir(), Config{})
	if _, ok := s.LastCommitMeta(); ok {
		t.Fatalf("fresh spool has a commit meta")
	}
	if got := commit(t, s, 10, payload(1), payload(2), payload(3)); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("first Commit seqs = %v", got)
	}
	if got := commit(t, s, 20, payload(4), payload(5)); !slices.Equal(got, []uint64{4, 5}) {
		t.Fatalf("second Commit seqs = %v", got)
	}
	for want := uint64(1); want <= 5; want++ {
		it := next(t, s)
		if it.Seq != want || !bytes.Equal(it.Payload, payload(int(want))) {
			t.Fatalf("Next = %d %q, want %d %q", it.Seq, it.Payload, want, payload(int(want)))
		}
	}
	if _, ok := tryNext(t, s); ok {
		t.Fatalf("Next handed out a sixth batch")
	}
	st := s.Stats()
	if st.PendingBatches != 5 || st.InflightBatches != 5 || st.CommittedTotal != 5 || st.PendingBytes != 5*int64(len(payload(1))) {
		t.Fatalf("Stats = %+v", st)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if err := s.Ack(seq); err != nil {
			t.Fatalf("Ack(%d): %v", seq, err)
		}
	}
	st = s.Stats()
	if st.AckedThrough != 5 || st.PendingBatches != 0 || st.InflightBatches != 0 || st.AckedTotal != 5 || st.PendingBytes != 0 {
		t.Fatalf("Stats after acks = %+v", st)
	}
	if m, ok := s.LastCommitMeta(); !ok || m.JournalPos != 20 {
		t.Fatalf("LastCommitMeta = %+v, %v", m, ok)
	}
	for _, seq := range []uint64{0, 6, 100} {
		if err := s.Ack(seq); !errors.Is(err, ErrUnknownSeq) {
			t.Fatalf("Ack(%d) = %v, want ErrUnknownSeq", seq, err)
		}
	}
	if err := s.Ack(3); err != nil {
		t.Fatalf("repeated Ack: %v", err)
	}
	// A commit with no batches only records meta.
	if seqs := commit(t, s, 30); len(seqs) != 0 {
		t.Fatalf("empty Commit seqs = %v", seqs)
	}
	if m, _ := s.LastCommitMeta(); m.JournalPos != 30 {
		t.Fatalf("LastCommitMeta after empty commit = %+v", m)
	}
}

func TestOutOfOrderAcks(t *testing.T) {
	tests := []struct {
		name string
		acks []uint64
		// cursor is AckedThrough after each ack.
		cursor []uint64
	}{
		{"in order", []uint64{1, 2, 3, 4, 5, 6}, []uint64{1, 2, 3, 4, 5, 6}},
		{"reversed", []uint64{6, 5, 4, 3, 2, 1}, []uint64{0, 0, 0, 0, 0, 6}},
		{"gap filled later", []uint64{1, 3, 4, 2, 6, 5}, []uint64{1, 1, 1, 4, 4, 6}},
		{"duplicates", []uint64{2, 2, 1, 1, 3, 6, 5, 4}, []uint64{0, 0, 2, 2, 3, 3, 3, 6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openSpool(t, t.TempDir(), Config{})
			commit(t, s, 1, payload(1), payload(2), payload(3))
			commit(t, s, 2, payload(4), payload(5), payload(6))
			drain(t, s)
			for i, seq := range tc.acks {
				if err := s.Ack(seq); err != nil {
					t.Fatalf("Ack(%d): %v", seq, err)
				}
				if got := s.Stats().AckedThrough; got != tc.cursor[i] {
					t.Fatalf("after Ack(%d): cursor %d, want %d", seq, got, tc.cursor[i])
				}
			}
			if st := s.Stats(); st.PendingBatches != 0 || st.AckedTotal != 6 {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

func TestNack(t *testing.T) {
	s := openSpool(t, t.TempDir(), Config{})
	commit(t, s, 1, payload(1), payload(2), payload(3), payload(4), payload(5))
	for want := uint64(1); want <= 3; want++ {
		if it := next(t, s); it.Seq != want {
			t.Fatalf("Next = %d, want %d", it.Seq, want)
		}
	}
	for _, seq := range []uint64{3, 1} {
		if err := s.Nack(seq); err != nil {
			t.Fatalf("Nack(%d): %v", seq, err)
		}
	}
	// Nacked batches come back first, oldest first, before 4 and 5.
	if got := drain(t, s); !slices.Equal(got, []uint64{1, 3, 4, 5}) {
		t.Fatalf("after nacks Next gives %v", got)
	}
	// Nack of something not in flight does nothing.
	if err := s.Ack(2); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := s.Nack(2); err != nil {
		t.Fatalf("Nack of acked: %v", err)
	}
	if err := s.Nack(4); err != nil {
		t.Fatalf("Nack(4): %v", err)
	}
	if err := s.Nack(4); err != nil {
		t.Fatalf("second Nack(4): %v", err)
	}
	if got := drain(t, s); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("after double nack Next gives %v", got)
	}
	if err := s.Nack(99); !errors.Is(err, ErrUnknownSeq) {
		t.Fatalf("Nack(99) = %v, want ErrUnknownSeq", err)
	}
}

func TestResendUnacked(t *testing.T) {
	s := openSpool(t, t.TempDir(), Config{})
	commit(t, s, 1, payload(1), payload(2), payload(3), payload(4), payload(5))
	for range 4 {
		next(t, s)
	}
	if err := s.Ack(2); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	s.ResendUnacked()
	if st := s.Stats(); st.InflightBatches != 0 {
		t.Fatalf("in flight after ResendUnacked = %d", st.InflightBatches)
	}
	if got := drain(t, s); !slices.Equal(got, []uint64{1, 3, 4, 5}) {
		t.Fatalf("after ResendUnacked Next gives %v, want [1 3 4 5]", got)
	}
	// A late ack for a copy shipped before the reconnect still counts.
	for _, seq := range []uint64{1, 3, 4, 5} {
		if err := s.Ack(seq); err != nil {
			t.Fatalf("Ack(%d): %v", seq, err)
		}
	}
	if st := s.Stats(); st.AckedThrough != 5 || st.PendingBatches != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestNextWaits(t *testing.T) {
	s := openSpool(t, t.TempDir(), Config{})
	got := make(chan Item, 1)
	errc := make(chan error, 1)
	go func() {
		it, err := s.Next(t.Context())
		if err != nil {
			errc <- err
			return
		}
		got <- it
	}()
	commit(t, s, 1, payload(1))
	select {
	case it := <-got:
		if it.Seq != 1 {
			t.Fatalf("Next = %d", it.Seq)
		}
	case err := <-errc:
		t.Fatalf("Next: %v", err)
	}

	// A waiting Next returns ctx's error when ctx ends ...
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		_, err := s.Next(ctx)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel = %v", err)
	}
	// ... and ErrClosed when the spool closes.
	go func() {
		_, err := s.Next(t.Context())
		errc <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Commit(payloads([][]byte{payload(2)}...), CommitMeta{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v", err)
	}
	if err := s.Ack(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close = %v", err)
	}
}

func TestReopenRedeliversUnacked(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{MaxBytes: 1 << 20, SegmentSize: 4096}
	s := openSpool(t, dir, cfg)
	var want [][]byte
	for g := range 4 {
		var group [][]byte
		for i := range 3 {
			b := bytes.Repeat(payload(g*3+i+1), 50) // spread over segments
			group = append(group, b)
			want = append(want, b)
		}
		commit(t, s, uint64(100+g), group...)
	}
	drain(t, s)
	// Cursor ends at 4; 6 and 9 are acked beyond it, which is not kept.
	for _, seq := range []uint64{1, 3, 2, 4, 6, 9} {
		if err := s.Ack(seq); err != nil {
			t.Fatalf("Ack(%d): %v", seq, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := openSpool(t, dir, cfg)
	st := s2.Stats()
	if st.AckedThrough != 4 || st.NextSeq != 13 || st.PendingBatches != 8 || st.DiscardedRecords != 0 {
		t.Fatalf("Stats after reopen = %+v", st)
	}
	for seq := uint64(5); seq <= 12; seq++ {
		it := next(t, s2)
		if it.Seq != seq || !bytes.Equal(it.Payload, want[seq-1]) {
			t.Fatalf("Next = %d (%d bytes), want %d", it.Seq, len(it.Payload), seq)
		}
	}
	if _, ok := tryNext(t, s2); ok {
		t.Fatalf("reopen handed out more than the unacked batches")
	}
	if m, _ := s2.LastCommitMeta(); m.JournalPos != 103 {
		t.Fatalf("LastCommitMeta = %+v", m)
	}
	if seqs := commit(t, s2, 104, payload(13)); seqs[0] != 13 {
		t.Fatalf("Commit after reopen seq = %v", seqs)
	}
}

// appendRaw appends spool records straight to the log in dir, as a flush
// that crashed before its commit record would have left them.
func appendRaw(t *testing.T, dir string, recs ...[]byte) {
	t.Helper()
	l, err := seglog.Open(dir, seglog.Options{SegmentSize: 4096})
	if err != nil {
		t.Fatalf("seglog.Open: %v", err)
	}
	defer l.Close()
	if _, _, err := l.Append(recs...); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func TestIncompleteFlushDiscarded(t *testing.T) {
	tests := []struct {
		name string
		// damage leaves an incomplete third flush (seqs 4, 5) behind.
		damage        func(t *testing.T, dir string)
		wantDiscarded int
		wantTorn      bool
	}{
		{"batches without commit", func(t *testing.T, dir string) {
			appendRaw(t, dir, encodeBatch(4, Batch{Payload: payload(4)}), encodeBatch(5, Batch{Payload: payload(5)}))
		}, 2, false},
		{"one batch without commit", func(t *testing.T, dir string) {
			appendRaw(t, dir, encodeBatch(4, Batch{Payload: payload(4)}))
		}, 1, false},
		{"commit record torn", func(t *testing.T, dir string) {
			appendRaw(t, dir, encodeBatch(4, Batch{Payload: payload(4)}), encodeBatch(5, Batch{Payload: payload(5)}),
				encodeCommit(commitRec{first: 4, count: 2, meta: CommitMeta{JournalPos: 3}}))
			truncateLast(t, dir, 3)
		}, 2, true},
		{"second batch torn", func(t *testing.T, dir string) {
			appendRaw(t, dir, encodeBatch(4, Batch{Payload: payload(4)}), encodeBatch(5, Batch{Payload: payload(5)}))
			truncateLast(t, dir, 1)
		}, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{MaxBytes: 1 << 20, SegmentSize: 4096}
			s := openSpool(t, dir, cfg)
			commit(t, s, 1, payload(1), payload(2))
			commit(t, s, 2, payload(3))
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			tc.damage(t, dir)

			s2 := openSpool(t, dir, cfg)
			st := s2.Stats()
			if st.DiscardedRecords != tc.wantDiscarded || (st.RecoveredTornBytes > 0) != tc.wantTorn {
				t.Fatalf("Stats = %+v, want %d discarded, torn %v", st, tc.wantDiscarded, tc.wantTorn)
			}
			if got := drain(t, s2); !slices.Equal(got, []uint64{1, 2, 3}) {
				t.Fatalf("Next gives %v, want only the committed [1 2 3]", got)
			}
			if m, _ := s2.LastCommitMeta(); m.JournalPos != 2 {
				t.Fatalf("LastCommitMeta = %+v, want the last complete flush", m)
			}
			// The discarded seqs were never handed out, so they are reused.
			if seqs := commit(t, s2, 5, payload(40), payload(50)); !slices.Equal(seqs, []uint64{4, 5}) {
				t.Fatalf("Commit after discard = %v", seqs)
			}
			if err := s2.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s3 := openSpool(t, dir, cfg)
			if st := s3.Stats(); st.DiscardedRecords != 0 || st.PendingBatches != 5 {
				t.Fatalf("Stats after second reopen = %+v", st)
			}
			for _, want := range []int{1, 2, 3, 40, 50} {
				if it := next(t, s3); !bytes.Equal(it.Payload, payload(want)) {
					t.Fatalf("Next = %d %q, want %q", it.Seq, it.Payload, payload(want))
				}
			}
		})
	}
}

// truncateLast cuts n bytes off the newest segment file in dir.
func truncateLast(t *testing.T, dir string, n int64) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no segments: %v", err)
	}
	slices.Sort(m)
	fi, err := os.Stat(m[len(m)-1])
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	if err := os.Truncate(m[len(m)-1], fi.Size()-n); err != nil {
		t.Fatalf("truncate: %v", err)
	}
}

func TestLastCommitMetaSurvivesRelease(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{MaxBytes: 1 << 20, SegmentSize: 4096}
	s := openSpool(t, dir, cfg)
	for g := range 5 {
		commit(t, s, uint64(1000+g), bytes.Repeat([]byte{byte(g)}, 3000))
	}
	want := CommitMeta{JournalPos: 77, Data: []byte("version=42")}
	if _, err := s.Commit(payloads([][]byte{[]byte("last")}...), want); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	for _, seq := range drain(t, s) {
		if err := s.Ack(seq); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	// Seal the active segment and checkpoint: every segment goes.
	if err := s.log.Roll(); err != nil {
		t.Fatalf("Roll: %v", err)
	}
	if _, err := s.checkpoint(); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if used, _ := s.Usage(); used != 0 {
		t.Fatalf("after acking everything the spool holds %d bytes", used)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2 := openSpool(t, dir, cfg)
	if m, ok := s2.LastCommitMeta(); !ok || m.JournalPos != want.JournalPos || !bytes.Equal(m.Data, want.Data) {
		t.Fatalf("LastCommitMeta after release and reopen = %+v, %v; want %+v", m, ok, want)
	}
	if st := s2.Stats(); st.NextSeq != 7 || st.AckedThrough != 6 || st.PendingBatches != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if seqs := commit(t, s2, 78, []byte("x")); seqs[0] != 7 {
		t.Fatalf("seq after full release = %v, want 7", seqs)
	}
}

func TestFull(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{MaxBytes: 64 << 10, SegmentSize: 8 << 10, MaxBatchSize: 16 << 10}
	s := openSpool(t, dir, cfg)
	b := make([]byte, 4000)
	var n int
	for ; ; n++ {
		_, err := s.Commit(payloads([][]byte{b}...), CommitMeta{JournalPos: uint64(n)})
		if errors.Is(err, ErrFull) {
			if !errors.Is(err, seglog.ErrFull) {
				t.Fatalf("ErrFull does not wrap seglog.ErrFull: %v", err)
			}
			break
		}
		if err != nil {
			t.Fatalf("Commit %d: %v", n, err)
		}
		if n > 100 {
			t.Fatalf("MaxBytes not enforced")
		}
	}
	if !s.Full() {
		t.Fatalf("Full() = false after ErrFull")
	}
	if used, limit := s.Usage(); used > limit {
		t.Fatalf("Usage = %d > %d", used, limit)
	}
	if st := s.Stats(); st.PendingBatches != n {
		t.Fatalf("a failed Commit changed the queue: %+v", st)
	}
	if m, _ := s.LastCommitMeta(); m.JournalPos != uint64(n-1) {
		t.Fatalf("a failed Commit changed LastCommitMeta: %+v", m)
	}
	// Acks free the space; the next Commit gets it without waiting for a
	// checkpoint tick.
	for _, seq := range drain(t, s) {
		if err := s.Ack(seq); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	if _, err := s.Commit(payloads([][]byte{b}...), CommitMeta{}); err != nil {
		t.Fatalf("Commit after acks: %v", err)
	}
	if s.Full() {
		t.Fatalf("Full() = true after space was freed")
	}

	for _, tc := range []struct {
		name    string
		batches [][]byte
		meta    CommitMeta
	}{
		{"batch over MaxBatchSize", [][]byte{make([]byte, 16<<10+1)}, CommitMeta{}},
		{"flush over MaxBytes", slices.Repeat([][]byte{make([]byte, 16<<10)}, 5), CommitMeta{}},
		{"meta over MaxMetaData", nil, CommitMeta{Data: make([]byte, MaxMetaData+1)}},
	} {
		if _, err := s.Commit(payloads(tc.batches...), tc.meta); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s: Commit = %v, want ErrTooLarge", tc.name, err)
		}
	}
}

// TestFullClearsAfterAcks checks that acks alone, with no further Commit,
// give disk back and clear Full: the background checkpoint runs on every
// ack while the spool is under pressure. The fake clock proves it does not
// wait for the CheckpointInterval tick.
func TestFullClearsAfterAcks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := Open(t.TempDir(), Config{MaxBytes: 64 << 10, SegmentSize: 8 << 10, CheckpointInterval: time.Hour}, nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		b := make([]byte, 4000)
		for {
			_, err := s.Commit(payloads([][]byte{b}...), CommitMeta{})
			if errors.Is(err, ErrFull) {
				break
			}
			if err != nil {
				t.Fatalf("Commit: %v", err)
			}
		}
		if !s.Full() {
			t.Fatalf("Full() = false after ErrFull")
		}
		for _, seq := range drain(t, s) {
			if err := s.Ack(seq); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
		synctest.Wait()
		if used, _ := s.Usage(); s.Full() || used != 0 {
			t.Fatalf("after acking everything: Full() = %v, %d bytes on disk", s.Full(), used)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is defaults", Config{}, true},
		{"small spool gets small segments", Config{MaxBytes: 1 << 20}, true},
		{"segment over half", Config{MaxBytes: 1 << 20, SegmentSize: 600 << 10}, false},
		{"tiny segment", Config{SegmentSize: 100}, false},
		{"negative max", Config{MaxBytes: -1}, false},
		{"negative interval", Config{CheckpointInterval: -time.Second}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// TestCheckpointCadence checks on a fake clock that acks are persisted
// within one CheckpointInterval and not before.
func TestCheckpointCadence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(dir, Config{CheckpointInterval: time.Second}, nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		// Let the first tick write the initial state.
		time.Sleep(time.Second)
		synctest.Wait()
		commit(t, s, 1, payload(1), payload(2))
		drain(t, s)
		if err := s.Ack(1); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		synctest.Wait()
		if st, err := readState(dir); err != nil || st.AckedThrough != 0 {
			t.Fatalf("state before the tick = %+v, %v; want cursor 0", st, err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		st, err := readState(dir)
		if err != nil || st.AckedThrough != 1 || st.NextSeq != 3 || st.JournalPos != 1 {
			t.Fatalf("state after the tick = %+v, %v", st, err)
		}
	})
}

func TestConcurrentShipping(t *testing.T) {
	s := openSpool(t, t.TempDir(), Config{MaxBytes: 8 << 20, SegmentSize: 64 << 10, CheckpointInterval: time.Millisecond})
	const committers, groups = 2, 60
	var total int
	for g := range groups {
		total += 1 + g%4
	}
	total *= committers
	var sent sync.Map // seq -> payload
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for c := range committers {
		wg.Go(func() {
			for g := range groups {
				var batches [][]byte
				for i := range 1 + g%4 {
					batches = append(batches, fmt.Appendf(nil, "c%d-g%d-i%d-%s", c, g, i, bytes.Repeat([]byte{'x'}, g*50)))
				}
				seqs, err := s.Commit(payloads(batches...), CommitMeta{JournalPos: uint64(g)})
				if err != nil {
					errc <- err
					cancel()
					return
				}
				for i, seq := range seqs {
					sent.Store(seq, batches[i])
				}
			}
		})
	}
	var acked atomic.Int64
	for sh := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(sh), 1))
			for {
				it, err := s.Next(ctx)
				if errors.Is(err, context.Canceled) {
					return
				}
				if err != nil {
					errc <- err
					cancel()
					return
				}
				// The committer stores seqs after Commit returns, so a
				// shipper may see an item first; only compare known ones.
				if want, ok := sent.Load(it.Seq); ok && !bytes.Equal(want.([]byte), it.Payload) {
					errc <- fmt.Errorf("seq %d: payload %q, want %q", it.Seq, it.Payload, want)
					return
				}
				switch r := rng.IntN(100); {
				case r < 15:
					err = s.Nack(it.Seq)
				case r < 17:
					s.ResendUnacked()
				default:
					err = s.Ack(it.Seq)
				}
				if err != nil {
					errc <- err
					cancel()
					return
				}
				if s.Stats().AckedThrough == uint64(total) && acked.Add(1) == 1 {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("concurrent: %v", err)
	}
	st := s.Stats()
	if st.AckedThrough != uint64(total) || st.PendingBatches != 0 || st.InflightBatches != 0 || st.AckedTotal != uint64(total) {
		t.Fatalf("Stats at end = %+v, want all %d acked", st, total)
	}
}

// payloads makes ownerless batches of bs.
func payloads(bs ...[]byte) []Batch {
	out := make([]Batch, len(bs))
	for i, b := range bs {
		out[i] = Batch{Payload: b}
	}
	return out
}

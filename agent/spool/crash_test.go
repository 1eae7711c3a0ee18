package spool

import (
	"bytes"
	"context"
	"fmt"
	"github.com/tally-edge/tally/internal/crashtest"
	"os"
	"testing"
	"time"
)

const helperEnv = "SPOOL_CRASH_HELPER_DIR"

var crashCfg = Config{MaxBytes: 256 << 20, SegmentSize: 64 << 10, CheckpointInterval: 5 * time.Millisecond}

// crashPayload is batch i of the k batches of flush g: a header naming
// them and up to 12 KiB of a byte derived from them.
func crashPayload(g, i, k int) []byte {
	b := bytes.Repeat([]byte{byte(g*7 + i)}, 64+(g*7919+i*104729)%(12<<10))
	copy(b, fmt.Sprintf("g=%d i=%d k=%d;", g, i, k))
	return b
}

func parseCrashPayload(b []byte) (g, i, k int, err error) {
	if _, err := fmt.Sscanf(string(b), "g=%d i=%d k=%d;", &g, &i, &k); err != nil {
		return 0, 0, 0, fmt.Errorf("payload %.20q: %w", b, err)
	}
	if !bytes.Equal(b, crashPayload(g, i, k)) {
		return 0, 0, 0, fmt.Errorf("payload of g=%d i=%d k=%d is damaged", g, i, k)
	}
	return g, i, k, nil
}

// TestHelperProcess is the child of TestCrashKill9. It commits flush after
// flush (flush g has 1+g%5 batches and JournalPos g) and prints
// "commit g firstSeq k" after each Commit returns; a shipper goroutine
// takes batches four at a time and acks them in reverse order, printing
// "ack seq" before each Ack. It runs until killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process of TestCrashKill9")
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(2)
	}
	s, err := Open(dir, crashCfg, nil)
	if err != nil {
		fail("open", err)
	}
	go func() {
		var window []uint64
		for {
			it, err := s.Next(context.Background())
			if err != nil {
				fail("next", err)
			}
			window = append(window, it.Seq)
			if len(window) < 4 {
				continue
			}
			for j := len(window) - 1; j >= 0; j-- {
				fmt.Printf("ack %d\n", window[j]) // one write(2): lines never interleave
				if err := s.Ack(window[j]); err != nil {
					fail("ack", err)
				}
			}
			window = window[:0]
		}
	}()
	g := 1
	if m, ok := s.LastCommitMeta(); ok {
		g = int(m.JournalPos) + 1
	}
	for range 100_000 { // bounded; the parent kills us long before
		k := 1 + g%5
		batches := make([][]byte, k)
		for i := range batches {
			batches[i] = crashPayload(g, i, k)
		}
		seqs, err := s.Commit(payloads(batches...), CommitMeta{JournalPos: uint64(g)})
		if err != nil {
			fail("commit", err)
		}
		fmt.Printf("commit %d %d %d\n", g, seqs[0], k)
		g++
	}
	os.Exit(0)
}

type flush struct {
	first uint64
	k     int
}

// TestCrashKill9 kills a process that commits flushes and acks batches with
// SIGKILL at an arbitrary point, several times, and after each kill checks
// that every committed batch is either re-delivered or was acked (and is
// below the persisted cursor), that only whole flushes are delivered, and
// that LastCommitMeta names the last complete flush.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	flushes := map[int]flush{}     // every flush known to be committed
	ackIntent := map[uint64]bool{} // every seq the child may have acked
	lastG := 0                     // highest flush the child reported
	for round := range 3 {
		minCommits := 150 + 100*round
		commits := 0
		killed := runCrashChild(t, dir, func(line string) (kill bool) {
			var g, k int
			var seq uint64
			if _, err := fmt.Sscanf(line, "commit %d %d %d", &g, &seq, &k); err == nil {
				flushes[g] = flush{first: seq, k: k}
				lastG = max(lastG, g)
				commits++
				return commits >= minCommits
			} else if _, err := fmt.Sscanf(line, "ack %d", &seq); err == nil {
				ackIntent[seq] = true
			}
			return false
		})

		s, err := Open(dir, crashCfg, nil)
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		st := s.Stats()
		meta, ok := s.LastCommitMeta()
		// The child may have been killed after a Commit returned and
		// before it printed the line: at most one flush more.
		if !ok || (meta.JournalPos != uint64(lastG) && meta.JournalPos != uint64(lastG+1)) {
			s.Close()
			t.Fatalf("round %d: LastCommitMeta = %+v, %v; child reported flush %d last", round, meta, ok, lastG)
		}
		delivered := map[uint64]int{} // seq -> flush
		want := st.AckedThrough + 1
		for {
			it, ok := tryNext(t, s)
			if !ok {
				break
			}
			if it.Seq != want {
				s.Close()
				t.Fatalf("round %d: re-delivered seq %d, want %d (cursor %d)", round, it.Seq, want, st.AckedThrough)
			}
			want++
			g, i, k, err := parseCrashPayload(it.Payload)
			if err != nil {
				s.Close()
				t.Fatalf("round %d: seq %d: %v", round, it.Seq, err)
			}
			if uint64(g) > meta.JournalPos {
				s.Close()
				t.Fatalf("round %d: delivered flush %d beyond LastCommitMeta %d", round, g, meta.JournalPos)
			}
			f, known := flushes[g]
			if !known {
				f = flush{first: it.Seq - uint64(i), k: k} // the unreported last flush
				flushes[g] = f
				lastG = max(lastG, g)
			}
			if f.first+uint64(i) != it.Seq || f.k != k {
				s.Close()
				t.Fatalf("round %d: seq %d holds batch %d/%d of flush %d, which was committed as seqs %d+%d",
					round, it.Seq, i, k, g, f.first, f.k)
			}
			delivered[it.Seq] = g
		}
		if want != st.NextSeq {
			s.Close()
			t.Fatalf("round %d: re-delivered up to %d, NextSeq %d", round, want-1, st.NextSeq)
		}
		// Every batch of every committed flush (which covers every flush a
		// delivered batch belongs to) is re-delivered or was acked.
		for g, f := range flushes {
			for seq := f.first; seq < f.first+uint64(f.k); seq++ {
				if _, ok := delivered[seq]; ok {
					continue
				}
				if seq > st.AckedThrough || !ackIntent[seq] {
					s.Close()
					t.Fatalf("round %d: batch seq %d of flush %d is lost: not re-delivered, cursor %d, acked by child %v",
						round, seq, g, st.AckedThrough, ackIntent[seq])
				}
			}
		}
		t.Logf("round %d: killed=%v, flushes %d, cursor %d, re-delivered %d, discarded incomplete %d, torn bytes %d",
			round, killed, len(flushes), st.AckedThrough, len(delivered), st.DiscardedRecords, st.RecoveredTornBytes)
		if err := s.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
	}
}

// runCrashChild starts the helper on dir, passes every line the child
// prints to line, and kills the child when line first returns true.
func runCrashChild(t *testing.T, dir string, line func(string) (kill bool)) (killed bool) {
	t.Helper()
	// Lines still in the pipe after the kill count too: they were printed
	// after their Commit returned or before their Ack.
	killed = crashtest.Run(t, "TestHelperProcess", helperEnv, dir, line)
	if !killed {
		t.Logf("child finished before it could be killed")
	}
	return killed
}

package tail

import (
	"bytes"
	"context"
	"fmt"
	"github.com/tally-edge/tally/internal/crashtest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/collector"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/agent/spool"
)

// agentState is one run of the agent's durable path over a state dir.
type agentState struct {
	sp     *spool.Spool
	col    *collector.Collector
	closed bool
}

// openAgent opens the spool and the collector in dir as the agent does at
// start, with a new restart epoch.
func openAgent(t *testing.T, dir string, flushEvery time.Duration) (*agentState, error) {
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Config{MaxBytes: 256 << 20}, discard)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	epoch, err := collector.NextEpoch(dir)
	if err != nil {
		sp.Close()
		return nil, err
	}
	col, err := collector.Open(collector.Config{Dir: dir, Epoch: epoch, FlushInterval: flushEvery,
		Rollup: rollup.DefaultConfig(), JournalMaxBytes: 256 << 20, Batcher: ship.NewBatcher(0, nil)}, sp, prometheus.NewRegistry(), discard)
	if err != nil {
		sp.Close()
		return nil, fmt.Errorf("open collector: %w", err)
	}
	return &agentState{sp: sp, col: col}, nil
}

// close releases the state dir without a final flush, as a crash would.
// Safe to call twice.
func (a *agentState) close() {
	if a.closed {
		return
	}
	a.closed = true
	a.col.Close()
	a.sp.Close()
}

// countSpooled drains and acks every committed batch and returns the event
// count they add up to, under the aggregator's rules: per contribution ID
// the highest version holds the cumulative count; IDs add up.
func countSpooled(t *testing.T, sp *spool.Spool) uint64 {
	t.Helper()
	latest := map[uint64][2]uint64{} // CID → version, count
	for sp.Stats().PendingBatches > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		it, err := sp.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("spool Next: %v", err)
		}
		cs, err := rollup.DecodeBatch(it.Payload)
		if err != nil {
			t.Fatalf("decode batch: %v", err)
		}
		for _, c := range cs {
			if c.Version <= latest[c.CID][0] {
				continue
			}
			st, err := c.State.Decode()
			if err != nil {
				t.Fatalf("decode state: %v", err)
			}
			latest[c.CID] = [2]uint64{c.Version, st.Count}
		}
		if err := sp.Ack(it.Seq); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	var n uint64
	for _, vc := range latest {
		n += vc[1]
	}
	return n
}

// TestIntoCollector tails into the real collector and spool: every line's
// event is committed once, malformed lines still move the position, and a
// restart resumes from the positions the collector kept.
func TestIntoCollector(t *testing.T) {
	dir := t.TempDir()
	state, p := filepath.Join(dir, "state"), filepath.Join(dir, "access.log")
	var b bytes.Buffer
	for i := range 5000 {
		b.WriteString(line(i))
		if i%500 == 0 {
			b.WriteString("not a line we know\n")
		}
	}
	appendFile(t, p, b.String())

	a, err := openAgent(t, state, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { a.close() }()
	cfg := testConfig(p)
	cfg.BatchLines = 100
	want := source.Position{Source: SourcePrefix + p, File: fileIdentity(t, p), Offset: fileSize(t, p)}
	tl, stop := start(t, cfg, a.col, nil)
	waitFor(t, "the collector's position to reach the end", func() bool { return a.col.Positions()[want.Source] == want })
	stop()
	if err := a.col.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := countSpooled(t, a.sp); n != 5000 {
		t.Fatalf("spooled %d events, want 5000", n)
	}
	if st := tl.Stats(); st.Malformed["bad_seq"] != 10 || st.Lines != 5010 {
		t.Fatalf("stats %+v", st)
	}
	a.close()

	// Restart: only what was appended since is read.
	appendFile(t, p, lines(5000, 6000))
	a, err = openAgent(t, state, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.col.Positions()[want.Source]; got != want {
		t.Fatalf("position after restart %+v, want %+v", got, want)
	}
	want.Offset = fileSize(t, p)
	tl, stop = start(t, cfg, a.col, nil)
	waitFor(t, "the appended lines", func() bool { return a.col.Positions()[want.Source] == want })
	stop()
	if err := a.col.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := countSpooled(t, a.sp); n != 1000 {
		t.Fatalf("spooled %d events after the restart, want the 1000 new ones", n)
	}
	if st := tl.Stats(); st.Lines != 1000 {
		t.Fatalf("the restart read %d lines", st.Lines)
	}
}

const crashEnv = "TAIL_CRASH_HELPER_DIR"

// printingSink prints every position the collector accepted, after it
// returned, so the parent can kill the child at a known point.
type printingSink struct{ *collector.Collector }

func (s printingSink) AcceptAt(evs []event.Event, pos source.Position) error {
	err := s.Collector.AcceptAt(evs, pos)
	if err == nil {
		fmt.Printf("acc %s %d %d\n", pos.File, pos.Offset, len(evs)) // one write(2)
	}
	return err
}

// TestCrashHelperProcess is the child of TestCrashKill9: an agent that
// tails dir/logs/*.log into a collector flushing every 20ms, until killed.
func TestCrashHelperProcess(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper process of TestCrashKill9")
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(2)
	}
	a, err := openAgent(t, filepath.Join(dir, "state"), 20*time.Millisecond)
	if err != nil {
		fail("open", err)
	}
	go func() {
		if err := a.col.Run(context.Background()); err != nil {
			fail("collector", err)
		}
	}()
	cfg := Config{Paths: []string{filepath.Join(dir, "logs", "*.log")}, PollInterval: 5 * time.Millisecond,
		BatchLines: 50, RotateWait: 20 * time.Millisecond}
	tl, err := New(cfg, printingSink{a.col}, seqDecoder, discard)
	if err != nil {
		fail("new", err)
	}
	fail("tail", tl.Run(context.Background())) // returns only on a sink failure
}

// TestCrashKill9 tails a file into the real collector and spool in a child
// process and SIGKILLs it four times: mid-file; mid-way through the rest of
// that file after it was rotated (renamed, with lines added first) while
// the agent was down; mid-way through the new file; and at its end after
// lines were appended while down. The events the journal and the spool
// hold in the end count every line exactly once.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(logs, "access.log")
	total := 0
	write := func(n int) {
		appendFile(t, p, lines(total, total+n))
		total += n
	}

	write(40_000)
	batches := 0
	runCrashChild(t, dir, "mid-file", func(file string, off int64) bool { batches++; return batches >= 100 })

	write(1000)
	t.Logf("first file: %s, %d bytes", fileIdentity(t, p), fileSize(t, p))
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	write(40_000)
	id2 := fileIdentity(t, p)
	size2 := fileSize(t, p)
	t.Logf("second file: %s, %d bytes", id2, size2)
	batches = 0
	runCrashChild(t, dir, "mid-way through the rotated file", func(file string, off int64) bool {
		batches++
		return batches >= 200
	})
	runCrashChild(t, dir, "mid-way through the new file", func(file string, off int64) bool {
		return file == id2 && off >= size2/2
	})

	write(5000)
	size2 = fileSize(t, p)
	runCrashChild(t, dir, "at the end", func(file string, off int64) bool {
		return file == id2 && off == size2
	})

	a, err := openAgent(t, filepath.Join(dir, "state"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if got, want := a.col.Positions()[SourcePrefix+p], (source.Position{Source: SourcePrefix + p, File: id2, Offset: size2}); got != want {
		t.Fatalf("position %+v, want %+v", got, want)
	}
	if err := a.col.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := countSpooled(t, a.sp); n != uint64(total) {
		t.Fatalf("the agent counted %d events for %d lines", n, total)
	}
}

// runCrashChild starts the helper on dir and SIGKILLs it when kill first
// returns true for an accepted position.
func runCrashChild(t *testing.T, dir, what string, kill func(file string, off int64) bool) {
	t.Helper()
	var lastFile string
	var lastOff int64
	stop := false
	killed := crashtest.Run(t, "TestCrashHelperProcess", crashEnv, dir, func(line string) bool {
		var file string
		var off int64
		var n int
		if _, err := fmt.Sscanf(line, "acc %s %d %d", &file, &off, &n); err != nil {
			return false
		}
		lastFile, lastOff = file, off // lines still in the pipe after the kill count too
		if stop {
			return false
		}
		stop = kill(file, off)
		return stop
	})
	if !killed {
		t.Fatalf("%s: child ended before it was killed", what)
	}
	t.Logf("killed %s: last accepted position %s at %d", what, lastFile, lastOff)
}

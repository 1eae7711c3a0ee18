package collector

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/sketch"
)

func openForPositions(t *testing.T, dir string, epoch uint32) (*spool.Spool, *Collector) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Config{MaxBytes: 64 << 20}, logger)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(Config{Dir: dir, Epoch: epoch, FlushInterval: time.Second, Rollup: rollup.DefaultConfig(),
		JournalMaxBytes: 64 << 20, Batcher: ship.NewBatcher(0, nil)}, sp, prometheus.NewRegistry(), logger)
	if err != nil {
		t.Fatal(err)
	}
	return sp, c
}

func unflushedEvents(n int) []event.Event {
	evs := make([]event.Event, n)
	for i := range evs {
		evs[i] = event.Event{Series: sketch.Series{Campaign: "c", Type: "pageview", Region: "eu"}, UnixMillis: time.Now().UnixMilli()}
	}
	return evs
}

// TestPositionsSurviveCrashes: the position a source reached is restored
// after a crash whether its events were already flushed (from the commit)
// or only journaled (from the replay), and an empty batch still moves it.
func TestPositionsSurviveCrashes(t *testing.T) {
	dir := t.TempDir()
	sp, c := openForPositions(t, dir, 1)
	if err := c.AcceptAt(unflushedEvents(3), source.Position{Source: "tail:a.log", File: "1:10", Offset: 300}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.AcceptAt(unflushedEvents(2), source.Position{Source: "tail:a.log", File: "1:10", Offset: 500}); err != nil {
		t.Fatal(err)
	}
	// Malformed lines only: no events, the position still moves.
	if err := c.AcceptAt(nil, source.Position{Source: "tail:b.log", File: "1:11", Offset: 42}); err != nil {
		t.Fatal(err)
	}
	// Crash: no final flush.
	c.Close()
	sp.Close()

	sp, c = openForPositions(t, dir, 2)
	got := c.Positions()
	if got["tail:a.log"].Offset != 500 || got["tail:a.log"].File != "1:10" || got["tail:b.log"].Offset != 42 {
		t.Fatalf("positions after crash: %+v", got)
	}
	if st := c.Stats(); st.Events != 2 {
		t.Fatalf("replayed %d events, want the 2 unflushed", st.Events)
	}
	// Flushed now: the commit carries the positions, and a crash after it
	// restores them without replaying anything.
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	sp.Close()
	sp, c = openForPositions(t, dir, 3)
	defer sp.Close()
	defer c.Close()
	if got := c.Positions(); got["tail:a.log"].Offset != 500 || got["tail:b.log"].Offset != 42 {
		t.Fatalf("positions after a committed flush: %+v", got)
	}
	if st := c.Stats(); st.Events != 0 {
		t.Fatalf("replayed %d events after a committed flush", st.Events)
	}
}

// TestGonePositionsAreForgotten: positions of files that are gone and have
// not moved for ForgetPositions leave the next commit; others stay.
func TestGonePositionsAreForgotten(t *testing.T) {
	dir := t.TempDir()
	sp, c := openForPositions(t, dir, 1)
	defer sp.Close()
	defer c.Close()
	c.cfg.ForgetPositions = time.Hour
	c.cfg.Forget = func(p source.Position) bool { return p.Source != "tail:alive.log" }
	for _, s := range []string{"tail:alive.log", "tail:gone.log", "import:/old/file.log"} {
		if err := c.AcceptAt(nil, source.Position{Source: s, File: "1:1", Offset: 10}); err != nil {
			t.Fatal(err)
		}
	}
	c.prunePositions(time.Now()) // nothing idle yet
	if n := len(c.Positions()); n != 3 {
		t.Fatalf("%d positions right after use, want 3", n)
	}
	c.prunePositions(time.Now().Add(2 * time.Hour))
	got := c.Positions()
	if _, ok := got["tail:alive.log"]; len(got) != 1 || !ok {
		t.Fatalf("positions after pruning: %+v", got)
	}
	if err := c.AcceptAt(unflushedEvents(1), source.Position{Source: "tail:alive.log", File: "1:1", Offset: 20}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	meta, _ := sp.LastCommitMeta()
	committed, err := decodePositions(meta.Data)
	if err != nil || len(committed) != 1 || committed["tail:alive.log"].Offset != 20 {
		t.Fatalf("committed positions %+v, %v", committed, err)
	}
}

// TestTooManyPositionsNeverFailAFlush: far more sources than one commit
// can hold (the reported failure: every flush failed) shed the least
// recently moved instead.
func TestTooManyPositionsNeverFailAFlush(t *testing.T) {
	dir := t.TempDir()
	sp, c := openForPositions(t, dir, 1)
	defer sp.Close()
	defer c.Close()
	long := strings.Repeat("x", 200)
	for i := range 6000 {
		c.positions[fmt.Sprintf("import:/%s/%05d.log", long, i)] = trackedPosition{
			Position: source.Position{Source: fmt.Sprintf("import:/%s/%05d.log", long, i), File: "1:1", Offset: 1}, Seen: int64(i)}
	}
	if err := c.AcceptAt(unflushedEvents(1), source.Position{Source: "tail:newest.log", File: "1:2", Offset: 5}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush with 6000 positions: %v", err)
	}
	meta, _ := sp.LastCommitMeta()
	committed, err := decodePositions(meta.Data)
	if err != nil || len(committed) == 0 || len(committed) >= 6000 || len(meta.Data) > maxPositionBytes {
		t.Fatalf("%d positions in %d bytes committed, %v", len(committed), len(meta.Data), err)
	}
	if _, ok := committed["tail:newest.log"]; !ok {
		t.Fatal("the most recently moved position was shed")
	}
}

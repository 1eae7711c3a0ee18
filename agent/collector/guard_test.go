package collector

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/cardinality"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/sketch"
)

// TestCardinalityFoldingSurvivesReplay: values over the limit fold into
// (other) before they are journaled, and after a crash the guard knows
// the values it had admitted, so the next new value still folds.
func TestCardinalityFoldingSurvivesReplay(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func(epoch uint32) (*spool.Spool, *Collector) {
		sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Config{MaxBytes: 64 << 20}, logger)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Open(Config{Dir: dir, Epoch: epoch, FlushInterval: time.Second, Rollup: rollup.DefaultConfig(),
			JournalMaxBytes: 64 << 20, Batcher: ship.NewBatcher(0, nil), Cardinality: cardinality.Config{MaxCampaigns: 2}}, sp, prometheus.NewRegistry(), logger)
		if err != nil {
			t.Fatal(err)
		}
		return sp, c
	}
	minute := time.Now().Truncate(time.Minute).UnixMilli()
	mk := func(names ...string) []event.Event {
		var evs []event.Event
		for _, n := range names {
			evs = append(evs, event.Event{Series: sketch.Series{Campaign: n, Source: "s", Medium: "m", Type: "click"}, UnixMillis: minute})
		}
		return evs
	}
	sp, c := open(1)
	evs := mk("a", "b", "c")
	if err := c.Accept(evs); err != nil {
		t.Fatal(err)
	}
	if evs[2].Series.Campaign != cardinality.Other {
		t.Fatalf("third campaign not folded: %q", evs[2].Series.Campaign)
	}
	c.Close() // crash: nothing flushed
	sp.Close()

	sp, c = open(2)
	defer sp.Close()
	defer c.Close()
	evs = mk("d", "a")
	if err := c.Accept(evs); err != nil {
		t.Fatal(err)
	}
	if evs[0].Series.Campaign != cardinality.Other || evs[1].Series.Campaign != "a" {
		t.Fatalf("after replay: %q %q", evs[0].Series.Campaign, evs[1].Series.Campaign)
	}
	// Counts are exact: five events, none lost to folding.
	if st := c.Stats(); st.Events != 5 {
		t.Fatalf("events %d, want 5", st.Events)
	}
}

package pipeline

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/deadletter"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// copyTree copies a directory tree: tests open fixtures, and opening writes.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fixtureConfig returns a configuration over a copy of the state
// directory written by 388fe42 (agent/testdata/state-v1).
func fixtureConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	copyTree(t, filepath.Join("..", "testdata", "state-v1"), state)
	certs := filepath.Join(dir, "certs")
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: []string{"agent-fixture"}, Aggregators: []string{"agg"}}); err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultConfig()
	cfg.Name, cfg.Region, cfg.StateDir = "agent-fixture", "eu", state
	cfg.Aggregator.Addrs = []string{"127.0.0.1:9"}
	f := pki.DevFiles(certs, "agent-fixture")
	cfg.Aggregator.CA, cfg.Aggregator.Cert, cfg.Aggregator.Key = f.CA, f.Cert, f.Key
	cfg.Privacy.Secret = "fixture-secret-0123456789"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// pending drains the spool's batches (without acking) and sums them.
func pending(t *testing.T, p *Pipeline) (batches int, events, bots uint64) {
	t.Helper()
	for p.Spool.Stats().InflightBatches < p.Spool.Stats().PendingBatches {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		it, err := p.Spool.Next(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var cs []wire.Contribution
		if err := msgpack.Unmarshal(it.Payload, &cs); err != nil {
			t.Fatalf("batch %d: %v", it.Seq, err)
		}
		batches++
		for _, c := range cs {
			events += c.State.Count
			for _, n := range c.State.Bots {
				bots += n
			}
		}
	}
	return batches, events, bots
}

// TestOpensStateWrittenByVersion1 opens, through the one constructor
// both Run and Import use, a state directory written before any stored
// format carried a version: the spool's committed batches, the journal's
// unflushed events and positions, the backfill's spool and positions and
// the dead letter all come back as they were, and new data written behind
// them reopens too.
func TestOpensStateWrittenByVersion1(t *testing.T) {
	cfg := fixtureConfig(t)
	logger := slog.New(slog.DiscardHandler)
	p, err := New(cfg, Options{Dir: cfg.StateDir, SpoolName: "live"}, prometheus.NewRegistry(), logger)
	if err != nil {
		t.Fatal(err)
	}
	if p.Epoch != 2 {
		t.Fatalf("epoch %d, want 2 (the fixture's was 1)", p.Epoch)
	}
	if st := p.Collector.Stats(); st.Events != 2 {
		t.Fatalf("journal replay gave %d events, want the 2 unflushed conversions", st.Events)
	}
	if pos := p.Collector.Positions()["tail:/var/log/nginx/access.log"]; pos.File != "2049:1234" || pos.Offset != 8192 {
		t.Fatalf("tail position %+v, want offset 8192 from the journal", pos)
	}
	if n, ev, bots := pending(t, p); n != 2 || ev != 4 || bots != 1 {
		t.Fatalf("spool: %d batches, %d events, %d bots; want 2, 4, 1", n, ev, bots)
	}
	if letters, err := deadletter.List(filepath.Join(cfg.StateDir, "dead-letter")); err != nil || len(letters) != 1 || letters[0].Version != 1 {
		t.Fatalf("dead letters %+v, %v", letters, err)
	}
	// New data behind the old: a flush of the replayed events (v2 batch
	// records, v2 positions) into the v1 spool.
	if err := p.Collector.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	p, err = New(cfg, Options{Dir: cfg.StateDir, SpoolName: "live"}, prometheus.NewRegistry(), logger)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Collector.Stats(); st.Events != 0 {
		t.Fatalf("replayed %d events after they were flushed", st.Events)
	}
	if n, ev, bots := pending(t, p); n != 3 || ev != 6 || bots != 1 {
		t.Fatalf("spool after a new flush: %d batches, %d events, %d bots; want 3, 6, 1", n, ev, bots)
	}
	if pos := p.Collector.Positions()["tail:/var/log/nginx/access.log"]; pos.Offset != 8192 {
		t.Fatalf("tail position %+v after the v2 commit", pos)
	}
	p.Close()

	// The backfill's own state: spool and positions, no journal.
	imp, err := New(cfg, Options{Dir: filepath.Join(cfg.StateDir, "import"), SpoolName: "import", EpochBit: 1 << 31, NoJournal: true,
		Rollup: func(r *rollup.Config) { r.ByEventTime = true }}, prometheus.NewRegistry(), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	if imp.Epoch != 2|1<<31 {
		t.Fatalf("import epoch %x", imp.Epoch)
	}
	if pos := imp.Collector.Positions()["import:/data/access.log.1"]; pos.File != "2049:777" || pos.Offset != 300 {
		t.Fatalf("import position %+v", pos)
	}
	if n, ev, _ := pending(t, imp); n != 1 || ev != 2 {
		t.Fatalf("import spool: %d batches, %d events; want 1, 2", n, ev)
	}
}

// TestRefusesANameItsCertificateDoesNotCarry: aggregators would refuse
// every batch, so the agent does not start.
func TestRefusesANameItsCertificateDoesNotCarry(t *testing.T) {
	cfg := fixtureConfig(t)
	cfg.Name = "agent-other"
	if _, err := New(cfg, Options{Dir: cfg.StateDir, SpoolName: "live"}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("started with a name that is not the certificate's CN")
	}
}

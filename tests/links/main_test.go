// Package links runs an agent behind an emulated long, thin, lossy link
// (internal/linkemu) to a real aggregator and InfluxDB, and checks that
// every campaign becomes exact in the API within the bounds, with
// few bytes on the link.
//
// `go test ./tests/links/` (part of make test) runs TestThinLinkShort: a
// backfilled burst of 15,000 events over the worst link. TALLY_LINKS=long
// (make links) runs the bursts of 250,000 events live over 4
// minutes on both links, and a 5-minute cut of the link mid-burst;
// TALLY_LINKS=backfill posts the bursts at once instead.
// TALLY_LINKS_ROLLUP is YAML for the agent's rollup: section (make links:
// "uniques: campaign") and TALLY_LINKS_FLUSH its flush interval;
// TALLY_LINKS_CUT the cut's length. TALLY_LINKS_BIN=<dir> runs the
// binaries in dir instead of building this tree's (to measure another
// release with the same harness); TALLY_LINKS_PATIENCE waits longer than
// the bound to say how far a run got; TALLY_LINKS_KEEP keeps the logs.
package links

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/influxtest"

	"github.com/tally-edge/tally/internal/harness"
)

// binDir holds the tally-agent and tally-aggregator under test.
var binDir string

// long is set by TALLY_LINKS=long.
var long = os.Getenv("TALLY_LINKS") == "long"

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, cleanup, err := harness.Binaries("TALLY_LINKS_BIN", "tally-links-bin-", harness.AgentPkg, harness.AggregatorPkg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Close()
	}
	cleanup()
	os.Exit(code)
}

// shared is the one InfluxDB of the package; each stack has its own
// database on it.
var shared struct {
	once sync.Once
	srv  *influxtest.Server
	err  error
}

func sharedInflux(t *testing.T) *influxtest.Server {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.srv, shared.err = influxtest.Launch(ctx, influxtest.Options{DisableFlux: true})
	})
	if shared.err != nil {
		t.Fatalf("InfluxDB: %v", shared.err)
	}
	return shared.srv
}

// Package e2e runs Tally's built binaries as processes against a real
// InfluxDB and checks the numbers end to end against ground truth.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/tally-edge/tally/internal/harness"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, cleanup, err := harness.Binaries("", "tally-e2e-bin-", harness.AgentPkg, harness.AggregatorPkg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "building binaries for e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	cleanup()
	os.Exit(code)
}

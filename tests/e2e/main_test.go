// Package e2e runs Tally's built binaries as processes against a real
// InfluxDB and checks the numbers end to end against ground truth.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "tally-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+"/",
		"github.com/tally-edge/tally/agent/cmd/tally-agent",
		"github.com/tally-edge/tally/aggregator/cmd/tally-aggregator")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries for e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

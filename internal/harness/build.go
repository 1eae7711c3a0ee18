package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// The main packages of Tally's binaries, for Build.
const (
	AgentPkg      = "github.com/tally-edge/tally/agent/cmd/tally-agent"
	AggregatorPkg = "github.com/tally-edge/tally/aggregator/cmd/tally-aggregator"
)

// Build compiles the given main packages into dir with `go build`, with
// extra arguments (say -ldflags) before the packages. Tests that run the
// binaries as processes call it once from TestMain.
func Build(dir string, extra []string, pkgs ...string) error {
	args := append([]string{"build", "-o", dir + "/"}, extra...)
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", strings.Join(pkgs, " "), err)
	}
	return nil
}

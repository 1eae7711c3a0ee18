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

// Binaries returns the directory of the main packages pkgs for a test
// package's processes: the directory named by the environment variable
// env when it is set (say, binaries of an earlier release, to show a test
// fails there), otherwise a fresh temporary directory (named after
// prefix) they are built into. cleanup removes what Binaries made and
// nothing else.
func Binaries(env, prefix string, pkgs ...string) (dir string, cleanup func(), err error) {
	if env != "" {
		if d := os.Getenv(env); d != "" {
			return d, func() {}, nil
		}
	}
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	if err := Build(dir, nil, pkgs...); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

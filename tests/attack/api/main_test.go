// Package api attacks the aggregator's HTTP API, stream and dashboard
// sign-in as an outsider (and as a legitimate but greedy caller) would,
// against real processes: InfluxDB, agents and aggregators on loopback.
// Every test checks that the attack is refused or bounded and that
// legitimate use during the attack still answers, with numbers equal to
// the ground truth of the events sent.
//
// Two deployments are started once for the package:
//
//   - plain: a node whose configuration uses only keys today's main knows
//     (tokens, a JWT key with issuer and audience, an audit log), so the
//     tests against it fail on main for the attack's reason;
//   - hardened: a node with the keys this suite adds (links secret,
//     audit rotation, a metrics listener).
//
// TALLY_ATTACK_BIN names a directory with prebuilt tally-agent and
// tally-aggregator binaries to attack instead of building the tree's
// (how each test was shown to fail on main). TALLY_ATTACK=long makes
// TestAttackMix run for minutes (make attack).
package api

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/tally-edge/tally/internal/harness"
)

// binDir holds the binaries under attack.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	code := func() int {
		dir, cleanup, err := harness.Binaries("TALLY_ATTACK_BIN", "tally-attack-bin-", harness.AgentPkg, harness.AggregatorPkg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "building binaries for the attack suite:", err)
			return 1
		}
		defer cleanup()
		binDir = dir
		defer stopDeployments()
		return m.Run()
	}()
	os.Exit(code)
}

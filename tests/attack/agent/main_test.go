// Package agent attacks a real tally-agent process the way the hardening
// issue's attacker did — anonymous imports, forged identities, unbounded
// dimensions, megabyte user agents, slow uploads, hostile log lines, a
// disk that fails its fsyncs, an aggregator that refuses batches or the
// agent itself — while a legitimate backend keeps sending, and checks
// that the legitimate traffic is counted exactly and the attack is not.
//
// The agent ships over QUIC with mutual TLS to an in-process aggregator
// stand-in (standin_test.go) that keeps, per contribution id, the highest
// version, as aggregators do. Everything listens on loopback.
//
// TALLY_ATTACK_AGENT names another tally-agent binary to attack (for
// example one built from an older commit, to see these tests fail there);
// by default TestMain builds this tree's. TALLY_ATTACK=long makes
// TestAttackMix run for five minutes instead of twenty seconds (make
// attack).
package agent

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
)

// agentBin is the tally-agent binary under attack.
var agentBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	if bin := os.Getenv("TALLY_ATTACK_AGENT"); bin != "" {
		agentBin = bin
		os.Exit(m.Run())
	}
	dir, cleanup, err := harness.Binaries("", "tally-attack-agent-", harness.AgentPkg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "building tally-agent:", err)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "tally-agent")
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// mixDuration is how long TestAttackMix runs.
func mixDuration() time.Duration {
	if os.Getenv("TALLY_ATTACK") == "long" {
		return 5 * time.Minute
	}
	return 20 * time.Second
}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts agent processes")
	}
}

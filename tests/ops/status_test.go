package ops

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testStatus runs the status subcommands against the running processes:
// each exits 0 and summarises what the operator needs first.
func testStatus(t *testing.T, c *cluster) {
	out, err := exec.Command(filepath.Join(binDir, "tally-agent"), "status", "-url", "http://"+c.agent.http).CombinedOutput()
	if err != nil {
		t.Fatalf("tally-agent status: %v\n%s", err, out)
	}
	for _, want := range []string{": OK", "aggregator", "connected", "accepted", "spool"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("tally-agent status lacks %q:\n%s", want, out)
		}
	}
	t.Logf("%s", out)
	for _, n := range c.nodes {
		out, err := exec.Command(filepath.Join(binDir, "tally-aggregator"), "status", "-url", "http://"+n.http, "-format", "json").CombinedOutput()
		if err != nil {
			t.Fatalf("tally-aggregator status %s: %v\n%s", n.name, err, out)
		}
		var rep struct {
			OK    bool `json:"ok"`
			Lines []struct{ Key, Value string }
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var members string
		for _, l := range rep.Lines {
			if l.Key == "members" {
				members = l.Value
			}
		}
		if !rep.OK || members != "3 alive (agg-1, agg-2, agg-3)" {
			t.Errorf("%s: ok=%v members=%q\n%s", n.name, rep.OK, members, out)
		}
	}
	// A process that is not there is a failure, not a crash.
	out, err = exec.Command(filepath.Join(binDir, "tally-agent"), "status", "-url", "http://127.0.0.1:1").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "NEEDS ATTENTION") {
		t.Errorf("status of nothing: %v\n%s", err, out)
	}
}

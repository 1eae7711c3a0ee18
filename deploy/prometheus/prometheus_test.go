// Package prometheus_test checks the Prometheus files Tally ships with
// Prometheus's own tool: the scrape configuration and the rules load, the
// rules' unit tests pass, and every alert has its runbook entry. That a
// real Prometheus scrapes a real cluster with this configuration, and that
// the metrics the rules name exist, is shown in tests/ops.
package prometheus_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("TALLY_REQUIRE_OPS_TOOLS") != "" {
			t.Fatal("promtool not found (make test-deps installs Debian's prometheus package)")
		}
		t.Skip("promtool not found; make test-deps installs Debian's prometheus package")
	}
	return p
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s:\n%s", name, strings.Join(args, " "), out)
}

func TestCheckConfig(t *testing.T) {
	run(t, promtool(t), "check", "config", "prometheus.yml")
}

func TestCheckRules(t *testing.T) {
	run(t, promtool(t), "check", "rules", "tally-rules.yml")
}

func TestRuleUnitTests(t *testing.T) {
	run(t, promtool(t), "test", "rules", "tally-rules.test.yml")
}

// Alerts lists the alert names of tally-rules.yml.
func Alerts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("tally-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	return names
}

// Every alert is tested (fires in a case of tally-rules.test.yml) and has
// a runbook section in docs/operations.md whose anchor the annotation
// names; the seven situations each have an alert.
func TestEveryAlertTestedAndDocumented(t *testing.T) {
	alerts := Alerts(t)
	tests, err := os.ReadFile("tally-rules.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := os.ReadFile("tally-rules.yml")
	for _, a := range alerts {
		if !regexp.MustCompile(`alertname: ` + a + `\n\s+exp_alerts:\n\s+- exp_labels`).Match(tests) {
			t.Errorf("alert %s never fires in tally-rules.test.yml", a)
		}
		if !regexp.MustCompile(`(?m)^#### ` + a + `$`).Match(doc) {
			t.Errorf("alert %s: no runbook section \"#### %s\" in docs/operations.md", a, a)
		}
		if !strings.Contains(string(rules), "runbook: docs/operations.md#"+strings.ToLower(a)+"\n") {
			t.Errorf("alert %s: runbook annotation does not point at docs/operations.md#%s", a, strings.ToLower(a))
		}
	}
	for _, want := range []string{"TallyAgentSpoolGrowing", "TallyWALGrowing", "TallyInfluxWritesFailing", "TallyNodeDown",
		"TallyMembersDisagree", "TallyIngestAnswering503", "TallyBotShareJump"} {
		found := false
		for _, a := range alerts {
			found = found || a == want
		}
		if !found {
			t.Errorf("no alert %s", want)
		}
	}
}

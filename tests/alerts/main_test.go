// Package alerts shows alerting end to end on real processes: InfluxDB,
// tally-aggregator nodes (a memberlist cluster where it matters),
// tally-agent processes fed generated traffic with event times, a signed
// webhook receiver on loopback and Debian's prometheus-alertmanager.
//
// TestAdminAPI runs in make test (about 20 s): the admin API's RBAC and
// abuse cases on a two-node cluster.
//
// The others take minutes of live traffic and run in make alerts-e2e
// (TALLY_ALERTS_E2E=1):
//
//   - TestRulesBudgetsSilences: a threshold rule, a budget and a silence
//     (set through the API) on one node; the forecast's spend exact.
//   - TestAlertsShort: eight hours of history backfilled, then tracking
//     breaks; the alert at the webhook, the stream and the API within
//     two minutes, once.
//   - TestAlertsCluster, TestAlertsClusterKilledEarly: three nodes, three
//     weeks of seasonal history backfilled through two agents, a quiet
//     live period judged against the seasonal baseline without an alert,
//     then a spike, a drop and broken tracking at once, the owner
//     SIGKILLed mid-anomaly (after its alerts, or before any); exactly one
//     alert per anomaly at the webhook, in storage and on the stream, each
//     at Alertmanager and on the dashboard (headless Chromium).
package alerts

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/tally-edge/tally/internal/harness"
)

// binDir holds the binaries built once for the package.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, cleanup, err := harness.Binaries("", "tally-alerts-bin-", harness.AgentPkg, harness.AggregatorPkg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	cleanup()
	os.Exit(code)
}

package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// aggWithLegit runs legitimate traffic to n during attack and returns the
// legitimate truth once both ended.
func aggWithLegit(t *testing.T, e *aggEnv, n *aggNode, agent, campaign string, attack func()) uint64 {
	t.Helper()
	legit := e.aggLegit(agent, n, campaign)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var lerr error
	wg.Go(func() { lerr = legit.run(ctx, 100*time.Millisecond) })
	attack()
	time.Sleep(time.Second) // legitimate traffic after the attack too
	cancel()
	wg.Wait()
	if lerr != nil {
		t.Fatal(lerr)
	}
	if legit.acked() == 0 {
		t.Fatal("no legitimate batch was acknowledged")
	}
	return legit.acked()
}

// aggSendAll sends b and fails the test unless it is acknowledged.
func aggSendAll(t *testing.T, c *wire.Client, b *wire.Batch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := c.Send(ctx, b)
	if err != nil || ack.Status != wire.AckOK {
		t.Fatalf("batch %d: %v %+v", b.Seq, err, ack)
	}
}

// TestAggContributionPointOverFieldLimit: one series-minute gathers more
// contributions than one InfluxDB string field holds: 600 imported rows
// (each its own contribution, as spend rows with distinct ids are), and
// ten dense HyperLogLogs of one agent restarted ten times in a minute.
// The first release refused the whole write round forever; now the
// contribution points are split and every event is stored, the
// legitimate traffic next to them too.
func TestAggContributionPointOverFieldLimit(t *testing.T) {
	e := aggNewEnv(t, influxtest.Options{}, []string{"attacker", "legit"}, []string{"agg-1"})
	n := e.aggStart("agg-1", aggNodeOptions{})
	c := e.aggClient("attacker", n, wire.ALPN)
	minute := time.Now().Truncate(time.Minute).Unix()
	var rows, dense uint64
	truth := aggWithLegit(t, e, n, "legit", "legit", func() {
		b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "attacker", Region: "eu", Seq: 1}
		for i := range 600 {
			cid := uint64(3)<<62 | uint64(i) // imported rows: ids from row keys
			b.Contributions = append(b.Contributions, aggContribution("rows", minute, cid, 2))
			rows += 2
		}
		aggSendAll(t, c, b)
		b = &wire.Batch{Version: wire.ProtocolVersion, Agent: "attacker", Region: "eu", Seq: 2}
		for epoch := range 10 {
			st := sketch.State{Count: 100}
			for v := range 20000 {
				st.AddVisitor(uint64(epoch)<<32 | uint64(v) + 1)
			}
			enc, err := st.Encode()
			if err != nil {
				t.Fatal(err)
			}
			b.Contributions = append(b.Contributions, wire.Contribution{Series: sketch.Series{Campaign: "dense", Type: "pageview", Region: "eu"},
				Minute: minute, CID: uint64(epoch+1) << 32, Version: 1, State: enc})
			dense += 100
		}
		aggSendAll(t, c, b)
	})
	e.aggWaitStored(map[string]uint64{"legit": truth, "rows": rows, "dense": dense}, 60*time.Second)
	if q, _ := aggMetric(n.http, "tally_aggregator_quarantined_total"); q != 0 {
		t.Fatalf("%v series-minutes quarantined; splitting should have stored everything", q)
	}
}

// TestAggPointsBeyondRetention: an import of minutes older than the
// retention policy keeps (InfluxDB 1.x answers "points beyond retention
// policy"). The first release retried that write forever and wrote
// nothing else. Now the refused series-minutes go to the quarantine
// (counted, /readyz degraded), everything else is written, and after the
// operator extends the policy, `tally-aggregator quarantine replay`
// writes them exactly.
func TestAggPointsBeyondRetention(t *testing.T) {
	e := aggNewEnv(t, influxtest.Options{}, []string{"attacker", "legit"}, []string{"agg-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := e.influx.CreateRetentionPolicy(ctx, e.db, "hour", time.Hour); err != nil {
		t.Fatal(err)
	}
	e.bucket = e.db + "/hour"
	// The operator manages this policy: the node must not lengthen it.
	n := e.aggStart("agg-1", aggNodeOptions{InfluxExtra: "create_bucket: false"})
	c := e.aggClient("attacker", n, wire.ALPN)
	old := time.Now().Add(-3 * time.Hour).Truncate(time.Minute).Unix()
	var oldEvents uint64
	truth := aggWithLegit(t, e, n, "legit", "legit", func() {
		b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "attacker", Region: "eu", Seq: 1}
		for i := range 5 {
			b.Contributions = append(b.Contributions, aggContribution("old", old-int64(60*i), uint64(i+1), 3))
			oldEvents += 3
		}
		aggSendAll(t, c, b)
	})
	e.aggWaitStored(map[string]uint64{"legit": truth}, 60*time.Second)
	aggWaitMetric(t, n, 30*time.Second, 5, "tally_aggregator_quarantined_total", `reason="beyond_retention"`)
	code, body, err := aggHTTP(n.http, "/readyz")
	if err != nil || code != 200 || !strings.Contains(body, "degraded") {
		t.Fatalf("/readyz = %d %q %v, want 200 degraded", code, body, err)
	}
	out, err := exec.Command(filepath.Join(aggBinDir, "tally-aggregator"), "quarantine", "list", "-config", n.cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "beyond_retention") || !strings.Contains(string(out), fmt.Sprintf("5 records, %d events", oldEvents)) {
		t.Fatalf("quarantine list: %v\n%s", err, out)
	}

	// The operator keeps a week; the replay stores the old minutes.
	if err := e.influx.Exec(ctx, fmt.Sprintf("ALTER RETENTION POLICY hour ON %s DURATION 1000h", e.db)); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(filepath.Join(aggBinDir, "tally-aggregator"), "quarantine", "replay", "-config", n.cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "5 records replayed") {
		t.Fatalf("quarantine replay: %v\n%s", err, out)
	}
	e.aggWaitStored(map[string]uint64{"legit": truth, "old": oldEvents}, 60*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, _ := aggHTTP(n.http, "/readyz")
		if code == 200 && strings.HasPrefix(body, "ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after the replay: %d %q", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAggMaxValuesPerTag: an agent names many new campaigns while
// InfluxDB's max-values-per-tag is reached; the points it refuses are
// quarantined, the legitimate campaign goes on being written.
func TestAggMaxValuesPerTag(t *testing.T) {
	e := aggNewEnv(t, influxtest.Options{MaxValuesPerTag: 20}, []string{"attacker", "legit"}, []string{"agg-1"})
	n := e.aggStart("agg-1", aggNodeOptions{})
	legit := e.aggLegit("legit", n, "legit")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := legit.send(ctx, 5); err != nil { // the legitimate campaign exists before the flood
		t.Fatal(err)
	}
	e.aggWaitStored(map[string]uint64{"legit": legit.acked()}, 60*time.Second)
	c := e.aggClient("attacker", n, wire.ALPN)
	minute := time.Now().Truncate(time.Minute).Unix()
	truth := aggWithLegit(t, e, n, "legit", "legit", func() {
		for round := range 5 {
			b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "attacker", Region: "eu", Seq: uint64(round + 1)}
			for i := range 20 {
				b.Contributions = append(b.Contributions, aggContribution(fmt.Sprintf("spam-%03d", round*20+i), minute, uint64(round*20+i+1), 1))
			}
			aggSendAll(t, c, b)
			time.Sleep(300 * time.Millisecond) // several write rounds: the limit shows from the next request on
		}
	})
	e.aggWaitStored(map[string]uint64{"legit": truth + legit.acked()}, 60*time.Second)
	aggWaitMetric(t, n, 30*time.Second, 1, "tally_aggregator_quarantined_total", `reason="max_values_per_tag"`)
	if code, body, _ := aggHTTP(n.http, "/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q, want 200 (degraded, not down)", code, body)
	}
}

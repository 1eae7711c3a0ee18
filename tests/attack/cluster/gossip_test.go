package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// TestAggGossipReachableWithoutKeyRefusesToStart: a node told to gossip
// on an address other machines reach, without a gossip key, does not
// start (anyone reaching the port could join and own campaigns), and
// says what to set.
func TestAggGossipReachableWithoutKeyRefusesToStart(t *testing.T) {
	e := aggNewEnv(t, influxtest.Options{}, nil, []string{"agg-1"})
	tcp, err := harness.FreeTCP(2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(e.dir, "open.yaml")
	yaml := fmt.Sprintf(`name: agg-1
data_dir: %s
quic: {listen: 127.0.0.1:0, ca: %s/ca.pem, cert: %s/agg-1.pem, key: %s/agg-1-key.pem}
http: {listen: 127.0.0.1:%d}
influx: {url: %s, bucket: %s}
cluster: {bind: "0.0.0.0:%d", advertise: "127.0.0.1:%d", profile: local}
auth: {tokens: [{token: "%s", subject: admin, role: admin}]}
`, filepath.Join(e.dir, "data"), e.certs, e.certs, e.certs, tcp[0], e.influx.URL(), e.bucket, tcp[1], tcp[1], harness.DefaultAdminToken)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &harness.Proc{Name: "agg-1", Bin: filepath.Join(aggBinDir, "tally-aggregator"), Args: []string{"-config", cfg},
		LogPath: filepath.Join(e.dir, "open.log")}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(30 * time.Second)
	if err != nil {
		_ = p.Stop(10 * time.Second)
		t.Fatalf("a node gossiping on 0.0.0.0 without a key started: %v\n%s", err, p.LogTail(20))
	}
	if code == 0 || !strings.Contains(p.LogTail(20), "cluster.secret_key") {
		t.Fatalf("exit %d, log:\n%s\nwant a non-zero exit naming cluster.secret_key", code, p.LogTail(20))
	}
}

// TestAggForgedLiveUpdateByDatagram: one UDP datagram to a node's gossip
// port, shaped as the first release's live-update message, claimed a
// million clicks on every dashboard of that node. Now node messages must
// be signed by a member's node certificate; the forgery is refused and
// counted, and the real figures of legitimate traffic reach both nodes.
func TestAggForgedLiveUpdateByDatagram(t *testing.T) {
	e := aggNewEnv(t, influxtest.Options{}, []string{"legit"}, []string{"agg-1", "agg-2"})
	n1 := e.aggStart("agg-1", aggNodeOptions{Cluster: true})
	n2 := e.aggStart("agg-2", aggNodeOptions{Cluster: true})
	aggWaitMembers(t, n2, 2)

	minute := time.Now().Truncate(time.Minute).Unix()
	forged := []live.Update{{Campaign: "forged", Minute: minute, KPIs: kpi.KPIs{Clicks: 1_000_000, Impressions: 1_000_000}}}
	body, err := msgpack.Marshal(struct {
		Kind    uint8         `msgpack:"k"`
		Updates []live.Update `msgpack:"u"`
	}{1, forged})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", n2.gossip)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const userMsg = 8 // memberlist's message type of user messages
	truth := aggWithLegit(t, e, n1, "legit", "legit", func() {
		for range 5 {
			if _, err := conn.Write(append([]byte{userMsg}, body...)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	e.aggWaitStored(map[string]uint64{"legit": truth}, 60*time.Second)
	// Both nodes' live views: legit as counted, no forged campaign.
	for _, n := range []*aggNode{n1, n2} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			clicks := aggSnapshot(t, n)
			if clicks["forged"] != 0 {
				t.Fatalf("%s shows the forged campaign: %v", n.name, clicks)
			}
			if clicks["legit"] == truth {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's live view holds %v, want legit %d", n.name, clicks, truth)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	aggWaitMetric(t, n2, 30*time.Second, 5, "tally_aggregator_live_messages_total", `result="refused"`)
}

// aggWaitMembers waits until n sees want members.
func aggWaitMembers(t *testing.T, n *aggNode, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if v, _ := aggMetric(n.http, "tally_aggregator_cluster_member"); int(v) >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw %d members", n.name, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// aggSnapshot reads the first snapshot of a node's live stream and
// returns the clicks of each campaign over its minutes.
func aggSnapshot(t *testing.T, n *aggNode) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.http+"/api/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+harness.DefaultAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	snapshot := false
	for sc.Scan() {
		line := sc.Text()
		if line == "event: snapshot" {
			snapshot = true
			continue
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok && snapshot {
			var s struct {
				Updates []live.Update `json:"updates"`
			}
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatal(err)
			}
			out := map[string]uint64{}
			for _, u := range s.Updates {
				out[u.Campaign] += u.KPIs.Clicks
			}
			return out
		}
	}
	t.Fatalf("no snapshot from %s: %v", n.name, sc.Err())
	return nil
}

// TestAggAgentCertificateCannotForward: a certificate the cluster CA
// issued to an agent whose name is a node's ("agg-1": agent and node
// names are chosen by different people) forwarded batches under any
// agent's name in the first release, since forwarding checked only that
// the name is a member. Forwarding now needs a node certificate, which
// agents cannot hold: the forged batch is refused and never counted.
func TestAggAgentCertificateCannotForward(t *testing.T) {
	e := aggNewEnv(t, influxtest.Options{}, []string{"legit"}, []string{"agg-1"})
	n := e.aggStart("agg-1", aggNodeOptions{})
	ca, err := pki.LoadCA(filepath.Join(e.certs, "ca.pem"), filepath.Join(e.certs, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.IssueClient("agg-1", time.Hour) // an agent certificate: client only, no node policy
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, err := kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agg-1.pem"), kp.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agg-1-key.pem"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	tlsConf, err := pki.ClientTLS(pki.Files{CA: filepath.Join(e.certs, "ca.pem"), Cert: filepath.Join(dir, "agg-1.pem"), Key: filepath.Join(dir, "agg-1-key.pem")},
		"localhost", wire.ALPNForward)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := wire.Dial(ctx, n.quic, tlsConf, wire.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	minute := time.Now().Truncate(time.Minute).Unix()
	truth := aggWithLegit(t, e, n, "legit", "legit", func() {
		forged := &wire.Batch{Version: wire.ProtocolVersion, Agent: "legit", Region: "eu", Seq: 1,
			Contributions: []wire.Contribution{aggContribution("forged", minute, 1, 1000)}}
		ack, err := c.Send(ctx, forged)
		if err != nil || ack.Status != wire.AckRejected {
			t.Errorf("a forward with an agent certificate answered %+v, %v; want rejected", ack, err)
		}
	})
	e.aggWaitStored(map[string]uint64{"legit": truth}, 60*time.Second)
	got, err := e.aggStored(ctx)
	if err != nil || got["forged"] != 0 {
		t.Fatalf("stored %v (%v): the forged batch was counted", got, err)
	}
}

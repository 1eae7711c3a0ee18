package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// aggLongDuration is how long TestAggMixedAttacksLong attacks:
// TALLY_ATTACK_DURATION, default 3 minutes.
func aggLongDuration(t *testing.T) time.Duration {
	if s := os.Getenv("TALLY_ATTACK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("TALLY_ATTACK_DURATION: %v", err)
		}
		return d
	}
	return 3 * time.Minute
}

// TestAggMixedAttacksLong (make attack, TALLY_ATTACK=long): a three-node
// cluster takes, for several minutes and all at once, legitimate traffic
// from three agents to every node and every attack of this suite in
// rounds: oversized contribution points, minutes beyond the retention
// policy, late data a week and a year old, forged live updates by UDP,
// forwards with an agent certificate, and connection and stream floods.
// At the end the retention policy is extended and each node's quarantine
// replayed; then every campaign holds exactly its truth.
func TestAggMixedAttacksLong(t *testing.T) {
	if os.Getenv("TALLY_ATTACK") != "long" {
		t.Skip("the long mixed run is make attack (TALLY_ATTACK=long)")
	}
	duration := aggLongDuration(t)
	agents := []string{"legit-1", "legit-2", "legit-3", "attacker"}
	e := aggNewEnv(t, influxtest.Options{}, agents, []string{"agg-1", "agg-2", "agg-3"})
	ctx, cancel := context.WithTimeout(context.Background(), duration+10*time.Minute)
	defer cancel()
	if err := e.influx.CreateRetentionPolicy(ctx, e.db, "day", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	e.bucket = e.db + "/day"
	var nodes []*aggNode
	for _, name := range []string{"agg-1", "agg-2", "agg-3"} {
		nodes = append(nodes, e.aggStart(name, aggNodeOptions{Cluster: true}))
	}
	for _, n := range nodes {
		aggWaitMembers(t, n, 3)
	}

	truth := map[string]uint64{}
	var truthMu sync.Mutex
	addTruth := func(c string, k uint64) { truthMu.Lock(); truth[c] += k; truthMu.Unlock() }
	attackCtx, stop := context.WithTimeout(ctx, duration)
	defer stop()
	var wg sync.WaitGroup
	var legits []*aggLegit
	for i, a := range agents[:3] {
		for j, n := range nodes {
			l := e.aggLegit(a, n, fmt.Sprintf("legit-%d-%d", i, j))
			legits = append(legits, l)
			wg.Go(func() {
				if err := l.run(attackCtx, 200*time.Millisecond); err != nil {
					t.Error(err)
				}
			})
		}
	}

	attacker := map[string]*wire.Client{}
	for _, n := range nodes {
		attacker[n.name] = e.aggClient("attacker", n, wire.ALPN)
	}
	ca, err := pki.LoadCA(filepath.Join(e.certs, "ca.pem"), filepath.Join(e.certs, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	impostorDir := t.TempDir()
	kp, err := ca.IssueClient("agg-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := kp.KeyPEM()
	_ = os.WriteFile(filepath.Join(impostorDir, "i.pem"), kp.CertPEM(), 0o600)
	_ = os.WriteFile(filepath.Join(impostorDir, "i-key.pem"), key, 0o600)
	impostorTLS, err := pki.ClientTLS(pki.Files{CA: filepath.Join(e.certs, "ca.pem"), Cert: filepath.Join(impostorDir, "i.pem"),
		Key: filepath.Join(impostorDir, "i-key.pem")}, "localhost", wire.ALPNForward)
	if err != nil {
		t.Fatal(err)
	}
	floodTLS, err := pki.ClientTLS(pki.DevFiles(e.certs, "attacker"), "localhost", wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}

	send := func(n *aggNode, b *wire.Batch) {
		for attackCtx.Err() == nil {
			sctx, cancel := context.WithTimeout(attackCtx, 30*time.Second)
			ack, err := attacker[n.name].Send(sctx, b)
			cancel()
			if err == nil && ack.Status == wire.AckOK {
				for _, c := range b.Contributions {
					addTruth(c.Series.Campaign, c.State.Count)
				}
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	var seq, cid uint64 = 0, 1 << 50
	for round := 0; attackCtx.Err() == nil; round++ {
		n := nodes[round%3]
		now := time.Now().Truncate(time.Minute).Unix()
		seq++
		switch round % 6 {
		case 0: // a series-minute over the field limit: 400 imported rows
			b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "attacker", Region: "eu", Seq: seq}
			for range 400 {
				cid++
				b.Contributions = append(b.Contributions, aggContribution(fmt.Sprintf("rows-%d", round), now, 3<<62|cid, 1))
			}
			send(n, b)
		case 1: // minutes beyond the retention policy, and a week-old one
			b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "attacker", Region: "eu", Seq: seq}
			cid++
			b.Contributions = append(b.Contributions, aggContribution("old", now-int64(3*24*3600)-int64(round*60), cid, 2))
			cid++
			b.Contributions = append(b.Contributions, aggContribution("late", now-int64(20*3600)-int64(round*60), cid, 3))
			send(n, b)
		case 2: // forged live updates
			body, _ := msgpack.Marshal(struct {
				Kind    uint8         `msgpack:"k"`
				Updates []live.Update `msgpack:"u"`
			}{1, []live.Update{{Campaign: "forged", Minute: now, KPIs: kpi.KPIs{Clicks: 1_000_000}}}})
			if c, err := net.Dial("udp", n.gossip); err == nil {
				_, _ = c.Write(append([]byte{8}, body...))
				c.Close()
			}
		case 3: // a forward with an agent certificate
			if c, err := wire.Dial(attackCtx, n.quic, impostorTLS, wire.ClientConfig{}); err == nil {
				cid++
				ack, err := c.Send(attackCtx, &wire.Batch{Version: wire.ProtocolVersion, Agent: "legit-1", Region: "eu", Seq: seq,
					Contributions: []wire.Contribution{aggContribution("forged", now, cid, 1000)}})
				if err == nil && ack.Status == wire.AckOK {
					t.Error("a forward with an agent certificate was acknowledged")
				}
				c.Close()
			}
		case 4: // a flood of connections and stalled streams, for 5 s
			fctx, fcancel := context.WithTimeout(attackCtx, 5*time.Second)
			var fwg sync.WaitGroup
			for range 12 {
				c, err := quic.DialAddr(fctx, n.quic, floodTLS, &quic.Config{MaxIdleTimeout: 30 * time.Second})
				if err != nil {
					continue
				}
				for range 20 {
					fwg.Go(func() {
						str, err := c.OpenStreamSync(fctx)
						if err != nil {
							return
						}
						var hdr [wire.HeaderSize]byte
						copy(hdr[:], wire.Magic)
						hdr[2], hdr[3] = wire.ProtocolVersion, byte(wire.KindBatch)
						binary.BigEndian.PutUint32(hdr[5:], 1<<20)
						context.AfterFunc(fctx, func() { str.CancelWrite(0); str.CancelRead(0) })
						_, _ = str.Write(hdr[:])
						_, _ = str.Write(make([]byte, 512<<10))
						<-fctx.Done()
					})
				}
				context.AfterFunc(fctx, func() { _ = c.CloseWithError(0, "") })
			}
			fwg.Wait()
			fcancel()
		case 5: // ten dense HyperLogLogs in one series-minute
			b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "attacker", Region: "eu", Seq: seq}
			for epoch := range 10 {
				st := sketch.State{Count: 10}
				for v := range 20000 {
					st.AddVisitor(uint64(round)<<40 | uint64(epoch)<<32 | uint64(v) + 1)
				}
				enc, _ := st.Encode()
				cid++
				b.Contributions = append(b.Contributions, wire.Contribution{Series: sketch.Series{Campaign: "dense", Type: "pageview", Region: "eu"},
					Minute: now, CID: cid, Version: 1, State: enc})
			}
			send(n, b)
		}
		select {
		case <-attackCtx.Done():
		case <-time.After(time.Second):
		}
	}
	wg.Wait()
	for _, l := range legits {
		addTruth(l.campaign, l.acked())
	}

	// The operator keeps a week; every node replays its quarantine.
	if err := e.influx.Exec(ctx, fmt.Sprintf("ALTER RETENTION POLICY day ON %s DURATION 168h", e.db)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the last rounds' refusals reach the quarantines
	for _, n := range nodes {
		out, err := exec.CommandContext(ctx, filepath.Join(aggBinDir, "tally-aggregator"), "quarantine", "replay", "-config", n.cfgPath).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: quarantine replay: %v\n%s", n.name, err, out)
		}
		t.Logf("%s: %s", n.name, strings.TrimSpace(string(out)))
	}
	truthMu.Lock()
	want := map[string]uint64{}
	for c, n := range truth {
		if strings.HasPrefix(c, "rows-") {
			want["rows"] += n
		} else {
			want[c] = n
		}
	}
	truthMu.Unlock()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		got, err := e.aggStored(ctx)
		if err == nil {
			for c, n := range got {
				if strings.HasPrefix(c, "rows-") {
					got["rows"] += n
					delete(got, c)
				}
			}
		}
		ok := err == nil && got["forged"] == 0
		for c, n := range want {
			if got[c] != n {
				ok = false
			}
		}
		if ok {
			t.Logf("after %s of mixed attacks every campaign is exact: %v", duration, want)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored %v (%v), want %v", got, err, want)
		}
		time.Sleep(time.Second)
	}
}

package ship

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// liveNode is a real QUIC server that takes live counters and keeps the
// latest of each campaign-minute.
type liveNode struct {
	srv    *wire.Server
	mu     sync.Mutex
	latest map[rollup.CampaignMinute]wire.LiveCounters
}

func (n *liveNode) HandleBatch(context.Context, wire.Peer, *wire.Batch) wire.Ack {
	return wire.Ack{Status: wire.AckOK}
}

func (n *liveNode) HandleLive(_ context.Context, _ wire.Peer, m *wire.Live) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range m.Records {
		n.latest[rollup.CampaignMinute{Campaign: r.Campaign, Minute: r.Minute}] = r.Counters
	}
}

func (n *liveNode) clicks(cm rollup.CampaignMinute) (uint64, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.latest[cm]
	return c.Clicks, ok
}

func startLiveNode(t *testing.T, dir string) *liveNode {
	t.Helper()
	tlsConf, err := pki.ServerTLS(pki.DevFiles(dir, "agg1"), wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	n := &liveNode{latest: map[rollup.CampaignMinute]wire.LiveCounters{}}
	n.srv, err = wire.NewServer(wire.ServerConfig{Addr: "127.0.0.1:0", TLS: tlsConf, Handler: n})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		n.srv.Close()
		if err := <-served; !errors.Is(err, wire.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return n
}

// fixedSource hands out the records a test sets.
type fixedSource struct {
	mu      sync.Mutex
	changed []wire.LiveRecord
}

func (s *fixedSource) set(rs ...wire.LiveRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changed = append(s.changed, rs...)
}

func (s *fixedSource) TakeLive(changed []wire.LiveRecord, retired []rollup.CampaignMinute) ([]wire.LiveRecord, []rollup.CampaignMinute) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed = append(changed, s.changed...)
	s.changed = s.changed[:0]
	return changed, retired
}

// TestLiveSenderRoutesToOwners: over real QUIC, before the membership is
// known live counters go to every configured node; once an ack has told
// it, each campaign's go to its owner only.
func TestLiveSenderRoutesToOwners(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.GenerateDev(dir, pki.DevOptions{Agents: []string{"agent1"}, Aggregators: []string{"agg1"}}); err != nil {
		t.Fatal(err)
	}
	n1, n2 := startLiveNode(t, dir), startLiveNode(t, dir)
	addr1, addr2 := n1.srv.Addr().String(), n2.srv.Addr().String()
	clientTLS, err := pki.ClientTLS(pki.DevFiles(dir, "agent1"), "localhost", wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := wire.NewEndpoint("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	src := &fixedSource{}
	members := &Membership{}
	s := NewLiveSender(LiveConfig{Interval: 50 * time.Millisecond, Epoch: 3, Flush: time.Minute, Source: src,
		Dial: func(ctx context.Context, addr string) (*wire.Client, error) {
			return wire.Dial(ctx, addr, clientTLS, wire.ClientConfig{Endpoint: ep, Compress: true})
		},
		Primary: func() string { return addr1 }, Membership: members, RouteToOwner: true, Addrs: []string{addr1, addr2},
		Logger: slog.New(slog.DiscardHandler)}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	minute := time.Now().Truncate(time.Minute).Unix()
	members.set([]wire.Member{{Name: "n1", Addr: addr1}, {Name: "n2", Addr: addr2}})
	var on1, on2 string
	for i := 0; on1 == "" || on2 == ""; i++ {
		c := "camp-" + string(rune('a'+i))
		if members.Owner(c) == "n1" && on1 == "" {
			on1 = c
		} else if members.Owner(c) == "n2" && on2 == "" {
			on2 = c
		}
	}
	members.members.Store(nil) // not known yet
	cm1, cm2 := rollup.CampaignMinute{Campaign: on1, Minute: minute}, rollup.CampaignMinute{Campaign: on2, Minute: minute}
	waitClicks := func(n *liveNode, cm rollup.CampaignMinute, want uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if got, _ := n.clicks(cm); got == want {
				return
			}
			if time.Now().After(deadline) {
				got, _ := n.clicks(cm)
				t.Fatalf("%v: node holds %d clicks, want %d", cm, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	src.set(wire.LiveRecord{Campaign: on1, Minute: minute, Counters: wire.LiveCounters{Clicks: 1}},
		wire.LiveRecord{Campaign: on2, Minute: minute, Counters: wire.LiveCounters{Clicks: 2}})
	for _, n := range []*liveNode{n1, n2} {
		waitClicks(n, cm1, 1)
		waitClicks(n, cm2, 2)
	}

	// An ack tells the membership: from now on, owners only.
	members.set([]wire.Member{{Name: "n1", Addr: addr1}, {Name: "n2", Addr: addr2}})
	src.set(wire.LiveRecord{Campaign: on1, Minute: minute, Counters: wire.LiveCounters{Clicks: 5}},
		wire.LiveRecord{Campaign: on2, Minute: minute, Counters: wire.LiveCounters{Clicks: 7}})
	waitClicks(n1, cm1, 5)
	waitClicks(n2, cm2, 7)
	src.set(wire.LiveRecord{Campaign: on1, Minute: minute, Counters: wire.LiveCounters{Clicks: 6}})
	waitClicks(n1, cm1, 6)
	if got, _ := n2.clicks(cm1); got != 1 {
		t.Fatalf("n2 got %s's counters after the membership said n1 owns it (%d clicks)", on1, got)
	}
	if got, _ := n1.clicks(cm2); got != 2 {
		t.Fatalf("n1 got %s's counters after the membership said n2 owns it (%d clicks)", on2, got)
	}
}

package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// freePort returns a loopback port free for both TCP and UDP.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

type node struct {
	c    *Cluster
	mu   sync.Mutex
	msgs [][]byte
}

func (n *node) received() [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.msgs)
}

func startNode(t *testing.T, name string, port int, seeds []string, key []byte) *node {
	t.Helper()
	n := &node{}
	c, err := Start(Config{Name: name, Bind: fmt.Sprintf("127.0.0.1:%d", port), Seeds: seeds, SecretKey: key,
		Profile: "local", ProbeInterval: 200 * time.Millisecond, JoinRetry: 200 * time.Millisecond},
		Meta{QUIC: fmt.Sprintf("127.0.0.1:%d", port+1), HTTP: fmt.Sprintf("127.0.0.1:%d", port+2)},
		slog.New(slog.DiscardHandler), func(b []byte) {
			n.mu.Lock()
			n.msgs = append(n.msgs, b)
			n.mu.Unlock()
		})
	if err != nil {
		t.Fatal(err)
	}
	n.c = c
	t.Cleanup(func() { c.Close() })
	return n
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func memberNames(c *Cluster) []string {
	var out []string
	for _, m := range c.Members() {
		out = append(out, m.Name)
	}
	return out
}

func TestThreeNodesAgreeOnOwnersAndFollowChanges(t *testing.T) {
	key := []byte("0123456789abcdef")
	p1, p2, p3 := freePort(t), freePort(t), freePort(t)
	seeds := []string{fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("localhost:%d", p2)}
	nodes := []*node{startNode(t, "agg-1", p1, seeds, key), startNode(t, "agg-2", p2, seeds, key), startNode(t, "agg-3", p3, seeds, key)}
	all := []string{"agg-1", "agg-2", "agg-3"}
	for _, n := range nodes {
		waitFor(t, n.c.Name()+" to see three members", 10*time.Second, func() bool { return slices.Equal(memberNames(n.c), all) })
	}
	// Every node sees the others' metadata and computes the same owners.
	v := nodes[0].c.View()
	for _, n := range nodes[1:] {
		w := n.c.View()
		if w.Epoch != v.Epoch || !slices.Equal(w.Members, v.Members) {
			t.Fatalf("views differ: %+v vs %+v", w, v)
		}
	}
	for _, m := range v.Members {
		if m.Addr == "" {
			t.Fatalf("member %s has no QUIC address", m.Name)
		}
	}
	owned := map[string]int{}
	for i := range 300 {
		owned[v.Owner(fmt.Sprint("c", i)).Name]++
	}
	if len(owned) != 3 {
		t.Fatalf("campaigns spread over %v", owned)
	}

	// Messages reach every other member.
	changes := nodes[0].c.Changes()
	if err := nodes[1].c.Broadcast([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		waitFor(t, "broadcast at "+nodes[i].c.Name(), 5*time.Second, func() bool { return len(nodes[i].received()) == 1 })
		if string(nodes[i].received()[0]) != "hello" {
			t.Fatalf("got %q", nodes[i].received()[0])
		}
	}
	if len(nodes[1].received()) != 0 {
		t.Fatal("broadcast came back to its sender")
	}

	// A graceful leave is seen at once; a crash after failure detection.
	start := time.Now()
	if err := nodes[2].c.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "agg-3's leave", 5*time.Second, func() bool { return slices.Equal(memberNames(nodes[0].c), all[:2]) })
	t.Logf("graceful leave seen after %s", time.Since(start))
	select {
	case <-changes:
	default:
		t.Fatal("no change notification after a leave")
	}
	if nodes[0].c.Epoch() == v.Epoch {
		t.Fatal("epoch unchanged after a leave")
	}
	start = time.Now()
	nodes[1].c.Close()
	waitFor(t, "agg-2's failure to be detected", 20*time.Second, func() bool { return slices.Equal(memberNames(nodes[0].c), all[:1]) })
	t.Logf("crash detected after %s", time.Since(start))
	if o := nodes[0].c.View().Owner("anything"); o.Name != "agg-1" {
		t.Fatalf("sole survivor does not own everything: %v", o)
	}

	// The crashed node comes back under its name and is seen again.
	back := startNode(t, "agg-2", p2, seeds, key)
	waitFor(t, "agg-2 to rejoin", 15*time.Second, func() bool {
		return slices.Equal(memberNames(nodes[0].c), all[:2]) && slices.Equal(memberNames(back.c), all[:2])
	})
}

func TestWrongKeyCannotJoin(t *testing.T) {
	p1, p2 := freePort(t), freePort(t)
	a := startNode(t, "agg-1", p1, nil, []byte("0123456789abcdef"))
	b := startNode(t, "agg-2", p2, []string{fmt.Sprintf("127.0.0.1:%d", p1)}, []byte("fedcba9876543210"))
	time.Sleep(1500 * time.Millisecond) // several join attempts
	if len(a.c.Members()) != 1 || len(b.c.Members()) != 1 {
		t.Fatalf("nodes with different keys formed a cluster: %v / %v", memberNames(a.c), memberNames(b.c))
	}
}

func TestSingleNodeOwnsEverything(t *testing.T) {
	c, err := Start(Config{Name: "solo"}, Meta{QUIC: "127.0.0.1:7400"}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if o := c.View().Owner("x"); o.Name != "solo" || o.Addr != "127.0.0.1:7400" {
		t.Fatalf("owner %v", o)
	}
	if c.Epoch() == 0 {
		t.Fatal("zero epoch")
	}
	if err := c.Broadcast([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Name: "a", Bind: "127.0.0.1"},
		{Name: "a", Bind: "127.0.0.1:0", Profile: "moon"},
		{Name: "a", Bind: "127.0.0.1:0", SecretKey: []byte("short")},
	} {
		if c, err := Start(cfg, Meta{}, slog.New(slog.DiscardHandler), nil); err == nil {
			c.Close()
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// TestCloseIsIdempotentAndConcurrent: Close may be called any number of
// times, at once, and after Leave; every call returns once gossip has
// stopped.
func TestCloseIsIdempotentAndConcurrent(t *testing.T) {
	n := startNode(t, "solo", freePort(t), nil, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := n.c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := n.c.Leave(time.Second); err != nil {
		t.Errorf("Leave after Close: %v", err)
	}
}

// TestGossipBeyondLoopbackNeedsAKey: a node whose gossip is reachable
// from the network refuses to start without a key.
func TestGossipBeyondLoopbackNeedsAKey(t *testing.T) {
	for _, tc := range []struct {
		bind, advertise string
		key             []byte
		ok              bool
	}{
		{"127.0.0.1:7946", "", nil, true},
		{"[::1]:7946", "", nil, true},
		{"localhost:7946", "", nil, true},
		{"0.0.0.0:7946", "", nil, false},
		{"10.1.2.3:7946", "", nil, false},
		{"127.0.0.1:7946", "203.0.113.9:7946", nil, false},
		{"gossip.example:7946", "", nil, false},
		{"0.0.0.0:7946", "", []byte("0123456789abcdef"), true},
	} {
		err := CheckGossipKey(tc.bind, tc.advertise, tc.key)
		if (err == nil) != tc.ok {
			t.Fatalf("bind %s advertise %q key %v: %v", tc.bind, tc.advertise, tc.key != nil, err)
		}
	}
	_, err := Start(Config{Name: "open", Bind: "0.0.0.0:0"}, Meta{}, slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "cluster.secret_key") {
		t.Fatalf("Start on 0.0.0.0 without a key: %v", err)
	}
}

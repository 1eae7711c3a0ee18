package archive

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/cluster"
	"github.com/tally-edge/tally/sketch"
)

func TestSettledDays(t *testing.T) {
	cfg := DefaultConfig() // settle 2h, 8 days back
	days := SettledDays(time.Date(2026, 3, 10, 1, 59, 0, 0, time.UTC), cfg)
	if len(days) != 8 || dayString(days[7]) != "2026-03-08" || dayString(days[0]) != "2026-03-01" {
		t.Fatalf("at 01:59: %v", days)
	}
	// At 02:00 the 9th has been over for two hours: it is settled.
	if days := SettledDays(time.Date(2026, 3, 10, 2, 0, 0, 0, time.UTC), cfg); dayString(days[7]) != "2026-03-09" {
		t.Fatalf("at 02:00: %v", days)
	}
}

// countingStore counts the manifests written per day.
type countingStore struct {
	Store
	mu        sync.Mutex
	manifests map[string][]string // day key → nodes (from the writer's context)
}

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasSuffix(key, "manifest.json") {
		c.mu.Lock()
		c.manifests[key] = append(c.manifests[key], fmt.Sprint(ctx.Value(nodeKey{})))
		c.mu.Unlock()
	}
	return c.Store.Put(ctx, key, r, size)
}

type nodeKey struct{}

// TestScheduledExportOnACluster: three members of a real memberlist
// cluster each run a scheduler over the same storage and archive, at
// once. Every settled day is exported exactly once, by its owner in
// the members' common view; the days spread over the members; a second
// pass exports nothing; a late minute is exported again by its day's
// owner only.
func TestScheduledExportOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a memberlist cluster")
	}
	now := day1.Add(10*24*time.Hour + 5*time.Hour)
	src := newMem()
	for d := range 10 {
		fill(src, uint64(21+d), day1.Add(time.Duration(d)*24*time.Hour+time.Hour), 2*time.Hour, "a", "b")
	}
	base, _ := OpenDir(t.TempDir())
	store := &countingStore{Store: base, manifests: map[string][]string{}}
	cfg := DefaultConfig()
	cfg.DaysBack = 6

	names := []string{"agg-1", "agg-2", "agg-3"}
	var members []*cluster.Cluster
	var seeds []string
	for _, name := range names {
		port := freePort(t)
		seeds = append(seeds, fmt.Sprintf("127.0.0.1:%d", port))
		c, err := cluster.Start(cluster.Config{Name: name, Bind: seeds[len(seeds)-1], Seeds: seeds[:1], Profile: "local",
			ProbeInterval: 200 * time.Millisecond, JoinRetry: 200 * time.Millisecond},
			cluster.Meta{QUIC: "127.0.0.1:1", HTTP: "127.0.0.1:2"}, slog.New(slog.DiscardHandler), func([]byte) {})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		members = append(members, c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range members {
		for len(c.Members()) != 3 {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d members", c.Name(), len(c.Members()))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	scheds := make([]*Scheduler, len(members))
	for i, c := range members {
		a := newTestArchiver(t, src, nil, store)
		a.o.Node, a.o.Now = c.Name(), func() time.Time { return now }
		scheds[i] = NewScheduler(a, cfg, func(key string) bool { return c.View().Owner(key).Name == c.Name() })
	}
	pass := func() []int {
		var wg sync.WaitGroup
		n := make([]int, len(scheds))
		for i, s := range scheds {
			wg.Go(func() { n[i] = s.Pass(context.WithValue(ctx, nodeKey{}, names[i])) })
		}
		wg.Wait()
		return n
	}
	n := pass()
	if n[0]+n[1]+n[2] != cfg.DaysBack {
		t.Fatalf("exports per node %v, want %d days in all", n, cfg.DaysBack)
	}
	if slices.Contains(n, cfg.DaysBack) {
		t.Fatalf("one node exported every day: %v", n)
	}
	for _, d := range SettledDays(now, cfg) {
		writers := store.manifests[manifestKey(dayString(d))]
		owner := members[0].View().Owner(DayKey(dayString(d))).Name
		if len(writers) != 1 || writers[0] != owner {
			t.Fatalf("%s: manifests written by %v, owner %s", dayString(d), writers, owner)
		}
	}
	if n := pass(); n[0]+n[1]+n[2] != 0 {
		t.Fatalf("second pass exported %v", n)
	}
	// A late minute for one settled day: only that day, by its owner.
	late := SettledDays(now, cfg)[2]
	src.set(keyOf("a", "click", late.Add(5*time.Hour)), &sketch.State{Count: 3})
	if n := pass(); n[0]+n[1]+n[2] != 1 {
		t.Fatalf("after a late minute: %v", n)
	}
	if w := store.manifests[manifestKey(dayString(late))]; len(w) != 2 || w[1] != w[0] {
		t.Fatalf("late day's manifests by %v", w)
	}
	var exported int64
	for _, s := range scheds {
		exported += s.Stats().Exported
	}
	if exported != int64(cfg.DaysBack)+1 {
		t.Fatalf("stats count %d exports", exported)
	}
}

// freePort returns a loopback port free for both TCP and UDP (gossip).
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

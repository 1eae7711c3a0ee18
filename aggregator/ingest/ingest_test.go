package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// fakeStorage records writes.
type fakeStorage struct {
	mu      sync.Mutex
	minutes []sketch.Minute
	stored  []influx.ContribPoint
}

func (s *fakeStorage) Write(_ context.Context, ms []sketch.Minute, cs []influx.ContribPoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.minutes = append(s.minutes, ms...)
	s.stored = append(s.stored, cs...)
	return nil
}

func (s *fakeStorage) LoadContributions(context.Context, time.Time, time.Time) ([]influx.ContribPoint, error) {
	return nil, nil
}

func (s *fakeStorage) LoadContributionsFunc(_ context.Context, _, _ time.Time, keep func(sketch.Series) bool) ([]influx.ContribPoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []influx.ContribPoint
	for _, p := range s.stored {
		if keep(p.Series) {
			out = append(out, p)
		}
	}
	return out, nil
}

// fakeRouting owns campaigns named "mine-*"; the rest belong to node b.
type fakeRouting struct {
	mu        sync.Mutex
	fail      bool
	forwarded []wire.Contribution
}

func (r *fakeRouting) Owner(campaign string) (string, string, bool) {
	if strings.HasPrefix(campaign, "mine-") {
		return "a", "127.0.0.1:1", true
	}
	return "b", "127.0.0.1:2", false
}

func (r *fakeRouting) IsMember(name string) bool { return name == "a" || name == "b" }

func (r *fakeRouting) Forward(_ context.Context, addr, agent string, cs []wire.Contribution) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("owner unreachable")
	}
	if addr != "127.0.0.1:2" || agent != "edge" {
		return errors.New("forwarded to the wrong place")
	}
	r.forwarded = append(r.forwarded, cs...)
	return nil
}

func (r *fakeRouting) View() ([]wire.Member, uint64) {
	return []wire.Member{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b", Addr: "127.0.0.1:2"}}, 42
}

type recorder struct {
	mu      sync.Mutex
	updates []live.Update
}

func (r *recorder) Publish(us []live.Update) {
	r.mu.Lock()
	r.updates = append(r.updates, us...)
	r.mu.Unlock()
}

func contribution(t *testing.T, campaign string, count uint64) wire.Contribution {
	t.Helper()
	st := sketch.State{Count: count}
	enc, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return wire.Contribution{Series: sketch.Series{Campaign: campaign, Type: "click", Region: "eu"}, Minute: 1_800_000_000 - 1_800_000_000%60,
		CID: 1 << 32, Version: 1, State: enc}
}

func TestOwnedMinutesAreWrittenOthersHandedOver(t *testing.T) {
	store, route, pub := &fakeStorage{}, &fakeRouting{fail: true}, &recorder{}
	p, err := Open(Config{Dir: t.TempDir(), Node: "a", Routing: route, Publisher: pub, RequireAgentCN: true},
		store, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if err := p.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	batch := &wire.Batch{Version: wire.ProtocolVersion, Agent: "edge", Region: "eu", Seq: 1,
		Contributions: []wire.Contribution{contribution(t, "mine-1", 5), contribution(t, "theirs-1", 7)}}
	ack := p.HandleBatch(ctx, wire.Peer{CommonName: "edge", ALPN: wire.ALPN}, batch)
	if ack.Status != wire.AckOK || ack.Epoch != 42 || len(ack.Members) != 2 {
		t.Fatalf("ack %+v: want OK with the membership", ack)
	}

	// The owner is unreachable: the owned minute is written, the other is
	// kept (dirty, in the WAL) and the round reports the failure.
	if err := p.WriteOnce(ctx); err == nil {
		t.Fatal("WriteOnce succeeded although the hand-over failed")
	}
	if len(store.minutes) != 1 || store.minutes[0].Series.Campaign != "mine-1" || store.minutes[0].State.Count != 5 {
		t.Fatalf("written %+v; want only mine-1", store.minutes)
	}
	if store.stored[0].Node != "a" {
		t.Fatalf("contribution point written without the node: %+v", store.stored[0])
	}
	if p.wal.Size() == 0 {
		t.Fatal("WAL released while a hand-over was outstanding")
	}
	if p.store.Stats().DirtyMinutes != 1 {
		t.Fatalf("%d dirty minutes, want the one not handed over", p.store.Stats().DirtyMinutes)
	}
	if len(pub.updates) != 1 || pub.updates[0].Campaign != "mine-1" || pub.updates[0].KPIs.Clicks != 5 {
		t.Fatalf("published %+v; want mine-1 with 5 clicks", pub.updates)
	}

	// Once the owner answers, the rest goes to it, never to storage.
	route.mu.Lock()
	route.fail = false
	route.mu.Unlock()
	if err := p.WriteOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if len(route.forwarded) != 1 || route.forwarded[0].Series.Campaign != "theirs-1" || route.forwarded[0].State.Count != 7 {
		t.Fatalf("forwarded %+v", route.forwarded)
	}
	for _, m := range store.minutes {
		if m.Series.Campaign == "theirs-1" {
			t.Fatal("a merged point of a campaign owned elsewhere was written")
		}
	}
	if p.store.Stats().DirtyMinutes != 0 {
		t.Fatal("minutes still dirty after a successful round")
	}
	if n := p.DropForeign(); n != 1 {
		t.Fatalf("DropForeign dropped %d minutes, want 1", n)
	}

	// Forwarding is for members only; members may forward any agent's.
	fwd := &wire.Batch{Version: wire.ProtocolVersion, Agent: "someone", Region: "b", Seq: 2,
		Contributions: []wire.Contribution{contribution(t, "mine-2", 3)}}
	if ack := p.HandleBatch(ctx, wire.Peer{CommonName: "edge", ALPN: wire.ALPNForward}, fwd); ack.Status != wire.AckRejected {
		t.Fatalf("forward from a non-member answered %+v", ack)
	}
	if ack := p.HandleBatch(ctx, wire.Peer{CommonName: "b", ALPN: wire.ALPNForward}, fwd); ack.Status != wire.AckOK {
		t.Fatalf("forward from member b answered %+v", ack)
	}

	// TakeOver rebuilds gained campaigns from storage and rewrites them.
	before := len(store.minutes)
	n, err := p.TakeOver(ctx, func(c string) bool { return c == "mine-1" })
	if err != nil || n != 1 {
		t.Fatalf("TakeOver = %d, %v; want the 1 stored point of mine-1", n, err)
	}
	if err := p.WriteOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var rewritten bool
	for _, m := range store.minutes[before:] {
		if m.Series.Campaign == "mine-1" && m.State.Count == 5 {
			rewritten = true
		}
	}
	if !rewritten {
		t.Fatal("taken-over minute was not rewritten with its complete count")
	}
}

package forward

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// owner is a node that records what it is handed, answering each batch
// with status(batch).
type owner struct {
	mu       sync.Mutex
	cids     map[uint64]int
	batches  int
	now      atomic.Int64
	peak     atomic.Int64
	status   atomic.Pointer[func(b *wire.Batch) wire.AckStatus]
	maxBatch int
}

func (o *owner) HandleBatch(_ context.Context, p wire.Peer, b *wire.Batch) wire.Ack {
	n := o.now.Add(1)
	defer o.now.Add(-1)
	for {
		pk := o.peak.Load()
		if n <= pk || o.peak.CompareAndSwap(pk, n) {
			break
		}
	}
	// A slow fsync: batches overlap if they are pipelined. Until two have
	// overlapped, a batch waits (up to 5 s) for another to arrive, so a
	// loaded machine cannot hide the pipelining nor fake it.
	for deadline := time.Now().Add(5 * time.Second); o.peak.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	st := wire.AckOK
	if f := o.status.Load(); f != nil {
		st = (*f)(b)
	}
	if st == wire.AckOK {
		o.mu.Lock()
		o.batches++
		o.maxBatch = max(o.maxBatch, len(b.Contributions))
		for _, c := range b.Contributions {
			o.cids[c.CID]++
		}
		o.mu.Unlock()
	}
	ack := wire.Ack{Status: st}
	if st == wire.AckBusy {
		ack.RetryAfterMillis = 10
	}
	if p.ALPN != wire.ALPNForward || p.CommonName != "node-a" {
		ack = wire.Ack{Status: wire.AckRejected, Reason: "not a forward from node-a"}
	}
	return ack
}

type env struct {
	fwd  *Forwarder
	addr string
	own  *owner
	srv  *wire.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.GenerateDev(dir, pki.DevOptions{Aggregators: []string{"node-a", "node-b"}}); err != nil {
		t.Fatal(err)
	}
	serverTLS, err := pki.ServerTLS(pki.DevFiles(dir, "node-b"), wire.ALPN, wire.ALPNForward)
	if err != nil {
		t.Fatal(err)
	}
	o := &owner{cids: map[uint64]int{}}
	srv, err := wire.NewServer(wire.ServerConfig{Addr: "127.0.0.1:0", TLS: serverTLS, Handler: o})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(context.Background()) }()
	t.Cleanup(func() { srv.Close(); <-done })
	clientTLS, err := pki.ClientTLS(pki.DevFiles(dir, "node-a"), "", wire.ALPNForward)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := wire.NewEndpoint("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := New("node-a", ep, clientTLS, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { f.Close(); ep.Close() })
	return &env{fwd: f, addr: srv.Addr().String(), own: o, srv: srv}
}

func contributions(n int, hllBytes int) []wire.Contribution {
	cs := make([]wire.Contribution, n)
	for i := range cs {
		cs[i] = wire.Contribution{Series: sketch.Series{Campaign: "c", Type: "click"}, Minute: 1_800_000_000 - 1_800_000_000%60,
			CID: uint64(i + 1), Version: 1, State: sketch.Encoded{Count: 1, HLL: make([]byte, hllBytes)}}
	}
	return cs
}

// TestForwardDeliversEveryContributionOnce: a large hand-over is cut into
// batches within the count and size bounds, sent a few at a time, and
// Forward returns only when the owner acknowledged every one.
func TestForwardDeliversEveryContributionOnce(t *testing.T) {
	e := newEnv(t)
	cs := contributions(10_000, 0)
	cs = append(cs, contributions(300, 16<<10)...) // dense sketches: cut by size
	for i := 10_000; i < len(cs); i++ {
		cs[i].CID = uint64(i + 1)
	}
	if err := e.fwd.Forward(context.Background(), e.addr, "edge", cs); err != nil {
		t.Fatal(err)
	}
	e.own.mu.Lock()
	defer e.own.mu.Unlock()
	if len(e.own.cids) != len(cs) {
		t.Fatalf("owner got %d distinct contributions, want %d", len(e.own.cids), len(cs))
	}
	for cid, n := range e.own.cids {
		if n != 1 {
			t.Fatalf("contribution %d delivered %d times", cid, n)
		}
	}
	if e.own.maxBatch > MaxContribsPerBatch || e.own.batches < 4 {
		t.Fatalf("%d batches, the largest of %d contributions", e.own.batches, e.own.maxBatch)
	}
	if p := e.own.peak.Load(); p > InFlight || p < 2 {
		t.Fatalf("at most %d batches in flight at once, want between 2 and %d", p, InFlight)
	}
}

// TestForwardFailsUnlessAcknowledged: a busy or rejected answer to any
// batch, or an unreachable owner, fails the hand-over (the writer keeps
// the minutes dirty and tries again).
func TestForwardFailsUnlessAcknowledged(t *testing.T) {
	e := newEnv(t)
	for _, st := range []wire.AckStatus{wire.AckBusy, wire.AckRejected} {
		var n atomic.Int64
		f := func(*wire.Batch) wire.AckStatus {
			if n.Add(1) == 2 {
				return st
			}
			return wire.AckOK
		}
		e.own.status.Store(&f)
		if err := e.fwd.Forward(context.Background(), e.addr, "edge", contributions(3*MaxContribsPerBatch, 0)); err == nil {
			t.Fatalf("Forward succeeded although a batch was answered %s", st)
		}
	}
	e.own.status.Store(nil)
	e.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.fwd.Forward(ctx, e.addr, "edge", contributions(10, 0)); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Forward to a stopped owner = %v, want an error", err)
	}
}

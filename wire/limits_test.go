package wire

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPeerConnectionsBounded: a peer that opens more connections than
// MaxConnsPerPeer loses its oldest (a restarted sender is never locked
// out); past MaxConns new connections are closed at once.
func TestPeerConnectionsBounded(t *testing.T) {
	p := newTestPKI(t)
	srv := startServer(t, p, okHandler, func(c *ServerConfig) { c.MaxConnsPerPeer = 2; c.MaxConns = 3 })
	tlsConf := p.clientTLS(t, "agent1", ALPN)
	var cs []*Client
	for range 3 {
		cs = append(cs, dialServer(t, srv, tlsConf, ClientConfig{}))
		// Every connection is admitted before the next one opens.
		n := len(cs)
		waitFor(t, "connection admitted", func() bool { return srv.Stats().Connections == uint64(n) })
	}
	select {
	case <-cs[0].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the peer's oldest connection stayed open beyond MaxConnsPerPeer")
	}
	ctx := context.Background()
	if ack, err := cs[2].Send(ctx, buildBatch(t, 1, 1)); err != nil || ack.Status != AckOK {
		t.Fatalf("newest connection: %v %+v", err, ack)
	}
	waitFor(t, "replacement counted", func() bool { return srv.Stats().ConnsReplaced == 1 })

	// The server holds 2 connections of agent1; one of agg1 fills it.
	node := dialServer(t, srv, p.clientTLS(t, "agg1", ALPN), ClientConfig{})
	waitFor(t, "node connection", func() bool { return srv.Stats().ActiveConnections == 3 })
	extra, err := Dial(ctx, srv.Addr().String(), p.clientTLS(t, "agg1", ALPN), ClientConfig{})
	if err == nil {
		defer extra.Close()
		select {
		case <-extra.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a connection beyond MaxConns stayed open")
		}
	}
	if st := srv.Stats(); st.ConnsRefused != 1 {
		t.Fatalf("ConnsRefused = %d, want 1", st.ConnsRefused)
	}
	if ack, err := node.Send(ctx, buildBatch(t, 1, 2)); err != nil || ack.Status != AckOK {
		t.Fatalf("admitted connection: %v %+v", err, ack)
	}
}

// blocking is a handler that holds every batch until released and
// records the most batches it held at once, and the payloads it got.
type blocking struct {
	release chan struct{}
	now     atomic.Int64
	peak    atomic.Int64
	mu      sync.Mutex
	payload [][]byte
}

func (h *blocking) HandleBatch(ctx context.Context, p Peer, b *Batch) Ack {
	return h.HandleBatchPayload(ctx, p, b, nil)
}

func (h *blocking) HandleBatchPayload(ctx context.Context, _ Peer, _ *Batch, payload []byte) Ack {
	n := h.now.Add(1)
	defer h.now.Add(-1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	h.mu.Lock()
	h.payload = append(h.payload, payload)
	h.mu.Unlock()
	select {
	case <-h.release:
	case <-ctx.Done():
		return Ack{Status: AckBusy, RetryAfterMillis: 100}
	}
	return Ack{Status: AckOK}
}

// TestPeerStreamsBounded: one peer's exchanges in progress over all its
// connections stay within MaxStreamsPerPeer; the others wait and are
// answered once slots free.
func TestPeerStreamsBounded(t *testing.T) {
	p := newTestPKI(t)
	h := &blocking{release: make(chan struct{})}
	srv := startServer(t, p, h, func(c *ServerConfig) { c.MaxStreamsPerPeer = 3 })
	tlsConf := p.clientTLS(t, "agent1", ALPN)
	clients := []*Client{dialServer(t, srv, tlsConf, ClientConfig{}), dialServer(t, srv, tlsConf, ClientConfig{})}
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i := range 8 {
		wg.Go(func() {
			ack, err := clients[i%2].Send(context.Background(), buildBatch(t, 1, uint64(i+1)))
			if err == nil && ack.Status == AckOK {
				ok.Add(1)
			}
		})
	}
	waitFor(t, "3 batches held", func() bool { return h.now.Load() == 3 })
	waitFor(t, "the others waiting", func() bool { return srv.Stats().StreamWaits >= 5 })
	if n := h.now.Load(); n != 3 {
		t.Fatalf("%d batches held at once, want MaxStreamsPerPeer = 3", n)
	}
	close(h.release)
	wg.Wait()
	if ok.Load() != 8 || h.peak.Load() != 3 {
		t.Fatalf("%d of 8 acked, at most %d at once; want 8 and 3", ok.Load(), h.peak.Load())
	}
}

// TestDecodeMemoryBounded: the payloads one peer's streams hold while
// they are read stay within MaxDecodeBytesPerPeer; a PayloadHandler gets
// each payload as sent.
func TestDecodeMemoryBounded(t *testing.T) {
	p := newTestPKI(t)
	h := &blocking{release: make(chan struct{})}
	const frame = 64 << 10
	srv := startServer(t, p, h, func(c *ServerConfig) { c.MaxFrameSize = frame; c.MaxDecodeBytesPerPeer = 2 * frame })
	c := dialServer(t, srv, p.clientTLS(t, "agent1", ALPN), ClientConfig{MaxFrameSize: frame})
	b := buildBatch(t, 52, 1)
	enc, err := EncodeBatch(b, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(enc) - HeaderSize)
	if size <= 2*frame/3 || size > frame {
		t.Fatalf("test batch of %d bytes: want more than two thirds of a frame, at most one (so 2 fit the budget, 3 do not)", size)
	}
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() { _, _ = c.Send(context.Background(), b) })
	}
	// Two payloads fit the budget; the others wait unread.
	waitFor(t, "2 batches held", func() bool { return h.now.Load() == 2 })
	time.Sleep(200 * time.Millisecond) // a third would have arrived by now
	if n, st := h.now.Load(), srv.Stats(); n != 2 || st.DecodeBytes > 2*frame || st.DecodeBytes != 2*size {
		t.Fatalf("%d batches held, %d decode bytes; want 2 and %d", n, st.DecodeBytes, 2*size)
	}
	close(h.release)
	wg.Wait()
	if st := srv.Stats(); st.DecodeBytesPeak > 2*frame || st.DecodeBytes != 0 {
		t.Fatalf("decode bytes peaked at %d (budget %d), %d held after", st.DecodeBytesPeak, 2*frame, st.DecodeBytes)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.payload) != 5 || !bytes.Equal(h.payload[0], enc[HeaderSize:]) {
		t.Fatalf("%d payloads; the handler must get each as sent", len(h.payload))
	}
}

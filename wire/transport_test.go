package wire

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tally-edge/tally/internal/pki"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder is a handler that keeps what it received.
type recorder struct {
	mu      sync.Mutex
	batches []*Batch
	peers   []Peer
}

func (r *recorder) HandleBatch(_ context.Context, p Peer, b *Batch) Ack {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, b)
	r.peers = append(r.peers, p)
	return Ack{Status: AckOK, Epoch: 7}
}

func (r *recorder) received() ([]*Batch, []Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.batches, r.peers
}

func TestRoundTrip(t *testing.T) {
	p := newTestPKI(t)
	for _, compress := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "zstd"}[compress]
		t.Run(name, func(t *testing.T) {
			rec := &recorder{}
			srv := startServer(t, p, rec, nil)
			c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{Compress: compress})
			var sent []*Batch
			var wantBytes uint64
			for seq := range uint64(5) {
				b := buildBatch(t, 10+int(seq), seq+1)
				frame, err := EncodeBatch(b, EncodeOptions{Compress: compress})
				if err != nil {
					t.Fatalf("EncodeBatch: %v", err)
				}
				wantBytes += uint64(len(frame))
				ack, err := c.Send(testCtx(t), b)
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if ack.Status != AckOK || ack.Seq != b.Seq || ack.Version != ProtocolVersion || ack.Epoch != 7 {
					t.Fatalf("ack %+v", ack)
				}
				sent = append(sent, b)
			}
			batches, peers := rec.received()
			if !reflect.DeepEqual(batches, sent) {
				t.Fatalf("server received different batches")
			}
			for _, peer := range peers {
				if peer.CommonName != "agent1" || peer.ALPN != ALPN || peer.Addr == nil {
					t.Fatalf("peer %+v", peer)
				}
			}
			// The client has its last ack a moment before the server's
			// stream goroutine has counted it.
			waitIdle(t, srv)
			cs, ss := c.Stats(), srv.Stats()
			if cs.BytesSent != wantBytes || ss.BytesIn != cs.BytesSent || ss.BytesOut != cs.BytesReceived || cs.Acks != 5 {
				t.Fatalf("client stats %+v, server stats %+v, want %d bytes sent", cs, ss, wantBytes)
			}
			if ss.Acks[AckOK] != 5 || ss.Connections != 1 || ss.Streams != 5 || ss.StreamErrors != 0 || ss.HandshakeFailures != 0 {
				t.Fatalf("server stats %+v", ss)
			}
		})
	}
}

// TestManyStreamsOneConnection proves that stream credit comes back: ten
// times MaxStreamsPerConn streams go through one connection one after
// another, then four times as many as the limit all at once, with the
// first wave held until the limit is reached.
func TestManyStreamsOneConnection(t *testing.T) {
	const limit = 50
	p := newTestPKI(t)
	var inFlight, maxInFlight atomic.Int64
	full := make(chan struct{})
	var fullOnce sync.Once
	h := HandlerFunc(func(ctx context.Context, _ Peer, b *Batch) Ack {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
		}
		if b.Seq >= 1000 {
			// Concurrent phase: hold every batch until the client has
			// as many in flight as the server allows.
			if n == limit {
				fullOnce.Do(func() { close(full) })
			}
			select {
			case <-full:
			case <-ctx.Done():
				return Ack{Status: AckBusy}
			}
		}
		return Ack{Status: AckOK}
	})
	srv := startServer(t, p, h, func(c *ServerConfig) { c.MaxStreamsPerConn = limit })
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})
	b := buildBatch(t, 2, 1)
	ctx := testCtx(t)

	for i := range 10 * limit {
		b.Seq = uint64(i)
		ack, err := c.Send(ctx, b)
		if err != nil || ack.Status != AckOK || ack.Seq != uint64(i) {
			t.Fatalf("sequential send %d: ack %+v, err %v", i, ack, err)
		}
	}

	const concurrent = 4 * limit
	var wg sync.WaitGroup
	errs := make(chan error, concurrent)
	for i := range concurrent {
		wg.Go(func() {
			b := buildBatch(t, 1, uint64(1000+i))
			ack, err := c.Send(ctx, b)
			if err == nil && (ack.Status != AckOK || ack.Seq != b.Seq) {
				err = fmt.Errorf("ack %+v for batch %d", ack, b.Seq)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent send: %v", err)
		}
	}
	st := srv.Stats()
	if st.Streams != 10*limit+concurrent || st.Acks[AckOK] != 10*limit+concurrent || st.Connections != 1 {
		t.Fatalf("server stats %+v", st)
	}
	if m := maxInFlight.Load(); m != limit {
		t.Fatalf("at most %d batches were in flight, want exactly the stream limit %d", m, limit)
	}
}

// openRaw opens a stream on c's connection and writes data to it.
func openRaw(t *testing.T, c *Client, data []byte, fin bool) *quic.Stream {
	t.Helper()
	str, err := c.conn.OpenStreamSync(testCtx(t))
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	_ = str.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := str.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if fin {
		if err := str.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	return str
}

func readAck(t *testing.T, str *quic.Stream) *Ack {
	t.Helper()
	f, err := ReadFrame(str, 0)
	if err != nil {
		t.Fatalf("read ack: %v", err)
	}
	a, err := DecodeAck(f)
	if err != nil {
		t.Fatalf("decode ack: %v", err)
	}
	return a
}

func TestGarbageStreamRejectedOthersUnaffected(t *testing.T) {
	p := newTestPKI(t)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, _ Peer, b *Batch) Ack {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Ack{Status: AckOK}
	})
	srv := startServer(t, p, h, nil)
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})

	// A valid batch is in flight (its handler waits) while garbage
	// arrives on another stream of the same connection and stays open.
	type result struct {
		ack *Ack
		err error
	}
	done := make(chan result, 1)
	go func() {
		ack, err := c.Send(testCtx(t), buildBatch(t, 3, 11))
		done <- result{ack, err}
	}()
	garbage := openRaw(t, c, []byte("GET / HTTP/1.1\r\nHost: tally\r\n\r\n"), false)
	ack := readAck(t, garbage)
	if ack.Status != AckRejected || !strings.Contains(ack.Reason, "bad frame magic") || !strings.Contains(ack.Reason, `"GE"`) {
		t.Fatalf("garbage answered with %+v", ack)
	}
	if _, err := garbage.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the rejection: %v, want io.EOF", err)
	}
	// The server stopped reading: our further writes fail.
	var serr *quic.StreamError
	for range 100 {
		if _, err := garbage.Write(make([]byte, 1024)); errors.As(err, &serr) {
			break
		}
	}
	if serr == nil || serr.ErrorCode != StreamCodeRejected || !serr.Remote {
		t.Fatalf("writes after the rejection: stream error %v, want code %#x from the server", serr, StreamCodeRejected)
	}

	close(release)
	r := <-done
	if r.err != nil || r.ack.Status != AckOK || r.ack.Seq != 11 {
		t.Fatalf("concurrent valid batch: ack %+v, err %v", r.ack, r.err)
	}
	// The connection still works.
	if ack, err := c.Send(testCtx(t), buildBatch(t, 1, 12)); err != nil || ack.Status != AckOK {
		t.Fatalf("send after garbage: ack %+v, err %v", ack, err)
	}
	st := srv.Stats()
	if st.FrameErrors[ErrBadMagic] != 1 || st.Acks[AckRejected] != 1 || st.Acks[AckOK] != 2 {
		t.Fatalf("server stats %+v", st)
	}
}

func TestFrameErrorsAnsweredOnTheStream(t *testing.T) {
	p := newTestPKI(t)
	srv := startServer(t, p, okHandler, func(c *ServerConfig) { c.MaxFrameSize = 1 << 20 })
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})

	good, err := EncodeBatch(buildBatch(t, 2, 77), EncodeOptions{})
	if err != nil {
		t.Fatalf("EncodeBatch: %v", err)
	}
	v2 := buildBatch(t, 2, 78)
	v2.Version = 2
	v2frame, err := EncodeBatch(v2, EncodeOptions{})
	if err != nil {
		t.Fatalf("EncodeBatch: %v", err)
	}
	invalid := buildBatch(t, 2, 79)
	invalid.Contributions[1].Series.Campaign = ""
	invalidFrame, err := EncodeBatch(invalid, EncodeOptions{})
	if err != nil {
		t.Fatalf("EncodeBatch: %v", err)
	}
	ackFrame, err := EncodeAck(testAck(1), EncodeOptions{})
	if err != nil {
		t.Fatalf("EncodeAck: %v", err)
	}
	header2 := append([]byte(nil), good...)
	header2[2] = 2
	oversized := rawFrame(1, KindBatch, 0, make([]byte, 2<<20))

	tests := []struct {
		name    string
		data    []byte
		want    Reason
		wantSeq uint64
		text    string
	}{
		{name: "frame version 2", data: header2, want: ErrUnknownVersion, text: "frame has version 2, this node speaks 1"},
		{name: "message version 2", data: v2frame, want: ErrUnknownVersion, wantSeq: 78, text: "batch has version 2"},
		{name: "invalid batch", data: invalidFrame, want: ErrInvalid, wantSeq: 79, text: "contribution 1"},
		{name: "ack instead of batch", data: ackFrame, want: ErrWrongKind, text: "got ack"},
		{name: "two frames", data: append(append([]byte(nil), good...), good...), want: ErrMalformed, text: "more than one frame"},
		{name: "claims 4 GiB", data: withLength(good, 0xffffffff), want: ErrTooLarge, text: "4294967295 bytes exceeds the limit of 1048576"},
		{name: "sends 2 MiB", data: oversized, want: ErrTooLarge},
		{name: "truncated", data: good[:len(good)-3], want: ErrTruncated},
		{name: "empty stream", data: nil, want: ErrTruncated, text: "before a frame"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Stats()
			allocBefore := heapAllocs()
			ack, err := c.exchange(testCtx(t), tc.wantSeq, tc.data)
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if ack.Status != AckRejected || !strings.Contains(ack.Reason, tc.want.Error()) || !strings.Contains(ack.Reason, tc.text) {
				t.Fatalf("ack %+v, want a rejection for %q mentioning %q", ack, tc.want.Error(), tc.text)
			}
			// The code tells the sender whether to set the batch aside
			// or stop: only a version it does not speak stops it.
			wantCode := RejectMalformed
			if tc.want == ErrUnknownVersion {
				wantCode = RejectVersion
			}
			if ack.Code != wantCode {
				t.Fatalf("ack code %q, want %q", ack.Code, wantCode)
			}
			after := srv.Stats()
			if after.FrameErrors[tc.want] != before.FrameErrors[tc.want]+1 {
				t.Fatalf("FrameErrors[%v] went from %d to %d", tc.want, before.FrameErrors[tc.want], after.FrameErrors[tc.want])
			}
			if tc.want == ErrTooLarge {
				// Both ends of the test run in this process; neither
				// came near allocating what the header claims.
				if alloc := heapAllocs() - allocBefore; alloc > 64<<20 {
					t.Fatalf("rejecting an oversized frame allocated %d bytes", alloc)
				}
			}
		})
	}
	if ack, err := c.Send(testCtx(t), buildBatch(t, 1, 80)); err != nil || ack.Status != AckOK {
		t.Fatalf("send after rejections: ack %+v, err %v", ack, err)
	}
	if st := srv.Stats(); st.Connections != 1 || st.Acks[AckRejected] != uint64(len(tests)) {
		t.Fatalf("server stats %+v", st)
	}
}

func TestClientRefusesBeforeSending(t *testing.T) {
	p := newTestPKI(t)
	srv := startServer(t, p, okHandler, nil)
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{MaxFrameSize: 1024})
	if _, err := c.Send(testCtx(t), buildBatch(t, 20, 1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized batch: err = %v, want ErrTooLarge", err)
	}
	bad := buildBatch(t, 1, 1)
	bad.Version = 0
	if _, err := c.Send(testCtx(t), bad); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("batch without version: err = %v, want ErrUnknownVersion", err)
	}
	if st := c.Stats(); st.BytesSent != 0 {
		t.Fatalf("client sent %d bytes", st.BytesSent)
	}
}

func TestHandlerAcks(t *testing.T) {
	p := newTestPKI(t)
	tests := []struct {
		name string
		ack  Ack
		want Ack
	}{
		{name: "redirect", ack: Ack{Status: AckRedirect, Redirect: "10.0.0.2:4433", Seq: 999, Version: 9},
			want: Ack{Status: AckRedirect, Redirect: "10.0.0.2:4433"}},
		{name: "busy", ack: Ack{Status: AckBusy, RetryAfterMillis: 250, Reason: "wal full"},
			want: Ack{Status: AckBusy, RetryAfterMillis: 250, Reason: "wal full"}},
		{name: "rejected", ack: Ack{Status: AckRejected, Reason: "unknown campaign"},
			want: Ack{Status: AckRejected, Reason: "unknown campaign"}},
		{name: "long reason cut at a rune", ack: Ack{Status: AckRejected, Reason: strings.Repeat("é", 600)},
			want: Ack{Status: AckRejected, Reason: strings.Repeat("é", 254) + "..."}},
		{name: "no status is a handler bug", ack: Ack{},
			want: Ack{Status: AckBusy, RetryAfterMillis: 1000, Reason: "internal error: invalid message: ack 5 has unknown status 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, p, HandlerFunc(func(context.Context, Peer, *Batch) Ack { return tc.ack }), nil)
			c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})
			got, err := c.Send(testCtx(t), buildBatch(t, 1, 5))
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			want := tc.want
			want.Version, want.Seq = ProtocolVersion, 5
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("ack %+v, want %+v", *got, want)
			}
		})
	}
}

func TestHandshakeFailures(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t) // a different CA
	srv := startServer(t, p, okHandler, nil)

	noCert := &tls.Config{RootCAs: mustCAPool(t, p), ServerName: "localhost"}
	foreign, err := pki.ClientTLS(pki.Files{CA: p.caFile(), Cert: pki.DevFiles(other.dir, "agent1").Cert, Key: pki.DevFiles(other.dir, "agent1").Key}, "localhost")
	if err != nil {
		t.Fatalf("ClientTLS: %v", err)
	}
	tests := []struct {
		name string
		tls  *tls.Config
	}{
		{name: "no client certificate", tls: noCert},
		{name: "certificate of another CA", tls: foreign},
		{name: "wrong ALPN", tls: p.clientTLS(t, "agent1", "tally/999")},
		{name: "server not trusted", tls: other.clientTLS(t, "agent1")},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := dialAndSend(t, srv, tc.tls)
			var ce *ConnError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want a *ConnError", err, err)
			}
			t.Logf("client sees: %v", err)
			waitFor(t, "the handshake failure to be counted", func() bool {
				return srv.Stats().HandshakeFailures == uint64(i+1)
			})
		})
	}
	// A good client still gets through, and is not counted as a failure.
	if err := dialAndSend(t, srv, p.clientTLS(t, "agent1")); err != nil {
		t.Fatalf("good client: %v", err)
	}
	if st := srv.Stats(); st.HandshakeFailures != uint64(len(tests)) || st.Connections != 1 {
		t.Fatalf("server stats %+v", st)
	}
}

// dialAndSend dials and sends one batch: a refused client certificate
// surfaces on the first exchange, not in Dial (see Dial).
func dialAndSend(t *testing.T, srv *Server, tc *tls.Config) error {
	t.Helper()
	ctx := testCtx(t)
	c, err := Dial(ctx, srv.Addr().String(), tc, ClientConfig{HandshakeTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	ack, err := c.Send(ctx, buildBatch(t, 1, 1))
	if err == nil && ack.Status != AckOK {
		t.Fatalf("ack %+v", ack)
	}
	return err
}

func mustCAPool(t *testing.T, p testPKI) *x509.CertPool {
	t.Helper()
	ca, err := pki.LoadCA(p.caFile(), p.dir+"/ca-key.pem")
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return ca.Pool()
}

func TestStreamTimeout(t *testing.T) {
	p := newTestPKI(t)
	srv := startServer(t, p, okHandler, func(c *ServerConfig) { c.StreamTimeout = 300 * time.Millisecond })
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})
	good, err := EncodeBatch(buildBatch(t, 1, 1), EncodeOptions{})
	if err != nil {
		t.Fatalf("EncodeBatch: %v", err)
	}
	// Half a frame, then silence: the server gives up on the stream.
	str := openRaw(t, c, good[:len(good)/2], false)
	_, err = str.Read(make([]byte, 1))
	var serr *quic.StreamError
	if !errors.As(err, &serr) || serr.ErrorCode != StreamCodeTimeout {
		t.Fatalf("read from a stalled stream: %v, want a reset with code %#x", err, StreamCodeTimeout)
	}
	if st := srv.Stats(); st.StreamErrors != 1 || st.Acks[AckRejected] != 0 {
		t.Fatalf("server stats %+v", st)
	}
	if ack, err := c.Send(testCtx(t), buildBatch(t, 1, 2)); err != nil || ack.Status != AckOK {
		t.Fatalf("send after a timeout: ack %+v, err %v", ack, err)
	}
}

func TestSendErrorsAreClassified(t *testing.T) {
	p := newTestPKI(t)
	h := HandlerFunc(func(ctx context.Context, _ Peer, b *Batch) Ack {
		if b.Seq == 1 {
			<-ctx.Done() // hold the batch until the server gives up
		}
		return Ack{Status: AckOK}
	})
	srv := startServer(t, p, h, nil)
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})

	// The caller's deadline ends one exchange: a StreamError.
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	_, err := c.Send(ctx, buildBatch(t, 1, 1))
	var se *StreamError
	if !errors.As(err, &se) || !errors.Is(err, context.DeadlineExceeded) || se.Seq != 1 {
		t.Fatalf("err = %v, want a *StreamError for batch 1 with DeadlineExceeded", err)
	}
	// The connection is fine.
	if ack, err := c.Send(testCtx(t), buildBatch(t, 1, 2)); err != nil || ack.Status != AckOK {
		t.Fatalf("send after a stream error: ack %+v, err %v", ack, err)
	}

	// The server goes away: a ConnError, and Done is closed.
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-c.Done():
	case <-testCtx(t).Done():
		t.Fatalf("client did not notice the server closing")
	}
	_, err = c.Send(testCtx(t), buildBatch(t, 1, 3))
	var ce *ConnError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v (%T), want a *ConnError", err, err)
	}
	var appErr *quic.ApplicationError
	if !errors.As(err, &appErr) || appErr.ErrorCode != ConnCodeShutdown {
		t.Fatalf("err = %v, want the server's shutdown code", err)
	}

	// Dialling a closed server fails with a ConnError too.
	_, err = Dial(testCtx(t), srv.Addr().String(), p.clientTLS(t, "agent1"), ClientConfig{HandshakeTimeout: 300 * time.Millisecond})
	if !errors.As(err, &ce) {
		t.Fatalf("dial a closed server: err = %v, want a *ConnError", err)
	}
}

func TestCloseCancelsHandlersAndWaits(t *testing.T) {
	p := newTestPKI(t)
	entered := make(chan struct{})
	var finished atomic.Bool
	h := HandlerFunc(func(ctx context.Context, _ Peer, b *Batch) Ack {
		close(entered)
		<-ctx.Done()
		finished.Store(true)
		return Ack{Status: AckBusy}
	})
	srv, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", TLS: p.serverTLS(t), Handler: h})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})
	type result struct {
		ack *Ack
		err error
	}
	sent := make(chan result, 1)
	go func() {
		ack, err := c.Send(testCtx(t), buildBatch(t, 1, 1))
		sent <- result{ack, err}
	}()
	<-entered
	stop() // shut down through Serve's context
	if err := <-served; err != nil {
		t.Fatalf("Serve returned %v, want nil after its context ended", err)
	}
	if !finished.Load() {
		t.Fatalf("Serve returned before the handler did")
	}
	// The handler's busy answer may or may not make it out before the
	// connection closes; either way the batch is not acknowledged.
	if r := <-sent; r.err == nil && r.ack.Status != AckBusy {
		t.Fatalf("Send through a server shutdown: ack %+v", r.ack)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close after Serve: %v", err)
	}
	if err := srv.Serve(context.Background()); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}

func TestSharedEndpoint(t *testing.T) {
	p := newTestPKI(t)
	ep, err := NewEndpoint("127.0.0.1:0")
	if err != nil {
		t.Fatalf("NewEndpoint: %v", err)
	}
	// Cleanups run last-in first-out: the server closes before its endpoint.
	t.Cleanup(func() {
		if err := ep.Close(); err != nil {
			t.Errorf("endpoint Close: %v", err)
		}
	})
	// One server on the endpoint: an aggregator serving agents and peers.
	srv := startServer(t, p, &recorder{}, func(c *ServerConfig) {
		c.Endpoint = ep
		c.TLS.NextProtos = []string{ALPN, ALPNForward}
	})
	if srv.Addr().String() != ep.Addr().String() {
		t.Fatalf("server on %s, endpoint %s", srv.Addr(), ep.Addr())
	}
	if _, err := NewServer(ServerConfig{Endpoint: ep, TLS: p.serverTLS(t), Handler: okHandler}); err == nil {
		t.Fatalf("a second server on one endpoint was accepted")
	}
	// The same node dials a peer (here: itself) from the same socket,
	// forwarding with its node certificate.
	c := dialServer(t, srv, p.clientTLS(t, "agg1", ALPNForward), ClientConfig{Endpoint: ep})
	ack, err := c.Send(testCtx(t), buildBatch(t, 1, 1))
	if err != nil || ack.Status != AckOK {
		t.Fatalf("Send: ack %+v, err %v", ack, err)
	}
	_, peers := srv.cfg.Handler.(*recorder).received()
	if got := peers[0]; got.ALPN != ALPNForward || got.CommonName != "agg1" {
		t.Fatalf("peer %+v", got)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("client Close: %v", err)
	}
	// The endpoint outlives the client.
	c2 := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{Endpoint: ep})
	if _, err := c2.Send(testCtx(t), buildBatch(t, 1, 2)); err != nil {
		t.Fatalf("Send on a second client: %v", err)
	}
	// And the server: once it is closed, another may serve on it.
	if err := srv.Close(); err != nil {
		t.Fatalf("server Close: %v", err)
	}
	srv2 := startServer(t, p, okHandler, func(c *ServerConfig) { c.Endpoint = ep })
	c3 := dialServer(t, srv2, p.clientTLS(t, "agent1"), ClientConfig{})
	if ack, err := c3.Send(testCtx(t), buildBatch(t, 1, 3)); err != nil || ack.Status != AckOK {
		t.Fatalf("Send to the second server: ack %+v, err %v", ack, err)
	}
}

func TestServerConfigValidate(t *testing.T) {
	p := newTestPKI(t)
	good := func() ServerConfig {
		return ServerConfig{Addr: "127.0.0.1:0", TLS: p.serverTLS(t), Handler: okHandler}
	}
	tests := []struct {
		name   string
		mutate func(*ServerConfig)
		want   string
	}{
		{name: "no TLS", mutate: func(c *ServerConfig) { c.TLS = nil }, want: "TLS is required"},
		{name: "no client auth", mutate: func(c *ServerConfig) { c.TLS.ClientAuth = tls.VerifyClientCertIfGiven }, want: "mutual TLS"},
		{name: "no handler", mutate: func(c *ServerConfig) { c.Handler = nil }, want: "Handler"},
		{name: "no address", mutate: func(c *ServerConfig) { c.Addr = "" }, want: "Addr"},
		{name: "negative timeout", mutate: func(c *ServerConfig) { c.StreamTimeout = -1 }, want: "negative"},
		{name: "bad address", mutate: func(c *ServerConfig) { c.Addr = "nowhere:-1" }, want: "endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good()
			tc.mutate(&cfg)
			srv, err := NewServer(cfg)
			if err == nil {
				_ = srv.Close()
				t.Fatalf("NewServer accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	// A server that never served releases its socket on Close.
	srv, err := NewServer(good())
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// waitIdle waits (bounded) until the server has no exchange in progress.
func waitIdle(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().ActiveStreams != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server streams never finished: %+v", srv.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFrameRejectionAnswersItsStream: a frame the server cannot read gets
// a rejection without a sequence number; the client takes it as the
// answer to that stream instead of a protocol error, so a sender sets the
// batch aside rather than resending it forever.
func TestFrameRejectionAnswersItsStream(t *testing.T) {
	p := newTestPKI(t)
	srv := startServer(t, p, okHandler, nil)
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{})
	ack, err := c.exchange(testCtx(t), 7, []byte("definitely not a frame"))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if ack.Status != AckRejected || ack.Seq != 7 || ack.Reason == "" {
		t.Fatalf("ack %+v", ack)
	}
}

func TestSendRaw(t *testing.T) {
	p := newTestPKI(t)
	srv := startServer(t, p, okHandler, nil)
	c := dialServer(t, srv, p.clientTLS(t, "agent1"), ClientConfig{Compress: true})
	b := buildBatch(t, 5, 9)
	contribs, err := EncodeContributions(b.Contributions)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := c.SendRaw(testCtx(t), &RawBatch{Version: ProtocolVersion, Agent: b.Agent, Region: b.Region, Seq: 9, Contributions: contribs})
	if err != nil || ack.Status != AckOK || ack.Seq != 9 {
		t.Fatalf("ack %+v, err %v", ack, err)
	}
	// A malformed payload is the receiver's to reject, on its stream.
	ack, err = c.SendRaw(testCtx(t), &RawBatch{Version: ProtocolVersion, Agent: b.Agent, Seq: 10, Contributions: []byte{0xc1}})
	if err != nil || ack.Status != AckRejected {
		t.Fatalf("malformed raw batch: ack %+v, err %v", ack, err)
	}
	if _, err := c.SendRaw(testCtx(t), &RawBatch{Version: 9, Agent: "a", Contributions: contribs}); err == nil {
		t.Fatal("a wrong version was sent")
	}
}

package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/quic-go/quic-go"
)

// Receive windows of server connections: enough for a sender on a
// 100 ms path to keep about 300 Mbit/s in flight on one connection.
const (
	maxStreamReceiveWindow = 2 << 20
	maxConnReceiveWindow   = 4 << 20
)

// ErrServerClosed is returned by Serve after Close, and by Serve on a
// server that was already closed.
var ErrServerClosed = errors.New("wire: server closed")

// ServerConfig configures a Server.
type ServerConfig struct {
	// Addr is the UDP address to listen on, e.g. ":4433" or
	// "127.0.0.1:0". Ignored when Endpoint is set.
	Addr string
	// Endpoint, if set, is the process's shared UDP endpoint; the server
	// listens on it but does not close it. If nil the server opens its own
	// on Addr and closes it with the server.
	Endpoint *Endpoint
	// TLS is the server's TLS configuration, e.g. from pki.ServerTLS. It
	// must require and verify client certificates; NextProtos defaults to
	// [ALPN] and may list ALPNForward too. TLS 1.3 is enforced.
	TLS *tls.Config
	// Handler receives every valid batch. Required.
	Handler Handler
	// MaxFrameSize caps a batch's payload, as sent and decompressed, in
	// bytes. Default DefaultMaxFrameSize (16 MiB). Lower it to bound
	// memory: a stream may hold up to about 2x this while decoding.
	MaxFrameSize int
	// MaxStreamsPerConn is how many batches one connection may have in
	// flight at once; a sender that pipelines more waits for credit.
	// Default 100.
	MaxStreamsPerConn int
	// StreamTimeout bounds one exchange: receiving the batch, handling it
	// (the handler's context carries this deadline) and answering. A
	// stream that misses it is reset without an answer. Default 60 s,
	// enough for a 16 MiB batch over a 4 Mbit/s link.
	StreamTimeout time.Duration
	// IdleTimeout closes a connection that has been silent this long.
	// Clients send keep-alives more often. Default 60 s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the QUIC and TLS handshake. Default 10 s.
	HandshakeTimeout time.Duration
	// MaxConns bounds the connections open at once over every peer; one
	// beyond it is closed at once with ConnCodeBusy. Default 10000.
	MaxConns int
	// MaxConnsPerPeer bounds the connections one certificate identity
	// (CommonName) keeps open; a new one beyond it closes that peer's
	// oldest with ConnCodeReplaced. Default 8.
	MaxConnsPerPeer int
	// MaxStreamsPerPeer bounds the exchanges one identity has in progress
	// over all its connections; further streams wait unread until a slot
	// frees or their deadline passes. Default 256.
	MaxStreamsPerPeer int
	// MaxDecodeBytesPerPeer bounds the bytes one identity's streams hold in
	// payloads being read and decompressed (see limits.go). At least twice
	// MaxFrameSize. Default 64 MiB.
	MaxDecodeBytesPerPeer int64
	// MaxDecodeBytes is that bound over every peer together. At least
	// MaxDecodeBytesPerPeer. Default 512 MiB.
	MaxDecodeBytes int64
	// Logger receives the server's few logs; per-stream problems are
	// counted in Stats and logged at debug level only. Default: discard.
	Logger *slog.Logger
}

// DefaultServerConfig returns a ServerConfig with every default filled in;
// the caller adds Addr or Endpoint, TLS and Handler.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		MaxFrameSize:          DefaultMaxFrameSize,
		MaxStreamsPerConn:     100,
		StreamTimeout:         60 * time.Second,
		IdleTimeout:           60 * time.Second,
		HandshakeTimeout:      10 * time.Second,
		MaxConns:              10000,
		MaxConnsPerPeer:       8,
		MaxStreamsPerPeer:     256,
		MaxDecodeBytesPerPeer: 64 << 20,
		MaxDecodeBytes:        512 << 20,
	}
}

func (c ServerConfig) withDefaults() ServerConfig {
	d := DefaultServerConfig()
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = d.MaxFrameSize
	}
	if c.MaxStreamsPerConn == 0 {
		c.MaxStreamsPerConn = d.MaxStreamsPerConn
	}
	if c.StreamTimeout == 0 {
		c.StreamTimeout = d.StreamTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxConnsPerPeer == 0 {
		c.MaxConnsPerPeer = d.MaxConnsPerPeer
	}
	if c.MaxStreamsPerPeer == 0 {
		c.MaxStreamsPerPeer = d.MaxStreamsPerPeer
	}
	if c.MaxDecodeBytesPerPeer == 0 {
		c.MaxDecodeBytesPerPeer = max(d.MaxDecodeBytesPerPeer, 2*int64(c.MaxFrameSize))
	}
	if c.MaxDecodeBytes == 0 {
		c.MaxDecodeBytes = max(d.MaxDecodeBytes, c.MaxDecodeBytesPerPeer)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a configuration the server cannot run with. Zero
// durations and sizes are valid: they mean the defaults.
func (c ServerConfig) Validate() error {
	switch {
	case c.TLS == nil:
		return errors.New("server config: TLS is required")
	case c.TLS.ClientAuth != tls.RequireAndVerifyClientCert:
		return errors.New("server config: TLS must require and verify client certificates (mutual TLS)")
	case c.TLS.ClientCAs == nil && c.TLS.GetConfigForClient == nil:
		return errors.New("server config: TLS has no ClientCAs to verify clients against")
	case len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil:
		return errors.New("server config: TLS has no certificate")
	case c.Handler == nil:
		return errors.New("server config: Handler is required")
	case c.Endpoint == nil && c.Addr == "":
		return errors.New("server config: Addr or Endpoint is required")
	case c.MaxFrameSize < 0, c.MaxStreamsPerConn < 0:
		return errors.New("server config: MaxFrameSize and MaxStreamsPerConn must not be negative")
	case c.StreamTimeout < 0, c.IdleTimeout < 0, c.HandshakeTimeout < 0:
		return errors.New("server config: timeouts must not be negative")
	case c.MaxConns < 0, c.MaxConnsPerPeer < 0, c.MaxStreamsPerPeer < 0, c.MaxDecodeBytesPerPeer < 0, c.MaxDecodeBytes < 0:
		return errors.New("server config: limits must not be negative")
	}
	d := c.withDefaults()
	if d.MaxDecodeBytesPerPeer < 2*int64(d.MaxFrameSize) {
		return fmt.Errorf("server config: MaxDecodeBytesPerPeer %d is below twice MaxFrameSize (%d): one frame could never be decoded", d.MaxDecodeBytesPerPeer, 2*d.MaxFrameSize)
	}
	if d.MaxDecodeBytes < d.MaxDecodeBytesPerPeer {
		return fmt.Errorf("server config: MaxDecodeBytes %d is below MaxDecodeBytesPerPeer %d", d.MaxDecodeBytes, d.MaxDecodeBytesPerPeer)
	}
	return nil
}

// Server accepts QUIC connections and answers each batch stream with an
// Ack from its Handler. Create it with NewServer, run it with Serve, stop
// it by cancelling Serve's context or with Close.
type Server struct {
	cfg      ServerConfig
	log      *slog.Logger
	tls      *tls.Config
	quic     *quic.Config
	ep       *Endpoint
	ownEP    bool
	counters serverCounters
	limits   *limits

	// ctx is cancelled when the server shuts down; every connection and
	// stream context derives from it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection and stream goroutines
	done   chan struct{}  // closed when Serve has returned

	shutdownOnce sync.Once
	releaseOnce  sync.Once

	mu      sync.Mutex
	ln      *quic.Listener
	conns   map[*quic.Conn]struct{}
	serving bool
	closed  bool
}

// NewServer checks cfg and binds the server's socket (unless it was given
// an Endpoint), so Addr is known before Serve.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	uni := int64(-1) // none
	if _, ok := cfg.Handler.(LiveHandler); ok {
		uni = maxLiveStreamsPerConn
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "wire.server"),
		conns: make(map[*quic.Conn]struct{}),
		done:  make(chan struct{}),
		quic: &quic.Config{
			HandshakeIdleTimeout:  cfg.HandshakeTimeout,
			MaxIdleTimeout:        cfg.IdleTimeout,
			MaxIncomingStreams:    int64(cfg.MaxStreamsPerConn),
			MaxIncomingUniStreams: uni, // live streams only
			// What a connection may have in flight but unread is bounded
			// by its receive windows: streams that wait for a slot or for
			// decode room hold at most this much in quic-go's buffers
			// (the defaults grow to 15 MiB per connection).
			MaxStreamReceiveWindow:     maxStreamReceiveWindow,
			MaxConnectionReceiveWindow: maxConnReceiveWindow,
		},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.limits = newLimits(cfg)
	s.tls = s.serverTLS(cfg.TLS)
	s.ep, s.ownEP = cfg.Endpoint, cfg.Endpoint == nil
	if s.ownEP {
		ep, err := NewEndpoint(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("new server: %w", err)
		}
		s.ep = ep
	}
	if err := s.ep.attachServer(s.connContext); err != nil {
		if s.ownEP {
			_ = s.ep.Close()
		}
		return nil, fmt.Errorf("new server on %s: %w", s.ep.Addr(), err)
	}
	return s, nil
}

// Addr returns the UDP address the server listens on.
func (s *Server) Addr() net.Addr { return s.ep.Addr() }

// Serve accepts connections until ctx is done or Close is called, then
// closes every connection and waits for every stream to finish (handlers
// see their contexts cancelled). It returns nil after a shutdown through
// ctx, ErrServerClosed after Close, or the listener's error.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.serving {
		s.mu.Unlock()
		return errors.New("wire: Serve called twice")
	}
	ln, err := s.ep.tr.Listen(s.tls, s.quic)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("listen on %s: %w", s.Addr(), err)
	}
	s.serving, s.ln = true, ln
	s.mu.Unlock()
	defer close(s.done)

	s.log.Info("serving", "addr", s.Addr().String(), "alpn", s.tls.NextProtos)
	stop := context.AfterFunc(ctx, s.shutdown)
	defer stop()
	err = s.acceptLoop()
	s.shutdown()
	s.wg.Wait()
	if rerr := s.release(); rerr != nil && err == nil {
		err = rerr
	}
	if err == nil && ctx.Err() == nil {
		err = ErrServerClosed
	}
	return err
}

// Close stops the server: no new connections, open ones closed with
// ConnCodeShutdown, handler contexts cancelled. It waits for Serve to
// return (and so for every handler) and is safe to call more than once.
func (s *Server) Close() error {
	s.shutdown()
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	if serving {
		<-s.done
		return nil
	}
	return s.release()
}

// release closes the server's own endpoint, or leaves a shared one free
// for another server.
func (s *Server) release() error {
	var err error
	s.releaseOnce.Do(func() {
		if s.ownEP {
			err = s.ep.Close()
		} else {
			s.ep.detachServer()
		}
	})
	return err
}

// shutdown stops accepting and closes every connection. Concurrent callers
// all return once it is done: Serve must not close the endpoint while
// CONNECTION_CLOSE frames are still being sent.
func (s *Server) shutdown() {
	s.shutdownOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		ln := s.ln
		conns := make([]*quic.Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()

		s.cancel()
		if ln != nil {
			_ = ln.Close() // only fails if already closed
		}
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { _ = c.CloseWithError(ConnCodeShutdown, "server shutting down") })
		}
		wg.Wait()
	})
}

func (s *Server) acceptLoop() error {
	for {
		conn, err := s.ln.Accept(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			s.log.Error("accept failed, server stops", "err", err)
			return fmt.Errorf("accept on %s: %w", s.Addr(), err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.CloseWithError(ConnCodeShutdown, "server shutting down")
			continue
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

func (s *Server) serveConn(conn *quic.Conn) {
	defer s.wg.Done()
	s.counters.conns.Add(1)
	s.counters.activeConns.Add(1)
	defer s.counters.activeConns.Add(-1)
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()

	state := conn.ConnectionState().TLS
	peer := Peer{Addr: conn.RemoteAddr(), ALPN: state.NegotiatedProtocol}
	if len(state.PeerCertificates) > 0 {
		peer.Certificate = state.PeerCertificates[0]
		peer.CommonName = peer.Certificate.Subject.CommonName
	}
	log := s.log.With("peer", peer.Addr.String(), "cn", peer.CommonName)
	log.Debug("connection accepted", "alpn", peer.ALPN)

	ps, evict, code := s.limits.admit(peer.CommonName, conn)
	defer s.limits.leave(peer.CommonName, conn)
	switch {
	case evict == conn:
		log.Debug("connection refused: the server holds as many as it allows")
		_ = conn.CloseWithError(code, "too many connections")
		return
	case evict != nil:
		log.Debug("closing the peer's oldest connection: it opened more than allowed")
		go func() { _ = evict.CloseWithError(code, "replaced by a newer connection of the same peer") }()
	}

	// Handlers of a connection that is gone need not finish their work:
	// nobody will read their acks.
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(conn.Context(), cancel)
	defer stop()
	if lh, ok := s.cfg.Handler.(LiveHandler); ok {
		s.wg.Add(1)
		go s.acceptLive(ctx, conn, lh, peer, ps, log)
	}

	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			// The connection is gone (peer closed it, idle timeout) or
			// the server is shutting down and closes it.
			log.Debug("connection ended", "err", err)
			return
		}
		s.wg.Add(1)
		go s.serveStream(ctx, str, peer, ps, log)
	}
}

// serveStream runs one exchange: one Batch frame in, read to EOF, one Ack
// frame out. Whatever happens, the stream ends in a state where quic-go
// returns its credit: fully read or read-cancelled, closed or reset.
func (s *Server) serveStream(connCtx context.Context, str *quic.Stream, peer Peer, ps *peerState, log *slog.Logger) {
	defer s.wg.Done()
	s.counters.streams.Add(1)
	s.counters.activeStreams.Add(1)
	defer s.counters.activeStreams.Add(-1)

	deadline := time.Now().Add(s.cfg.StreamTimeout)
	_ = str.SetDeadline(deadline) // never fails
	ctx, cancel := context.WithDeadline(connCtx, deadline)
	defer cancel()
	// Unblock reads and writes when the server shuts down.
	stop := context.AfterFunc(s.ctx, func() {
		str.CancelRead(StreamCodeCanceled)
		str.CancelWrite(StreamCodeCanceled)
	})
	defer stop()

	budget, err := s.limits.startStream(ctx, ps)
	if err != nil {
		s.counters.streamErrors.Add(1)
		log.Debug("stream gave up waiting for a slot of its peer", "err", err)
		s.abort(str, deadline)
		return
	}
	defer budget.release()
	r := countingReader{r: str, n: &s.counters.bytesIn}
	f, err := readFrame(r, s.cfg.MaxFrameSize, budget.reserve(ctx))
	if errors.Is(err, errDecodeBudget) {
		s.counters.streamErrors.Add(1)
		log.Debug("stream reset: its peer's decode budget is spent")
		str.CancelRead(StreamCodeBusy)
		str.CancelWrite(StreamCodeBusy)
		return
	}
	if errors.Is(err, io.EOF) {
		err = frameErr(ErrTruncated, nil, "stream ended before a frame")
	}
	if err == nil {
		if err = readEOF(r); errors.Is(err, errTrailingData) {
			err = frameErr(ErrMalformed, nil, "stream carries more than one frame")
		}
	}
	var (
		sawEOF = err == nil
		b      *Batch
		seq    uint64
	)
	if err == nil {
		if b, err = decodeBatch(f); err == nil {
			seq = b.Seq
			err = b.Validate()
		}
	}
	if err != nil {
		var fe *FrameError
		if !errors.As(err, &fe) {
			// Not the frame's fault: deadline, reset, lost connection.
			s.counters.streamErrors.Add(1)
			log.Debug("stream failed", "err", err)
			s.abort(str, deadline)
			return
		}
		s.counters.frameErrors[fe.Reason].Add(1)
		log.Debug("batch rejected", "seq", seq, "reason", fe.Reason.String(), "err", fe)
		code := RejectMalformed
		if fe.Reason == ErrUnknownVersion {
			code = RejectVersion
		}
		s.respond(str, &Ack{Status: AckRejected, Seq: seq, Reason: fe.Error(), Code: code}, deadline, log)
		if !sawEOF {
			str.CancelRead(StreamCodeRejected)
		}
		return
	}

	var ack Ack
	if ph, ok := s.cfg.Handler.(PayloadHandler); ok {
		ack = ph.HandleBatchPayload(ctx, peer, b, f.Payload)
	} else {
		ack = s.cfg.Handler.HandleBatch(ctx, peer, b)
	}
	ack.Version, ack.Seq = ProtocolVersion, seq
	if err := ack.Validate(); err != nil {
		// A handler bug; the batch may be fine, so let the agent retry.
		log.Error("handler returned an invalid ack", "seq", seq, "err", err)
		ack = Ack{Status: AckBusy, Seq: seq, Reason: "internal error: " + err.Error(), RetryAfterMillis: 1000}
	}
	// The payload is handled: its budget goes back before the answer, so
	// the peer's next stream need not wait for this one's write, and a
	// client that has read the ack finds the budget returned in Stats.
	budget.release()
	s.respond(str, &ack, deadline, log)
}

// maxReasonLen keeps rejection reasons readable and acks small.
const maxReasonLen = 512

// respond writes ack and closes the stream's write side.
func (s *Server) respond(str *quic.Stream, ack *Ack, deadline time.Time, log *slog.Logger) {
	ack.Version = ProtocolVersion
	if len(ack.Reason) > maxReasonLen {
		cut := maxReasonLen - len("...")
		for cut > 0 && !utf8.RuneStart(ack.Reason[cut]) {
			cut--
		}
		ack.Reason = ack.Reason[:cut] + "..."
	}
	frame, err := AppendFrame(nil, KindAck, ack, EncodeOptions{})
	if err == nil {
		// Count before writing: a client that has read the answer must
		// find it in Stats. A failed write takes the count back.
		s.counters.acks[ack.Status].Add(1)
		s.counters.bytesOut.Add(uint64(len(frame)))
		if _, err = str.Write(frame); err == nil {
			err = str.Close()
		}
		if err != nil {
			s.counters.acks[ack.Status].Add(^uint64(0))
			s.counters.bytesOut.Add(^uint64(len(frame) - 1))
		}
	}
	if err != nil {
		s.counters.streamErrors.Add(1)
		log.Debug("answer failed", "seq", ack.Seq, "status", ack.Status.String(), "err", err)
		s.abort(str, deadline)
	}
}

// abort resets both directions of a stream that gets no answer, with a
// code that says why.
func (s *Server) abort(str *quic.Stream, deadline time.Time) {
	var code quic.StreamErrorCode = StreamCodeError
	switch {
	case s.ctx.Err() != nil:
		code = StreamCodeCanceled
	case !time.Now().Before(deadline):
		code = StreamCodeTimeout
	}
	str.CancelRead(code)
	str.CancelWrite(code)
}

// serverTLS prepares the TLS config: TLS 1.3, the default ALPN, and a
// VerifyConnection hook per handshake that marks the attempt as verified,
// so failed handshakes can be counted (see connContext).
func (s *Server) serverTLS(in *tls.Config) *tls.Config {
	base := in.Clone()
	base.MinVersion = tls.VersionTLS13
	if len(base.NextProtos) == 0 {
		base.NextProtos = []string{ALPN}
	}
	userConfigForClient := base.GetConfigForClient
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base
		if userConfigForClient != nil {
			uc, err := userConfigForClient(hello)
			if err != nil {
				return nil, err
			}
			if uc != nil {
				c = uc
			}
		}
		a, _ := hello.Context().Value(attemptKey{}).(*attempt)
		if a == nil {
			return c, nil
		}
		c = c.Clone()
		c.GetConfigForClient = nil
		verify := c.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			a.verified.Store(true)
			return nil
		}
		return c, nil
	}
	return base
}

type attemptKey struct{}

// attempt is one incoming connection attempt.
type attempt struct{ verified atomic.Bool }

// connContext runs for every incoming connection attempt. quic-go cancels
// the returned context when the attempt or the connection ends; if by then
// TLS never verified the client, the handshake failed: no certificate, one
// from another CA, no common ALPN, a timeout.
func (s *Server) connContext(ctx context.Context) context.Context {
	a := &attempt{}
	context.AfterFunc(ctx, func() {
		if !a.verified.Load() {
			s.counters.handshakeFailures.Add(1)
		}
	})
	return context.WithValue(ctx, attemptKey{}, a)
}

// ServerStats is a snapshot of a server's counters, all cumulative since
// NewServer except the Active gauges.
type ServerStats struct {
	// Connections counts accepted connections (handshake completed).
	Connections uint64
	// ActiveConnections is the number of connections open now.
	ActiveConnections int64
	// HandshakeFailures counts connection attempts whose TLS handshake
	// failed: missing or untrusted client certificate, no common ALPN,
	// timeout.
	HandshakeFailures uint64
	// Streams counts exchanges started; ActiveStreams are in progress.
	Streams       uint64
	ActiveStreams int64
	// Acks counts answers sent, by status. Acks[AckRejected] includes the
	// rejections of FrameErrors and those of the handler.
	Acks map[AckStatus]uint64
	// FrameErrors counts frames and batches refused by the protocol
	// layer, by reason (all reasons present, most zero).
	FrameErrors map[Reason]uint64
	// StreamErrors counts exchanges that ended without an answer:
	// deadline, stream reset by the peer, connection lost mid-stream.
	StreamErrors uint64
	// BytesIn and BytesOut count stream payload bytes: frames in, acks out.
	BytesIn  uint64
	BytesOut uint64
	// ConnsRefused counts connections closed at once because the server
	// held MaxConns; ConnsReplaced those closed because their peer opened
	// more than MaxConnsPerPeer.
	ConnsRefused, ConnsReplaced uint64
	// StreamWaits counts streams that waited for a slot of their peer
	// (MaxStreamsPerPeer); DecodeBusy those reset because their peer's
	// (or the server's) decode budget had no room to decompress.
	StreamWaits, DecodeBusy uint64
	// DecodeBytes is the memory streams hold for decoding now, and
	// DecodeBytesPeak the most they ever held at once.
	DecodeBytes, DecodeBytesPeak int64
	// LiveStreams counts live streams opened by agents, LiveMessages the
	// live messages handed to the handler, LiveRefused the streams ended
	// because a message was refused (counted in FrameErrors too), and
	// LiveBytesIn the bytes read from live streams (not in BytesIn).
	LiveStreams, LiveMessages, LiveRefused, LiveBytesIn uint64
}

type serverCounters struct {
	conns, handshakeFailures, streams, streamErrors atomic.Uint64
	activeConns, activeStreams                      atomic.Int64
	bytesIn, bytesOut                               atomic.Uint64
	liveStreams, liveMessages, liveRefused          atomic.Uint64
	liveBytesIn                                     atomic.Uint64
	acks                                            [AckBusy + 1]atomic.Uint64
	frameErrors                                     [numReasons]atomic.Uint64
}

// Stats returns a snapshot of the server's counters. Safe to call at any
// time from any goroutine.
func (s *Server) Stats() ServerStats {
	c := &s.counters
	st := ServerStats{
		Connections:       c.conns.Load(),
		ActiveConnections: c.activeConns.Load(),
		HandshakeFailures: c.handshakeFailures.Load(),
		Streams:           c.streams.Load(),
		ActiveStreams:     c.activeStreams.Load(),
		StreamErrors:      c.streamErrors.Load(),
		BytesIn:           c.bytesIn.Load(),
		BytesOut:          c.bytesOut.Load(),
		ConnsRefused:      s.limits.refused.Load(),
		ConnsReplaced:     s.limits.replaced.Load(),
		StreamWaits:       s.limits.streamWaits.Load(),
		DecodeBusy:        s.limits.busy.Load(),
		DecodeBytes:       s.limits.decodeInUse.Load(),
		DecodeBytesPeak:   s.limits.decodePeak.Load(),
		LiveStreams:       c.liveStreams.Load(),
		LiveMessages:      c.liveMessages.Load(),
		LiveRefused:       c.liveRefused.Load(),
		LiveBytesIn:       c.liveBytesIn.Load(),
		Acks:              make(map[AckStatus]uint64, 4),
		FrameErrors:       make(map[Reason]uint64, numReasons),
	}
	for _, status := range []AckStatus{AckOK, AckRejected, AckRedirect, AckBusy} {
		st.Acks[status] = c.acks[status].Load()
	}
	for _, r := range Reasons() {
		st.FrameErrors[r] = c.frameErrors[r].Load()
	}
	return st
}

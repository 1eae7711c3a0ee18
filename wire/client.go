package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// ClientConfig configures a Client. The zero value is usable.
type ClientConfig struct {
	// Endpoint, if set, is the process's shared UDP endpoint to dial
	// from; the client does not close it. If nil the client opens its own
	// socket and closes it with the client.
	Endpoint *Endpoint
	// Compress sends batches zstd-compressed when that makes them
	// smaller (see EncodeOptions.Compress: about 10 % for HLL-heavy
	// batches, for about 1.4 ms of CPU per 190 KB batch when encoding).
	Compress bool
	// CompressFastest compresses at zstd's fastest level (see
	// EncodeOptions.Fastest), for bulk senders.
	CompressFastest bool
	// MaxFrameSize caps the batches the client sends (a larger one is
	// refused before sending, with ErrTooLarge: split it) and the acks it
	// accepts. It should not exceed the server's. Default
	// DefaultMaxFrameSize.
	MaxFrameSize int
	// SendTimeout bounds one Send when its context has no deadline.
	// Default 60 s.
	SendTimeout time.Duration
	// HandshakeTimeout bounds the QUIC and TLS handshake. Default 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes the connection after this long without traffic;
	// the effective value is the smaller of the client's and the
	// server's. Default 60 s.
	IdleTimeout time.Duration
	// KeepAlivePeriod is how often an idle connection sends a keep-alive,
	// which keeps it and any NAT binding open between flushes. Default
	// 15 s; negative disables keep-alives.
	KeepAlivePeriod time.Duration
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 60 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	switch {
	case c.KeepAlivePeriod == 0:
		c.KeepAlivePeriod = 15 * time.Second
	case c.KeepAlivePeriod < 0:
		c.KeepAlivePeriod = 0
	}
	return c
}

// Client is one QUIC connection to a server, over which batches are sent.
// It is safe for concurrent use: every Send has its own stream, so many
// goroutines sending at once pipeline their batches on the connection, up
// to the server's stream limit (further Sends wait for a free stream).
//
// A Client does not reconnect. When its connection fails, every Send
// returns a *ConnError and Done is closed; the caller dials again.
type Client struct {
	conn  *quic.Conn
	addr  string
	cfg   ClientConfig
	ep    *Endpoint
	ownEP bool

	bytesSent, bytesReceived, acks atomic.Uint64
	compressBest                   atomic.Bool
	bufs                           sync.Pool // *[]byte frame buffers

	closeOnce sync.Once
	closeErr  error
}

// Dial connects to the server at addr (host:port) with the client's TLS
// configuration, e.g. from pki.ClientTLS. NextProtos defaults to [ALPN] and
// ServerName to addr's host. Errors are *ConnError.
//
// TLS 1.3 completes the client's side of the handshake before the server
// has checked the client's certificate, so a server that refuses it makes
// the first Send fail with a *ConnError rather than Dial.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, cfg ClientConfig) (*Client, error) {
	if tlsConf == nil {
		return nil, &ConnError{Op: "dial", Addr: addr, Err: errors.New("no TLS config")}
	}
	cfg = cfg.withDefaults()
	raddr, host, err := resolveUDP(ctx, addr)
	if err != nil {
		return nil, &ConnError{Op: "dial", Addr: addr, Err: err}
	}
	tc := tlsConf.Clone()
	tc.MinVersion = tls.VersionTLS13
	if len(tc.NextProtos) == 0 {
		tc.NextProtos = []string{ALPN}
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	c := &Client{addr: addr, cfg: cfg, ep: cfg.Endpoint}
	if c.ep == nil {
		if c.ep, err = NewEndpoint(""); err != nil {
			return nil, &ConnError{Op: "dial", Addr: addr, Err: err}
		}
		c.ownEP = true
	}
	conn, err := c.ep.tr.Dial(ctx, raddr, tc, &quic.Config{
		HandshakeIdleTimeout:  cfg.HandshakeTimeout,
		MaxIdleTimeout:        cfg.IdleTimeout,
		KeepAlivePeriod:       cfg.KeepAlivePeriod,
		MaxIncomingStreams:    -1, // the server never opens streams
		MaxIncomingUniStreams: -1,
	})
	if err != nil {
		if c.ownEP {
			_ = c.ep.Close()
		}
		return nil, &ConnError{Op: "dial", Addr: addr, Err: err}
	}
	c.conn = conn
	return c, nil
}

// resolveUDP resolves host:port, honouring ctx, and returns the first
// address along with the host for TLS ServerName.
func resolveUDP(ctx context.Context, addr string) (*net.UDPAddr, string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return nil, "", err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(p))), host, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, "", err
	}
	if len(ips) == 0 {
		return nil, "", fmt.Errorf("no address for %q", host)
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(p))), host, nil
}

// Send sends b on a new stream and waits for its Ack. The batch must pass
// Validate; it is not modified and may be reused once Send returns.
//
// Send returns the Ack whatever its status (an AckRejected or AckBusy is an
// answer, not an error), or:
//   - a *FrameError if b is invalid or its frame is larger than
//     MaxFrameSize (nothing was sent);
//   - a *ConnError if the connection failed: dial again;
//   - a *StreamError if only this exchange failed (stream reset, deadline
//     or ctx expired, bad answer): send the batch again.
func (c *Client) Send(ctx context.Context, b *Batch) (*Ack, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	bufp := c.getBuf()
	defer c.bufs.Put(bufp)
	frame, err := AppendFrame((*bufp)[:0], KindBatch, b, c.encodeOptions())
	*bufp = frame[:0]
	if err != nil {
		return nil, fmt.Errorf("send batch %d: %w", b.Seq, err)
	}
	if size := len(frame) - HeaderSize; size > c.cfg.MaxFrameSize {
		return nil, frameErr(ErrTooLarge, nil, "batch %d encodes to %d bytes, the limit is %d: split it", b.Seq, size, c.cfg.MaxFrameSize)
	}
	return c.exchange(ctx, b.Seq, frame)
}

// SendRaw sends a batch whose contributions are already msgpack-encoded
// (see RawBatch) and waits for its ack. Only the envelope is checked here;
// the receiver validates the contributions and rejects a malformed batch.
// It is safe for concurrent use, like Send.
func (c *Client) SendRaw(ctx context.Context, b *RawBatch) (*Ack, error) {
	if b.Version != ProtocolVersion {
		return nil, fmt.Errorf("send: %w", versionErr("batch", b.Version))
	}
	if b.Agent == "" || len(b.Contributions) == 0 {
		return nil, fmt.Errorf("send: %w", frameErr(ErrInvalid, nil, "batch %d has no agent name or no contributions", b.Seq))
	}
	bufp := c.getBuf()
	defer c.bufs.Put(bufp)
	frame, err := AppendFrame((*bufp)[:0], KindBatch, b, c.encodeOptions())
	*bufp = frame[:0]
	if err != nil {
		return nil, fmt.Errorf("send batch %d: %w", b.Seq, err)
	}
	if size := len(frame) - HeaderSize; size > c.cfg.MaxFrameSize {
		return nil, frameErr(ErrTooLarge, nil, "batch %d encodes to %d bytes, the limit is %d: split it", b.Seq, size, c.cfg.MaxFrameSize)
	}
	return c.exchange(ctx, b.Seq, frame)
}

func (c *Client) encodeOptions() EncodeOptions {
	return EncodeOptions{Compress: c.cfg.Compress, Fastest: c.cfg.CompressFastest, Best: c.compressBest.Load()}
}

// SetCompressBest switches compression (when Compress is on) to zstd's
// best level for the batches sent from now on, or back to the default:
// on a slow link smaller frames are worth the CPU.
func (c *Client) SetCompressBest(best bool) { c.compressBest.Store(best) }

// PathStats is what QUIC knows of the path to the server.
type PathStats struct {
	// SmoothedRTT is QUIC's smoothed round-trip time; MinRTT the least
	// seen.
	SmoothedRTT, MinRTT time.Duration
	// PacketsSent counts packets sent, PacketsLost those declared lost
	// (which may later go down a little, when a packet declared lost
	// arrives after all).
	PacketsSent, PacketsLost uint64
	// BytesSent counts QUIC bytes sent, retransmissions included.
	BytesSent uint64
	// CongestionWindow is the sender's congestion window in bytes.
	CongestionWindow uint64
}

// PathStats returns QUIC's view of the connection's path.
func (c *Client) PathStats() PathStats {
	st := c.conn.ConnectionStats()
	return PathStats{SmoothedRTT: st.SmoothedRTT, MinRTT: st.MinRTT, PacketsSent: st.PacketsSent,
		PacketsLost: st.PacketsLost, BytesSent: st.BytesSent, CongestionWindow: st.CongestionWindow}
}

// maxPooledFrame keeps one huge batch from pinning its buffer.
const maxPooledFrame = 1 << 20

func (c *Client) getBuf() *[]byte {
	if p, ok := c.bufs.Get().(*[]byte); ok && cap(*p) <= maxPooledFrame {
		return p
	}
	return new([]byte)
}

// exchange runs one stream: write frame, FIN, read one Ack frame.
func (c *Client) exchange(ctx context.Context, seq uint64, frame []byte) (*Ack, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.SendTimeout)
		defer cancel()
	}
	str, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, c.fail(ctx, "open stream", seq, err)
	}
	// The context, not a stream deadline, bounds the exchange: when it
	// ends, both directions are cancelled, and fail sees ctx.Err().
	stop := context.AfterFunc(ctx, func() {
		str.CancelRead(StreamCodeCanceled)
		str.CancelWrite(StreamCodeCanceled)
	})
	defer stop()

	n, werr := str.Write(frame)
	c.bytesSent.Add(uint64(n))
	if werr == nil {
		werr = str.Close()
	}
	// Even if the write failed, read: a server that rejects a frame
	// answers first and then stops reading, which fails our write.
	r := countingReader{r: str, n: &c.bytesReceived}
	f, rerr := ReadFrame(r, c.cfg.MaxFrameSize)
	if rerr != nil {
		str.CancelRead(StreamCodeCanceled)
		if werr != nil {
			return nil, c.fail(ctx, "write", seq, werr)
		}
		return nil, c.fail(ctx, "read ack", seq, rerr)
	}
	ack, err := DecodeAck(f)
	if err != nil {
		str.CancelRead(StreamCodeCanceled)
		return nil, &StreamError{Seq: seq, Op: "decode ack", Err: err}
	}
	// Read to the end so the stream completes; the server closes right
	// after its ack, so this returns at once.
	if err := readEOF(r); err != nil {
		str.CancelRead(StreamCodeCanceled)
		if errors.Is(err, errTrailingData) {
			return nil, &StreamError{Seq: seq, Op: "read ack", Err: frameErr(ErrMalformed, nil, "data after the ack")}
		}
	}
	if ack.Seq == 0 && ack.Status == AckRejected {
		// The server refused the frame before it could read a sequence
		// number: the rejection answers this stream. Resending the same
		// bytes cannot help; the caller sets the batch aside.
		ack.Seq = seq
	}
	if ack.Seq != seq {
		return nil, &StreamError{Seq: seq, Op: "read ack", Err: frameErr(ErrInvalid, nil, "ack for batch %d on the stream of batch %d", ack.Seq, seq)}
	}
	c.acks.Add(1)
	return ack, nil
}

// fail classifies an exchange error as the connection's or the stream's.
func (c *Client) fail(ctx context.Context, op string, seq uint64, err error) error {
	if isConnError(err) || c.conn.Context().Err() != nil {
		if cause := context.Cause(c.conn.Context()); cause != nil && !isConnError(err) {
			err = cause
		}
		return &ConnError{Op: op, Addr: c.addr, Err: err}
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return &StreamError{Seq: seq, Op: op, Err: err}
}

// Done is closed when the connection has ended, by Close or by failure.
func (c *Client) Done() <-chan struct{} { return c.conn.Context().Done() }

// RemoteAddr returns the server's address.
func (c *Client) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// ClientStats is a snapshot of a client's counters, cumulative since Dial.
type ClientStats struct {
	// BytesSent counts frame bytes written to streams, headers included;
	// with acks received it is the protocol's bandwidth, without QUIC's
	// own packet overhead.
	BytesSent uint64
	// BytesReceived counts ack frame bytes read.
	BytesReceived uint64
	// Acks counts acks received, whatever their status.
	Acks uint64
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		BytesSent:     c.bytesSent.Load(),
		BytesReceived: c.bytesReceived.Load(),
		Acks:          c.acks.Load(),
	}
}

// Close closes the connection (Sends in flight fail with a *ConnError) and
// the client's own socket, if it has one. Safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		_ = c.conn.CloseWithError(ConnCodeClosing, "client closing") // always nil
		if c.ownEP {
			c.closeErr = c.ep.Close()
		}
	})
	return c.closeErr
}

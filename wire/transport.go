package wire

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// QUIC application error codes used on streams (RESET_STREAM and
// STOP_SENDING) and connections (CONNECTION_CLOSE). They are part of the
// protocol; peers see them in their errors.
const (
	// StreamCodeRejected: the receiver answered with AckRejected and
	// stops reading the rest of the stream.
	StreamCodeRejected = 0x100
	// StreamCodeTimeout: the stream missed its deadline.
	StreamCodeTimeout = 0x101
	// StreamCodeCanceled: the sender gave up (its context ended).
	StreamCodeCanceled = 0x102
	// StreamCodeError: the stream failed for another reason (the
	// receiver could not write its answer).
	StreamCodeError = 0x103
	// StreamCodeBusy: the receiver had no room left in the memory its
	// peer may use for decoding; send the batch again later.
	StreamCodeBusy = 0x104

	// ConnCodeClosing: the peer closed the connection normally.
	ConnCodeClosing = 0x0
	// ConnCodeShutdown: the server is shutting down; dial again later,
	// or another node.
	ConnCodeShutdown = 0x1
	// ConnCodeBusy: the server holds as many connections as it allows;
	// dial again later, or another node.
	ConnCodeBusy = 0x2
	// ConnCodeReplaced: the same identity opened more connections than
	// the server allows one peer, and this, its oldest, was closed.
	ConnCodeReplaced = 0x3
)

// Peer identifies the sender of a batch.
type Peer struct {
	// Addr is the sender's UDP address.
	Addr net.Addr
	// CommonName is the CommonName of the sender's client certificate,
	// verified against the cluster CA: the agent's name for agents, the
	// node's name for aggregators. Whether it must match Batch.Agent is
	// the handler's policy (a forwarding aggregator sends batches of many
	// agents).
	CommonName string
	// ALPN is the negotiated application protocol, ALPN or ALPNForward,
	// which tells a handler serving both who is talking.
	ALPN string
	// Certificate is the sender's verified client certificate, for
	// handlers whose policy needs more than its name (an aggregator takes
	// forwarded batches only from node certificates).
	Certificate *x509.Certificate
}

// Handler processes batches received by a Server.
//
// HandleBatch is called concurrently, from one goroutine per stream, for
// every valid batch; implementations must be safe for concurrent use. It
// may block (a write-ahead log append, a forward to the owner), but must
// return when ctx is done, which happens at the stream's deadline and when
// the server closes; Server.Close waits for it. b belongs to the handler.
//
// The returned Ack must have a Status (and a Redirect for AckRedirect); the
// server fills in Version and Seq. AckOK promises the batch is durable:
// the agent drops it on receipt. A handler that cannot make it durable in
// time answers AckBusy with a retry hint.
type Handler interface {
	HandleBatch(ctx context.Context, peer Peer, b *Batch) Ack
}

// PayloadHandler is a Handler that also takes the batch's payload as
// received: the decompressed msgpack of its frame. A server calls
// HandleBatchPayload instead of HandleBatch when its Handler implements
// it. payload belongs to the handler, which may keep it (an aggregator's
// write-ahead log stores it as is, rather than encode the decoded batch
// again); it decodes to b.
type PayloadHandler interface {
	Handler
	HandleBatchPayload(ctx context.Context, peer Peer, b *Batch, payload []byte) Ack
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, peer Peer, b *Batch) Ack

// HandleBatch calls f.
func (f HandlerFunc) HandleBatch(ctx context.Context, peer Peer, b *Batch) Ack {
	return f(ctx, peer, b)
}

// countingReader counts bytes read into a shared counter.
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

// errTrailingData reports bytes after the one frame a stream may carry.
var errTrailingData = errors.New("data after the frame")

// readEOF reads r to its end, expecting nothing more. It returns nil at
// io.EOF, errTrailingData if a byte arrives, or the read error.
func readEOF(r io.Reader) error {
	var b [1]byte
	n, err := io.ReadAtLeast(r, b[:], 1)
	if n > 0 {
		return errTrailingData
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// isConnError tells whether a QUIC error means the whole connection is
// gone, as opposed to one stream.
func isConnError(err error) bool {
	var (
		appErr       *quic.ApplicationError
		transportErr *quic.TransportError
		idleErr      *quic.IdleTimeoutError
		handshakeErr *quic.HandshakeTimeoutError
		resetErr     *quic.StatelessResetError
		versionErr   *quic.VersionNegotiationError
	)
	return errors.As(err, &appErr) || errors.As(err, &transportErr) ||
		errors.As(err, &idleErr) || errors.As(err, &handshakeErr) ||
		errors.As(err, &resetErr) || errors.As(err, &versionErr) ||
		errors.Is(err, net.ErrClosed)
}

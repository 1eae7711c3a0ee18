package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"
)

// LiveHandler takes the live counters agents send (see Live). A server
// whose Handler implements it grants agents' connections (ALPN) live
// streams; one whose Handler does not grants none, and agents then send
// no live counters. HandleLive is called once per message, in the
// stream's order, from the stream's goroutine: a slow handler slows that
// stream only. It must not keep m after it returns.
type LiveHandler interface {
	HandleLive(ctx context.Context, peer Peer, m *Live)
}

// Live streams a server grants, and how fast it reads them.
const (
	// maxLiveStreamsPerConn is how many live streams one connection may
	// have open; an agent keeps one, and opens another when it abandons
	// the first.
	maxLiveStreamsPerConn = 2
	// liveMessagesPerSecond and liveBurst bound how fast a server reads
	// one live stream's messages (an agent sends about one a second, or
	// a few when a message is split): a faster sender waits on QUIC's
	// flow control.
	liveMessagesPerSecond = 10
	liveBurst             = 20
)

// ErrNoLive is returned by OpenLive when the server grants no live
// stream: it predates them, has them turned off, or still holds the
// connection's earlier live streams.
var ErrNoLive = errors.New("wire: the server grants no live stream")

// LiveStream is the sending side of one live stream. It is not safe for
// concurrent use.
type LiveStream struct {
	str      *quic.SendStream
	enc      *LiveEncoder
	compress bool
	buf      []byte
	bytes    uint64
}

// OpenLive opens a live stream on the connection: a unidirectional
// stream scheduled before the batches' streams (QUIC urgency 1 against
// their 3), so a second's counters do not wait behind a bulk upload.
// When the server has granted no stream (yet) it waits for one until ctx
// ends, and then returns ErrNoLive: a server that takes no live counters
// grants none.
func (c *Client) OpenLive(ctx context.Context) (*LiveStream, error) {
	str, err := c.conn.OpenUniStream()
	if _, ok := errors.AsType[*quic.StreamLimitReachedError](err); ok {
		str, err = c.conn.OpenUniStreamSync(ctx)
		if err != nil && ctx.Err() != nil && c.conn.Context().Err() == nil {
			return nil, ErrNoLive
		}
	}
	if err != nil {
		return nil, c.fail(ctx, "open live stream", 0, err)
	}
	str.SetPriority(1, false)
	return &LiveStream{str: str, enc: NewLiveEncoder(), compress: c.cfg.Compress}, nil
}

// Send writes the records of m that changed since this stream's last
// message, finishing by deadline. It returns the frame's size, 0 when
// there was nothing to send. Any error leaves the stream unusable: Abort
// it and open another, which sends every campaign-minute afresh.
func (s *LiveStream) Send(m *Live, deadline time.Time) (int, error) {
	frame, ok, err := s.enc.AppendFrame(s.buf[:0], m, s.compress)
	if err != nil || !ok {
		return 0, err
	}
	s.buf = frame[:0]
	_ = s.str.SetWriteDeadline(deadline) // never fails
	n, err := s.str.Write(frame)
	s.bytes += uint64(n)
	if err != nil {
		return n, fmt.Errorf("write live message %d: %w", m.Seq, err)
	}
	return n, nil
}

// Retire tells the receiver, with the next message, to forget a
// campaign-minute the sender no longer tracks.
func (s *LiveStream) Retire(campaign string, minute int64) { s.enc.Retire(campaign, minute) }

// BytesSent returns the bytes this stream has written, frame headers
// included. They are not in the client's Stats, which count batches.
func (s *LiveStream) BytesSent() uint64 { return s.bytes }

// Close ends the stream cleanly (the receiver reads to its end).
func (s *LiveStream) Close() error { return s.str.Close() }

// Abort ends the stream at once, discarding what is unsent.
func (s *LiveStream) Abort() { s.str.CancelWrite(StreamCodeCanceled) }

// Done is closed when the stream can no longer be written: the
// connection ended, or the receiver stopped reading it.
func (s *LiveStream) Done() <-chan struct{} { return s.str.Context().Done() }

// acceptLive serves the live streams of one agent connection until ctx
// ends or the connection does.
func (s *Server) acceptLive(ctx context.Context, conn *quic.Conn, h LiveHandler, peer Peer, ps *peerState, log *slog.Logger) {
	defer s.wg.Done()
	for {
		str, err := conn.AcceptUniStream(ctx)
		if err != nil {
			return
		}
		if peer.ALPN != ALPN {
			// Live counters come from agents only.
			str.CancelRead(StreamCodeRejected)
			continue
		}
		s.wg.Add(1)
		go s.serveLive(ctx, str, h, peer, ps, log)
	}
}

// serveLive reads one live stream's messages until it ends. A message
// the decoder refuses ends the stream (its state is lost with it): the
// agent opens another.
func (s *Server) serveLive(ctx context.Context, str *quic.ReceiveStream, h LiveHandler, peer Peer, ps *peerState, log *slog.Logger) {
	defer s.wg.Done()
	s.counters.liveStreams.Add(1)
	stop := context.AfterFunc(ctx, func() { str.CancelRead(StreamCodeCanceled) })
	defer stop()
	dec := NewLiveDecoder()
	lim := rate.NewLimiter(liveMessagesPerSecond, liveBurst)
	r := countingReader{r: str, n: &s.counters.liveBytesIn}
	for {
		if err := lim.Wait(ctx); err != nil {
			return
		}
		budget := &streamBudget{l: s.limits, p: ps}
		f, err := readFrame(r, MaxLiveFrameSize, budget.reserve(ctx))
		var m *Live
		if err == nil {
			m, err = dec.Decode(f)
		}
		budget.release()
		switch {
		case errors.Is(err, io.EOF):
			return // the agent closed it
		case err != nil:
			var fe *FrameError
			if errors.As(err, &fe) {
				s.counters.frameErrors[fe.Reason].Add(1)
				s.counters.liveRefused.Add(1)
				log.Debug("live stream refused", "reason", fe.Reason.String(), "err", fe)
				str.CancelRead(StreamCodeRejected)
			} else {
				str.CancelRead(StreamCodeCanceled)
			}
			return
		}
		s.counters.liveMessages.Add(1)
		h.HandleLive(ctx, peer, m)
	}
}

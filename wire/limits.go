package wire

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/semaphore"
)

// Per-peer limits of a Server. A peer is a certificate identity
// (CommonName): every connection of one agent, or of one aggregator node,
// counts against the same budgets, so a sender cannot multiply what it
// may hold by opening more connections.
//
//   - connections: at most MaxConns in all; a peer keeps at most
//     MaxConnsPerPeer, and a new one beyond that closes the peer's oldest
//     (a restarted sender is never locked out by its own stale ones);
//   - streams: at most MaxStreamsPerPeer exchanges of one peer in progress
//     over all its connections; further streams wait unread (the sender
//     stalls on flow control) until a slot frees or their deadline passes;
//   - decode memory: the payloads being read and decompressed by one
//     peer's streams, and by all streams, are bounded in bytes
//     (MaxDecodeBytesPerPeer, MaxDecodeBytes). A stream waits for room for
//     its payload as sent; room for decompressing it is taken only if free
//     at once, else the stream is reset (StreamCodeBusy) and the sender
//     tries again later: waiting while holding a payload could deadlock two
//     streams that each hold half the budget.

// errDecodeBudget reports a stream that found no room to decompress.
var errDecodeBudget = errors.New("no room left in the decode budget")

// peerState is what the server tracks per identity.
type peerState struct {
	conns   []*quic.Conn // oldest first
	streams *semaphore.Weighted
	decode  *semaphore.Weighted
}

// limits enforces the per-peer and global bounds.
type limits struct {
	cfg    ServerConfig
	decode *semaphore.Weighted // global

	mu    sync.Mutex
	peers map[string]*peerState
	conns int

	decodeInUse, decodePeak atomic.Int64
	refused, replaced       atomic.Uint64
	streamWaits, busy       atomic.Uint64
}

func newLimits(cfg ServerConfig) *limits {
	return &limits{cfg: cfg, decode: semaphore.NewWeighted(cfg.MaxDecodeBytes), peers: map[string]*peerState{}}
}

// admit registers a connection of peer and returns the peer's state. It
// also returns the connection to close (the new one when the server is
// full, or the peer's oldest) and its close code, or nil.
func (l *limits) admit(peer string, c *quic.Conn) (ps *peerState, evict *quic.Conn, code quic.ApplicationErrorCode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns >= l.cfg.MaxConns {
		l.refused.Add(1)
		return nil, c, ConnCodeBusy
	}
	p := l.peers[peer]
	if p == nil {
		p = &peerState{streams: semaphore.NewWeighted(int64(l.cfg.MaxStreamsPerPeer)),
			decode: semaphore.NewWeighted(l.cfg.MaxDecodeBytesPerPeer)}
		l.peers[peer] = p
	}
	p.conns = append(p.conns, c)
	l.conns++
	if len(p.conns) > l.cfg.MaxConnsPerPeer {
		l.replaced.Add(1)
		return p, p.conns[0], ConnCodeReplaced
	}
	return p, nil, 0
}

// leave unregisters a connection; it is safe for one never admitted.
func (l *limits) leave(peer string, c *quic.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.peers[peer]
	if p == nil {
		return
	}
	for i, pc := range p.conns {
		if pc == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			l.conns--
			break
		}
	}
	if len(p.conns) == 0 {
		// Streams still ending keep their budget in p and give it back
		// there; a new connection of the peer starts afresh.
		delete(l.peers, peer)
	}
}

// streamBudget is what one stream holds; release gives it all back.
type streamBudget struct {
	l     *limits
	p     *peerState
	slot  bool
	bytes int64
}

// startStream takes a stream slot of peer p, waiting until ctx ends.
func (l *limits) startStream(ctx context.Context, p *peerState) (*streamBudget, error) {
	b := &streamBudget{l: l, p: p}
	if !p.streams.TryAcquire(1) {
		l.streamWaits.Add(1)
		if err := p.streams.Acquire(ctx, 1); err != nil {
			return nil, err
		}
	}
	b.slot = true
	return b, nil
}

// reserve returns the reserve function for readFrame: the first call
// (the payload as sent) waits for room, later ones (decompression) take
// room only if it is free now.
func (b *streamBudget) reserve(ctx context.Context) func(n int) error {
	first := true
	return func(n int) error {
		w := int64(n)
		if w > b.l.cfg.MaxDecodeBytesPerPeer || w > b.l.cfg.MaxDecodeBytes {
			return errDecodeBudget // cannot happen with valid limits
		}
		if first {
			first = false
			if err := b.p.decode.Acquire(ctx, w); err != nil {
				return err
			}
			if err := b.l.decode.Acquire(ctx, w); err != nil {
				b.p.decode.Release(w)
				return err
			}
		} else {
			if !b.p.decode.TryAcquire(w) {
				b.l.busy.Add(1)
				return errDecodeBudget
			}
			if !b.l.decode.TryAcquire(w) {
				b.p.decode.Release(w)
				b.l.busy.Add(1)
				return errDecodeBudget
			}
		}
		b.bytes += w
		now := b.l.decodeInUse.Add(w)
		for {
			peak := b.l.decodePeak.Load()
			if now <= peak || b.l.decodePeak.CompareAndSwap(peak, now) {
				break
			}
		}
		return nil
	}
}

// release returns everything the stream holds.
func (b *streamBudget) release() {
	if b.bytes > 0 {
		b.p.decode.Release(b.bytes)
		b.l.decode.Release(b.bytes)
		b.l.decodeInUse.Add(-b.bytes)
		b.bytes = 0
	}
	if b.slot {
		b.p.streams.Release(1)
		b.slot = false
	}
}

package ship

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/wire"
)

// A spooled batch goes out as one or more pieces: first whole, and when a
// piece misses its deadline, as its two halves. Acknowledged pieces are
// never sent again; the spool's batch is acked when its last piece is.
// What remains of a batch survives a lost connection (it is nacked and
// comes back from the spool with its remaining pieces), but not a restart,
// after which the whole batch is sent again (the aggregator's merge is
// idempotent, so that costs bytes, never exactness). A piece of one
// contribution, or under minPieceBytes, is not split: each deadline it
// misses doubles its next.

// minPieceBytes is the size below which a piece that misses its deadline
// is not split but given a longer deadline: smaller pieces would not get
// through a link that cannot carry this one any sooner (a cut link, a
// link whose round trip dominates), and splitting them down to single
// contributions during an outage would leave many tiny streams to send
// once it ends.
const minPieceBytes = 4 << 10

// piece is part of a spooled batch: a msgpack array of contributions.
type piece struct {
	payload []byte
	// misses is the deadlines this piece missed while it was not split
	// (one contribution, or under minPieceBytes); each doubles its next
	// deadline.
	misses int
}

// partials holds the unacked pieces of batches that were split and not
// yet fully delivered, by spool sequence number.
type partials struct {
	mu sync.Mutex
	m  map[uint64][]piece
}

// take returns the pieces left of batch seq, or the whole payload.
func (p *partials) take(seq uint64, payload []byte) []piece {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ps, ok := p.m[seq]; ok {
		delete(p.m, seq)
		return ps
	}
	return []piece{{payload: payload}}
}

// keep remembers the pieces left of batch seq for when it is sent again.
// A batch with its whole payload left needs nothing remembered.
func (p *partials) keep(seq uint64, left []piece, whole []byte) {
	if len(left) == 0 || (len(left) == 1 && len(left[0].payload) == len(whole) && left[0].misses == 0) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[uint64][]piece{}
	}
	p.m[seq] = left
}

// forget drops what is remembered of batch seq.
func (p *partials) forget(seq uint64) {
	p.mu.Lock()
	delete(p.m, seq)
	p.mu.Unlock()
}

// splitPayload cuts a msgpack array of contributions into two arrays of
// half the contributions each, without decoding them. It returns ok false
// for an array of fewer than two, and an error for one it cannot read.
func splitPayload(payload []byte) (a, b []byte, ok bool, err error) {
	dec := msgpack.NewDecoder(bytes.NewReader(payload))
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return nil, nil, false, fmt.Errorf("split batch: %w", err)
	}
	if n < 2 {
		return nil, nil, false, nil
	}
	elems := make([]msgpack.RawMessage, n)
	for i := range elems {
		if err := dec.Decode(&elems[i]); err != nil {
			return nil, nil, false, fmt.Errorf("split batch: contribution %d: %w", i, err)
		}
	}
	join := func(part []msgpack.RawMessage) []byte {
		size := 5
		for _, e := range part {
			size += len(e)
		}
		out := wire.AppendContributionsHeader(make([]byte, 0, size), len(part))
		for _, e := range part {
			out = append(out, e...)
		}
		return out
	}
	return join(elems[:n/2]), join(elems[n/2:]), true, nil
}

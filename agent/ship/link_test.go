package ship_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/wire"
)

// thinLink is a Sender over a link that carries rate payload bytes per
// second, one batch at a time in the order they arrive: a batch whose
// context ends before its last byte is through is lost, and the time it
// took on the link with it. It records every CID the aggregator
// acknowledged, and every CID a send carried after it was acknowledged.
type thinLink struct {
	t    *testing.T
	exp  *spooled
	rate int // payload bytes per second
	turn chan struct{}

	// breakAfter, if positive, breaks the connection after this many
	// acknowledged sends (the next send fails, and every later one on
	// the same connection).
	breakAfter int

	carried int // payload bytes put on the link, lost ones included
	acked   map[uint64]int
	resent  int // contributions sent again after their ack
	sends   int
	dials   int
}

func newThinLink(t *testing.T, exp *spooled, rate int) *thinLink {
	return &thinLink{t: t, exp: exp, rate: rate, turn: make(chan struct{}, 1), acked: map[uint64]int{}}
}

type thinConn struct {
	l      *thinLink
	oks    int
	broken bool
}

func (l *thinLink) dial(ctx context.Context, addr string) (ship.Sender, error) {
	l.dials++
	return &thinConn{l: l}, nil
}

func (c *thinConn) Send(ctx context.Context, b *wire.Batch) (*wire.Ack, error) {
	l := c.l
	payload, err := wire.EncodeContributions(b.Contributions)
	if err != nil {
		l.t.Errorf("encode: %v", err)
		return nil, err
	}
	(&fakeAgg{t: l.t, exp: l.exp}).check(b)
	if c.broken || (l.breakAfter > 0 && c.oks == l.breakAfter) {
		c.broken = true
		return nil, &wire.ConnError{Op: "write", Addr: "thin", Err: errors.New("connection lost")}
	}
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, &wire.StreamError{Seq: b.Seq, Op: "open stream", Err: ctx.Err()}
	}
	defer func() { <-l.turn }()
	l.sends++
	start := time.Now()
	need := time.Duration(len(payload)) * time.Second / time.Duration(l.rate)
	t := time.NewTimer(need)
	defer t.Stop()
	select {
	case <-ctx.Done():
		l.carried += int(time.Since(start) * time.Duration(l.rate) / time.Second)
		return nil, &wire.StreamError{Seq: b.Seq, Op: "write", Err: ctx.Err()}
	case <-t.C:
	}
	l.carried += len(payload)
	for _, x := range b.Contributions {
		if l.acked[x.CID] > 0 {
			l.resent++
		}
		l.acked[x.CID]++
	}
	c.oks++
	return ok(b.Seq), nil
}

func (c *thinConn) Close() error { return nil }

// TestThinLinkNeverLivelocks: batches that need several times the send
// timeout on the link are split until they get through, and every
// contribution arrives, none twice, while a shipper that resent them
// whole at a fixed timeout would never deliver one. The bytes thrown away
// by missed deadlines stay a small multiple of the data.
func TestThinLinkNeverLivelocks(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		// Two flushes of 1500 contributions in batches of 1500: about
		// 190 KB, or 19 s each of a 10 KB/s link, against a 2 s timeout.
		exp := openSpool(t, 2, 1500, 1500)
		defer exp.sp.Close()
		total := int(exp.sp.Stats().PendingBytes)
		link := newThinLink(t, exp, 10_000)
		sh, reg := newShipperDial(t, exp, link.dial, func(c *ship.Config) {
			c.SendTimeout, c.InFlight = 2*time.Second, 4
		})
		stop := run(sh)
		defer stop()

		start := time.Now()
		for exp.sp.Stats().PendingBatches > 0 && time.Since(start) < 10*time.Minute {
			time.Sleep(time.Second)
		}
		took := time.Since(start)
		checkAllAcked(t, exp.sp)
		if len(link.acked) != 3000 {
			t.Fatalf("%d distinct contributions acknowledged, want 3000", len(link.acked))
		}
		if link.resent != 0 {
			t.Fatalf("%d contributions sent again after they were acknowledged", link.resent)
		}
		// At 10 KB/s the data need total/10000 s; splitting and the
		// deadlines it missed may cost a few times that, never forever.
		ideal := time.Duration(total) * time.Second / 10_000
		if took > 4*ideal {
			t.Fatalf("delivered in %v, more than 4 times the %v the link needs", took, ideal)
		}
		if link.carried > 3*total {
			t.Fatalf("%d bytes put on the link for %d of data: more than 3 times", link.carried, total)
		}
		if splits := metric(t, reg, "tally_agent_batch_splits_total", ""); splits == 0 {
			t.Fatal("no batch was split, yet none fits the send timeout")
		}
		if link.dials != 1 {
			t.Fatalf("%d connections: a missed deadline must not cost the connection", link.dials)
		}
		t.Logf("%d B of batches over a 10 KB/s link with a 2 s send timeout: delivered in %v (the link needs %v), %d B on the link, %v splits",
			total, took, ideal, link.carried, metric(t, reg, "tally_agent_batch_splits_total", ""))
	})
}

// TestSplitBatchResumesAfterReconnect: when the connection is lost after
// some pieces of a split batch were acknowledged, the new connection
// sends only the pieces left: nothing acknowledged goes out again.
func TestSplitBatchResumesAfterReconnect(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		exp := openSpool(t, 1, 1500, 1500)
		defer exp.sp.Close()
		link := newThinLink(t, exp, 10_000)
		link.breakAfter = 2 // two pieces through, then the connection dies
		sh, reg := newShipperDial(t, exp, link.dial, func(c *ship.Config) { c.SendTimeout, c.InFlight = 2*time.Second, 1 })
		stop := run(sh)
		defer stop()
		for start := time.Now(); exp.sp.Stats().PendingBatches > 0 && time.Since(start) < 10*time.Minute; {
			time.Sleep(time.Second)
		}
		checkAllAcked(t, exp.sp)
		if len(link.acked) != 1500 || link.resent != 0 {
			t.Fatalf("%d of 1500 contributions acknowledged, %d sent again after their ack", len(link.acked), link.resent)
		}
		if link.dials < 2 {
			t.Fatalf("%d connections; the test meant to break one", link.dials)
		}
		if metric(t, reg, "tally_agent_batch_splits_total", "") == 0 {
			t.Fatal("the batch was never split")
		}
	})
}

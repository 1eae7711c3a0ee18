// Package forward hands contributions from one aggregator node to the
// node that owns their campaign, over QUIC with the forwarding ALPN
// (wire.ALPNForward) and the node's own certificate.
//
// A forward succeeds only when the owner acknowledges it, which means the
// owner has it in its write-ahead log; until then the sender keeps the
// contributions (in its own log and merge store) and tries again.
package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/wire"
)

// Bounds of one forwarded batch: contributions carry cumulative
// HyperLogLogs (up to 16 KiB each), so batches are cut by encoded size,
// well under the default 16 MiB frame limit, and by count.
const (
	MaxContribsPerBatch = 4096
	MaxBytesPerBatch    = 2 << 20
	// InFlight is how many batches of one Forward call are in flight at
	// once: the owner acknowledges each after its own fsync, so one at a
	// time would cost a round trip and an fsync per batch.
	InFlight = 4
)

// Forwarder keeps one connection per peer address. It is safe for
// concurrent use.
type Forwarder struct {
	node string
	ep   *wire.Endpoint
	tls  *tls.Config
	log  *slog.Logger
	seq  atomic.Uint64

	mu      sync.Mutex
	clients map[string]*wire.Client

	batches       *prometheus.CounterVec
	contributions prometheus.Counter
}

// New returns a Forwarder that dials from ep (the node's shared QUIC
// endpoint) with tlsConf (the node's client certificate). node names this
// node in forwarded batches' Region field, for the receiver's logs.
func New(node string, ep *wire.Endpoint, tlsConf *tls.Config, reg prometheus.Registerer, logger *slog.Logger) *Forwarder {
	tc := tlsConf.Clone()
	tc.NextProtos = []string{wire.ALPNForward}
	f := &Forwarder{node: node, ep: ep, tls: tc, log: logger.With("component", "forward"), clients: map[string]*wire.Client{}}
	f.batches = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_forwarded_batches_total",
		Help: "Batches handed to the owner node, by outcome (ok, busy, rejected, error)."}, []string{"outcome"})
	f.contributions = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_forwarded_contributions_total",
		Help: "Contributions the owner node acknowledged."})
	reg.MustRegister(f.batches, f.contributions)
	return f
}

// Forward sends one agent's contributions to the node at addr and returns
// nil once it acknowledged all of them (up to InFlight batches at once).
func (f *Forwarder) Forward(ctx context.Context, addr, agent string, cs []wire.Contribution) error {
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, InFlight)
		mu   sync.Mutex
		errs []error
	)
	for len(cs) > 0 {
		n, size := 0, 0
		for n < len(cs) && n < MaxContribsPerBatch && (n == 0 || size+contribSize(&cs[n]) <= MaxBytesPerBatch) {
			size += contribSize(&cs[n])
			n++
		}
		part := cs[:n]
		cs = cs[n:]
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, ctx.Err())...)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f.send(ctx, addr, agent, part); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			f.contributions.Add(float64(len(part)))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// contribSize estimates a contribution's encoded size.
func contribSize(c *wire.Contribution) int {
	return 64 + len(c.Series.Campaign) + len(c.Series.Source) + len(c.Series.Medium) + len(c.State.HLL) + len(c.State.Quantiles) +
		len(c.State.Registers) + 32*(len(c.State.Bots)+len(c.State.Votes))
}

func (f *Forwarder) send(ctx context.Context, addr, agent string, cs []wire.Contribution) error {
	c, err := f.client(ctx, addr)
	if err != nil {
		f.batches.WithLabelValues("error").Inc()
		return err
	}
	ack, err := c.Send(ctx, &wire.Batch{Version: wire.ProtocolVersion, Agent: agent, Region: f.node,
		Seq: f.seq.Add(1), Contributions: cs})
	if err != nil {
		f.batches.WithLabelValues("error").Inc()
		var ce *wire.ConnError
		if errors.As(err, &ce) {
			f.drop(addr, c)
		}
		return fmt.Errorf("forward to %s: %w", addr, err)
	}
	switch ack.Status {
	case wire.AckOK:
		f.batches.WithLabelValues("ok").Inc()
		return nil
	case wire.AckBusy:
		f.batches.WithLabelValues("busy").Inc()
		return fmt.Errorf("forward to %s: busy: %s", addr, ack.Reason)
	default:
		f.batches.WithLabelValues("rejected").Inc()
		return fmt.Errorf("forward to %s: %s: %s", addr, ack.Status, ack.Reason)
	}
}

func (f *Forwarder) client(ctx context.Context, addr string) (*wire.Client, error) {
	f.mu.Lock()
	c := f.clients[addr]
	f.mu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
			f.drop(addr, c)
		default:
			return c, nil
		}
	}
	c, err := wire.Dial(ctx, addr, f.tls, wire.ClientConfig{Endpoint: f.ep})
	if err != nil {
		return nil, fmt.Errorf("forward: dial %s: %w", addr, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.clients[addr]; old != nil {
		c.Close() // another goroutine won the race
		return old, nil
	}
	f.clients[addr] = c
	return c, nil
}

func (f *Forwarder) drop(addr string, c *wire.Client) {
	f.mu.Lock()
	if f.clients[addr] == c {
		delete(f.clients, addr)
	}
	f.mu.Unlock()
	c.Close()
}

// Close closes every connection.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.clients {
		c.Close()
		delete(f.clients, addr)
	}
	return nil
}

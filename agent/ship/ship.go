// Package ship delivers spooled batches to the aggregator over QUIC.
//
// Up to InFlight batches are outstanding at once, each on its own stream.
// A batch leaves the spool only when the aggregator acknowledges it as
// durable; any doubt (a broken connection, a timeout, a busy answer) puts
// it back to be sent again, which the aggregator's idempotent merge makes
// harmless. Reconnects back off exponentially with jitter (a delay in [d/2, d)) and rotate
// through the configured addresses.
package ship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/wire"
)

// Sender sends one batch and waits for its ack. It must be safe for
// concurrent use (one stream per call).
type Sender interface {
	Send(ctx context.Context, b *wire.Batch) (*wire.Ack, error)
	Close() error
}

// RawSender is a Sender that can also send a spooled payload without
// decoding it (wire.Client is one). The shipper uses it when it can.
type RawSender interface {
	SendRaw(ctx context.Context, b *wire.RawBatch) (*wire.Ack, error)
}

// Dialer opens a Sender to an aggregator address.
type Dialer func(ctx context.Context, addr string) (Sender, error)

// Queue is the part of the spool the shipper uses.
type Queue interface {
	Next(ctx context.Context) (spool.Item, error)
	Ack(seq uint64) error
	Nack(seq uint64) error
}

// Config tunes the shipper.
type Config struct {
	Agent, Region string
	// Addrs are tried in order, rotating on failure.
	Addrs []string
	// InFlight is the number of batches awaiting acks at once.
	InFlight int
	// BackoffMin and BackoffMax bound reconnect and retry delays.
	BackoffMin, BackoffMax time.Duration
	// SendTimeout bounds one batch round trip.
	SendTimeout time.Duration
	// OnMembershipChange, if set, is called when an ack reports a cluster
	// membership (Ack.Epoch) other than the one seen before. The agent
	// then re-sends its open minutes, so campaigns' new owners get them.
	OnMembershipChange func(epoch uint64)
	// RouteToOwner sends each batch straight to the aggregator node that
	// owns its campaigns, at the address the cluster reports in acks,
	// instead of through the connected node (which forwards). Turn it off
	// when agents reach the cluster only through addresses the nodes do
	// not advertise (a UDP load balancer, NAT, a relay).
	RouteToOwner bool
	// MaxBatchesPerSecond caps the send rate (0: no cap), so the backlog
	// of a long outage drains without knocking over a recovering cluster.
	MaxBatchesPerSecond float64
	// DeadLetterDir keeps batches the aggregator rejected as malformed, so
	// an operator can inspect them; they are never silently dropped.
	DeadLetterDir string
}

// Shipper moves batches from the spool to the aggregator.
type Shipper struct {
	cfg   Config
	queue Queue
	dial  Dialer
	log   *slog.Logger

	connected atomic.Bool
	addr      atomic.Pointer[string]
	epoch     atomic.Uint64
	limiter   *rate.Limiter // nil: no cap
	members   atomic.Pointer[[]wire.Member]

	peersMu sync.Mutex
	peers   map[string]*peer // owner connections by address

	m metrics
}

type metrics struct {
	batches    *prometheus.CounterVec
	sendTime   prometheus.Histogram
	reconnects prometheus.Counter
	deadLetter prometheus.Counter
	toOwner    prometheus.Counter
}

// New returns a Shipper.
func New(cfg Config, q Queue, dial Dialer, reg prometheus.Registerer, logger *slog.Logger) *Shipper {
	if cfg.InFlight <= 0 {
		cfg.InFlight = 8
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 200 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 30 * time.Second
	}
	s := &Shipper{cfg: cfg, queue: q, dial: dial, log: logger.With("component", "ship"), peers: map[string]*peer{}}
	if cfg.MaxBatchesPerSecond > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(cfg.MaxBatchesPerSecond), max(1, int(cfg.MaxBatchesPerSecond)))
	}
	s.m = metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_batches_sent_total",
			Help: "Batch sends by outcome (ok, busy, rejected, redirect, error)."}, []string{"outcome"}),
		sendTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_agent_send_duration_seconds",
			Help: "Batch round trip until the ack.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_connects_total",
			Help: "Connections established to an aggregator."}),
		deadLetter: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_dead_letter_batches_total",
			Help: "Batches the aggregator rejected as invalid, kept in the dead-letter directory."}),
	}
	s.m.toOwner = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_batches_sent_to_owner_total",
		Help: "Batches acknowledged by their campaigns' owner on a direct connection (the rest went through the connected node)."})
	reg.MustRegister(s.m.batches, s.m.sendTime, s.m.reconnects, s.m.deadLetter, s.m.toOwner)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_agent_connected",
		Help: "1 while connected to an aggregator."}, func() float64 {
		if s.connected.Load() {
			return 1
		}
		return 0
	}))
	return s
}

// Connected reports whether a connection is up.
func (s *Shipper) Connected() bool { return s.connected.Load() }

// redirectError asks Run to reconnect to the owner.
type redirectError struct{ addr string }

func (e *redirectError) Error() string { return "redirected to " + e.addr }

// Run ships until ctx is done. Unacknowledged batches stay in the spool.
func (s *Shipper) Run(ctx context.Context) error {
	defer s.closePeers()
	failures := 0
	next := 0
	var override string
	for ctx.Err() == nil {
		addr := s.cfg.Addrs[next%len(s.cfg.Addrs)]
		if override != "" {
			addr, override = override, ""
		}
		conn, err := s.dial(ctx, addr)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			failures++
			next++
			if failures == 1 || failures%20 == 0 {
				s.log.Warn("cannot reach aggregator; batches stay in the spool", "addr", addr, "err", err, "attempts", failures)
			}
			s.sleep(ctx, s.backoff(failures))
			continue
		}
		s.m.reconnects.Inc()
		s.connected.Store(true)
		s.addr.Store(&addr)
		s.log.Info("connected to aggregator", "addr", addr, "after_attempts", failures+1)
		failures = 0
		err = s.serve(ctx, conn)
		s.connected.Store(false)
		conn.Close()
		if ctx.Err() != nil {
			break
		}
		var re *redirectError
		if errors.As(err, &re) {
			override = re.addr
			continue
		}
		s.log.Warn("connection to aggregator lost; reconnecting", "addr", addr, "err", err)
		failures++
		s.sleep(ctx, s.backoff(failures))
	}
	return nil
}

func (s *Shipper) serve(ctx context.Context, conn Sender) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, s.cfg.InFlight)
	var wg sync.WaitGroup
	for range s.cfg.InFlight {
		wg.Go(func() { errs <- s.worker(ctx, conn) })
	}
	err := <-errs
	cancel()
	wg.Wait()
	return err
}

func (s *Shipper) worker(ctx context.Context, conn Sender) error {
	busy := 0
	for {
		if s.limiter != nil {
			if err := s.limiter.Wait(ctx); err != nil {
				return err
			}
		}
		item, err := s.queue.Next(ctx)
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
		start := time.Now()
		target, peerAddr := s.pick(sctx, item, conn)
		ack, err := s.send(sctx, target, item)
		cancel()
		if ue, ok := err.(*undecodableError); ok {
			s.deadLetterItem(item, ue.Error())
			continue
		}
		if err != nil && peerAddr != "" {
			// The owner is unreachable; the connected node still is.
			s.nack(item.Seq)
			s.m.batches.WithLabelValues("error").Inc()
			s.peerFailed(peerAddr, target, err)
			continue
		}
		if err != nil {
			s.nack(item.Seq)
			s.m.batches.WithLabelValues("error").Inc()
			return fmt.Errorf("send batch %d: %w", item.Seq, err)
		}
		if len(ack.Members) > 0 {
			ms := ack.Members
			s.members.Store(&ms)
		}
		s.noteEpoch(ack.Epoch)
		switch ack.Status {
		case wire.AckOK:
			s.m.sendTime.Observe(time.Since(start).Seconds())
			s.m.batches.WithLabelValues("ok").Inc()
			if peerAddr != "" {
				s.m.toOwner.Inc()
			}
			busy = 0
			if err := s.queue.Ack(item.Seq); err != nil {
				return fmt.Errorf("ack batch %d in spool: %w", item.Seq, err)
			}
		case wire.AckBusy:
			s.nack(item.Seq)
			s.m.batches.WithLabelValues("busy").Inc()
			busy++
			wait := time.Duration(ack.RetryAfterMillis) * time.Millisecond
			if wait <= 0 {
				wait = s.backoff(busy)
			}
			s.sleep(ctx, jitter(wait))
		case wire.AckRedirect:
			s.nack(item.Seq)
			s.m.batches.WithLabelValues("redirect").Inc()
			if peerAddr != "" {
				continue
			}
			return &redirectError{addr: ack.Redirect}
		default:
			s.m.batches.WithLabelValues("rejected").Inc()
			s.deadLetterItem(item, ack.Reason)
		}
	}
}

// undecodableError is a spooled payload the shipper cannot decode: it is
// set aside as a dead letter, since sending it again cannot help.
type undecodableError struct{ err error }

func (e *undecodableError) Error() string { return e.err.Error() }

// send sends one spooled batch on conn.
func (s *Shipper) send(ctx context.Context, conn Sender, item spool.Item) (*wire.Ack, error) {
	if raw, ok := conn.(RawSender); ok {
		// The payload is the batch's msgpack array of contributions:
		// frame it as is.
		return raw.SendRaw(ctx, &wire.RawBatch{Version: wire.ProtocolVersion, Agent: s.cfg.Agent,
			Region: s.cfg.Region, Seq: item.Seq, Contributions: item.Payload})
	}
	contribs, err := rollup.DecodeBatch(item.Payload)
	if err != nil {
		return nil, &undecodableError{err}
	}
	return conn.Send(ctx, &wire.Batch{Version: wire.ProtocolVersion, Agent: s.cfg.Agent, Region: s.cfg.Region,
		Seq: item.Seq, Contributions: contribs})
}

// peer is a connection to a campaign owner other than the connected node.
type peer struct {
	conn      Sender // nil while not connected
	dialing   bool
	failures  int
	downUntil time.Time
}

// OwnerOf returns the name of the aggregator node that owns campaign in
// the membership last reported by an ack, or "" when unknown.
func (s *Shipper) OwnerOf(campaign string) string {
	ms := s.members.Load()
	if ms == nil {
		return ""
	}
	m, _ := wire.Owner(*ms, campaign)
	return m.Name
}

// pick returns the connection a batch should go out on: its owner's when
// routing to owners and the owner is reachable, else the connected node's
// (which forwards). peerAddr is "" for the connected node.
func (s *Shipper) pick(ctx context.Context, item spool.Item, primary Sender) (conn Sender, peerAddr string) {
	if !s.cfg.RouteToOwner {
		return primary, ""
	}
	ms := s.members.Load()
	if ms == nil || len(*ms) < 2 {
		return primary, ""
	}
	campaign, err := rollup.FirstCampaign(item.Payload)
	if err != nil {
		return primary, ""
	}
	owner, ok := wire.Owner(*ms, campaign)
	if !ok || owner.Addr == "" {
		return primary, ""
	}
	if cur := s.addr.Load(); cur != nil && *cur == owner.Addr {
		return primary, ""
	}
	s.peersMu.Lock()
	p := s.peers[owner.Addr]
	if p == nil {
		p = &peer{}
		s.peers[owner.Addr] = p
	}
	if p.conn != nil {
		c := p.conn
		s.peersMu.Unlock()
		return c, owner.Addr
	}
	if p.dialing || time.Now().Before(p.downUntil) {
		s.peersMu.Unlock()
		return primary, ""
	}
	p.dialing = true
	s.peersMu.Unlock()

	c, err := s.dial(ctx, owner.Addr)
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	p.dialing = false
	if err != nil {
		p.failures++
		p.downUntil = time.Now().Add(s.backoff(p.failures))
		s.log.Debug("cannot reach campaign owner; sending through the connected node", "owner", owner.Name, "addr", owner.Addr, "err", err)
		return primary, ""
	}
	p.conn, p.failures = c, 0
	s.m.reconnects.Inc()
	s.log.Info("connected to campaign owner", "owner", owner.Name, "addr", owner.Addr)
	return c, owner.Addr
}

// peerFailed drops a broken owner connection; batches go through the
// connected node until it can be dialled again.
func (s *Shipper) peerFailed(addr string, conn Sender, err error) {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	p := s.peers[addr]
	if p == nil || p.conn != conn {
		return
	}
	p.conn = nil
	p.failures++
	p.downUntil = time.Now().Add(s.backoff(p.failures))
	conn.Close()
	s.log.Warn("lost connection to campaign owner; sending through the connected node meanwhile", "addr", addr, "err", err)
}

// closePeers closes every owner connection.
func (s *Shipper) closePeers() {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	for addr, p := range s.peers {
		if p.conn != nil {
			p.conn.Close()
		}
		delete(s.peers, addr)
	}
}

// noteEpoch calls OnMembershipChange when the membership an ack reports
// differs from the last one seen (the first one seen is no change: a
// fresh agent has nothing shipped that an owner could lack).
func (s *Shipper) noteEpoch(epoch uint64) {
	if epoch == 0 {
		return
	}
	prev := s.epoch.Swap(epoch)
	if prev != 0 && prev != epoch && s.cfg.OnMembershipChange != nil {
		s.log.Info("aggregator membership changed; re-sending open minutes", "epoch", epoch)
		s.cfg.OnMembershipChange(epoch)
	}
}

// nack returns a batch to the queue. It can only fail for an unknown
// sequence number or a closed spool; either way the batch is still on
// disk and is sent again after a restart, so a log line is all it needs.
func (s *Shipper) nack(seq uint64) {
	if err := s.queue.Nack(seq); err != nil {
		s.log.Warn("returning batch to the spool failed; it is resent after restart", "seq", seq, "err", err)
	}
}

// deadLetterItem keeps a batch the aggregator will never accept and takes
// it out of the queue so it does not block the ones behind it.
func (s *Shipper) deadLetterItem(item spool.Item, reason string) {
	s.m.deadLetter.Inc()
	path := ""
	if s.cfg.DeadLetterDir != "" {
		if err := os.MkdirAll(s.cfg.DeadLetterDir, 0o750); err == nil {
			path = filepath.Join(s.cfg.DeadLetterDir, strconv.FormatUint(item.Seq, 10)+".msgpack")
			if err := os.WriteFile(path, item.Payload, 0o640); err != nil {
				path = "(could not write: " + err.Error() + ")"
			}
		}
	}
	s.log.Error("aggregator rejected a batch; kept it as a dead letter", "seq", item.Seq, "reason", reason, "file", path)
	if err := s.queue.Ack(item.Seq); err != nil {
		s.log.Error("cannot remove dead letter from the spool", "seq", item.Seq, "err", err)
	}
}

func (s *Shipper) backoff(attempt int) time.Duration {
	d := s.cfg.BackoffMin
	for i := 1; i < attempt && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	return jitter(min(d, s.cfg.BackoffMax))
}

// jitter returns a duration in [d/2, d): "equal jitter", so retries from
// many agents spread out but never hammer at once.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func (s *Shipper) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

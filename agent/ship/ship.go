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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/time/rate"

	"github.com/tally-edge/tally/agent/deadletter"
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
	// RouteToOwner sends each batch straight to the aggregator node it
	// was grouped for (spool.Item.Owner), at the address the cluster
	// reports in acks, instead of through the connected node (which
	// forwards). Turn it off when agents reach the cluster only through
	// addresses the nodes do not advertise (a UDP load balancer, NAT, a
	// relay).
	RouteToOwner bool
	// Membership receives the cluster membership acks report; the
	// Batcher that groups flushes by owner reads it. Nil: the shipper
	// keeps its own.
	Membership *Membership
	// MaxBatchesPerSecond caps the send rate (0: no cap), so the backlog
	// of a long outage drains without knocking over a recovering cluster.
	MaxBatchesPerSecond float64
	// DeadLetters keeps batches the aggregator rejected as malformed, so
	// an operator can inspect and replay them; they are never silently
	// dropped. A batch whose dead letter cannot be written stays in the
	// spool. Nil: such batches stay in the spool (and shipping waits).
	DeadLetters *deadletter.Store
	// SpoolName names the spool in dead letters ("live" or "import").
	SpoolName string
}

// HaltError is what Run returns when the aggregator refuses the agent
// itself (wire.RejectIdentity, wire.RejectVersion): every batch would be
// refused alike, so shipping stops with this one error, and the batches
// stay in the spool until the configuration is fixed and the agent
// restarted.
type HaltError struct {
	Code   wire.RejectCode
	Reason string
	Addr   string
}

func (e *HaltError) Error() string {
	what := "refuses this agent's identity (check name against the certificate's CN, and the CA)"
	if e.Code == wire.RejectVersion {
		what = "does not speak this agent's protocol version (upgrade one side)"
	}
	return fmt.Sprintf("aggregator %s %s: %s; shipping stopped, batches stay in the spool", e.Addr, what, e.Reason)
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
	members   *Membership

	peersMu sync.Mutex
	peers   map[string]*peer // owner connections by address

	// problem is why shipping is stuck ("" when it is not): halted, or
	// dead letters that cannot be written. /readyz reports it.
	problem atomic.Pointer[string]

	m metrics
}

type metrics struct {
	batches    *prometheus.CounterVec
	sendTime   prometheus.Histogram
	reconnects prometheus.Counter
	deadLetter prometheus.Counter
	deadFailed prometheus.Counter
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
	s := &Shipper{cfg: cfg, queue: q, dial: dial, log: logger.With("component", "ship"), peers: map[string]*peer{},
		members: cfg.Membership}
	if s.members == nil {
		s.members = &Membership{}
	}
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
		deadFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_dead_letter_failures_total",
			Help: "Rejected batches kept in the spool because their dead letter could not be written (full or I/O error)."}),
	}
	s.m.toOwner = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_batches_sent_to_owner_total",
		Help: "Batches acknowledged by their campaigns' owner on a direct connection (the rest went through the connected node)."})
	reg.MustRegister(s.m.batches, s.m.sendTime, s.m.reconnects, s.m.deadLetter, s.m.deadFailed, s.m.toOwner)
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

// Problem returns why shipping is stuck, or "" when it is not: the
// aggregator refused the agent (Run has stopped), or rejected batches
// cannot be set aside as dead letters.
func (s *Shipper) Problem() string {
	if p := s.problem.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *Shipper) setProblem(p string) {
	if p == "" {
		s.problem.Store(nil)
		return
	}
	s.problem.Store(&p)
}

// redirectError asks Run to reconnect to the owner.
type redirectError struct{ addr string }

func (e *redirectError) Error() string { return "redirected to " + e.addr }

// Run ships until ctx is done, and returns nil then; unacknowledged
// batches stay in the spool. It returns a *HaltError, having logged it
// once, when the aggregator refuses the agent itself.
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
		var halt *HaltError
		if errors.As(err, &halt) {
			s.log.Error("shipping stopped", "reason_code", string(halt.Code), "err", halt)
			s.setProblem(halt.Error())
			return halt
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
			if err := s.deadLetterItem(ctx, item, wire.RejectMalformed, ue.Error()); err != nil {
				return err
			}
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
		s.members.set(ack.Members)
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
			switch ack.Code {
			case wire.RejectIdentity, wire.RejectVersion:
				s.nack(item.Seq)
				addr := peerAddr
				if addr == "" {
					if a := s.addr.Load(); a != nil {
						addr = *a
					}
				}
				return &HaltError{Code: ack.Code, Reason: ack.Reason, Addr: addr}
			}
			if err := s.deadLetterItem(ctx, item, wire.RejectMalformed, ack.Reason); err != nil {
				return err
			}
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
	var contribs []wire.Contribution
	if err := msgpack.Unmarshal(item.Payload, &contribs); err != nil {
		return nil, &undecodableError{fmt.Errorf("decode spooled batch: %w", err)}
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

// pick returns the connection a batch should go out on: that of the
// owner it was grouped for when routing to owners and that node is a
// member and reachable, else the connected node's (which forwards).
// peerAddr is "" for the connected node.
func (s *Shipper) pick(ctx context.Context, item spool.Item, primary Sender) (conn Sender, peerAddr string) {
	if !s.cfg.RouteToOwner || s.members.size() < 2 {
		return primary, ""
	}
	addr, ok := s.members.addr(item.Owner)
	if !ok {
		return primary, ""
	}
	owner := wire.Member{Name: item.Owner, Addr: addr}
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

// deadLetterItem keeps a batch the aggregator will never accept as a dead
// letter and takes it out of the queue, so it does not block the ones
// behind it. Only a letter that is durably written is taken out: when it
// cannot be written (the store is full, the disk fails) the batch goes
// back to the spool, shipping waits a backoff and /readyz says why. It
// returns an error only when ctx ends while waiting.
func (s *Shipper) deadLetterItem(ctx context.Context, item spool.Item, code wire.RejectCode, reason string) error {
	var err error
	if s.cfg.DeadLetters == nil {
		err = errors.New("no dead-letter store")
	} else {
		err = s.cfg.DeadLetters.Put(deadletter.Letter{Spool: s.cfg.SpoolName, Seq: item.Seq, Owner: item.Owner,
			Agent: s.cfg.Agent, Reason: reason, Code: string(code), Time: time.Now().UTC()}, item.Payload)
	}
	if err != nil {
		s.m.deadFailed.Inc()
		s.nack(item.Seq)
		if s.Problem() == "" {
			// Once per episode: the counter says how often.
			s.log.Error("aggregator rejected a batch and its dead letter cannot be written; it stays in the spool and shipping waits",
				"seq", item.Seq, "err", err)
		}
		s.setProblem("rejected batches cannot be kept as dead letters: " + err.Error() + " (tally-agent dead-letters list|replay)")
		s.sleep(ctx, s.cfg.BackoffMax)
		return ctx.Err()
	}
	s.setProblem("")
	s.m.deadLetter.Inc()
	// The reason is the aggregator's; it names fields, not their values.
	s.log.Error("aggregator rejected a batch; kept it as a dead letter", "seq", item.Seq, "reason_code", string(code),
		"reason", reason, "spool", s.cfg.SpoolName)
	if err := s.queue.Ack(item.Seq); err != nil {
		s.log.Error("cannot remove dead letter from the spool", "seq", item.Seq, "err", err)
	}
	return nil
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

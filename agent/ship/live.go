package ship

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/wire"
)

// LiveSource gives the live counters that changed (collector.Collector).
type LiveSource interface {
	TakeLive(changed []wire.LiveRecord, retired []rollup.CampaignMinute) ([]wire.LiveRecord, []rollup.CampaignMinute)
}

// LiveDialer opens a QUIC connection to an aggregator address.
type LiveDialer func(ctx context.Context, addr string) (*wire.Client, error)

// LiveConfig configures a LiveSender.
type LiveConfig struct {
	// Interval is how often changed counters are sent. Default 1s.
	Interval time.Duration
	// Epoch is the agent's restart epoch; Flush the longest time between
	// two of its flushes (the interval, plus what a flush may wait for
	// the link), which tells receivers how long a record may stay
	// unconfirmed.
	Epoch uint32
	Flush time.Duration
	// Source gives the counters; Dial opens connections.
	Source LiveSource
	Dial   LiveDialer
	// Primary returns the address of the node the shipper is connected
	// to ("" when none): counters of campaigns whose owner is not known
	// or not reachable go there (Shipper.Addr).
	Primary func() string
	// Membership names each campaign's owner; with RouteToOwner the
	// counters go to it, as batches do.
	Membership *Membership
	// Addrs are the configured aggregator addresses. Until an ack has
	// told the membership (an agent whose first flush has not landed),
	// counters go to every one of them: each node takes those of the
	// campaigns it owns.
	Addrs        []string
	RouteToOwner bool
	Logger       *slog.Logger
}

// LiveSender sends an agent's live counters: every Interval, the
// campaign-minutes whose counters changed, to the owner of each campaign,
// on a live stream (wire.LiveStream) per node. Until the membership is
// known (the first ack) they go to every configured address, and a node
// drops those of campaigns it does not own. They are a fast path for
// the dashboard only: nothing is acknowledged or retried. A message that
// fails is lost with its stream; the next stream names every
// campaign-minute afresh, so the owner catches up at the next tick, and
// the flush supersedes whatever was lost anyway.
type LiveSender struct {
	cfg   LiveConfig
	log   *slog.Logger
	seq   uint64
	last  map[rollup.CampaignMinute]wire.LiveCounters
	conns map[string]*liveConn // by address

	bytes, messages, errs prometheus.Counter
}

// liveConn is the live stream to one node.
type liveConn struct {
	client  *wire.Client
	stream  *wire.LiveStream
	named   map[rollup.CampaignMinute]bool // what the stream has named
	retryAt time.Time
	used    time.Time
	fails   int
}

// NewLiveSender returns a LiveSender registering its metrics with reg.
func NewLiveSender(cfg LiveConfig, reg prometheus.Registerer) *LiveSender {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Membership == nil {
		cfg.Membership = &Membership{}
	}
	s := &LiveSender{cfg: cfg, log: cfg.Logger.With("component", "live"), last: map[rollup.CampaignMinute]wire.LiveCounters{},
		conns: map[string]*liveConn{}}
	s.bytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_live_bytes_sent_total",
		Help: "Bytes sent in live-counter frames (headers included), not in tally_agent_wire_bytes_sent_total."})
	s.messages = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_live_messages_sent_total",
		Help: "Live-counter messages sent."})
	s.errs = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_live_send_errors_total",
		Help: "Live-counter sends that failed (the stream is reopened; the flush carries the counts anyway)."})
	if reg != nil {
		reg.MustRegister(s.bytes, s.messages, s.errs)
	}
	return s
}

// Run sends every Interval until ctx ends. Sends align to wall-clock
// multiples of Interval, as flushes do: every agent's counters then reach
// the owners at about the same moment each second, and a stream client,
// which gets at most one message a second, gets them at once rather than
// a second later.
func (s *LiveSender) Run(ctx context.Context) {
	t := time.NewTimer(time.Until(time.Now().Truncate(s.cfg.Interval).Add(s.cfg.Interval)))
	defer t.Stop()
	defer s.closeAll()
	var changed []wire.LiveRecord
	var retired []rollup.CampaignMinute
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(time.Until(time.Now().Truncate(s.cfg.Interval).Add(s.cfg.Interval)))
		}
		changed, retired = s.cfg.Source.TakeLive(changed[:0], retired[:0])
		s.tick(ctx, changed, retired)
	}
}

// tick sends the counters of this interval.
func (s *LiveSender) tick(ctx context.Context, changed []wire.LiveRecord, retired []rollup.CampaignMinute) {
	for _, r := range changed {
		s.last[rollup.CampaignMinute{Campaign: r.Campaign, Minute: r.Minute}] = r.Counters
	}
	for _, k := range retired {
		delete(s.last, k)
	}
	if len(changed) == 0 && len(retired) == 0 {
		s.idle()
		return
	}
	// Every campaign-minute goes to its owner's stream; the stream's
	// encoder sends only what differs from what it carried.
	byAddr := map[string][]wire.LiveRecord{}
	owners := map[string]string{}
	everywhere := s.cfg.RouteToOwner && s.cfg.Membership.size() < 2 && len(s.cfg.Addrs) > 1
	for cm, c := range s.last {
		rec := wire.LiveRecord{Campaign: cm.Campaign, Minute: cm.Minute, Counters: c}
		if everywhere {
			for _, addr := range s.cfg.Addrs {
				byAddr[addr] = append(byAddr[addr], rec)
			}
			continue
		}
		addr, ok := owners[cm.Campaign]
		if !ok {
			addr = s.addrOf(cm.Campaign)
			owners[cm.Campaign] = addr
		}
		if addr != "" {
			byAddr[addr] = append(byAddr[addr], rec)
		}
	}
	now := time.Now()
	for addr, c := range s.conns {
		if _, ok := byAddr[addr]; ok || c.stream == nil {
			continue
		}
		for cm := range c.named { // moved to another owner, or retired
			c.stream.Retire(cm.Campaign, cm.Minute)
			delete(c.named, cm)
		}
	}
	for addr, recs := range byAddr {
		c := s.conns[addr]
		if c == nil {
			c = &liveConn{named: map[rollup.CampaignMinute]bool{}}
			s.conns[addr] = c
		}
		c.used = now
		s.send(ctx, addr, c, recs)
	}
	s.idle()
}

// addrOf returns where a campaign's counters go: its owner when routing
// to owners and the owner is known, else the connected node.
func (s *LiveSender) addrOf(campaign string) string {
	if s.cfg.RouteToOwner && s.cfg.Membership.size() > 1 {
		if addr, ok := s.cfg.Membership.addr(s.cfg.Membership.Owner(campaign)); ok {
			return addr
		}
	}
	if s.cfg.Primary != nil {
		return s.cfg.Primary()
	}
	return ""
}

// send sends recs on the stream to addr, opening it if needed.
func (s *LiveSender) send(ctx context.Context, addr string, c *liveConn, recs []wire.LiveRecord) {
	now := time.Now()
	if c.stream != nil {
		select {
		case <-c.stream.Done():
			s.reset(c, now, errors.New("live stream ended"))
		default:
		}
	}
	if c.stream == nil {
		if now.Before(c.retryAt) {
			return
		}
		if err := s.open(ctx, addr, c); err != nil {
			s.reset(c, now, err)
			if errors.Is(err, wire.ErrNoLive) {
				c.retryAt = now.Add(time.Minute) // the node takes none; ask again later
				s.log.Debug("aggregator takes no live counters", "addr", addr)
			}
			return
		}
	}
	// Names the stream holds that are no longer the node's.
	keep := make(map[rollup.CampaignMinute]bool, len(recs))
	for _, r := range recs {
		keep[rollup.CampaignMinute{Campaign: r.Campaign, Minute: r.Minute}] = true
	}
	for cm := range c.named {
		if !keep[cm] {
			c.stream.Retire(cm.Campaign, cm.Minute)
			delete(c.named, cm)
		}
	}
	if len(recs) > wire.MaxLiveRefs {
		recs = recs[:wire.MaxLiveRefs] // the rest wait for the flush
	}
	s.seq++
	m := &wire.Live{Epoch: s.cfg.Epoch, Seq: s.seq, Flush: s.cfg.Flush, Records: recs}
	n, err := c.stream.Send(m, now.Add(max(2*s.cfg.Interval, 2*time.Second)))
	s.bytes.Add(float64(n))
	if err != nil {
		s.errs.Inc()
		s.reset(c, now, err)
		return
	}
	if n > 0 {
		s.messages.Inc()
	}
	for cm := range keep {
		c.named[cm] = true
	}
	c.fails = 0
}

// open dials addr if needed and opens a live stream.
func (s *LiveSender) open(ctx context.Context, addr string, c *liveConn) error {
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c.client == nil {
		cl, err := s.cfg.Dial(octx, addr)
		if err != nil {
			return err
		}
		c.client = cl
	}
	str, err := c.client.OpenLive(octx)
	if err != nil {
		return err
	}
	c.stream = str
	clear(c.named)
	return nil
}

// reset drops a failed stream (and its connection) and backs off.
func (s *LiveSender) reset(c *liveConn, now time.Time, err error) {
	if c.stream != nil {
		c.stream.Abort()
		c.stream = nil
	}
	if c.client != nil {
		c.client.Close()
		c.client = nil
	}
	clear(c.named)
	c.fails++
	c.retryAt = now.Add(min(time.Duration(c.fails)*time.Second, 30*time.Second))
	if c.fails == 1 || c.fails%30 == 0 {
		s.log.Debug("live stream failed; the flush carries the counts meanwhile", "err", err, "failures", c.fails)
	}
}

// idle closes the streams of nodes no counters went to for a minute.
func (s *LiveSender) idle() {
	cut := time.Now().Add(-time.Minute)
	for addr, c := range s.conns {
		if c.used.Before(cut) {
			s.closeConn(c)
			delete(s.conns, addr)
		}
	}
}

func (s *LiveSender) closeConn(c *liveConn) {
	if c.stream != nil {
		_ = c.stream.Close()
	}
	if c.client != nil {
		c.client.Close()
	}
}

func (s *LiveSender) closeAll() {
	for addr, c := range s.conns {
		s.closeConn(c)
		delete(s.conns, addr)
	}
}

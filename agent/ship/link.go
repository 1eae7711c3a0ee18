package ship

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/wire"
)

// A connection's meter decides how much the shipper puts on it at once
// and how long a batch may take, from what the connection has shown:
//
//   - goodput is payload bytes acknowledged per second of time during
//     which at least one batch was in flight, with older seconds decaying
//     (goodputHalfLife of busy time), so it follows a link that changes
//     and counts the time of batches that never got through;
//   - the in-flight window is goodput × windowTime bytes of payload (at
//     least one batch is always allowed), so batches do not queue behind
//     each other on a thin link until all of them miss their deadlines;
//   - a batch's deadline is a base of a few round trips plus twice the
//     time the bytes ahead of it and its own need at that goodput.
//
// Payload bytes (msgpack, before compression) are the unit throughout, so
// the compression ratio is part of the measured goodput and the batch
// sizes compare with it directly.
const (
	// goodputHalfLife is how much busy time halves the weight of older
	// measurements.
	goodputHalfLife = 30 * time.Second
	// minMeasured is the busy time after which goodput is trusted.
	minMeasured = 500 * time.Millisecond
	// windowTime is how many seconds of goodput may be in flight.
	windowTime = 8 * time.Second
	// initialWindow is the in-flight window before goodput is known: one
	// default batch, whose ack measures the link.
	initialWindow = DefaultBatchBytes
	// deadlineSlack is added to every computed deadline, for the
	// aggregator's own work (a write-ahead log fsync) and scheduling.
	deadlineSlack = 5 * time.Second
	// minDeadline is the least deadline a measured link gives a batch.
	minDeadline = 10 * time.Second
	// slowLink is the goodput (payload bytes per second) under which the
	// shipper asks for zstd's best compression: 1 Mbit/s. Above it the
	// default level's CPU is better spent.
	slowLink = 125_000
)

// linkMeter measures one connection. Safe for concurrent use.
type linkMeter struct {
	addr string

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when the window frees
	streams  int           // batches in flight
	inflight int           // their payload bytes
	mark     time.Time     // when busy time was last accounted
	bytes    float64       // decayed payload bytes acked
	busy     float64       // decayed seconds with a batch in flight
	measured time.Duration // busy time seen (undecayed)
	acked    uint64        // batches acked on this connection
	misses   uint64        // deadlines missed on this connection
	stats    func() wire.PathStats
}

func newLinkMeter(addr string, conn Sender, seed float64) *linkMeter {
	m := &linkMeter{addr: addr, changed: make(chan struct{}), mark: time.Now()}
	if ps, ok := conn.(interface{ PathStats() wire.PathStats }); ok {
		m.stats = ps.PathStats
	}
	if seed > 0 {
		// What the last connection to addr showed, at the weight of
		// minMeasured: the link did not change with the connection, but
		// the new one's own measurements soon count more.
		m.busy = minMeasured.Seconds()
		m.bytes = seed * m.busy
		m.measured = minMeasured
	}
	return m
}

// advance accounts busy time up to now, decaying older measurements.
func (m *linkMeter) advance(now time.Time) {
	dt := now.Sub(m.mark)
	m.mark = now
	if m.streams == 0 || dt <= 0 {
		return
	}
	decay := math.Exp2(-dt.Seconds() / goodputHalfLife.Seconds())
	m.bytes *= decay
	m.busy = m.busy*decay + dt.Seconds()
	m.measured += dt
}

// goodputLocked returns payload bytes per second, 0 while unknown.
func (m *linkMeter) goodputLocked() float64 {
	if m.measured < minMeasured || m.busy <= 0 {
		return 0
	}
	return m.bytes / m.busy
}

// goodput returns payload bytes per second, 0 while unknown.
func (m *linkMeter) goodput() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(time.Now())
	return m.goodputLocked()
}

// rtt returns QUIC's smoothed round-trip time, 0 if unknown.
func (m *linkMeter) rtt() time.Duration {
	if m.stats == nil {
		return 0
	}
	return m.stats().SmoothedRTT
}

// window returns the payload bytes that may be in flight.
func (m *linkMeter) windowLocked() int {
	g := m.goodputLocked()
	if g == 0 {
		return initialWindow
	}
	return int(min(g*windowTime.Seconds(), 1<<30))
}

// acquire waits until size more bytes fit the window (one batch always
// does) and counts them in flight. It returns the payload bytes ahead of
// this batch on the connection.
func (m *linkMeter) acquire(ctx context.Context, size int) (ahead int, err error) {
	for {
		m.mu.Lock()
		if m.streams == 0 || m.inflight+size <= m.windowLocked() {
			m.advance(time.Now())
			ahead = m.inflight
			m.streams++
			m.inflight += size
			m.mu.Unlock()
			return ahead, nil
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-ch:
		}
	}
}

// release ends a batch's time in flight; acked says whether its size
// counts as delivered.
func (m *linkMeter) release(size int, acked bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(time.Now())
	m.streams--
	m.inflight -= size
	if acked {
		m.bytes += float64(size)
		m.acked++
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// missed counts a deadline missed.
func (m *linkMeter) missed() {
	m.mu.Lock()
	m.misses++
	m.mu.Unlock()
}

// deadline returns how long a batch of size bytes, with ahead bytes in
// flight before it, may take: fallback until goodput is known, then
// room for a few round trips and twice its bytes' time at the goodput,
// within [minDeadline, limit]. Each deadline the batch already missed
// doubles it (a batch that cannot be split must still get through).
func (m *linkMeter) deadline(size, ahead, missed int, fallback, limit time.Duration) time.Duration {
	g := m.goodput()
	d := fallback
	if g > 0 {
		secs := 2 * float64(ahead+size) / g
		d = time.Duration(secs*float64(time.Second)) + 4*m.rtt() + deadlineSlack
		d = max(d, minDeadline)
	}
	for range min(missed, 10) {
		d *= 2
	}
	return min(d, limit)
}

// meterFor returns the meter of conn, making it on first use.
func (s *Shipper) meterFor(conn Sender, addr string) *linkMeter {
	s.metersMu.Lock()
	defer s.metersMu.Unlock()
	if m := s.meters[conn]; m != nil {
		return m
	}
	m := newLinkMeter(addr, conn, s.lastGoodput[addr])
	s.meters[conn] = m
	return m
}

// dropMeter forgets conn's meter, remembering its goodput for the next
// connection to the same address.
func (s *Shipper) dropMeter(conn Sender) {
	s.metersMu.Lock()
	defer s.metersMu.Unlock()
	m := s.meters[conn]
	if m == nil {
		return
	}
	delete(s.meters, conn)
	if g := m.goodput(); g > 0 {
		s.lastGoodput[m.addr] = g
	}
}

// chooseCompression asks conn for zstd's best level on a slow link and
// the default level on a fast one.
func chooseCompression(conn Sender, goodput float64) {
	c, ok := conn.(interface{ SetCompressBest(bool) })
	if !ok || goodput == 0 {
		return
	}
	c.SetCompressBest(goodput < slowLink)
}

// linkCollector exports every connection's meter to Prometheus.
type linkCollector struct {
	s                                    *Shipper
	goodput, rtt, loss, inflight, misses *prometheus.Desc
}

func newLinkCollector(s *Shipper) *linkCollector {
	labels := []string{"addr"}
	return &linkCollector{s: s,
		goodput: prometheus.NewDesc("tally_agent_link_goodput_bytes_per_second",
			"Batch payload bytes (before compression) acknowledged per second of time with a batch in flight, per aggregator connection (recent time weighs more).", labels, nil),
		rtt: prometheus.NewDesc("tally_agent_link_rtt_seconds",
			"QUIC's smoothed round-trip time, per aggregator connection.", labels, nil),
		loss: prometheus.NewDesc("tally_agent_link_loss_ratio",
			"Packets QUIC declared lost over packets sent, per aggregator connection.", labels, nil),
		inflight: prometheus.NewDesc("tally_agent_link_inflight_bytes",
			"Batch payload bytes awaiting an ack, per aggregator connection.", labels, nil),
		misses: prometheus.NewDesc("tally_agent_link_deadline_misses",
			"Batches that missed their deadline on this connection (each was split or given a longer deadline).", labels, nil),
	}
}

func (c *linkCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.goodput, c.rtt, c.loss, c.inflight, c.misses} {
		ch <- d
	}
}

func (c *linkCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.metersMu.Lock()
	meters := make([]*linkMeter, 0, len(c.s.meters))
	for _, m := range c.s.meters {
		meters = append(meters, m)
	}
	c.s.metersMu.Unlock()
	seen := map[string]bool{}
	for _, m := range meters {
		if seen[m.addr] {
			continue // an old connection not yet forgotten
		}
		seen[m.addr] = true
		m.mu.Lock()
		m.advance(time.Now())
		g, inflight, misses := m.goodputLocked(), m.inflight, m.misses
		m.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(c.goodput, prometheus.GaugeValue, g, m.addr)
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(inflight), m.addr)
		ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(misses), m.addr)
		if m.stats != nil {
			ps := m.stats()
			ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, ps.SmoothedRTT.Seconds(), m.addr)
			loss := 0.0
			if ps.PacketsSent > 0 {
				loss = float64(ps.PacketsLost) / float64(ps.PacketsSent)
			}
			ch <- prometheus.MustNewConstMetric(c.loss, prometheus.GaugeValue, loss, m.addr)
		}
	}
}

package live

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HubConfig tunes a Hub.
type HubConfig struct {
	// Window is how far back, from now, campaign-minutes are kept for
	// snapshots and resumes. Default 60m.
	Window time.Duration
	// Interval is the least time between two messages to one subscriber.
	// Default 1s.
	Interval time.Duration
	// Gather places the slots of subscribers' messages on the wall
	// clock: Gather past every multiple of Interval. Agents send live
	// counters on wall-clock second boundaries, so the owners of
	// different campaigns publish a few milliseconds apart, just after
	// the second; their changes go out together, in the slot Gather
	// later, instead of the later ones waiting a whole Interval. Default
	// 200ms (at most Interval/2); negative: slots on the second.
	Gather time.Duration
	// Heartbeat is how often an idle stream gets a ": ping" comment.
	// Default 15s.
	Heartbeat time.Duration
	// Buffer bounds the changed campaign-minutes waiting for one
	// subscriber; a subscriber that falls further behind is dropped.
	// Changes coalesce per campaign-minute, so a subscriber that keeps up
	// at one message per second never comes near it. Default 10000.
	Buffer int
	// WriteTimeout bounds one write to a client; a client that does not
	// take a message for this long is dropped. Default 10s.
	WriteTimeout time.Duration
	// AlertWindow is how long alert transitions are kept for new
	// subscribers and for telling a repeat from a new one. Default 24h.
	AlertWindow time.Duration
	// MaxAlerts bounds the alert transitions kept. Default 1000.
	MaxAlerts int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

func (c HubConfig) withDefaults() HubConfig {
	if c.AlertWindow <= 0 {
		c.AlertWindow = 24 * time.Hour
	}
	if c.MaxAlerts <= 0 {
		c.MaxAlerts = 1000
	}
	if c.Window <= 0 {
		c.Window = time.Hour
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Gather == 0 {
		c.Gather = 200 * time.Millisecond
	}
	c.Gather = max(0, min(c.Gather, c.Interval/2))
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.Buffer <= 0 {
		c.Buffer = 10000
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

type key struct {
	campaign string
	minute   int64
}

// entry is immutable once in the map: a change stores a new one.
type entry struct {
	u   Update
	seq uint64 // hub sequence of the Publish that last changed it
	// enc is u in JSON, encoded once at Publish for every subscriber.
	enc []byte
}

// Hub keeps the latest Update of every campaign-minute of the last
// Window and fans changes out to subscribers. It implements Publisher:
// Publish never blocks on a subscriber, it only marks what changed.
// Every Publish that changes something advances the hub's sequence
// number; a subscriber's message carries the sequence it is complete up
// to, which is what a client sends back as Last-Event-ID to resume.
//
// Sequence numbers start at the hub's creation time in microseconds, so
// an id from an earlier process or another node is almost never mistaken
// for one of this hub (it is then answered with a fresh snapshot).
//
// A Hub is safe for concurrent use.
type Hub struct {
	cfg HubConfig

	mu     sync.Mutex
	base   uint64 // first sequence number of this hub
	seq    uint64
	latest map[key]*entry
	subs   map[*subscriber]struct{}
	// alerts are the alert transitions of the last AlertWindow in
	// publishing order, alertKeys the same by key.
	alerts    []*alertEntry
	alertKeys map[string]*alertEntry
	// published is when the last Publish that changed something ran.
	published time.Time

	metrics hubMetrics

	done      chan struct{}
	closeOnce sync.Once
}

type hubMetrics struct {
	subscribers prometheus.Gauge
	dropped     *prometheus.CounterVec
	messages    prometheus.Counter
	published   prometheus.Counter
	alerts      prometheus.Counter
	campaignMin prometheus.GaugeFunc
}

// Drop reasons, the label of tally_aggregator_stream_dropped_total.
const (
	DropBuffer = "buffer" // too many changes waiting
	DropWrite  = "write"  // a write failed or timed out
)

// NewHub returns a hub registering its metrics with reg (may be nil).
func NewHub(cfg HubConfig, reg prometheus.Registerer) *Hub {
	cfg = cfg.withDefaults()
	base := uint64(cfg.Now().UnixMicro())
	h := &Hub{cfg: cfg, base: base, seq: base, latest: make(map[key]*entry), subs: make(map[*subscriber]struct{}),
		alertKeys: make(map[string]*alertEntry), done: make(chan struct{})}
	h.metrics = hubMetrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_aggregator_stream_subscribers",
			Help: "Open /api/v1/stream connections."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_stream_dropped_total",
			Help: "Stream subscribers dropped because they could not keep up, by reason (buffer, write)."}, []string{"reason"}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_stream_messages_total",
			Help: "Stream messages (snapshot and minutes events) written to subscribers."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_stream_updates_published_total",
			Help: "Campaign-minute updates published to the hub that changed its state."}),
		alerts: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_stream_alerts_published_total",
			Help: "Alert transitions published to the hub for the first time (repeats of a key are not counted)."}),
	}
	h.metrics.campaignMin = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_stream_campaign_minutes",
		Help: "Campaign-minutes the hub holds for snapshots and resumes."}, func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return float64(len(h.latest))
	})
	h.metrics.dropped.WithLabelValues(DropBuffer)
	h.metrics.dropped.WithLabelValues(DropWrite)
	if reg != nil {
		reg.MustRegister(h.metrics.subscribers, h.metrics.dropped, h.metrics.messages, h.metrics.published, h.metrics.alerts, h.metrics.campaignMin)
	}
	return h
}

// Close ends every stream the hub serves (Serve returns); call it when
// the HTTP server shuts down, as http.Server.Shutdown does not end
// long-lived responses. Safe to call more than once; Publish keeps
// working.
func (h *Hub) Close() { h.closeOnce.Do(func() { close(h.done) }) }

// Publish records updates and marks them changed for every subscriber
// that may see them. An update equal to what the hub holds, or for a
// minute older than the window, changes nothing. It never blocks on
// subscribers: a subscriber whose waiting changes exceed the buffer is
// dropped here.
func (h *Hub) Publish(us []Update) {
	if len(us) == 0 {
		return
	}
	cutoff := h.cutoff()
	encs := make([][]byte, len(us))
	for i, u := range us {
		if u.Minute >= cutoff {
			encs[i] = mustJSON(u)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.prune(cutoff)
	changed := make([]key, 0, len(us))
	seq := h.seq + 1
	for i, u := range us {
		if u.Minute < cutoff {
			continue
		}
		k := key{u.Campaign, u.Minute}
		if e, ok := h.latest[k]; ok && e.u == u {
			continue
		}
		h.latest[k] = &entry{u: u, seq: seq, enc: encs[i]}
		changed = append(changed, k)
	}
	if len(changed) == 0 {
		return
	}
	h.seq = seq
	h.published = time.Now()
	h.metrics.published.Add(float64(len(changed)))
	for s := range h.subs {
		marked := false
		for _, k := range changed {
			if s.scope(k.campaign) {
				s.pending[k] = struct{}{}
				marked = true
			}
		}
		if !marked {
			continue
		}
		if len(s.pending) > h.cfg.Buffer {
			h.dropLocked(s, DropBuffer)
			continue
		}
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

// cutoff is the oldest minute (unix seconds) the hub keeps.
func (h *Hub) cutoff() int64 {
	c := h.cfg.Now().Add(-h.cfg.Window).Unix()
	return c - c%60
}

func (h *Hub) prune(cutoff int64) {
	for k := range h.latest {
		if k.minute < cutoff {
			delete(h.latest, k)
		}
	}
}

// Scope says which campaigns a subscriber may see.
type Scope func(campaign string) bool

type subscriber struct {
	scope   Scope
	pending map[key]struct{} // guarded by Hub.mu
	alerts  []*alertEntry    // guarded by Hub.mu: alert transitions not yet sent
	notify  chan struct{}    // capacity 1: "pending or alerts is not empty"
	dropped chan struct{}    // closed when the hub drops the subscriber
	reason  string           // guarded by Hub.mu
}

// subscribe registers a subscriber and returns what it must be sent
// first: the changes since lastSeq when lastSeq belongs to this hub and
// resume is true, else a snapshot of the window (and the alerts held, the
// same way). seq is the sequence the first message is complete up to.
func (h *Hub) subscribe(scope Scope, lastSeq uint64, resume bool) (s *subscriber, first []*entry, alerts []*alertEntry, seq uint64, snapshot bool) {
	cutoff := h.cutoff()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.prune(cutoff)
	s = &subscriber{scope: scope, pending: make(map[key]struct{}), notify: make(chan struct{}, 1), dropped: make(chan struct{})}
	h.subs[s] = struct{}{}
	h.metrics.subscribers.Inc()
	snapshot = !resume || lastSeq < h.base || lastSeq > h.seq
	for _, e := range h.latest {
		if scope(e.u.Campaign) && (snapshot || e.seq > lastSeq) {
			first = append(first, e)
		}
	}
	sortEntries(first)
	h.pruneAlerts(h.cfg.Now().Add(-h.cfg.AlertWindow).Unix())
	alerts = h.alertsForLocked(scope, lastSeq, snapshot)
	return s, first, alerts, h.seq, snapshot
}

// take returns the alert transitions not yet sent to the subscriber, the
// latest state of its changed campaign-minutes, the sequence they are
// complete up to and when the newest of them was published.
func (h *Hub) take(s *subscriber) ([]*alertEntry, []*entry, uint64, time.Time) {
	h.mu.Lock()
	seq, published := h.seq, h.published
	alerts := s.alerts
	s.alerts = nil
	if len(s.pending) == 0 {
		h.mu.Unlock()
		return alerts, nil, seq, published
	}
	out := make([]*entry, 0, len(s.pending))
	for k := range s.pending {
		if e, ok := h.latest[k]; ok {
			out = append(out, e)
		}
	}
	clear(s.pending)
	h.mu.Unlock()
	sortEntries(out) // entries are immutable: sort outside the lock
	return alerts, out, seq, published
}

// unsubscribe removes s (it may have been dropped already).
func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		h.metrics.subscribers.Dec()
	}
}

// drop removes s for reason, counting it once.
func (h *Hub) drop(s *subscriber, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(s, reason)
}

func (h *Hub) dropLocked(s *subscriber, reason string) {
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	h.metrics.subscribers.Dec()
	h.metrics.dropped.WithLabelValues(reason).Inc()
	s.reason = reason
	s.pending, s.alerts = nil, nil
	close(s.dropped)
}

// Subscribers returns the number of open subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// sortEntries orders by campaign, then minute.
func sortEntries(es []*entry) {
	slices.SortFunc(es, func(a, b *entry) int {
		if c := strings.Compare(a.u.Campaign, b.u.Campaign); c != 0 {
			return c
		}
		return cmp.Compare(a.u.Minute, b.u.Minute)
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // Update and Status hold only strings and numbers
	}
	return b
}

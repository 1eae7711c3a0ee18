package live

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Broadcaster sends a message to every other node of the cluster
// (cluster.Cluster). It may block for as long as the slowest node takes.
type Broadcaster interface {
	Broadcast(msg []byte) error
}

// Signer signs the messages this node publishes (pki.NodeSigner).
type Signer interface {
	Sign(msg []byte) (cert, sig []byte, err error)
}

// Verifier checks a signed message and returns the name of the node
// that signed it (pki.NodeVerifier).
type Verifier interface {
	Verify(cert, msg, sig []byte) (node string, err error)
}

// FanoutConfig configures a Fanout.
type FanoutConfig struct {
	// Node is this node's name.
	Node string
	// Local is this node's hub (may be nil).
	Local Publisher
	// Peers, Signer, Verifier and IsMember are needed in a cluster (all
	// or none): updates go to Peers signed by Signer, and an update from
	// another node is taken only when Verifier vouches for its node
	// certificate and signature and IsMember for its name.
	Peers    Broadcaster
	Signer   Signer
	Verifier Verifier
	IsMember func(node string) bool
	// MaxUpdatesPerMessage bounds one message (default 2000, about
	// 300 KB).
	MaxUpdatesPerMessage int
	// MaxAge refuses messages older or further in the future than this
	// (default 2m): a message captured on the network cannot be played
	// back later.
	MaxAge time.Duration
	// Logger receives the fan-out's few logs.
	Logger *slog.Logger
}

// Fanout publishes the updates of the campaigns this node owns to its own
// hub at once and to every other node's, and takes theirs. It implements
// Publisher.
//
// Publish never waits for the network: updates for peers coalesce per
// campaign-minute (the latest wins, as updates are absolute) until the
// fan-out's own goroutine sends them, so a slow or unreachable node
// delays only the next message, and costs no goroutine per round. Peers
// that miss a message catch up from storage on their next query: the
// stream is a fast path, not the record.
//
// # Messages between nodes
//
// A node's gossip transport (memberlist) tells a receiver nothing about
// who sent a message, and runs in the clear without a gossip key, so
// every message is signed with the sending node's certificate key:
//
//	envelope (msgpack map): "v" version (2), "b" body (bytes),
//	                        "c" the sender's certificate (DER), "g" signature
//	body (msgpack map):     "n" node name, "s" sequence, "t" unix ms, "u" updates,
//	                        "a" alert transitions (optional; older nodes ignore it)
//
// A receiver takes a message only when the certificate chains to the
// cluster CA and is a node certificate (pki.NodePolicy), the signature
// over the body is valid, the name in the body is the certificate's and a
// member of the cluster, the sequence is above the last one seen from that
// node (sequences start at the sender's start time in microseconds), and
// the time is within MaxAge. Version 1 (the first release: unsigned
// {"k", "u"}) is refused.
type Fanout struct {
	cfg FanoutConfig
	log *slog.Logger
	seq atomic.Uint64

	mu      sync.Mutex
	pending map[key]Update
	alerts  []Alert              // alert transitions waiting for the sender
	active  map[string]time.Time // campaign → last update seen
	lastSeq map[string]uint64    // node → last sequence taken

	notify    chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once

	received, refused, sent, sendErrors, alertsDropped atomic.Uint64
}

// maxPendingAlerts bounds the alert transitions waiting for the sender;
// beyond it they reach only this node's hub (peers read them from storage
// on their dashboards' next poll).
const maxPendingAlerts = 10000

// MessageVersion is the version of messages between nodes.
const MessageVersion = 2

type envelope struct {
	Version uint8  `msgpack:"v"`
	Body    []byte `msgpack:"b"`
	Cert    []byte `msgpack:"c"`
	Sig     []byte `msgpack:"g"`
}

type body struct {
	Node    string   `msgpack:"n"`
	Seq     uint64   `msgpack:"s"`
	Millis  int64    `msgpack:"t"`
	Updates []Update `msgpack:"u"`
	Alerts  []Alert  `msgpack:"a,omitempty"`
}

// NewFanout returns a fan-out; call Start before publishing to peers and
// Close when done.
func NewFanout(cfg FanoutConfig) (*Fanout, error) {
	if cfg.Peers != nil && (cfg.Signer == nil || cfg.Verifier == nil || cfg.IsMember == nil) {
		return nil, errors.New("live fan-out: a cluster needs a Signer, a Verifier and IsMember")
	}
	if cfg.MaxUpdatesPerMessage <= 0 {
		cfg.MaxUpdatesPerMessage = 2000
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fanout{cfg: cfg, log: cfg.Logger.With("component", "fanout"), pending: map[key]Update{},
		active: map[string]time.Time{}, lastSeq: map[string]uint64{}, notify: make(chan struct{}, 1), stop: make(chan struct{})}
	f.seq.Store(uint64(time.Now().UnixMicro()))
	return f, nil
}

// Start starts the goroutine that sends updates to peers (a no-op on a
// single node). It is safe to call more than once.
func (f *Fanout) Start() {
	if f.cfg.Peers == nil {
		return
	}
	f.startOnce.Do(func() {
		f.wg.Add(1)
		go f.send()
	})
}

// Close stops sending and waits for the message in flight. It is safe to
// call more than once and before Start.
func (f *Fanout) Close() {
	f.closeOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
}

// Publish implements Publisher for this node's writer.
func (f *Fanout) Publish(us []Update) {
	if len(us) == 0 {
		return
	}
	f.deliver(us)
	if f.cfg.Peers == nil {
		return
	}
	f.mu.Lock()
	for _, u := range us {
		f.pending[key{u.Campaign, u.Minute}] = u
	}
	f.mu.Unlock()
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

// PublishAlerts delivers alert transitions of the campaigns this node
// owns to its own hub at once and to every other node's with the next
// message (implements AlertPublisher).
func (f *Fanout) PublishAlerts(as []Alert) {
	if len(as) == 0 {
		return
	}
	f.deliverAlerts(as)
	if f.cfg.Peers == nil {
		return
	}
	f.mu.Lock()
	room := max(0, maxPendingAlerts-len(f.alerts))
	if len(as) > room {
		f.alertsDropped.Add(uint64(len(as) - room))
		as = as[:room]
	}
	f.alerts = append(f.alerts, as...)
	f.mu.Unlock()
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

func (f *Fanout) deliverAlerts(as []Alert) {
	if ap, ok := f.cfg.Local.(AlertPublisher); ok && len(as) > 0 {
		ap.PublishAlerts(as)
	}
}

func (f *Fanout) send() {
	defer f.wg.Done()
	for {
		select {
		case <-f.stop:
			return
		case <-f.notify:
		}
		f.mu.Lock()
		us := make([]Update, 0, len(f.pending))
		for _, u := range f.pending {
			us = append(us, u)
		}
		clear(f.pending)
		as := f.alerts
		f.alerts = nil
		f.mu.Unlock()
		for len(us) > 0 || len(as) > 0 {
			// Alerts first, and count against the same bound as updates.
			pa := as[:min(len(as), f.cfg.MaxUpdatesPerMessage)]
			as = as[len(pa):]
			part := us[:min(len(us), f.cfg.MaxUpdatesPerMessage-len(pa))]
			us = us[len(part):]
			msg, err := f.encode(part, pa)
			if err != nil {
				f.log.Error("cannot sign live updates", "reason", "sign_failed", "err", err)
				break
			}
			if err := f.cfg.Peers.Broadcast(msg); err != nil {
				f.sendErrors.Add(1)
				f.log.Debug("live updates did not reach every node", "err", err)
			}
			f.sent.Add(1)
		}
	}
}

func (f *Fanout) encode(us []Update, as []Alert) ([]byte, error) {
	b, err := msgpack.Marshal(body{Node: f.cfg.Node, Seq: f.seq.Add(1), Millis: time.Now().UnixMilli(), Updates: us, Alerts: as})
	if err != nil {
		return nil, err
	}
	cert, sig, err := f.cfg.Signer.Sign(b)
	if err != nil {
		return nil, err
	}
	return msgpack.Marshal(envelope{Version: MessageVersion, Body: b, Cert: cert, Sig: sig})
}

// Receive takes a message from another node (cluster's message
// callback). A message that fails any check is dropped and counted.
func (f *Fanout) Receive(msg []byte) {
	us, as, err := f.open(msg)
	if err != nil {
		// The first refusal and then every hundredth: a flood of forged
		// messages must not flood the log.
		if n := f.refused.Add(1); n == 1 || n%100 == 0 {
			f.log.Warn("ignoring a node message", "reason", "live_message_refused", "bytes", len(msg), "refused_so_far", n, "err", err)
		}
		return
	}
	f.received.Add(1)
	f.deliverAlerts(as)
	if len(us) > 0 {
		f.deliver(us)
	}
}

// open checks a message and returns its updates and alerts.
func (f *Fanout) open(msg []byte) ([]Update, []Alert, error) {
	if f.cfg.Verifier == nil {
		return nil, nil, errors.New("this node takes no messages (single node)")
	}
	var env envelope
	if err := msgpack.Unmarshal(msg, &env); err != nil {
		return nil, nil, fmt.Errorf("not a live message: %w", err)
	}
	if env.Version != MessageVersion {
		return nil, nil, fmt.Errorf("live message of version %d; this node takes version %d (signed)", env.Version, MessageVersion)
	}
	node, err := f.cfg.Verifier.Verify(env.Cert, env.Body, env.Sig)
	if err != nil {
		return nil, nil, err
	}
	var b body
	if err := msgpack.Unmarshal(env.Body, &b); err != nil {
		return nil, nil, fmt.Errorf("live message body: %w", err)
	}
	switch {
	case b.Node != node:
		return nil, nil, fmt.Errorf("message of node %q signed by %q", b.Node, node)
	case node == f.cfg.Node:
		return nil, nil, fmt.Errorf("message claims to come from this node (%q)", node)
	case !f.cfg.IsMember(node):
		return nil, nil, fmt.Errorf("message from %q, which is not a member", node)
	}
	if age := time.Since(time.UnixMilli(b.Millis)); age > f.cfg.MaxAge || age < -f.cfg.MaxAge {
		return nil, nil, fmt.Errorf("message from %q is %s old", node, age.Round(time.Second))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if b.Seq <= f.lastSeq[node] {
		return nil, nil, fmt.Errorf("message %d from %q repeats or precedes %d", b.Seq, node, f.lastSeq[node])
	}
	f.lastSeq[node] = b.Seq
	return b.Updates, b.Alerts, nil
}

func (f *Fanout) deliver(us []Update) {
	now := time.Now()
	f.mu.Lock()
	for _, u := range us {
		f.active[u.Campaign] = now
	}
	f.mu.Unlock()
	if f.cfg.Local != nil {
		f.cfg.Local.Publish(us)
	}
}

// Campaigns returns the campaigns with updates in the last window.
func (f *Fanout) Campaigns(window time.Duration) []string {
	cut := time.Now().Add(-window)
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for c, t := range f.active {
		if t.Before(cut) {
			delete(f.active, c)
			continue
		}
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// FanoutStats counts messages between nodes.
type FanoutStats struct {
	// Sent counts messages sent, SendErrors those that missed a node.
	Sent, SendErrors uint64
	// AlertsDropped counts alert transitions that reached only this node:
	// too many were waiting for the sender.
	AlertsDropped uint64
	// Received counts messages taken, Refused those dropped by a check.
	Received, Refused uint64
}

// Stats returns the counters.
func (f *Fanout) Stats() FanoutStats {
	return FanoutStats{Sent: f.sent.Load(), SendErrors: f.sendErrors.Load(), Received: f.received.Load(), Refused: f.refused.Load(),
		AlertsDropped: f.alertsDropped.Load()}
}

// Package cluster is the aggregator's membership: which nodes are alive
// (hashicorp/memberlist gossip), where agents and peers reach them, which
// node owns each campaign (rendezvous hashing, wire.Owner), and a channel
// for small messages between nodes (the live updates every node fans out
// to its dashboards).
//
// A node without a cluster bind address runs alone: it is the only member
// and owns every campaign.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/wire"
)

// Config configures membership.
type Config struct {
	// Name is this node's name, unique in the cluster. Required.
	Name string
	// Bind is the host:port memberlist listens on (UDP and TCP). Empty
	// means a single node without gossip.
	Bind string
	// Advertise is the host:port other nodes reach this one at, when it
	// differs from Bind (NAT, 0.0.0.0 binds). Optional.
	Advertise string
	// Seeds are host:port addresses of nodes to join. Entries may be DNS
	// names that resolve to several addresses: every address is tried.
	Seeds []string
	// Resolver looks the DNS names of Seeds up; nil means the system's.
	Resolver *net.Resolver
	// SecretKey encrypts and authenticates gossip (AES, 16, 24 or 32
	// bytes). Empty means plain gossip.
	SecretKey []byte
	// Profile is the failure-detection preset: "lan" (default), "wan" or
	// "local" (one machine; fastest detection, for tests and demos).
	Profile string
	// ProbeInterval, ProbeTimeout, SuspicionMult and GossipInterval
	// override the preset when non-zero.
	ProbeInterval, ProbeTimeout, GossipInterval time.Duration
	SuspicionMult                               int
	// DeadNodeReclaimTime lets a node that died come back under the same
	// name from another address after this long. Default 10s.
	DeadNodeReclaimTime time.Duration
	// JoinRetry is how often a node with no peers tries the seeds again.
	// Default 2s.
	JoinRetry time.Duration
}

// Meta is what a node tells the others about itself.
type Meta struct {
	// QUIC is the address agents and peers send batches to.
	QUIC string `msgpack:"q"`
	// HTTP is the node's API address.
	HTTP string `msgpack:"h"`
}

// Member is a node as this node sees it.
type Member struct {
	Name string `json:"name"`
	Meta
	// State is "alive" or "suspect" (suspect nodes keep their campaigns
	// until they are declared dead).
	State string `json:"state"`
	// Self marks this node.
	Self bool `json:"self"`
}

// Cluster tracks membership. It is safe for concurrent use.
type Cluster struct {
	cfg   Config
	meta  Meta
	log   *slog.Logger
	mlp   atomic.Pointer[memberlist.Memberlist] // nil for a single node
	onMsg func([]byte)

	refreshMu sync.Mutex // orders refreshes, so an older list never wins
	mu        sync.RWMutex
	members   []Member // sorted by name
	epoch     uint64
	subs      []chan struct{}

	// changed is memberlist's "something changed" (capacity 1): its
	// callbacks only enqueue; the loop refreshes.
	changed   chan struct{}
	stop      chan struct{}
	done      sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	// lifeMu orders Leave with Close (memberlist panics on a Leave after
	// its Shutdown); closed is set under it.
	lifeMu sync.Mutex
	closed bool
}

// Start creates this node's membership and, in the background, joins the
// seeds and retries while it has no peers. onMessage (may be nil) gets
// every message another node sent with Send or Broadcast; it must not
// block for long.
func Start(cfg Config, meta Meta, logger *slog.Logger, onMessage func([]byte)) (*Cluster, error) {
	if cfg.Name == "" {
		return nil, errors.New("cluster: node name is required")
	}
	if cfg.JoinRetry <= 0 {
		cfg.JoinRetry = 2 * time.Second
	}
	if cfg.DeadNodeReclaimTime <= 0 {
		cfg.DeadNodeReclaimTime = 10 * time.Second
	}
	c := &Cluster{cfg: cfg, meta: meta, log: logger.With("component", "cluster"), onMsg: onMessage,
		changed: make(chan struct{}, 1), stop: make(chan struct{})}
	if cfg.Bind == "" {
		c.members = []Member{{Name: cfg.Name, Meta: meta, State: "alive", Self: true}}
		c.epoch = wire.MembershipEpoch(c.wireMembersLocked())
		return c, nil
	}
	if err := CheckGossipKey(cfg.Bind, cfg.Advertise, cfg.SecretKey); err != nil {
		return nil, err
	}
	mc, err := c.memberlistConfig()
	if err != nil {
		return nil, err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s: %w", cfg.Bind, err)
	}
	c.mlp.Store(ml)
	c.refresh()
	c.done.Add(1)
	go c.joinLoop()
	return c, nil
}

func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	var mc *memberlist.Config
	switch c.cfg.Profile {
	case "", "lan":
		mc = memberlist.DefaultLANConfig()
	case "wan":
		mc = memberlist.DefaultWANConfig()
	case "local":
		mc = memberlist.DefaultLocalConfig()
	default:
		return nil, fmt.Errorf("cluster: profile %q: want lan, wan or local", c.cfg.Profile)
	}
	mc.Name = c.cfg.Name
	host, port, err := splitHostPort(c.cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: bind %q: %w", c.cfg.Bind, err)
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	if c.cfg.Advertise != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort(c.cfg.Advertise); err != nil {
			return nil, fmt.Errorf("cluster: advertise %q: %w", c.cfg.Advertise, err)
		}
	}
	if len(c.cfg.SecretKey) > 0 {
		switch len(c.cfg.SecretKey) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("cluster: secret key has %d bytes, want 16, 24 or 32", len(c.cfg.SecretKey))
		}
		mc.SecretKey = c.cfg.SecretKey
	}
	if c.cfg.ProbeInterval > 0 {
		mc.ProbeInterval = c.cfg.ProbeInterval
	}
	if c.cfg.ProbeTimeout > 0 {
		mc.ProbeTimeout = c.cfg.ProbeTimeout
	}
	if c.cfg.GossipInterval > 0 {
		mc.GossipInterval = c.cfg.GossipInterval
	}
	if c.cfg.SuspicionMult > 0 {
		mc.SuspicionMult = c.cfg.SuspicionMult
	}
	mc.DeadNodeReclaimTime = c.cfg.DeadNodeReclaimTime
	mc.Delegate = delegate{c}
	mc.Events = events{c}
	mc.Logger = log.New(logWriter{c.log}, "", 0)
	return mc, nil
}

func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	return host, port, nil
}

// ml returns the gossip instance (nil for a single node, and while
// Start is still creating it).
func (c *Cluster) ml() *memberlist.Memberlist { return c.mlp.Load() }

// joinLoop joins the seeds, and again whenever this node finds itself
// alone (after a partition healed, or when the seeds started later).
func (c *Cluster) joinLoop() {
	defer c.done.Done()
	t := time.NewTicker(c.cfg.JoinRetry)
	defer t.Stop()
	failures := 0
	for {
		if c.ml().NumMembers() <= 1 {
			if addrs := c.seedAddrs(); len(addrs) > 0 {
				n, err := c.ml().Join(addrs)
				switch {
				case err != nil && n == 0:
					failures++
					if failures == 1 || failures%30 == 0 {
						c.log.Warn("cannot join the cluster yet; retrying", "seeds", addrs, "err", err, "attempts", failures)
					}
				default:
					c.log.Info("joined the cluster", "contacted", n, "members", c.ml().NumMembers())
					failures = 0
				}
			}
		}
		select {
		case <-c.stop:
			return
		case <-c.changed:
		case <-t.C:
			// Suspicion changes a member's state without an event.
		}
		c.refresh()
	}
}

// notify wakes the loop to refresh the member list.
func (c *Cluster) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// seedAddrs expands the seeds (DNS names to every address) and leaves out
// this node's own address.
func (c *Cluster) seedAddrs() []string {
	self := c.cfg.Bind
	if c.cfg.Advertise != "" {
		self = c.cfg.Advertise
	}
	var out []string
	for _, s := range c.cfg.Seeds {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			c.log.Warn("bad seed address; want host:port", "seed", s)
			continue
		}
		ips := []string{host}
		if net.ParseIP(host) == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r := c.cfg.Resolver
			if r == nil {
				r = net.DefaultResolver
			}
			got, err := r.LookupHost(ctx, host)
			cancel()
			if err != nil {
				c.log.Warn("cannot resolve seed", "seed", s, "err", err)
				continue
			}
			ips = got
		}
		for _, ip := range ips {
			a := net.JoinHostPort(ip, port)
			if a != self && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// refresh rebuilds the member list from memberlist and notifies
// subscribers when it changed.
func (c *Cluster) refresh() {
	if c.ml() == nil {
		return
	}
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	var ms []Member
	for _, n := range c.ml().Members() {
		m := Member{Name: n.Name, State: "alive", Self: n.Name == c.cfg.Name}
		if n.State == memberlist.StateSuspect {
			m.State = "suspect"
		}
		if m.Self {
			m.Meta = c.meta
		} else if err := msgpack.Unmarshal(n.Meta, &m.Meta); err != nil {
			c.log.Warn("member sent metadata this node cannot read; ignoring it", "member", n.Name, "err", err)
			continue
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	c.mu.Lock()
	old := c.epoch
	c.members = ms
	c.epoch = wire.MembershipEpoch(c.wireMembersLocked())
	changed := c.epoch != old
	subs := c.subs
	c.mu.Unlock()
	if changed {
		c.log.Info("membership changed", "members", names(ms), "epoch", c.epoch)
		for _, ch := range subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func (c *Cluster) wireMembersLocked() []wire.Member {
	out := make([]wire.Member, len(c.members))
	for i, m := range c.members {
		out[i] = wire.Member{Name: m.Name, Addr: m.QUIC}
	}
	return out
}

// Name is this node's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// Members returns the members this node sees (alive and suspect), sorted
// by name.
func (c *Cluster) Members() []Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.members)
}

// View is one consistent snapshot of membership: the members as agents
// see them and the epoch that fingerprints them.
type View struct {
	Members []wire.Member
	Epoch   uint64
}

// View returns the current view.
func (c *Cluster) View() View {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return View{Members: c.wireMembersLocked(), Epoch: c.epoch}
}

// Owner returns the owner of campaign in this view.
func (v View) Owner(campaign string) wire.Member {
	m, _ := wire.Owner(v.Members, campaign)
	return m
}

// Epoch returns the membership fingerprint (wire.MembershipEpoch).
func (c *Cluster) Epoch() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epoch
}

// Changes returns a channel that receives a value after every membership
// change (coalesced: one value may stand for several changes).
func (c *Cluster) Changes() <-chan struct{} {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs = append(c.subs, ch)
	c.mu.Unlock()
	return ch
}

// Send sends msg to one member over a reliable (TCP) stream.
func (c *Cluster) Send(name string, msg []byte) error {
	if c.ml() == nil {
		return fmt.Errorf("cluster: no member %q (single node)", name)
	}
	for _, n := range c.ml().Members() {
		if n.Name == name {
			return c.ml().SendReliable(n, msg)
		}
	}
	return fmt.Errorf("cluster: no member %q", name)
}

// Broadcast sends msg to every other member, concurrently, and returns
// the errors joined. A member that cannot be reached catches up from
// storage; messages are a fast path, not the record.
func (c *Cluster) Broadcast(msg []byte) error {
	if c.ml() == nil {
		return nil
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, n := range c.ml().Members() {
		if n.Name == c.cfg.Name {
			continue
		}
		wg.Go(func() {
			if err := c.ml().SendReliable(n, msg); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Leave tells the others this node is going (they move its campaigns at
// once instead of after failure detection) and stops gossip.
func (c *Cluster) Leave(timeout time.Duration) error {
	var err error
	c.lifeMu.Lock()
	if ml := c.ml(); ml != nil && !c.closed {
		err = ml.Leave(timeout)
	}
	c.lifeMu.Unlock()
	return errors.Join(err, c.Close())
}

// IsMember reports whether name is a member this node sees (alive or
// suspect).
func (c *Cluster) IsMember(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, m := range c.members {
		if m.Name == name {
			return true
		}
	}
	return false
}

// CheckGossipKey refuses a gossip address that is not loopback without a
// key: memberlist without encryption takes membership changes and node
// messages from anyone who can reach the port, so an outsider could join
// and own campaigns. Loopback (127.0.0.0/8, ::1, localhost) is one
// machine's business and may go without.
func CheckGossipKey(bind, advertise string, key []byte) error {
	if len(key) > 0 {
		return nil
	}
	for _, addr := range []string{bind, advertise} {
		if addr == "" {
			continue
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("cluster: address %q: %w", addr, err)
		}
		if !loopback(host) {
			return fmt.Errorf("cluster: gossip on %q without cluster.secret_key: anyone who reaches that address could join the cluster and own campaigns; set cluster.secret_key (or cluster.secret_key_file) on every node, or bind gossip to a loopback address", addr)
		}
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close stops gossip without saying goodbye (the others detect it as a
// failure). It is safe to call more than once, also concurrently; every
// call returns once gossip has stopped.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.lifeMu.Lock()
		c.closed = true
		c.lifeMu.Unlock()
		close(c.stop)
		c.done.Wait()
		if ml := c.ml(); ml != nil {
			c.closeErr = ml.Shutdown()
		}
	})
	return c.closeErr
}

// delegate gives memberlist this node's metadata and takes user messages.
type delegate struct{ c *Cluster }

func (d delegate) NodeMeta(limit int) []byte {
	b, err := msgpack.Marshal(d.c.meta)
	if err != nil || len(b) > limit {
		d.c.log.Error("node metadata does not fit", "bytes", len(b), "limit", limit, "err", err)
		return nil
	}
	return b
}

func (d delegate) NotifyMsg(b []byte) {
	if d.c.onMsg != nil && len(b) > 0 {
		// memberlist reuses the buffer.
		d.c.onMsg(slices.Clone(b))
	}
}

func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

// events turns memberlist's notifications into a refreshed member list.
type events struct{ c *Cluster }

func (e events) NotifyJoin(*memberlist.Node)   { e.c.notify() }
func (e events) NotifyLeave(*memberlist.Node)  { e.c.notify() }
func (e events) NotifyUpdate(*memberlist.Node) { e.c.notify() }

// logWriter maps memberlist's "[LEVEL] memberlist: msg" lines to slog.
type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if strings.HasPrefix(line, prefix) {
			level, line = l, strings.TrimSpace(strings.TrimPrefix(line, prefix))
			break
		}
	}
	w.l.Log(context.Background(), level, strings.TrimPrefix(line, "memberlist: "))
	return len(p), nil
}

package aggregator

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/aggregator/cluster"
	"github.com/tally-edge/tally/aggregator/forward"
	"github.com/tally-edge/tally/aggregator/ingest"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/wire"
)

// routing is ingest.Routing over the cluster's membership and the
// forwarder.
type routing struct {
	c   *cluster.Cluster
	fwd *forward.Forwarder
}

func (r routing) Owner(campaign string) (node, addr string, self bool) {
	m := r.c.View().Owner(campaign)
	return m.Name, m.Addr, m.Name == r.c.Name()
}

func (r routing) IsMember(name string) bool {
	for _, m := range r.c.Members() {
		if m.Name == name {
			return true
		}
	}
	return false
}

func (r routing) Forward(ctx context.Context, addr, agent string, cs []wire.Contribution) error {
	return r.fwd.Forward(ctx, addr, agent, cs)
}

func (r routing) View() ([]wire.Member, uint64) {
	v := r.c.View()
	return v.Members, v.Epoch
}

// liveMessage is what nodes send each other: the owner's updates.
type liveMessage struct {
	Kind    uint8         `msgpack:"k"`
	Updates []live.Update `msgpack:"u"`
}

const liveMessageUpdates = 1

// fanout publishes an owner's updates to this node's hub and to every
// other node's, and remembers which campaigns are active (for the cluster
// view). Peers that miss a message catch up from InfluxDB on their next
// query; the stream is a fast path, not the record.
type fanout struct {
	local live.Publisher // may be nil
	c     *cluster.Cluster
	log   *slog.Logger

	mu     sync.Mutex
	active map[string]time.Time // campaign → last update seen
}

func newFanout(local live.Publisher, logger *slog.Logger) *fanout {
	return &fanout{local: local, log: logger, active: map[string]time.Time{}}
}

// Publish implements live.Publisher for the owner's pipeline.
func (f *fanout) Publish(us []live.Update) {
	if len(us) == 0 {
		return
	}
	f.deliver(us)
	if f.c == nil {
		return
	}
	b, err := msgpack.Marshal(liveMessage{Kind: liveMessageUpdates, Updates: us})
	if err != nil {
		f.log.Error("cannot encode live updates", "err", err)
		return
	}
	go func() {
		if err := f.c.Broadcast(b); err != nil {
			f.log.Debug("live updates did not reach every node", "err", err)
		}
	}()
}

// receive takes a message from another node.
func (f *fanout) receive(b []byte) {
	var m liveMessage
	if err := msgpack.Unmarshal(b, &m); err != nil || m.Kind != liveMessageUpdates {
		f.log.Warn("ignoring a node message this node cannot read", "bytes", len(b), "err", err)
		return
	}
	f.deliver(m.Updates)
}

func (f *fanout) deliver(us []live.Update) {
	now := time.Now()
	f.mu.Lock()
	for _, u := range us {
		f.active[u.Campaign] = now
	}
	f.mu.Unlock()
	if f.local != nil {
		f.local.Publish(us)
	}
}

// campaigns returns the campaigns with updates in the last window.
func (f *fanout) campaigns(window time.Duration) []string {
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

// handoff follows membership: once at start and after every change (each
// time after a settle delay) it rebuilds the campaigns this node gained
// from InfluxDB and forgets the clean minutes of those it lost. The pass
// at start matters for a node that restarts: between its own rebuild and
// rejoining, the interim owners went on writing its campaigns.
func handoff(ctx context.Context, c *cluster.Cluster, pipe *ingest.Pipeline, settle time.Duration, reg prometheus.Registerer, logger *slog.Logger) {
	last := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_aggregator_last_takeover_timestamp_seconds",
		Help: "Unix time at which this node last finished rebuilding campaigns it gained (0: never)."})
	reg.MustRegister(last)
	changes := c.Changes()
	var prev cluster.View // owns nothing: the first pass takes over everything owned
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(settle):
		}
		cur := c.View()
		if cur.Epoch != prev.Epoch {
			self := c.Name()
			gained := func(campaign string) bool {
				return cur.Owner(campaign).Name == self && prev.Owner(campaign).Name != self
			}
			start := time.Now()
			for attempt := 1; ctx.Err() == nil; attempt++ {
				n, err := pipe.TakeOver(ctx, gained)
				if err == nil {
					logger.Info("took over campaigns", "contribution_points", n,
						"members", len(cur.Members), "took", time.Since(start).Round(time.Millisecond))
					last.Set(float64(time.Now().UnixNano()) / 1e9)
					break
				}
				logger.Warn("rebuilding gained campaigns failed; retrying", "err", err, "attempt", attempt)
				select {
				case <-ctx.Done():
					return
				case <-time.After(min(time.Duration(attempt)*time.Second, 10*time.Second)):
				}
			}
			dropped := pipe.DropForeign()
			logger.Debug("forgot minutes of campaigns owned elsewhere", "minutes", dropped)
			prev = cur
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}

// ClusterView is the body of GET /api/v1/cluster.
type ClusterView struct {
	Node    string          `json:"node"`
	Epoch   uint64          `json:"epoch"`
	Members []ClusterMember `json:"members"`
}

// ClusterMember is one node and the active campaigns it owns.
type ClusterMember struct {
	Name      string   `json:"name"`
	State     string   `json:"state"`
	QUIC      string   `json:"quic"`
	HTTP      string   `json:"http"`
	Self      bool     `json:"self"`
	Campaigns []string `json:"campaigns"`
}

// clusterView returns the members with the campaigns active in the last
// hour that each owns.
func clusterView(c *cluster.Cluster, f *fanout) ClusterView {
	v := c.View()
	cv := ClusterView{Node: c.Name(), Epoch: v.Epoch}
	owned := map[string][]string{}
	for _, camp := range f.campaigns(time.Hour) {
		o := v.Owner(camp).Name
		owned[o] = append(owned[o], camp)
	}
	for _, m := range c.Members() {
		cv.Members = append(cv.Members, ClusterMember{Name: m.Name, State: m.State, QUIC: m.QUIC, HTTP: m.HTTP,
			Self: m.Self, Campaigns: append([]string{}, owned[m.Name]...)})
	}
	return cv
}

func clusterHandler(c *cluster.Cluster, f *fanout) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(clusterView(c, f))
	})
}

// clusterCollector exports membership and ownership to Prometheus.
type clusterCollector struct {
	c       *cluster.Cluster
	f       *fanout
	members *prometheus.Desc
	epoch   *prometheus.Desc
	owner   *prometheus.Desc
}

func newClusterCollector(c *cluster.Cluster, f *fanout) *clusterCollector {
	return &clusterCollector{c: c, f: f,
		members: prometheus.NewDesc("tally_aggregator_cluster_member", "1 for every member this node sees, by name and state.", []string{"member", "state"}, nil),
		epoch:   prometheus.NewDesc("tally_aggregator_cluster_epoch", "Membership fingerprint; nodes that agree show the same value.", nil, nil),
		owner:   prometheus.NewDesc("tally_aggregator_campaign_owner", "1 for every campaign active in the last hour, labelled with the node that owns it.", []string{"campaign", "member"}, nil),
	}
}

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.members
	ch <- cc.epoch
	ch <- cc.owner
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	cv := clusterView(cc.c, cc.f)
	ch <- prometheus.MustNewConstMetric(cc.epoch, prometheus.GaugeValue, float64(cv.Epoch))
	for _, m := range cv.Members {
		ch <- prometheus.MustNewConstMetric(cc.members, prometheus.GaugeValue, 1, m.Name, m.State)
		for _, camp := range m.Campaigns {
			ch <- prometheus.MustNewConstMetric(cc.owner, prometheus.GaugeValue, 1, camp, m.Name)
		}
	}
}

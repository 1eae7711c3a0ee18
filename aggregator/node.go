package aggregator

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/cluster"
	"github.com/tally-edge/tally/aggregator/forward"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/wire"
)

// routing is writer.Routing over the cluster's membership and the
// forwarder.
type routing struct {
	c   *cluster.Cluster
	fwd *forward.Forwarder
}

func (r routing) Owner(campaign string) (addr string, self bool) {
	m := r.c.View().Owner(campaign)
	return m.Addr, m.Name == r.c.Name()
}

func (r routing) Forward(ctx context.Context, addr, agent string, cs []wire.Contribution) error {
	return r.fwd.Forward(ctx, addr, agent, cs)
}

// membership is ingest.Membership over the cluster.
type membership struct{ c *cluster.Cluster }

func (m membership) IsMember(name string) bool { return m.c.IsMember(name) }

func (m membership) View() ([]wire.Member, uint64) {
	v := m.c.View()
	return v.Members, v.Epoch
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
func clusterView(c *cluster.Cluster, f *live.Fanout) ClusterView {
	v := c.View()
	cv := ClusterView{Node: c.Name(), Epoch: v.Epoch}
	owned := map[string][]string{}
	for _, camp := range f.Campaigns(time.Hour) {
		o := v.Owner(camp).Name
		owned[o] = append(owned[o], camp)
	}
	for _, m := range c.Members() {
		cv.Members = append(cv.Members, ClusterMember{Name: m.Name, State: m.State, QUIC: m.QUIC, HTTP: m.HTTP,
			Self: m.Self, Campaigns: append([]string{}, owned[m.Name]...)})
	}
	return cv
}

func clusterHandler(c *cluster.Cluster, f *live.Fanout) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(clusterView(c, f))
	})
}

// clusterCollector exports membership and ownership to Prometheus.
type clusterCollector struct {
	c       *cluster.Cluster
	f       *live.Fanout
	members *prometheus.Desc
	epoch   *prometheus.Desc
	owner   *prometheus.Desc
}

func newClusterCollector(c *cluster.Cluster, f *live.Fanout) *clusterCollector {
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

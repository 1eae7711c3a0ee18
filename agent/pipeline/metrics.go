package pipeline

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/wire"
)

func registerSpoolMetrics(reg prometheus.Registerer, sp *spool.Spool) {
	gauge := func(name, help string, f func(spool.Stats) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(sp.Stats()) }))
	}
	gauge("tally_agent_spool_pending_batches", "Batches in the spool awaiting an ack.", func(s spool.Stats) float64 { return float64(s.PendingBatches) })
	gauge("tally_agent_spool_pending_bytes", "Bytes of batches awaiting an ack.", func(s spool.Stats) float64 { return float64(s.PendingBytes) })
	gauge("tally_agent_spool_acked_batches", "Batches acknowledged since start.", func(s spool.Stats) float64 { return float64(s.AckedTotal) })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_agent_spool_bytes",
		Help: "Bytes the spool uses on disk."}, func() float64 { used, _ := sp.Usage(); return float64(used) }))
}

// registerEnvMetrics exports what normalisation replaced.
func registerEnvMetrics(reg prometheus.Registerer, env *source.Env) {
	c := &env.Counters
	for _, m := range []struct {
		dim string
		f   func() uint64
	}{
		{"device", c.UnknownDevice.Load},
		{"country", c.UnknownCountry.Load},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_agent_unknown_values_total",
			Help:        "Event fields outside their closed set (device classes, ISO 3166-1 countries), counted as unknown.",
			ConstLabels: prometheus.Labels{"dimension": m.dim}}, func() float64 { return float64(m.f()) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_agent_user_agents_truncated_total",
		Help: "User agents cut to 512 bytes before any cache saw them."}, func() float64 { return float64(c.UATruncated.Load()) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_agent_event_identity_ignored_total",
		Help: "Events whose ip or ua fields were ignored: sent by a browser, not a server sender or trusted proxy."},
		func() float64 { return float64(c.IdentityIgnored.Load()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_agent_device_cache_bytes",
		Help: "Bytes of user agents in the device cache."}, func() float64 { return float64(env.Devices.Bytes()) }))
}

// bytesCounter sums the bytes sent by every client the agent dialled.
type bytesCounter struct {
	mu     sync.Mutex
	closed uint64
	live   []*wire.Client
}

func (b *bytesCounter) track(c *wire.Client) *trackedClient {
	b.mu.Lock()
	b.live = append(b.live, c)
	b.mu.Unlock()
	return &trackedClient{Client: c, b: b}
}

func (b *bytesCounter) sent() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.closed
	for _, c := range b.live {
		n += c.Stats().BytesSent
	}
	return n
}

type trackedClient struct {
	*wire.Client
	b *bytesCounter
}

func (t *trackedClient) Close() error {
	t.b.mu.Lock()
	for i, c := range t.b.live {
		if c == t.Client {
			t.b.closed += c.Stats().BytesSent
			t.b.live = append(t.b.live[:i], t.b.live[i+1:]...)
			break
		}
	}
	t.b.mu.Unlock()
	return t.Client.Close()
}

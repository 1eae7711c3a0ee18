package agent

import (
	"context"
	"sync"
	"testing"

	"github.com/axiomhq/hyperloglog"

	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// standin is an aggregator stand-in: a real QUIC server with mutual TLS
// that acknowledges batches (or refuses them, as reject says) and keeps,
// per contribution id, the counters of the highest version and the union
// of every register update it saw.
type standin struct {
	srv   *wire.Server
	certs string

	mu       sync.Mutex
	latest   map[uint64]wire.Contribution
	uniques  map[string]*hyperloglog.Sketch // by campaign
	received int                            // batches received
	// reject, if set, answers a batch instead of AckOK.
	reject func(b *wire.Batch) *wire.Ack
}

func startStandin(t *testing.T, agents ...string) *standin {
	t.Helper()
	s := &standin{certs: t.TempDir(), latest: map[uint64]wire.Contribution{}, uniques: map[string]*hyperloglog.Sketch{}}
	if _, err := pki.GenerateDev(s.certs, pki.DevOptions{Agents: agents, Aggregators: []string{"agg-standin"}}); err != nil {
		t.Fatal(err)
	}
	tlsConf, err := pki.ServerTLS(pki.DevFiles(s.certs, "agg-standin"), wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	s.srv, err = wire.NewServer(wire.ServerConfig{Addr: "127.0.0.1:0", TLS: tlsConf, Handler: wire.HandlerFunc(s.handle)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { stop(); s.srv.Close(); <-done })
	return s
}

func (s *standin) handle(_ context.Context, _ wire.Peer, b *wire.Batch) wire.Ack {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received++
	if s.reject != nil {
		if ack := s.reject(b); ack != nil {
			ack.Version, ack.Seq = wire.ProtocolVersion, b.Seq
			return *ack
		}
	}
	for _, c := range b.Contributions {
		if c.Version > s.latest[c.CID].Version {
			s.latest[c.CID] = c
		}
		st, err := c.State.Decode()
		if err == nil && st.Uniques != nil {
			h := s.uniques[c.Series.Campaign]
			if h == nil {
				h = sketch.NewHLL()
				s.uniques[c.Series.Campaign] = h
			}
			_ = h.Merge(st.Uniques)
		}
	}
	return wire.Ack{Version: wire.ProtocolVersion, Seq: b.Seq, Status: wire.AckOK}
}

func (s *standin) setReject(f func(b *wire.Batch) *wire.Ack) {
	s.mu.Lock()
	s.reject = f
	s.mu.Unlock()
}

// counts is what arrived for one campaign.
type counts struct {
	Events, Bots uint64
	CostMicros   int64
}

// totals sums the latest version of every contribution, by campaign.
func (s *standin) totals() map[string]counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]counts{}
	for _, c := range s.latest {
		t := out[c.Series.Campaign]
		t.Events += c.State.Count
		t.CostMicros += c.State.CostMicros
		for _, n := range c.State.Bots {
			t.Bots += n
		}
		out[c.Series.Campaign] = t
	}
	return out
}

// series returns the distinct series that arrived for campaign ("" for
// every campaign).
func (s *standin) series(campaign string) map[sketch.Series]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[sketch.Series]bool{}
	for _, c := range s.latest {
		if campaign == "" || c.Series.Campaign == campaign {
			out[c.Series] = true
		}
	}
	return out
}

// uniquesOf estimates campaign's distinct visitors.
func (s *standin) uniquesOf(campaign string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.uniques[campaign]; h != nil {
		return h.Estimate()
	}
	return 0
}

func (s *standin) batches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received
}

package aggregator

import (
	"context"
	"sync/atomic"

	"github.com/tally-edge/tally/aggregator/ingest"
	"github.com/tally-edge/tally/aggregator/liveview"
	"github.com/tally-edge/tally/wire"
)

// liveIngest is the QUIC server's handler when the node takes live
// counters: the ingest pipeline for batches, and the live view for live
// messages (its HandleLive makes the server grant agents live streams).
type liveIngest struct {
	*ingest.Pipeline
	view *liveview.View
	// ready is set once the node has rebuilt its open minutes: before, the
	// store's durable figures are incomplete and a live record would be
	// laid over too little.
	ready *atomic.Bool
}

// HandleLive implements wire.LiveHandler. The peer's certificate name is
// the agent's name (quic.require_agent_cn), as in its contributions.
func (h liveIngest) HandleLive(_ context.Context, peer wire.Peer, m *wire.Live) {
	if !h.ready.Load() || peer.CommonName == "" {
		return
	}
	h.view.HandleLive(peer.CommonName, m)
}

// Package live carries per-minute campaign updates from the node that owns
// a campaign to every node's subscribers (the SSE stream and dashboards).
package live

import "github.com/tally-edge/tally/aggregator/kpi"

// Update is the merged state of one campaign in one minute, as its owner
// holds it right now. Updates are absolute, not increments: a later
// Update for the same (Campaign, Minute) replaces the earlier one, so a
// re-sent or re-ordered Update never double counts.
type Update struct {
	Campaign string `json:"campaign" msgpack:"c"`
	// Minute is the start of the minute, unix seconds (UTC).
	Minute int64    `json:"minute" msgpack:"m"`
	KPIs   kpi.KPIs `json:"kpis" msgpack:"k"`
	// Provisional is set when the counts include agents' live counters
	// that no durable flush has confirmed yet (aggregator/liveview): the
	// counts, money and bots may still change when the flush lands (the
	// flush wins); uniques are the durable ones.
	Provisional bool `json:"provisional,omitempty" msgpack:"p,omitempty"`
}

// Publisher takes updates. The owner's merge pipeline publishes to its own
// node's hub and to every peer's; implementations must not block for long.
type Publisher interface {
	Publish(us []Update)
}

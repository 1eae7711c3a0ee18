package rollup

import (
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/wire"
)

// Live counters: with Config.Live the rollup also keeps, for every
// campaign-minute of the last LiveWindow, the counters of every event it
// applied to it in this epoch (wire.LiveCounters), beside the series
// entries. They are updated in the same apply as the entries, so they
// count exactly the events that the epoch's contributions will carry:
// a live counter is a prefix of what the durable contributions of its
// campaign-minute hold once the next flush is in. That is the property
// the aggregator's live view rests on (aggregator/liveview, "The
// rule"). Imported rows have ids of their own and no live counters.

// DefaultLiveWindow is how far back, from the agent's clock, minutes keep
// live counters: the current minute, and late events for the last few.
const DefaultLiveWindow = 3 * time.Minute

// CampaignMinute names one campaign in one minute.
type CampaignMinute struct {
	Campaign string
	Minute   int64
}

// tally is the live counters of one campaign-minute.
type tally struct {
	key     CampaignMinute
	c       wire.LiveCounters
	changed bool // since the last TakeLive
	dropped bool // no longer in r.live: entries holding it look it up again
}

// liveState is the rollup's live counters.
type liveState struct {
	tallies map[CampaignMinute]*tally
	changed []*tally
	retired []CampaignMinute
	window  int64 // seconds
}

// tallyOf returns the live counters of en's campaign in minute, or nil
// when the minute is outside the live window.
func (r *Rollup) tallyOf(en *entry, minute, now int64) *tally {
	if t := en.tally; t != nil && !t.dropped {
		return t
	}
	if minute < now-r.live.window || minute > now+int64(maxLiveAhead/time.Second) {
		return nil
	}
	k := CampaignMinute{en.series.Campaign, minute}
	t := r.live.tallies[k]
	if t == nil {
		t = &tally{key: k}
		r.live.tallies[k] = t
	}
	en.tally = t
	return t
}

// maxLiveAhead bounds how far ahead of the agent's clock an event's
// minute may be and still have live counters (clients' clocks run
// ahead; the agent refuses events beyond http.max_clock_skew anyway).
const maxLiveAhead = 2 * time.Minute

// countLive adds one applied event to its campaign-minute's live
// counters, as apply counts it in the entry.
func (r *Rollup) countLive(en *entry, minute, now int64, e *event.Event) {
	t := r.tallyOf(en, minute, now)
	if t == nil {
		return
	}
	if e.Bot != "" {
		t.c.Bots++
	} else {
		t.c.AddCount(e.Series.Type, e.Count())
		t.c.CostMicros += e.CostMicros
		if e.HasValue {
			t.c.ValueMicros += e.ValueMicros
		}
	}
	if !t.changed {
		t.changed = true
		r.live.changed = append(r.live.changed, t)
	}
}

// TakeLive appends to changed the live counters of every campaign-minute
// that changed since the last call, and to retired those that left the
// live window since (their counters are final; nothing more is sent for
// them). Without Config.Live it appends nothing.
func (r *Rollup) TakeLive(changed []wire.LiveRecord, retired []CampaignMinute) ([]wire.LiveRecord, []CampaignMinute) {
	if !r.cfg.Live {
		return changed, retired
	}
	for _, t := range r.live.changed {
		t.changed = false
		if !t.dropped {
			changed = append(changed, wire.LiveRecord{Campaign: t.key.Campaign, Minute: t.key.Minute, Counters: t.c})
		}
	}
	clear(r.live.changed)
	r.live.changed = r.live.changed[:0]
	cut := r.now().Unix() - r.live.window
	for k, t := range r.live.tallies {
		if k.Minute < cut {
			t.dropped = true
			delete(r.live.tallies, k)
			r.live.retired = append(r.live.retired, k)
		}
	}
	retired = append(retired, r.live.retired...)
	r.live.retired = r.live.retired[:0]
	return changed, retired
}

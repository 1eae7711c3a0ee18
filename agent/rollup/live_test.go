package rollup

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// TestLiveCountersArePrefixesOfContributions: at every live snapshot,
// the live counters of a campaign-minute count exactly the events that
// the epoch's contributions of that campaign-minute hold once the next
// flush is in (and, taken before a flush, at most what they hold after
// it). This is what lets an owner tell a live counter from a durable one
// by its event count alone.
func TestLiveCountersArePrefixesOfContributions(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	now := time.Date(2026, 11, 22, 10, 0, 30, 0, time.UTC)
	r := New(9, Config{Live: true, Lateness: 10 * time.Minute})
	r.now = func() time.Time { return now }
	durable := map[CampaignMinute]map[uint64]wire.Contribution{} // latest version per CID
	live := map[CampaignMinute]wire.LiveCounters{}
	sum := func(cm CampaignMinute) wire.LiveCounters {
		var c wire.LiveCounters
		for _, con := range durable[cm] {
			st, err := con.State.Decode()
			if err != nil {
				t.Fatal(err)
			}
			c.AddState(con.Series.Type, st)
		}
		return c
	}
	base := now.Truncate(time.Minute).Add(-time.Minute)
	for round := range 30 {
		evs := genEvents(rng, 500, 40, 300, base.Add(time.Duration(rng.IntN(2))*time.Minute))
		for i := range evs {
			if rng.IntN(20) == 0 {
				evs[i].Series.Type = "cost"
				evs[i].CostMicros = int64(rng.IntN(5_000_000))
			}
			if rng.IntN(30) == 0 {
				evs[i].Weight = uint64(2 + rng.IntN(5))
			}
		}
		// An imported row has its own id and no live counter.
		evs = append(evs, event.Event{Series: evs[0].Series, UnixMillis: evs[0].UnixMillis, Weight: 1000,
			Row: event.RowID("row"), RowVersion: uint64(round + 1)})
		if err := r.Add(evs, outOf(r)); err != nil {
			t.Fatal(err)
		}
		changed, _ := r.TakeLive(nil, nil)
		for _, rec := range changed {
			live[CampaignMinute{rec.Campaign, rec.Minute}] = rec.Counters
		}
		if round%3 != 2 {
			continue
		}
		for _, c := range flush(t, r) {
			if c.CID>>62 == 3 {
				continue
			}
			cm := CampaignMinute{c.Series.Campaign, c.Minute}
			if durable[cm] == nil {
				durable[cm] = map[uint64]wire.Contribution{}
			}
			durable[cm][c.CID] = c
		}
		for cm, lc := range live {
			if got := sum(cm); got != lc {
				t.Fatalf("round %d: %v: live %+v, contributions %+v", round, cm, lc, got)
			}
		}
	}
	if len(live) == 0 {
		t.Fatal("no live counters")
	}
}

func TestLiveCountersLeaveTheWindow(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 30, 0, time.UTC)
	r := New(2, Config{Live: true, LiveWindow: 3 * time.Minute})
	r.now = func() time.Time { return now }
	ev := func(at time.Time) event.Event {
		return event.Event{Series: sketch.Series{Campaign: "c", Type: "click"}, UnixMillis: at.UnixMilli()}
	}
	if err := r.Add([]event.Event{ev(now), ev(now.Add(-10 * time.Minute))}, outOf(r)); err != nil {
		t.Fatal(err)
	}
	changed, retired := r.TakeLive(nil, nil)
	if len(changed) != 1 || changed[0].Counters.Clicks != 1 || len(retired) != 0 {
		t.Fatalf("changed %+v retired %+v: only the current minute has a live counter", changed, retired)
	}
	if changed, _ := r.TakeLive(nil, nil); len(changed) != 0 {
		t.Fatalf("unchanged minute reported again: %+v", changed)
	}
	now = now.Add(4 * time.Minute)
	changed, retired = r.TakeLive(nil, nil)
	if len(changed) != 0 || len(retired) != 1 || retired[0].Minute != now.Add(-4*time.Minute).Truncate(time.Minute).Unix() {
		t.Fatalf("after the window: changed %+v retired %+v", changed, retired)
	}
	// An entry still open for that minute counts into a new tally only
	// if the minute is in the window again, which it is not.
	if err := r.Add([]event.Event{ev(now.Add(-4 * time.Minute))}, outOf(r)); err != nil {
		t.Fatal(err)
	}
	if changed, _ := r.TakeLive(nil, nil); len(changed) != 0 {
		t.Fatalf("a minute outside the window got live counters: %+v", changed)
	}
	if _, retired := New(1, Config{}).TakeLive(nil, nil); retired != nil {
		t.Fatal("a rollup without live counters reported some")
	}
}

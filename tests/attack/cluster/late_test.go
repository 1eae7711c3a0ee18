package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// TestAggLateDataLoadsOnlyWhatItTouches: storage holds a week of 300
// campaigns. One batch of three contributions — a minute a week ago, one
// yesterday, and a spend row a year old — made the first release load
// every campaign's contributions for the whole week, on the ack path (and
// answer "busy" whenever that took too long). Now the batch is
// acknowledged at once and only the three campaign-minutes it touches
// are loaded; their stored state is merged exactly, and legitimate
// traffic is stored exactly meanwhile.
func TestAggLateDataLoadsOnlyWhatItTouches(t *testing.T) {
	e := aggNewEnv(t, influxtest.Options{}, []string{"attacker", "legit"}, []string{"agg-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	now := time.Now().Truncate(time.Minute)
	week, yesterday, year := now.Add(-7*24*time.Hour).Unix(), now.Add(-24*time.Hour).Unix(), now.Add(-365*24*time.Hour).Unix()

	// A week of stored history: 300 campaigns, 20 minutes each, spread
	// over the week, one of them ("victim") in the minutes the attack
	// touches.
	w, err := influx.NewWriter(influx.Config{URL: e.influx.URL(), Token: e.influx.Token(), Bucket: e.bucket}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var minutes []sketch.Minute
	var contribs []influx.ContribPoint
	stored := map[string]uint64{}
	add := func(campaign string, minute int64, count uint64) {
		c := aggContribution(campaign, minute, uint64(len(contribs)+1), count)
		st, err := c.State.Decode()
		if err != nil {
			t.Fatal(err)
		}
		minutes = append(minutes, sketch.Minute{Series: c.Series, Minute: minute, State: st})
		contribs = append(contribs, influx.ContribPoint{Series: c.Series, Minute: minute, Agent: "history", Node: "agg-0", Contribs: []wire.Contribution{c}})
		stored[campaign] += count
	}
	for c := range 300 {
		for m := range 20 {
			add(fmt.Sprintf("history-%03d", c), week+int64((c*20+m)%(7*24*60-1))*60, 1)
		}
	}
	add("victim", week, 5)
	add("victim", yesterday, 7)
	if err := w.Write(ctx, minutes, contribs); err != nil {
		t.Fatal(err)
	}

	// Minutes are kept forever here, so the year-old row is stored (with
	// the default 14 days it would be quarantined as beyond retention,
	// which TestAggPointsBeyondRetention covers).
	n := e.aggStart("agg-1", aggNodeOptions{InfluxExtra: "retention:\n    minutes: 0s\n    hours: 0s"})
	c := e.aggClient("attacker", n, wire.ALPN)
	truth := aggWithLegit(t, e, n, "legit", "legit", func() {
		b := &wire.Batch{Version: wire.ProtocolVersion, Agent: "attacker", Region: "eu", Seq: 1, Contributions: []wire.Contribution{
			aggContribution("victim", week, 1<<40|1, 2),
			aggContribution("victim", yesterday, 1<<40|2, 3),
			aggContribution("spend", year, 3<<62|1, 4),
		}}
		aggSendAll(t, c, b)
	})
	e.aggWaitStored(map[string]uint64{"legit": truth, "victim": stored["victim"] + 2 + 3, "spend": 4, "history-000": stored["history-000"]}, 60*time.Second)
	loaded, ok := aggMetric(n.http, "tally_aggregator_late_minute_loads_total")
	if !ok || loaded > 3 {
		t.Fatalf("%v late loads (present %v) for a batch touching 3 campaign-minutes", loaded, ok)
	}
}

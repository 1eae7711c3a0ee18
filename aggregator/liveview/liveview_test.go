package liveview

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/aggregator/merge"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// recorder is the hub's view of what the live view publishes: the latest
// update per campaign-minute, and every update in order.
type recorder struct {
	latest map[merge.CampaignMinute]live.Update
	all    []live.Update
}

func (r *recorder) Publish(us []live.Update) {
	for _, u := range us {
		r.latest[merge.CampaignMinute{Campaign: u.Campaign, Minute: u.Minute}] = u
		r.all = append(r.all, u)
	}
}

// truth is what the agents took, counted from the generated events.
type truth map[merge.CampaignMinute]*kpi.KPIs

func (t truth) add(e *event.Event) {
	cm := merge.CampaignMinute{Campaign: e.Series.Campaign, Minute: e.UnixMillis / 60000 * 60}
	k := t[cm]
	if k == nil {
		k = &kpi.KPIs{}
		t[cm] = k
	}
	if e.Bot != "" {
		k.BotsFiltered++
		return
	}
	switch e.Series.Type {
	case "impression":
		k.Impressions++
	case "click":
		k.Clicks++
	case "conversion":
		k.Conversions++
	case "pageview":
		k.Pageviews++
	}
	k.Revenue += sketch.FromMicros(e.ValueMicros)
}

// agentSim is one agent: its rollup and the live messages it sent.
type agentSim struct {
	name  string
	epoch uint32
	r     *rollup.Rollup
	out   rollup.Slice
	seq   uint64
}

func (a *agentSim) liveMessage() *wire.Live {
	changed, _ := a.r.TakeLive(nil, nil)
	if len(changed) == 0 {
		return nil
	}
	a.seq++
	return &wire.Live{Epoch: a.epoch, Seq: a.seq, Flush: time.Minute, Records: changed}
}

func (a *agentSim) flush(t *testing.T) []merge.Decoded {
	t.Helper()
	if err := a.r.Cut(&a.out); err != nil {
		t.Fatal(err)
	}
	var ds []merge.Decoded
	for i := range a.out {
		d, err := merge.Decode(a.name, &a.out[i])
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	a.out = a.out[:0]
	return ds
}

func durableKPIs(t *testing.T, s *merge.Store, cms []merge.CampaignMinute) map[merge.CampaignMinute]kpi.KPIs {
	t.Helper()
	out := map[merge.CampaignMinute]kpi.KPIs{}
	err := s.CampaignView(cms, func(cm merge.CampaignMinute, series []sketch.Minute, uniques uint64) {
		acc := kpi.Accumulator{SkipUniques: true}
		for _, m := range series {
			if err := acc.Add(m); err != nil {
				t.Fatal(err)
			}
		}
		k, _ := acc.Result()
		k.Uniques = uniques
		out[cm] = k
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLiveMessagesNeverChangeDurableFigures runs two agents (one of which
// restarts) through rounds of events, live messages and flushes against a
// real merge store. The network drops, repeats, delays and reorders live
// messages, and splits flushes so part of one lands before the rest. It
// checks that:
//   - no published figure is ever above what the agents had taken;
//   - the store's durable figures are exactly those of a store fed the
//     same contributions with no live view at all;
//   - once every flush has landed (and the late, repeated live messages
//     arrive after it), every campaign-minute shows exactly the truth,
//     counted from the generated events, and is not provisional.
func TestLiveMessagesNeverChangeDurableFigures(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { runLiveRounds(t, seed) })
	}
}

func runLiveRounds(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 77))
	store, shadow := merge.New(), merge.New()
	rec := &recorder{latest: map[merge.CampaignMinute]live.Update{}}
	cfg := DefaultConfig()
	cfg.Store, cfg.Out = store, rec
	v, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	minute := now.Truncate(time.Minute)
	agents := []*agentSim{
		{name: "edge-a", epoch: 3, r: rollup.New(3, rollup.Config{Live: true, Lateness: 10 * time.Minute})},
		{name: "edge-b", epoch: 7, r: rollup.New(7, rollup.Config{Live: true, Lateness: 10 * time.Minute})},
	}
	truth := truth{}
	types := []string{"impression", "click", "conversion", "pageview", "cost"}
	var delayed []func() // live messages the network holds back
	var unflushed [][]merge.Decoded
	apply := func(ds []merge.Decoded) {
		if len(ds) == 0 {
			return
		}
		if _, err := store.Apply(ds, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := shadow.Apply(ds, 0); err != nil {
			t.Fatal(err)
		}
		// The writer publishes what it wrote, through the view.
		seen := map[merge.CampaignMinute]bool{}
		var us []live.Update
		for _, d := range ds {
			cm := merge.CampaignMinute{Campaign: d.Key.Series.Campaign, Minute: d.Key.Minute}
			if !seen[cm] {
				seen[cm] = true
				us = append(us, live.Update{Campaign: cm.Campaign, Minute: cm.Minute})
			}
		}
		v.Publish(us)
	}
	deliver := func(a *agentSim, m *wire.Live) func() {
		return func() { v.HandleLive(a.name, m) }
	}
	checkNotAbove := func(when string) {
		t.Helper()
		for _, u := range rec.all {
			tr := truth[merge.CampaignMinute{Campaign: u.Campaign, Minute: u.Minute}]
			if tr == nil {
				t.Fatalf("%s: published %s@%d, which has no events", when, u.Campaign, u.Minute)
			}
			k := u.KPIs
			if k.Impressions > tr.Impressions || k.Clicks > tr.Clicks || k.Conversions > tr.Conversions ||
				k.Pageviews > tr.Pageviews || k.BotsFiltered > tr.BotsFiltered || k.Revenue > tr.Revenue+1e-6 {
				t.Fatalf("%s: %s@%d published %+v, above what the agents took %+v", when, u.Campaign, u.Minute, k, *tr)
			}
		}
		rec.all = rec.all[:0]
	}

	for round := range 60 {
		for _, a := range agents {
			evs := make([]event.Event, 20+rng.IntN(60))
			for i := range evs {
				typ := types[rng.IntN(len(types))]
				e := event.Event{Series: sketch.Series{Campaign: fmt.Sprintf("c%d", rng.IntN(3)), Source: fmt.Sprintf("s%d", rng.IntN(3)),
					Medium: "cpc", Type: typ, Country: "DE", Device: "mobile", Region: a.name},
					UnixMillis: minute.Add(-time.Duration(rng.IntN(2))*time.Minute).UnixMilli() + int64(rng.IntN(60_000)),
					Visitor:    rng.Uint64()}
				switch {
				case rng.IntN(15) == 0:
					e.Bot = "crawler"
				case typ == "conversion":
					e.ValueMicros, e.HasValue = int64(rng.IntN(50_000_000)), true
				case typ == "cost":
					e.CostMicros = int64(rng.IntN(2_000_000))
				}
				evs[i] = e
			}
			if err := a.r.Add(evs, &a.out); err != nil {
				t.Fatal(err)
			}
			for i := range evs {
				truth.add(&evs[i])
			}
			if m := a.liveMessage(); m != nil {
				switch rng.IntN(6) {
				case 0: // dropped
				case 1: // delayed: arrives some rounds later, after newer ones
					delayed = append(delayed, deliver(a, m))
				case 2: // repeated
					deliver(a, m)()
					deliver(a, m)()
					delayed = append(delayed, deliver(a, m))
				default:
					deliver(a, m)()
				}
			}
			if rng.IntN(4) == 0 {
				// A flush, split in two batches that land apart.
				ds := a.flush(t)
				rng.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
				half := len(ds) / 2
				apply(ds[:half])
				unflushed = append(unflushed, ds[half:])
			}
		}
		if len(unflushed) > 0 && rng.IntN(2) == 0 {
			apply(unflushed[0])
			unflushed = unflushed[1:]
		}
		if len(delayed) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(delayed))
			delayed[i]()
			delayed = append(delayed[:i], delayed[i+1:]...)
		}
		checkNotAbove(fmt.Sprintf("round %d", round))
		if round == 30 {
			// edge-b restarts: what it took is flushed, and it goes on
			// with a new epoch and new contributions.
			b := agents[1]
			apply(b.flush(t))
			agents[1] = &agentSim{name: b.name, epoch: b.epoch + 1, r: rollup.New(b.epoch+1, rollup.Config{Live: true, Lateness: 10 * time.Minute})}
		}
	}

	// Every flush lands; then the late and repeated live messages arrive.
	for _, a := range agents {
		apply(a.flush(t))
	}
	for _, ds := range unflushed {
		apply(ds)
	}
	checkNotAbove("after the flush")
	for _, d := range delayed {
		d()
	}
	checkNotAbove("after late live messages")

	var cms []merge.CampaignMinute
	for cm := range truth {
		cms = append(cms, cm)
	}
	durable, shadowed := durableKPIs(t, store, cms), durableKPIs(t, shadow, cms)
	for _, cm := range cms {
		tr := *truth[cm]
		d := durable[cm]
		if d != shadowed[cm] {
			t.Fatalf("%v: durable %+v differs from a store without live counters %+v", cm, d, shadowed[cm])
		}
		if d.Impressions != tr.Impressions || d.Clicks != tr.Clicks || d.Conversions != tr.Conversions ||
			d.Pageviews != tr.Pageviews || d.BotsFiltered != tr.BotsFiltered {
			t.Fatalf("%v: durable %+v, truth %+v", cm, d, tr)
		}
		u, ok := rec.latest[cm]
		if !ok {
			t.Fatalf("%v: never published", cm)
		}
		if u.Provisional || u.KPIs != d {
			t.Fatalf("%v: the stream shows %+v (provisional %v) after the flush, durable %+v", cm, u.KPIs, u.Provisional, d)
		}
	}
}

// TestLiveCountersMoveTheStreamBeforeTheFlush: with no flush at all, the
// live counters alone carry the figure, marked provisional; a live record
// no flush confirms is dropped after two flush intervals and ten seconds,
// and the figure falls back to the durable one.
func TestLiveCountersMoveTheStreamBeforeTheFlush(t *testing.T) {
	store := merge.New()
	rec := &recorder{latest: map[merge.CampaignMinute]live.Update{}}
	clock := time.Now()
	cfg := DefaultConfig()
	cfg.Store, cfg.Out, cfg.Now = store, rec, func() time.Time { return clock }
	v, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	min := clock.Truncate(time.Minute).Unix()
	cm := merge.CampaignMinute{Campaign: "spring", Minute: min}
	v.HandleLive("edge-a", &wire.Live{Epoch: 1, Seq: 5, Flush: time.Minute,
		Records: []wire.LiveRecord{{Campaign: "spring", Minute: min, Counters: wire.LiveCounters{Clicks: 4, Impressions: 40}}}})
	u := rec.latest[cm]
	if !u.Provisional || u.KPIs.Clicks != 4 || u.KPIs.Impressions != 40 || u.KPIs.CTR != 0.1 {
		t.Fatalf("after a live message: %+v", u)
	}
	// An older message (a repeat from an abandoned stream) changes nothing.
	v.HandleLive("edge-a", &wire.Live{Epoch: 1, Seq: 4, Flush: time.Minute,
		Records: []wire.LiveRecord{{Campaign: "spring", Minute: min, Counters: wire.LiveCounters{Clicks: 3}}}})
	if got := rec.latest[cm]; got != u {
		t.Fatalf("an older live message changed the figure: %+v", got)
	}
	// Another node owns "other": its counters are dropped.
	v.cfg.Owns = func(c string) bool { return c != "other" }
	v.HandleLive("edge-a", &wire.Live{Epoch: 1, Seq: 6, Flush: time.Minute,
		Records: []wire.LiveRecord{{Campaign: "other", Minute: min, Counters: wire.LiveCounters{Clicks: 3}}}})
	if _, ok := rec.latest[merge.CampaignMinute{Campaign: "other", Minute: min}]; ok {
		t.Fatal("published a campaign this node does not own")
	}
	// edge-b restarts before flushing: its new process's first message
	// drops what the old one sent, and the old one's late messages are
	// ignored.
	v.HandleLive("edge-b", &wire.Live{Epoch: 4, Seq: 1, Flush: time.Minute,
		Records: []wire.LiveRecord{{Campaign: "spring", Minute: min, Counters: wire.LiveCounters{Clicks: 6}}}})
	if got := rec.latest[cm]; got.KPIs.Clicks != 10 {
		t.Fatalf("edge-a's 4 and edge-b's 6 clicks: %+v", got.KPIs)
	}
	v.HandleLive("edge-b", &wire.Live{Epoch: 5, Seq: 1, Flush: time.Minute,
		Records: []wire.LiveRecord{{Campaign: "spring", Minute: min, Counters: wire.LiveCounters{Clicks: 1}}}})
	if got := rec.latest[cm]; got.KPIs.Clicks != 5 {
		t.Fatalf("after edge-b restarted: %+v, want edge-a's 4 and the new process's 1 click", got.KPIs)
	}
	v.HandleLive("edge-b", &wire.Live{Epoch: 4, Seq: 2, Flush: time.Minute,
		Records: []wire.LiveRecord{{Campaign: "spring", Minute: min, Counters: wire.LiveCounters{Clicks: 9}}}})
	if got := rec.latest[cm]; got.KPIs.Clicks != 5 {
		t.Fatalf("a message of edge-b's previous process counted: %+v", got.KPIs)
	}
	// Ownership of "gone" moves away while this node holds a live record
	// of it: expiring it publishes nothing (the new owner publishes the
	// campaign; this node may no longer hold its minutes).
	gone := merge.CampaignMinute{Campaign: "gone", Minute: min}
	v.HandleLive("edge-a", &wire.Live{Epoch: 1, Seq: 7, Flush: time.Minute,
		Records: []wire.LiveRecord{{Campaign: "gone", Minute: min, Counters: wire.LiveCounters{Clicks: 2}}}})
	if got := rec.latest[gone]; got.KPIs.Clicks != 2 {
		t.Fatalf("gone: %+v", got)
	}
	v.cfg.Owns = func(c string) bool { return c != "other" && c != "gone" }
	clock = clock.Add(2*time.Minute + 9*time.Second)
	v.Expire()
	if got := rec.latest[cm]; !got.Provisional {
		t.Fatalf("expired before two flush intervals and ten seconds: %+v", got)
	}
	clock = clock.Add(2 * time.Second)
	v.Expire()
	if got := rec.latest[cm]; got.Provisional || got.KPIs != (kpi.KPIs{}) {
		t.Fatalf("an unconfirmed live record outlived its time: %+v", got)
	}
	if got := rec.latest[gone]; got.KPIs.Clicks != 2 {
		t.Fatalf("published %+v for a campaign this node no longer owns", got)
	}
}

// TestLiveRecordsBounded: a flood of campaign-minutes from one agent
// stops at MaxRecords (the rest wait for the flush, counted), and minutes
// outside the window, or far ahead of the clock, are refused.
func TestLiveRecordsBounded(t *testing.T) {
	rec := &recorder{latest: map[merge.CampaignMinute]live.Update{}}
	cfg := DefaultConfig()
	cfg.Store, cfg.Out, cfg.MaxRecords = merge.New(), rec, 50
	v, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Minute).Unix()
	rs := []wire.LiveRecord{{Campaign: "old", Minute: now - 3600, Counters: wire.LiveCounters{Clicks: 1}},
		{Campaign: "ahead", Minute: now + 3600, Counters: wire.LiveCounters{Clicks: 1}}}
	for i := range 1000 {
		rs = append(rs, wire.LiveRecord{Campaign: fmt.Sprintf("flood-%d", i), Minute: now, Counters: wire.LiveCounters{Clicks: 1}})
	}
	v.HandleLive("edge-a", &wire.Live{Epoch: 1, Seq: 1, Flush: time.Minute, Records: rs})
	if len(rec.latest) != 50 || v.n != 50 {
		t.Fatalf("published %d campaign-minutes, holds %d records; want 50 (MaxRecords)", len(rec.latest), v.n)
	}
	for _, c := range []string{"old", "ahead"} {
		for cm := range rec.latest {
			if cm.Campaign == c {
				t.Fatalf("published %v, outside the window", cm)
			}
		}
	}
}

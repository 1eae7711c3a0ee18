// Package bench holds cross-cutting benchmarks: bytes on the wire against
// raw events, and the end-to-end throughput of one agent.
package bench

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/botfilter"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// minuteOfTraffic is 100k events in one minute over 200 series (10
// campaigns × 5 types × 4 countries) from 20k distinct visitors, as raw
// beacon JSON would carry them. A visitor keeps one campaign (the link
// they came by), one country and one browser for the minute; the event
// types of their visit vary.
func minuteOfTraffic(start time.Time) []loadgen.Event {
	rng := rand.New(rand.NewPCG(3, 4))
	types := []string{"impression", "click", "pageview", "conversion", "email_open"}
	countries := []string{"US", "DE", "FR", "JP"}
	sources := []struct{ s, m string }{{"google", "cpc"}, {"facebook", "paid_social"}, {"newsletter", "email"}, {"bing", "cpc"}, {"partner_blog", "referral"}}
	out := make([]loadgen.Event, 100_000)
	for i := range out {
		v := rng.IntN(20_000)
		c := v % 10
		e := loadgen.Event{Type: types[rng.IntN(len(types))], TS: start.UnixMilli() + int64(rng.IntN(60_000)),
			Campaign: fmt.Sprintf("campaign_%02d", c), Source: sources[c%len(sources)].s, Medium: sources[c%len(sources)].m,
			Country: countries[(v/10)%len(countries)], Visitor: fmt.Sprintf("v%06d", v), IP: fmt.Sprintf("198.51.100.%d", v%250+1),
			UA: loadgen.BrowserUAs[v%len(loadgen.BrowserUAs)]}
		e.URL = fmt.Sprintf("https://shop.example.com/p/%d?utm_campaign=%s&utm_source=%s&utm_medium=%s", rng.IntN(500), e.Campaign, e.Source, e.Medium)
		if e.Type == "conversion" {
			val := float64(500+rng.IntN(30000)) / 100
			e.Value = &val
		}
		out[i] = e
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TS < out[j].TS })
	return out
}

func gzipSize(b []byte) int {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	w.Write(b)
	w.Close()
	return buf.Len()
}

// wireSize pushes the events through the agent's normalisation and rollup,
// flushing every interval of event time, and encodes every flush as the
// shipper would. It returns the bytes on the wire and a breakdown of the
// uncompressed payload by sketch kind.
func wireSize(tb testing.TB, evs []loadgen.Event, interval time.Duration, compress, campaignUniques bool) (wireBytes int, hll, quantiles, other int) {
	hasher, err := privacy.NewHasher("bench-secret-0123456789", privacy.Day)
	if err != nil {
		tb.Fatal(err)
	}
	bots := botfilter.New(botfilter.Config{})
	rcfg := rollup.DefaultConfig()
	rcfg.CampaignUniques = campaignUniques
	r := rollup.New(1, rcfg)
	ctx := &event.Context{Now: time.UnixMilli(evs[len(evs)-1].TS), Region: "eu", Hasher: hasher, Bots: bots, TrustBody: true}
	var batch []event.Event
	nextFlush := time.UnixMilli(evs[0].TS).Truncate(interval).Add(interval).UnixMilli()
	flush := func() {
		if len(batch) > 0 {
			if err := r.Add(batch, &pending); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
		cs := flushContributions(tb, r)
		if len(cs) == 0 {
			return
		}
		for _, c := range cs {
			hll += len(c.State.HLL) + len(c.State.Registers)
			quantiles += len(c.State.Quantiles)
		}
		frame, err := wire.EncodeBatch(&wire.Batch{Version: wire.ProtocolVersion, Agent: "agent-eu", Region: "eu", Seq: 1, Contributions: cs}, wire.EncodeOptions{Compress: compress})
		if err != nil {
			tb.Fatal(err)
		}
		plain, _ := wire.EncodeBatch(&wire.Batch{Version: wire.ProtocolVersion, Agent: "agent-eu", Region: "eu", Seq: 1, Contributions: cs}, wire.EncodeOptions{})
		wireBytes += len(frame)
		other += len(plain)
	}
	var raw event.Raw
	for i := range evs {
		if evs[i].TS >= nextFlush {
			flush()
			nextFlush += interval.Milliseconds()
		}
		raw = rawOf(&evs[i])
		var e event.Event
		if err := event.Normalize(&raw, ctx, &e); err != nil {
			tb.Fatal(err)
		}
		batch = append(batch, e)
	}
	flush()
	other -= hll + quantiles
	return wireBytes, hll, quantiles, other
}

// rawOf is the event a client would send for a generated one.
func rawOf(e *loadgen.Event) event.Raw {
	r := event.Raw{Type: e.Type, Campaign: e.Campaign, Source: e.Source, Medium: e.Medium, Country: e.Country,
		Visitor: e.Visitor, IP: e.IP, UA: e.UA, URL: e.URL, Value: e.Value, Cost: e.Cost, Poll: e.Poll, Answer: e.Answer}
	r.TS = event.Time{UnixMillis: e.TS, Set: true}
	return r
}

// BenchmarkWireBytes reports bytes on the wire for one minute of 100k
// events over 200 series and 20k visitors, against the same events as
// gzipped NDJSON, at several flush intervals.
//
//	go test -run='^$' -bench=BenchmarkWireBytes -benchtime=1x ./tests/bench/
func BenchmarkWireBytes(b *testing.B) {
	evs := minuteOfTraffic(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	ndjson := loadgen.EncodeNDJSON(evs)
	gz := gzipSize(ndjson)
	for _, tc := range []struct {
		iv              time.Duration
		campaignUniques bool
	}{{2 * time.Second, false}, {10 * time.Second, false}, {15 * time.Second, false}, {30 * time.Second, false},
		{60 * time.Second, false}, {60 * time.Second, true}} {
		name := fmt.Sprintf("flush=%s", tc.iv)
		if tc.campaignUniques {
			name += "/uniques=campaign"
		}
		b.Run(name, func(b *testing.B) {
			var w, hll, q, other int
			for range b.N {
				w, hll, q, other = wireSize(b, evs, tc.iv, true, tc.campaignUniques)
			}
			b.ReportMetric(float64(w), "wire_B/min")
			b.ReportMetric(float64(w)/100, "wire_B/1000events")
			b.ReportMetric(100*float64(w)/float64(gz), "%_of_gzip_ndjson")
			b.ReportMetric(float64(hll), "uniques_B_raw")
			b.ReportMetric(float64(q), "quantiles_B_raw")
			b.ReportMetric(float64(other), "keys+counters_B_raw")
			b.ReportMetric(float64(gz), "gzip_ndjson_B")
			b.ReportMetric(float64(len(ndjson)), "ndjson_B")
		})
	}
}

// TestCampaignUniquesWithinSketchError: in the low-bandwidth setting the
// uniques of every campaign, merged from what was shipped, stay within
// the HLL's error of the distinct visitors actually seen.
func TestCampaignUniquesWithinSketchError(t *testing.T) {
	evs := minuteOfTraffic(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	truth := map[string]map[string]bool{}
	for _, e := range evs {
		if truth[e.Campaign] == nil {
			truth[e.Campaign] = map[string]bool{}
		}
		truth[e.Campaign][e.Visitor] = true
	}
	hasher, _ := privacy.NewHasher("bench-secret-0123456789", privacy.Day)
	cfg := rollup.DefaultConfig()
	cfg.CampaignUniques = true
	r := rollup.New(1, cfg)
	ctx := &event.Context{Now: time.UnixMilli(evs[len(evs)-1].TS), Region: "eu", Hasher: hasher, TrustBody: true}
	var batch []event.Event
	for i := range evs {
		raw := event.Raw{Type: evs[i].Type, Campaign: evs[i].Campaign, Source: evs[i].Source, Medium: evs[i].Medium,
			Country: evs[i].Country, Visitor: evs[i].Visitor, UA: evs[i].UA, URL: evs[i].URL, Value: evs[i].Value}
		raw.TS = event.Time{UnixMillis: evs[i].TS, Set: true}
		var e event.Event
		if err := event.Normalize(&raw, ctx, &e); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, e)
	}
	if err := r.Add(batch, &pending); err != nil {
		t.Fatal(err)
	}
	cs := flushContributions(t, r)
	merged := map[string]*sketch.State{}
	var count uint64
	for _, c := range cs {
		count += c.State.Count
		if c.Series.Type != rollup.UniquesType {
			if len(c.State.Registers) > 0 {
				t.Fatalf("series %v ships visitors in campaign mode", c.Series)
			}
			continue
		}
		if merged[c.Series.Campaign] == nil {
			merged[c.Series.Campaign] = &sketch.State{}
		}
		if err := merged[c.Series.Campaign].MergeRegisters(c.State.Registers); err != nil {
			t.Fatal(err)
		}
	}
	if count != uint64(len(evs)) {
		t.Fatalf("counted %d events, want %d", count, len(evs))
	}
	for c, vs := range truth {
		got, want := float64(merged[c].UniquesEstimate()), float64(len(vs))
		if rel := math.Abs(got-want) / want; rel > 3*0.0081 {
			t.Fatalf("%s: uniques %v, truth %v (%.2f%% off)", c, got, want, 100*rel)
		}
	}
}

// pending holds what the rollups cut between flushes (with wall-clock
// lateness, nothing: Add cuts only by event time).
var pending rollup.Slice

// flushContributions cuts r and returns what it cut.
func flushContributions(tb testing.TB, r *rollup.Rollup) []wire.Contribution {
	tb.Helper()
	if err := r.Cut(&pending); err != nil {
		tb.Fatal(err)
	}
	all := pending
	pending = nil
	return all
}

// liveWireSize pushes the events through a rollup with live counters on
// and encodes, every `every` of event time, the live message an agent
// would send (wire.LiveEncoder, compressed as on the wire). It returns
// the bytes of every live frame, headers included, and the messages.
func liveWireSize(tb testing.TB, evs []loadgen.Event, every time.Duration) (liveBytes, messages int) {
	hasher, err := privacy.NewHasher("bench-secret-0123456789", privacy.Day)
	if err != nil {
		tb.Fatal(err)
	}
	bots := botfilter.New(botfilter.Config{})
	rcfg := rollup.DefaultConfig()
	rcfg.Live = true
	r := rollup.New(1, rcfg)
	ctx := &event.Context{Now: time.UnixMilli(evs[len(evs)-1].TS), Region: "eu", Hasher: hasher, Bots: bots, TrustBody: true}
	enc := wire.NewLiveEncoder()
	var (
		batch   []event.Event
		changed []wire.LiveRecord
		retired []rollup.CampaignMinute
		out     rollup.Slice
		frame   []byte
		seq     uint64
	)
	send := func() {
		if len(batch) > 0 {
			if err := r.Add(batch, &out); err != nil {
				tb.Fatal(err)
			}
			batch, out = batch[:0], out[:0]
		}
		changed, retired = r.TakeLive(changed[:0], retired[:0])
		for _, k := range retired {
			enc.Retire(k.Campaign, k.Minute)
		}
		seq++
		var ok bool
		frame, ok, err = enc.AppendFrame(frame[:0], &wire.Live{Epoch: 1, Seq: seq, Flush: 15 * time.Second, Records: changed}, true)
		if err != nil {
			tb.Fatal(err)
		}
		if ok {
			liveBytes += len(frame)
			messages++
		}
	}
	next := time.UnixMilli(evs[0].TS).Truncate(every).Add(every).UnixMilli()
	var raw event.Raw
	for i := range evs {
		for evs[i].TS >= next {
			send()
			next += every.Milliseconds()
		}
		raw = event.Raw{Type: evs[i].Type, Campaign: evs[i].Campaign, Source: evs[i].Source, Medium: evs[i].Medium,
			Country: evs[i].Country, Visitor: evs[i].Visitor, IP: evs[i].IP, UA: evs[i].UA, URL: evs[i].URL, Value: evs[i].Value}
		raw.TS = event.Time{UnixMillis: evs[i].TS, Set: true}
		var e event.Event
		if err := event.Normalize(&raw, ctx, &e); err != nil {
			tb.Fatal(err)
		}
		batch = append(batch, e)
	}
	send()
	return liveBytes, messages
}

// BenchmarkLiveWireBytes reports what live counters add to the bytes on
// the wire for the minute of BenchmarkWireBytes (100k events, 200 series,
// 20k visitors), sent every second, against the same events as gzipped
// NDJSON, at the default flush interval and in the low-bandwidth setting.
// Live counters do not depend on the flush interval: each second they
// carry the counters of the campaign-minutes that changed.
//
//	go test -run='^$' -bench=BenchmarkLiveWireBytes -benchtime=1x ./tests/bench/
func BenchmarkLiveWireBytes(b *testing.B) {
	// Live counters are kept for the minutes around the agent's clock:
	// the traffic is this minute's.
	evs := minuteOfTraffic(time.Now().Truncate(time.Minute))
	gz := gzipSize(loadgen.EncodeNDJSON(evs))
	for _, tc := range []struct {
		iv              time.Duration
		campaignUniques bool
	}{{15 * time.Second, false}, {60 * time.Second, true}} {
		name := fmt.Sprintf("flush=%s", tc.iv)
		if tc.campaignUniques {
			name += "/uniques=campaign"
		}
		b.Run(name, func(b *testing.B) {
			var w, live, msgs int
			for range b.N {
				w, _, _, _ = wireSize(b, evs, tc.iv, true, tc.campaignUniques)
				live, msgs = liveWireSize(b, evs, time.Second)
			}
			if msgs == 0 {
				b.Fatal("no live message")
			}
			b.ReportMetric(float64(w), "wire_B/min")
			b.ReportMetric(float64(live), "live_B/min")
			b.ReportMetric(float64(msgs), "live_msgs/min")
			b.ReportMetric(100*float64(w)/float64(gz), "%_of_gzip_without_live")
			b.ReportMetric(100*float64(w+live)/float64(gz), "%_of_gzip_with_live")
			b.ReportMetric(100*float64(live)/float64(gz), "live_pp_of_gzip")
		})
	}
}

package bench

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/botfilter"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// BenchmarkBurstBytes measures, without a link, what the burst of the
// low-bandwidth tests (tests/links: 250,000 generated events over 4
// minutes) costs in wire frames: the events go through the agent's own
// normalisation, bot filter, visitor hashing, rollup and batcher, and each
// spooled batch is framed as the shipper frames it on a slow link (zstd's
// best level). It reports the frames' bytes as a share of the events'
// gzipped NDJSON (the yardstick, whose bound is 5 %), for both
// uniques settings and for one cut per minute (a backfill, or a flush
// interval of a minute) and four (the default 15 s flush, live).
//
// It also reports a floor for the HyperLogLog registers of a
// minute-per-cut burst: the fewest bytes an encoding that codes each
// series-minute's register set on its own (as every format so far does)
// can spend on them. Visitor hashes are uniform, so given that k of the
// 2^14 registers are set, every k-subset is equally likely and naming the
// set takes log2 C(2^14, k) bits; each register's rho is the largest of j
// geometric draws, whose entropy is at least minRhoEntropy bits for every
// j. Counters, dimensions and framing come on top of it. A format coding
// sets jointly (a visitor seen in several series or minutes named once)
// could go below it.
//
//	go test -run='^$' -bench=BenchmarkBurstBytes -benchtime=1x ./tests/bench/
func BenchmarkBurstBytes(b *testing.B) {
	const events, span = 250_000, 4 * time.Minute
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	gen := loadgen.New(loadgen.Config{Seed: 256_000})
	raw := make([]loadgen.Event, events)
	for i := range raw {
		raw[i] = gen.Event(start.Add(span * time.Duration(i) / events))
	}
	gz := gzipSize(loadgen.EncodeNDJSON(raw))
	normalized := normalizeBurst(b, raw, start.Add(span))
	hRho := minRhoEntropy()
	for _, tc := range []struct {
		name     string
		campaign bool
		cut      time.Duration
	}{
		{"uniques=series/cut=60s", false, time.Minute},
		{"uniques=series/cut=15s", false, 15 * time.Second},
		{"uniques=campaign/cut=60s", true, time.Minute},
		{"uniques=campaign/cut=15s", true, 15 * time.Second},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				frames, contribs, floorBits := burstFrames(b, normalized, start, tc.cut, tc.campaign, hRho)
				b.ReportMetric(float64(frames), "frame-B")
				b.ReportMetric(100*float64(frames)/float64(gz), "%-of-gzip")
				b.ReportMetric(float64(contribs), "contributions")
				if tc.cut == time.Minute {
					b.ReportMetric(floorBits/8, "register-floor-B")
					b.ReportMetric(100*floorBits/8/float64(gz), "floor-%-of-gzip")
				}
			}
		})
	}
}

// normalizeBurst turns generated events into the agent's events as a
// server sender's beacons would be, normalised with a real visitor hasher
// and bot filter.
func normalizeBurst(b *testing.B, raw []loadgen.Event, now time.Time) []event.Event {
	hasher, err := privacy.NewHasher("burst-bytes-benchmark-secret", privacy.Day)
	if err != nil {
		b.Fatal(err)
	}
	bots, err := botfilter.Open(botfilter.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	ctx := event.Context{Now: now, Region: "far", MaxAge: 24 * time.Hour, MaxSkew: time.Hour,
		Devices: event.NewDeviceCache(0), Hasher: hasher, Bots: bots, TrustBody: true}
	out := make([]event.Event, 0, len(raw))
	for i := range raw {
		r := rawOf(&raw[i])
		var e event.Event
		if err := event.Normalize(&r, &ctx, &e); err != nil {
			b.Fatalf("event %d: %v", i, err)
		}
		out = append(out, e)
	}
	return out
}

// burstFrames rolls the events up, cutting every cut of event time, and
// returns the bytes of the frames of the batches the cuts make, the
// number of contributions, and, for one cut a minute, the register floor
// in bits.
func burstFrames(b *testing.B, evs []event.Event, start time.Time, cut time.Duration, campaignUniques bool, hRho float64) (frames, contribs int, floorBits float64) {
	r := rollup.New(1, rollup.Config{Lateness: 2 * time.Minute, MaxOpen: 1 << 22, ByEventTime: true, CampaignUniques: campaignUniques})
	batcher := ship.NewBatcher(0, 0, nil)
	var frame []byte
	var seq uint64
	flush := func() {
		if err := r.Cut(batcher); err != nil {
			b.Fatal(err)
		}
		batches, n := batcher.Take()
		contribs += n
		for _, bt := range batches {
			seq++
			var err error
			frame, err = wire.AppendFrame(frame[:0], wire.KindBatch, &wire.RawBatch{Version: wire.ProtocolVersion,
				Agent: "agent-far", Region: "far", Seq: seq, Contributions: bt.Payload}, wire.EncodeOptions{Compress: true, Best: true})
			if err != nil {
				b.Fatal(err)
			}
			frames += len(frame)
			if cut != time.Minute {
				continue // the floor is that of one cut a minute
			}
			f, err := wire.ReadFrame(bytes.NewReader(frame), 0)
			if err != nil {
				b.Fatal(err)
			}
			decoded, err := wire.DecodeBatch(f)
			if err != nil {
				b.Fatal(err)
			}
			cs := decoded.Contributions
			for i := range cs {
				if len(cs[i].State.Registers) == 0 {
					continue
				}
				k := 0
				if err := sketch.DecodeRegisters(cs[i].State.Registers, func(uint16, uint8) { k++ }); err != nil {
					b.Fatal(err)
				}
				floorBits += log2Binomial(1<<sketch.HLLPrecision, k) + float64(k)*hRho
			}
		}
	}
	next := start.Add(cut).UnixMilli()
	from := 0
	for i := range evs {
		if evs[i].UnixMillis >= next {
			if err := r.AddUnbounded(evs[from:i], batcher); err != nil {
				b.Fatal(err)
			}
			from = i
			flush()
			next += cut.Milliseconds()
		}
	}
	if err := r.AddUnbounded(evs[from:], batcher); err != nil {
		b.Fatal(err)
	}
	flush()
	return frames, contribs, floorBits
}

// log2Binomial returns log2 of n choose k.
func log2Binomial(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	c, _ := math.Lgamma(float64(k + 1))
	d, _ := math.Lgamma(float64(n - k + 1))
	return (a - c - d) / math.Ln2
}

// minRhoEntropy returns the least entropy, in bits, of a register's rho
// over the number j of visitors that landed on it (1 to 2^20): rho is the
// largest of j draws with P(rho = r) = 2^-r.
func minRhoEntropy() float64 {
	const maxRho = 64 - sketch.HLLPrecision + 1
	least := math.Inf(1)
	for j := 1; j <= 1<<20; j *= 2 {
		for _, jj := range []int{j, j + j/2} {
			h, prev := 0.0, 0.0
			for r := 1; r <= maxRho; r++ {
				cdf := math.Pow(1-math.Exp2(-float64(r)), float64(jj))
				if r == maxRho {
					cdf = 1
				}
				if p := cdf - prev; p > 0 {
					h -= p * math.Log2(p)
				}
				prev = cdf
			}
			least = min(least, h)
		}
	}
	return least
}

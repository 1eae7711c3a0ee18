package kpi

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tally-edge/tally/sketch"
)

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func point(typ string, count uint64, valueMicros, costMicros int64, visitors ...uint64) sketch.Minute {
	st := &sketch.State{Count: count, ValueMicros: valueMicros, CostMicros: costMicros}
	for _, v := range visitors {
		st.AddVisitor(mix(v))
	}
	return sketch.Minute{Series: sketch.Series{Campaign: "c", Type: typ}, State: st}
}

func TestCompute(t *testing.T) {
	bot := point("click", 0, 0, 0)
	bot.State.AddBot("crawler")
	bot.State.AddBot("crawler")
	pts := []sketch.Minute{
		point("impression", 1000, 0, 0, 1, 2, 3),
		point("click", 50, 0, 0, 2, 3, 4),
		point("conversion", 5, 250_500_000, 0, 4),
		point("cost", 3, 0, 100_000_000, 77), // cost visitors never count
		bot,
	}
	k, _, err := Compute(pts)
	if err != nil {
		t.Fatal(err)
	}
	want := KPIs{Impressions: 1000, Clicks: 50, Conversions: 5, Uniques: 4, Revenue: 250.5, Cost: 100,
		CTR: 0.05, CVR: 0.1, CPA: 20, ROAS: 2.505, BotsFiltered: 2}
	if k.Impressions != want.Impressions || k.Clicks != want.Clicks || k.Conversions != want.Conversions ||
		k.Uniques != want.Uniques || k.BotsFiltered != want.BotsFiltered {
		t.Fatalf("got %+v, want %+v", k, want)
	}
	for name, pair := range map[string][2]float64{"revenue": {k.Revenue, want.Revenue}, "cost": {k.Cost, want.Cost},
		"ctr": {k.CTR, want.CTR}, "cvr": {k.CVR, want.CVR}, "cpa": {k.CPA, want.CPA}, "roas": {k.ROAS, want.ROAS}} {
		if math.Abs(pair[0]-pair[1]) > 1e-9 {
			t.Fatalf("%s = %v, want %v", name, pair[0], pair[1])
		}
	}
}

func TestZeroDenominators(t *testing.T) {
	k, _, err := Compute(nil)
	if err != nil {
		t.Fatal(err)
	}
	if k != (KPIs{}) {
		t.Fatalf("empty window gives %+v", k)
	}
}

func TestAccumulatorWithoutUniques(t *testing.T) {
	a := Accumulator{SkipUniques: true}
	for _, p := range []sketch.Minute{point("impression", 10, 0, 0, 1, 2), point("click", 4, 0, 0, 3)} {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	k, tot := a.Result()
	if k.Uniques != 0 || k.Impressions != 10 || k.Clicks != 4 || k.CTR != 0.4 || tot.ByType["click"] != 4 {
		t.Fatalf("got %+v %+v", k, tot)
	}
}

// TestTotalsLeaveOutZeroReasons: a bot reason or poll answer stored at 0
// (an imported row that a later import no longer counts) is not listed.
func TestTotalsLeaveOutZeroReasons(t *testing.T) {
	var a Accumulator
	p := point("email_open", 3, 0, 0)
	p.State.Bots = map[string]uint64{"crawler": 0, "proxy": 2}
	p.State.Votes = map[string]uint64{sketch.VoteKey("p", "yes"): 0, sketch.VoteKey("p", "no"): 3}
	if err := a.Add(p); err != nil {
		t.Fatal(err)
	}
	tot := a.Totals()
	if len(tot.Bots) != 1 || tot.Bots["proxy"] != 2 || len(tot.Votes) != 1 || tot.Votes[sketch.VoteKey("p", "no")] != 3 {
		t.Fatalf("bots %v votes %v", tot.Bots, tot.Votes)
	}
}

// TestAccumulatorStoredUniques: points whose uniques come still stored
// (sketch.State.UniquesStored, as the API asks InfluxDB for them) fold to
// the same KPIs as the same points decoded, and the uniques equal what
// merging the decoded sketches into one State estimates. Cost points'
// visitors stay out either way.
func TestAccumulatorStoredUniques(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	types := []string{"impression", "click", "pageview", "conversion", "cost"}
	for trial := range 40 {
		var stored, decoded Accumulator
		var ref sketch.State
		for range 1 + rng.IntN(12) {
			p := point(types[rng.IntN(len(types))], uint64(rng.IntN(50)), 0, 0)
			for range rng.IntN(3000) {
				p.State.AddVisitor(mix(rng.Uint64N(20_000)))
			}
			if err := decoded.Add(p); err != nil {
				t.Fatal(err)
			}
			if p.Series.Type != "cost" {
				if err := ref.MergeUniques(p.State.Uniques); err != nil {
					t.Fatal(err)
				}
			}
			sp := p
			if p.State.Uniques != nil && rng.IntN(4) > 0 {
				b, err := sketch.AppendStoredHLL(nil, p.State.Uniques)
				if err != nil {
					t.Fatal(err)
				}
				st := *p.State
				st.Uniques, st.UniquesStored = nil, b
				sp.State = &st
			}
			if err := stored.Add(sp); err != nil {
				t.Fatal(err)
			}
		}
		ks, _ := stored.Result()
		kd, _ := decoded.Result()
		if ks != kd || ks.Uniques != ref.UniquesEstimate() {
			t.Fatalf("trial %d: stored %+v\ndecoded %+v\nreference uniques %d", trial, ks, kd, ref.UniquesEstimate())
		}
	}
}

// TestAccumulatorRefusesCorruptStoredUniques: a reader hands stored
// uniques over unchecked, so the fold is where a corrupt one is refused,
// with an error naming the point, and the accumulator keeps what it had.
func TestAccumulatorRefusesCorruptStoredUniques(t *testing.T) {
	good := point("pageview", 3, 0, 0)
	for v := range uint64(50) {
		good.State.AddVisitor(mix(v))
	}
	b, err := sketch.AppendStoredHLL(nil, good.State.Uniques)
	if err != nil {
		t.Fatal(err)
	}
	var a Accumulator
	if err := a.Add(good); err != nil {
		t.Fatal(err)
	}
	before, _ := a.Result()
	bad := point("pageview", 5, 0, 0)
	bad.Minute = 1_700_000_040
	bad.State.UniquesStored = b[:len(b)/2] // cut short
	err = a.Add(bad)
	if !errors.Is(err, sketch.ErrCorrupt) || !strings.Contains(err.Error(), "minute 1700000040") {
		t.Fatalf("corrupt stored uniques: %v, want ErrCorrupt naming minute 1700000040", err)
	}
	if after, _ := a.Result(); after.Uniques != before.Uniques {
		t.Fatalf("uniques %d after a refused point, %d before", after.Uniques, before.Uniques)
	}
}

package merge

import (
	"fmt"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// BenchmarkLiveView compares the two ways of computing the live view of
// the campaign-minutes a write round touched: "full" merges every series'
// visitor sketch of each campaign-minute into one (what the first release
// did every round), "incremental" estimates the union the store keeps as
// contributions arrive and sums the counters. Each round 20 % of the
// series of 50 campaigns (40 series each, a few hundred visitors per
// series) get new visitors; the benchmark reports the view's cost per
// round.
//
//	go test -run='^$' -bench=BenchmarkLiveView -benchtime=50x ./aggregator/merge/
func BenchmarkLiveView(b *testing.B) {
	for _, mode := range []string{"full", "incremental"} {
		b.Run(mode, func(b *testing.B) {
			const campaigns, series = 50, 40
			s := New()
			minute := time.Now().Truncate(time.Minute).Unix()
			var cms []CampaignMinute
			visitor := uint64(1)
			delta := func(c, sr, n int, cid uint64, version uint64) Decoded {
				var regs sketch.Registers
				for range n {
					regs.Add(visitor * 0x9e3779b97f4a7c15)
					visitor++
				}
				st := sketch.State{Count: version * 10}
				enc, _ := st.Encode()
				enc.Registers = regs.AppendUpdates(nil)
				d, err := Decode("edge", &wire.Contribution{Series: sketch.Series{Campaign: fmt.Sprintf("c%02d", c), Source: fmt.Sprintf("s%02d", sr),
					Type: []string{"click", "impression", "pageview", "conversion"}[sr%4], Region: "eu"}, Minute: minute, CID: cid, Version: version, State: enc})
				if err != nil {
					b.Fatal(err)
				}
				return d
			}
			var ds []Decoded
			for c := range campaigns {
				cms = append(cms, CampaignMinute{Campaign: fmt.Sprintf("c%02d", c), Minute: minute})
				for sr := range series {
					ds = append(ds, delta(c, sr, 300, uint64(c*series+sr+1), 1))
				}
			}
			if _, err := s.Apply(ds, 0); err != nil {
				b.Fatal(err)
			}
			rounds := make([][]Decoded, b.N)
			for i := range rounds {
				for c := range campaigns {
					for sr := 0; sr < series; sr += 5 {
						rounds[i] = append(rounds[i], delta(c, sr, 20, uint64(c*series+sr+1), uint64(i+2)))
					}
				}
			}
			var sink uint64
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if _, err := s.Apply(rounds[i], 0); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				err := s.CampaignView(cms, func(_ CampaignMinute, ms []sketch.Minute, uniques uint64) {
					if mode == "full" {
						k, _, err := kpi.Compute(ms)
						if err != nil {
							b.Fatal(err)
						}
						sink += k.Uniques
						return
					}
					acc := kpi.Accumulator{SkipUniques: true}
					for _, m := range ms {
						_ = acc.Add(m)
					}
					k, _ := acc.Result()
					sink += k.Clicks + uniques
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/round")
			_ = sink
		})
	}
}

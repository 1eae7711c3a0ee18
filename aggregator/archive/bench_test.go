package archive

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/sketch"
)

// BenchmarkExport exports one day of 4 campaigns × 20 series × 1,440
// minutes (115,200 series-minutes, 1–30 visitors each, values on
// conversions) from a real InfluxDB to a local directory, and reports
// the export rate, the archive's bytes per campaign-day and per row, and
// the ratio of the export's time to a plain read of the same day with
// sketches through the same reader (the baseline, run in the same
// process).
//
//	go test -run '^$' -bench BenchmarkExport -benchtime 1x ./aggregator/archive/
func BenchmarkExport(b *testing.B) {
	const campaigns, perCampaign = 4, 20
	src := startInfluxTB(b, influx.QueryAuto)
	r := rand.New(rand.NewPCG(3, 4))
	var pts []sketch.Minute
	flush := func() {
		if err := src.w.Write(ctx, pts, nil); err != nil {
			b.Fatal(err)
		}
		pts = pts[:0]
	}
	for c := range campaigns {
		for s := range perCampaign {
			series := sketch.Series{Campaign: []string{"spring_sale", "black_friday", "newsletter", "retarget"}[c],
				Source: []string{"google", "meta", "email", "direct"}[s%4], Medium: "cpc",
				Type:    []string{"impression", "click", "pageview", "conversion", "cost"}[s%5],
				Country: []string{"DE", "FR", "US", "GB"}[s/5], Device: "mobile", Region: "eu-west"}
			for m := range 1440 {
				st := &sketch.State{}
				for range 1 + r.IntN(30) {
					st.Count++
					st.AddVisitor(r.Uint64() | 1)
				}
				if series.Type == "conversion" {
					st.AddValue(int64(r.IntN(200_000_000)))
				}
				pts = append(pts, sketch.Minute{Series: series, Minute: day1.Add(time.Duration(m) * time.Minute).Unix(), State: st})
				if len(pts) == 5000 {
					flush()
				}
			}
		}
	}
	flush()
	store, err := OpenDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	a, err := New(Options{Store: store, Source: InfluxSource{Reader: src.r}, TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var readTime, exportTime time.Duration
	var res ExportResult
	for range b.N {
		start := time.Now()
		n := 0
		if err := (InfluxSource{Reader: src.r}).EachMinute(ctx, Query{All: true, From: day1, To: day1.Add(24 * time.Hour)},
			func(Minute) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		readTime += time.Since(start)
		start = time.Now()
		if res, err = a.Export(ctx, day1, true); err != nil {
			b.Fatal(err)
		}
		exportTime += time.Since(start)
		if n != int(res.Rows) || res.Rows != campaigns*perCampaign*1440 {
			b.Fatalf("read %d, exported %d rows", n, res.Rows)
		}
	}
	b.ReportMetric(float64(res.Rows)*float64(b.N)/exportTime.Seconds(), "rows/s")
	b.ReportMetric(float64(res.Bytes)/campaigns, "B/campaign-day")
	b.ReportMetric(float64(res.Bytes)/float64(res.Rows), "B/row")
	b.ReportMetric(exportTime.Seconds()/readTime.Seconds(), "export/read")
}

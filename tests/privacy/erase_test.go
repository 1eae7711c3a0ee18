package privacy_test

import (
	"context"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
)

// eraseStatement is the statement docs/privacy.md gives an operator to
// erase a campaign's week from InfluxDB, with the campaign and range of
// the test.
const eraseStatement = `DELETE FROM "tally" WHERE "campaign" = 'spring_sale' AND time >= '2026-11-01T00:00:00Z' AND time < '2026-11-08T00:00:00Z'`

// TestEraseStatementReachesEveryResolution: the statement docs/privacy.md
// quotes, run against the database of influx.bucket of a real InfluxDB
// 1.8, removes the campaign's minutes, hourly and daily rollups in that
// range (three retention policies) and nothing else: another campaign and
// the same campaign outside the range keep their points.
func TestEraseStatementReachesEveryResolution(t *testing.T) {
	srv := influxtest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const db = "privacy"
	if err := srv.CreateDatabase(ctx, db, "rp"); err != nil {
		t.Fatal(err)
	}
	cfg := influx.DefaultConfig()
	cfg.URL, cfg.Token, cfg.Org, cfg.Bucket = srv.URL(), srv.Token(), srv.Org(), db+"/rp"
	w, err := influx.NewWriter(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := influx.NewReader(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	inside := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	outside := time.Date(2026, 11, 9, 10, 0, 0, 0, time.UTC)
	var points []sketch.Minute
	for _, c := range []string{"spring_sale", "autumn_sale"} {
		for i, at := range []time.Time{inside, outside} {
			st := &sketch.State{Count: uint64(10 + i)}
			st.AddVisitor(0x9e3779b97f4a7c15 + uint64(i))
			points = append(points, sketch.Minute{Series: sketch.Series{Campaign: c, Source: "google", Medium: "cpc", Type: "click",
				Country: "DE", Device: "desktop", Region: "eu"}, Minute: at.Unix(), State: st})
		}
	}
	if err := w.Write(ctx, points, nil); err != nil {
		t.Fatal(err)
	}
	for _, res := range []influx.Resolution{influx.Hours, influx.Days} {
		rolled := make([]sketch.Minute, len(points))
		for i, p := range points {
			p.Minute -= p.Minute % res.Seconds()
			rolled[i] = p
		}
		if refused, err := w.WriteRollups(ctx, res, rolled); err != nil || len(refused) > 0 {
			t.Fatalf("write %s rollups: %v (refused %v)", res, err, refused)
		}
	}
	count := func(campaign string, res influx.Resolution, at time.Time) uint64 {
		t.Helper()
		ms, err := r.QueryMinutes(ctx, influx.MinuteQuery{Campaign: campaign, Resolution: res, CountersOnly: true,
			From: at.Add(-24 * time.Hour), To: at.Add(24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, m := range ms {
			n += m.State.Count
		}
		return n
	}
	ress := []influx.Resolution{influx.Minutes, influx.Hours, influx.Days}
	for _, res := range ress {
		if count("spring_sale", res, inside) != 10 || count("autumn_sale", res, inside) != 10 {
			t.Fatalf("%s: points missing before the erase: the test would prove nothing", res)
		}
	}

	if _, err := srv.Query(ctx, db, eraseStatement); err != nil {
		t.Fatalf("%s: %v", eraseStatement, err)
	}
	for _, res := range ress {
		if n := count("spring_sale", res, inside); n != 0 {
			t.Errorf("%s: %d events of the erased campaign and range remain", res, n)
		}
		if n := count("spring_sale", res, outside); n != 11 {
			t.Errorf("%s: the erased campaign outside the range has %d events, want 11", res, n)
		}
		if n := count("autumn_sale", res, inside); n != 10 {
			t.Errorf("%s: another campaign has %d events after the erase, want 10", res, n)
		}
	}
}

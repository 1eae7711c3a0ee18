package archive

import (
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
)

// influxPair is a real InfluxDB with the aggregator's reader and writer.
type influxPair struct {
	r *influx.Reader
	w *influx.Writer
}

// startInflux starts InfluxDB 1.8 as it ships (Flux off) and reads it
// as the aggregator does by default (query_language auto: InfluxQL).
func startInflux(t *testing.T) influxPair { return startInfluxTB(t, influx.QueryAuto) }

// startInfluxTB starts a real InfluxDB read with lang: with Flux on when
// lang is influx.QueryFlux, else as it ships, with Flux off.
func startInfluxTB(t testing.TB, lang string) influxPair {
	t.Helper()
	s := influxtest.StartWith(t, influxtest.Options{DisableFlux: lang != influx.QueryFlux})
	cfg := influx.Config{URL: s.URL(), Token: s.Token(), Org: s.Org(), Bucket: s.Bucket(), QueryLanguage: lang}
	w, err := influx.NewWriter(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := influx.NewReader(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); r.Close() })
	return influxPair{r: r, w: w}
}

// load copies every merged minute of [from, to) out of InfluxDB.
func (p influxPair) load(t *testing.T, from, to time.Time) *memSource {
	t.Helper()
	m := newMem()
	err := InfluxSource{Reader: p.r}.EachMinute(ctx, Query{All: true, From: from, To: to}, func(mi Minute) error {
		m.set(sketch.Key{Series: mi.Series, Minute: mi.Minute}, mi.State)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestArchiveWithRealParts runs the archive between real processes:
// minutes written to InfluxDB by the aggregator's writer are exported
// to SeaweedFS over its S3 API, verified, restored into a second, empty
// InfluxDB and read back there with the same counters and the same
// sketch registers; a late event for the settled day is then exported
// again and found in the archive. The first InfluxDB is 1.8 as it ships
// (Flux off, read with InfluxQL), the second has Flux on and is read
// with Flux: the archive reads and verifies through either language.
func TestArchiveWithRealParts(t *testing.T) {
	if testing.Short() {
		t.Skip("needs InfluxDB and SeaweedFS")
	}
	src, dst := startInflux(t), startInfluxTB(t, influx.QueryFlux)
	store, _ := openSeaweed(t, "archive/v1")

	gen := newMem()
	fill(gen, 11, day1.Add(-2*time.Hour), 28*time.Hour, "spring_sale", "", "black friday, \"EU\"")
	var pts []sketch.Minute
	for k, st := range gen.minutes {
		pts = append(pts, sketch.Minute{Series: k.Series, Minute: k.Minute, State: st})
	}
	if err := src.w.Write(ctx, pts, nil); err != nil {
		t.Fatal(err)
	}

	a := newTestArchiver(t, InfluxSource{Reader: src.r}, nil, store)
	res, err := a.Export(ctx, day1, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Exported || res.Campaigns != 3 {
		t.Fatalf("export %+v", res)
	}
	t.Logf("exported %d rows, %d bytes (%.0f B/row) in %s", res.Rows, res.Bytes, float64(res.Bytes)/float64(res.Rows), res.Duration)
	if v, err := a.Verify(ctx, day1); err != nil || !v.OK() {
		t.Fatalf("verify: %v %v", v.Problems, err)
	}
	if res, err := a.Export(ctx, day1, false); err != nil || res.Outcome != Unchanged {
		t.Fatalf("second export %+v %v", res, err)
	}

	// Restore into an empty InfluxDB: the same minutes, the same registers.
	r := newTestArchiver(t, InfluxSource{Reader: dst.r}, InfluxSink{Writer: dst.w}, store)
	rr, err := r.Restore(ctx, day1, false)
	if err != nil || rr.Rows != res.Rows {
		t.Fatalf("restore %+v %v (exported %d rows)", rr, err, res.Rows)
	}
	before := src.load(t, day1, day1.Add(24*time.Hour))
	if n := sameMinutes(t, before, dst.load(t, day1, day1.Add(24*time.Hour)), day1, day1.Add(24*time.Hour)); int64(n) != res.Rows {
		t.Fatalf("compared %d minutes, archived %d", n, res.Rows)
	}
	// The other InfluxDB now verifies against the same archive.
	if v, err := r.Verify(ctx, day1); err != nil || !v.OK() {
		t.Fatalf("verify the restored InfluxDB: %v %v", v.Problems, err)
	}
	if sl, dl := src.r.QueryLanguage(), dst.r.QueryLanguage(); sl != influx.QueryInfluxQL || dl != influx.QueryFlux {
		t.Fatalf("read the source with %q, the restored InfluxDB with %q", sl, dl)
	}

	// A late event for the settled day: the merged minute grows; the next
	// export notices and rewrites the day.
	k := keyOf("spring_sale", "conversion", day1.Add(22*time.Hour+41*time.Minute))
	late := &sketch.State{}
	if old := before.get(k); old != nil {
		late = old.Clone()
	}
	late.Count++
	late.AddValue(12_340_000)
	late.AddVisitor(0xfeedface)
	if err := src.w.Write(ctx, []sketch.Minute{{Series: k.Series, Minute: k.Minute, State: late}}, nil); err != nil {
		t.Fatal(err)
	}
	v, err := a.Verify(ctx, day1)
	if err != nil || v.OK() {
		t.Fatalf("verify after a late event: %v %v", v.Problems, err)
	}
	res2, err := a.Export(ctx, day1, false)
	if err != nil || res2.Outcome != Exported || res2.Rows != res.Rows+1 {
		t.Fatalf("re-export %+v %v (first %d rows)", res2, err, res.Rows)
	}
	m, _ := a.Manifest(ctx, "2026-03-01")
	if m.Counters.Events != before.sum(day1)+1 {
		t.Fatalf("archived events %d, want %d", m.Counters.Events, before.sum(day1)+1)
	}
	if v, err := a.Verify(ctx, day1); err != nil || !v.OK() {
		t.Fatalf("verify after re-export: %v %v", v.Problems, err)
	}
}

// sum is the events of the day starting at from.
func (m *memSource) sum(from time.Time) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, st := range m.minutes {
		if k.Minute >= from.Unix() && k.Minute < from.Add(24*time.Hour).Unix() {
			n += int64(st.Count)
		}
	}
	return n
}

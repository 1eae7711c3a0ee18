package rollup

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
)

// TestOnInfluxDB proves the rollups against a real InfluxDB 1.8, read
// with InfluxQL (Flux off, as it ships) and with Flux: the aggregator's
// Setup creates a retention policy per resolution and alters them; 40
// days of generated traffic, the first three written as an older version
// did (no markers), are rolled up; every day's and hour's totals read
// through Source equal the ground truth computed from the generated
// input and the answer from minutes alone, uniques equal the merge of
// the minute sketches and lie within the sketch's error of the true
// count; a late minute for a settled day shows at once and then in the
// rewritten hour and day.
func TestOnInfluxDB(t *testing.T) {
	for _, b := range []struct {
		name string
		flux bool
		lang string
	}{{"influxdb-1.8-default/influxql", false, ""}, {"influxdb-1.8-flux/flux", true, influx.QueryFlux}} {
		t.Run(b.name, func(t *testing.T) { testOnInfluxDB(t, b.flux, b.lang) })
	}
}

// truth is what the generator put in one campaign-day.
type truth struct {
	byType   map[string]uint64
	visitors map[uint64]bool
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// genDays makes minutes of campaigns over days [first, last) from start,
// recording the truth per "campaign/day start".
func genDays(rng *rand.Rand, start time.Time, first, last int, campaigns []string, want map[string]*truth) []sketch.Minute {
	byKey := map[sketch.Key]*sketch.State{}
	var order []sketch.Key
	for d := first; d < last; d++ {
		dayStart := start.Add(time.Duration(d) * 24 * time.Hour)
		for _, c := range campaigns {
			tr := want[fmt.Sprintf("%s/%d", c, dayStart.Unix())]
			if tr == nil {
				tr = &truth{byType: map[string]uint64{}, visitors: map[uint64]bool{}}
				want[fmt.Sprintf("%s/%d", c, dayStart.Unix())] = tr
			}
			for range 4 {
				hour := dayStart.Add(time.Duration(rng.IntN(24)) * time.Hour)
				for range 1 + rng.IntN(3) {
					typ := []string{"pageview", "click", "conversion"}[rng.IntN(3)]
					s := sketch.Series{Campaign: c, Source: []string{"google", "mail"}[rng.IntN(2)], Type: typ}
					k := sketch.Key{Series: s, Minute: hour.Add(time.Duration(rng.IntN(60)) * time.Minute).Unix()}
					st := byKey[k]
					if st == nil {
						st = &sketch.State{}
						byKey[k] = st
						order = append(order, k)
					}
					n := 1 + rng.IntN(30)
					for range n {
						v := uint64(rng.IntN(400))
						st.Count++
						st.AddVisitor(splitmix(v + 1000*uint64(len(c))))
						tr.visitors[v] = true
					}
					if typ == "conversion" {
						st.AddValue(int64(1 + rng.IntN(90_000_000)))
					}
					tr.byType[typ] += uint64(n)
				}
			}
		}
	}
	out := make([]sketch.Minute, len(order))
	for i, k := range order {
		out[i] = sketch.Minute{Series: k.Series, Minute: k.Minute, State: byKey[k]}
	}
	return out
}

// resCounter is a Reader that counts the queries per resolution.
type resCounter struct {
	Reader
	mu   sync.Mutex
	byRe map[influx.Resolution]int
}

func (c *resCounter) EachMinute(ctx context.Context, q influx.MinuteQuery, fn func(sketch.Minute) error) error {
	c.mu.Lock()
	res := q.Resolution
	if res == "" {
		res = influx.Minutes
	}
	c.byRe[res]++
	c.mu.Unlock()
	return c.Reader.EachMinute(ctx, q, fn)
}

func (c *resCounter) reset() map[influx.Resolution]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.byRe
	c.byRe = map[influx.Resolution]int{}
	return out
}

// storagePair is Storage over a real Reader and Writer.
type storagePair struct {
	*influx.Reader
	w *influx.Writer
}

func (s storagePair) WriteRollups(ctx context.Context, res influx.Resolution, points []sketch.Minute) ([]influx.Refusal, error) {
	return s.w.WriteRollups(ctx, res, points)
}

func (s storagePair) WriteMarkers(ctx context.Context, res influx.Resolution, field string, marks []influx.Marker) error {
	return s.w.WriteMarkers(ctx, res, field, marks)
}

func (s storagePair) WriteSince(ctx context.Context, since int64, at time.Time) error {
	return s.w.WriteSince(ctx, since, at)
}

// policiesOf returns the durations of db's retention policies.
func policiesOf(t *testing.T, s *influxtest.Server, db string) map[string]string {
	t.Helper()
	body, err := s.Query(context.Background(), db, "SHOW RETENTION POLICIES ON "+db)
	if err != nil {
		t.Fatal(err)
	}
	// {"results":[{"series":[{"columns":["name","duration",...],"values":[["rp","336h0m0s",...],...]}]}]}
	out := map[string]string{}
	text := string(body)
	i := strings.Index(text, `"values":[`)
	if i < 0 {
		t.Fatalf("SHOW RETENTION POLICIES: %s", text)
	}
	for _, row := range strings.Split(text[i+len(`"values":[`):], "],[") {
		f := strings.Split(strings.Trim(row, "[]}"), ",")
		if len(f) >= 2 {
			out[strings.Trim(f[0], `"`)] = strings.Trim(f[1], `"`)
		}
	}
	return out
}

func testOnInfluxDB(t *testing.T, flux bool, lang string) {
	ctx := context.Background()
	s := influxtest.StartWith(t, influxtest.Options{DisableFlux: !flux, NoDatabase: true})
	cfg := influx.DefaultConfig()
	cfg.URL, cfg.Token, cfg.Bucket, cfg.QueryLanguage = s.URL(), s.Token(), "tally/minutes", lang
	cfg.Retention = influx.Retention{Minutes: 60 * 24 * time.Hour, Contributions: 3 * time.Hour, Hours: 400 * 24 * time.Hour}
	reader, err := influx.NewReader(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	w, err := influx.NewWriter(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Setup creates a policy per resolution, each as long as configured,
	// and alters one an older setup left infinite (its shard groups a
	// week long, longer than the new duration).
	for _, stmt := range []string{"CREATE DATABASE tally", "CREATE RETENTION POLICY contributions ON tally DURATION INF REPLICATION 1"} {
		if err := s.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reader.Setup(ctx, true); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"autogen": "0s", "minutes": "1440h0m0s", "contributions": "3h0m0s", "hours": "9600h0m0s", "days": "0s"}
	if got := policiesOf(t, s, "tally"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("retention policies after Setup: %v, want %v", got, want)
	}

	rng := rand.New(rand.NewPCG(11, 12))
	today := time.Now().UTC().Truncate(24 * time.Hour)
	start := today.Add(-41 * 24 * time.Hour)
	// "(none)": the agents' name for events without a campaign, whose
	// tag reads back as "".
	campaigns := []string{"a", "b", "c", "(none)"}
	truths := map[string]*truth{}

	// Days 0-2 as an older version wrote them: minutes, no markers.
	old := genDays(rng, start, 0, 3, campaigns, truths)
	var minutesWritten, eventsWritten int64
	count := func(ms []sketch.Minute) {
		for _, m := range ms {
			minutesWritten++
			eventsWritten += int64(m.State.Count)
		}
	}
	count(old)
	if err := w.Write(ctx, old, nil); err != nil {
		t.Fatal(err)
	}
	now := today.Add(2 * time.Hour)
	c := &clock{t: now}
	storage := storagePair{reader, w}
	r := New(Config{Now: c.Now}, storage, prometheus.NewRegistry(), nil)
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if since, ok, err := reader.LoadSince(ctx); err != nil || !ok || since != start.Add(3*24*time.Hour).Unix() {
		t.Fatalf("since mark %d, %v, %v: want the day after the older version's last minute", since, ok, err)
	}
	// Days 3-39 as the owner writes them: one write round per day.
	for d := 3; d < 40; d++ {
		ms := genDays(rng, start, d, d+1, campaigns, truths)
		if err := r.Changing(ctx, ms); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(ctx, ms, nil); err != nil {
			t.Fatal(err)
		}
		r.Changed(ms)
		count(ms)
	}
	c.Add(time.Minute)
	passes(t, r)

	counter := &resCounter{Reader: reader, byRe: map[influx.Resolution]int{}}
	src := &Source{Reader: counter, Retention: cfg.Retention, Now: c.Now}
	minutesOnly := minutesReader{reader}
	days := api.Query{AllCampaigns: true, From: start, To: start.Add(40 * 24 * time.Hour), Step: 24 * time.Hour}
	got := fold(t, src, days)
	if n := counter.reset(); n[influx.Days] == 0 || n[influx.Minutes] > 1 {
		t.Fatalf("a daily series read %v: want daily rollups, and minutes only for the days before the since mark", n)
	}
	checkTruth(t, got, truths, days)
	if ref := fold(t, minutesOnly, days); !equalFolds(got, ref) {
		t.Fatalf("daily answer from rollups %v\nfrom minutes %v", got, ref)
	}
	// Asked for stored uniques, the source hands every HLL over still
	// encoded, and the fold of decoded sketches is the same.
	var stored, decoded int
	sq := days
	sq.StoredUniques = true
	if err := src.EachMinute(ctx, sq, func(p sketch.Minute) error {
		if p.State.UniquesStored != nil {
			stored++
		}
		if p.State.Uniques != nil {
			decoded++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if stored == 0 || decoded != 0 {
		t.Fatalf("asked for stored uniques: %d points stored, %d decoded", stored, decoded)
	}
	if dec := foldAs(t, src, days); !equalFolds(got, dec) {
		t.Fatalf("daily answer with stored uniques %v\nwith decoded ones %v", got, dec)
	}
	counter.reset()
	hours := api.Query{Campaigns: []string{"a", "c"}, From: start.Add(2 * 24 * time.Hour), To: start.Add(6*24*time.Hour + 30*time.Minute), Step: time.Hour}
	if got, ref := fold(t, src, hours), fold(t, minutesOnly, hours); !equalFolds(got, ref) {
		t.Fatalf("hourly answer from rollups %v\nfrom minutes %v", got, ref)
	}
	if n := counter.reset(); n[influx.Hours] == 0 {
		t.Fatalf("an hourly series read %v: want hourly rollups", n)
	}
	// Stored day points are the merge of their minutes, sketches too.
	checkDayPoints(t, reader, start.Add(10*24*time.Hour), "b")

	// A late minute for day 10 of "b": answered at once (its marker is
	// dirty), then rewritten into hour and day.
	lateMin := start.Add(10*24*time.Hour + 13*time.Hour + 7*time.Minute)
	late := []sketch.Minute{{Series: sketch.Series{Campaign: "b", Source: "late", Type: "click"}, Minute: lateMin.Unix(), State: &sketch.State{Count: 5}}}
	late[0].State.AddVisitor(splitmix(987654321))
	tr := truths[fmt.Sprintf("b/%d", start.Add(10*24*time.Hour).Unix())]
	tr.byType["click"] += 5
	tr.visitors[987654321] = true
	if err := r.Changing(ctx, late); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, late, nil); err != nil {
		t.Fatal(err)
	}
	r.Changed(late)
	count(late)
	checkTruth(t, fold(t, src, days), truths, days)
	c.Add(time.Hour)
	passes(t, r)
	checkTruth(t, fold(t, src, days), truths, days)
	if n := counter.reset(); n[influx.Days] == 0 {
		t.Fatalf("after the late minute was rolled up the daily series read %v", n)
	}
	checkDayPoints(t, reader, start.Add(10*24*time.Hour), "b")
	dayPts := map[string]uint64{}
	if err := reader.EachMinute(ctx, influx.MinuteQuery{Campaigns: []string{"b"}, Resolution: influx.Days,
		From: start.Add(10 * 24 * time.Hour), To: start.Add(11 * 24 * time.Hour)}, func(p sketch.Minute) error {
		dayPts[p.Series.Source] += p.State.Count
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if dayPts["late"] != 5 {
		t.Fatalf("the day's rollup after the late minute: %v, want 5 under source late", dayPts)
	}

	// A minute restored from the archive, outside any write round: its
	// markers say changed, Source answers its day from minutes at once,
	// and the owner's sweep recomputes the rollups.
	restoredDay := start.Add(35 * 24 * time.Hour)
	restored := []sketch.Minute{{Series: sketch.Series{Campaign: "c", Source: "restored", Type: "pageview"},
		Minute: restoredDay.Add(4*time.Hour + 2*time.Minute).Unix(), State: &sketch.State{Count: 3}}}
	restored[0].State.AddVisitor(splitmix(123456789))
	tr = truths[fmt.Sprintf("c/%d", restoredDay.Unix())]
	tr.byType["pageview"] += 3
	tr.visitors[123456789] = true
	if err := MarkChanged(ctx, w, restored); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, restored, nil); err != nil {
		t.Fatal(err)
	}
	count(restored)
	checkTruth(t, fold(t, src, days), truths, days)
	if n, err := r.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after a restore queued %d hours, %v; want 1", n, err)
	}
	passes(t, r)
	checkDayPoints(t, reader, restoredDay, "c")
	checkTruth(t, fold(t, src, days), truths, days)

	// A minute older than the hours keep: its hour's marker is refused
	// for good and dropped, which must not fail the write round.
	ancient := []sketch.Minute{{Series: sketch.Series{Campaign: "a", Type: "click"}, Minute: today.Add(-500 * 24 * time.Hour).Unix(),
		State: &sketch.State{Count: 1}}}
	if err := r.Changing(ctx, ancient); err != nil {
		t.Fatalf("markers for a period beyond the hours' retention: %v", err)
	}

	// The storage report counts every point and event, and some bytes.
	usage, err := reader.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]influx.BucketUsage{}
	for _, b := range usage.Buckets {
		kinds[b.Kind] = b
	}
	if usage.Events != eventsWritten || kinds["minutes"].Points != minutesWritten || kinds["minutes"].Bytes == 0 ||
		kinds["contributions"].Points != 0 || kinds["hours"].Points == 0 || kinds["days"].Points == 0 ||
		kinds["days"].Points >= kinds["hours"].Points || kinds["hours"].Points >= minutesWritten {
		t.Fatalf("usage %+v: want %d minutes, %d events, no contribution points, fewer days than hours than minutes", usage, minutesWritten, eventsWritten)
	}

	// Altering: longer hours are altered; shorter minutes are not, while
	// minutes older than the new duration exist (the older version's
	// days have no rollups).
	cfg2 := cfg
	cfg2.Retention.Hours = 500 * 24 * time.Hour
	cfg2.Retention.Minutes = 7 * 24 * time.Hour
	r2, err := influx.NewReader(cfg2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if _, err := r2.Setup(ctx, true); err != nil {
		t.Fatal(err)
	}
	want["hours"] = "12000h0m0s"
	if got := policiesOf(t, s, "tally"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("retention policies after a second Setup: %v, want %v", got, want)
	}
}

// passes runs passes until none has work.
func passes(t *testing.T, r *Roller) {
	t.Helper()
	for range 50 {
		n, err := r.Pass(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 && r.Pending() == 0 {
			return
		}
	}
	t.Fatalf("rollup work never ran out (%d hours pending)", r.Pending())
}

// checkTruth compares a daily fold with the generated ground truth:
// counts exact, uniques within 2 % (p=14 HyperLogLog, small sets: far
// better in fact).
func checkTruth(t *testing.T, got map[string]kpi.KPIs, truths map[string]*truth, q api.Query) {
	t.Helper()
	n := 0
	for key, tr := range truths {
		c, dayText, _ := strings.Cut(key, "/")
		day, err := strconv.ParseInt(dayText, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		k, ok := got[fmt.Sprintf("%d//%s", day, c)]
		if !ok {
			t.Fatalf("no answer for %s", key)
		}
		if k.Pageviews != tr.byType["pageview"] || k.Clicks != tr.byType["click"] || k.Conversions != tr.byType["conversion"] {
			t.Fatalf("%s: pageviews %d clicks %d conversions %d, want %v", key, k.Pageviews, k.Clicks, k.Conversions, tr.byType)
		}
		if d := math.Abs(float64(k.Uniques) - float64(len(tr.visitors))); d > 0.02*float64(len(tr.visitors))+1 {
			t.Fatalf("%s: uniques %d, true %d", key, k.Uniques, len(tr.visitors))
		}
		n++
	}
	if n != len(got) {
		t.Fatalf("answers for %d campaign-days, %d generated", len(got), n)
	}
}

// checkDayPoints compares one campaign-day's stored daily points with the
// merge of its minutes, per series: counters and sketches alike.
func checkDayPoints(t *testing.T, reader *influx.Reader, day time.Time, campaign string) {
	t.Helper()
	merged := map[sketch.Series]*sketch.State{}
	if err := reader.EachMinute(context.Background(), influx.MinuteQuery{Campaigns: []string{campaign}, From: day, To: day.Add(24 * time.Hour)},
		func(p sketch.Minute) error {
			if merged[p.Series] == nil {
				merged[p.Series] = &sketch.State{}
			}
			return merged[p.Series].Merge(p.State)
		}); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := reader.EachMinute(context.Background(), influx.MinuteQuery{Campaigns: []string{campaign}, From: day, To: day.Add(24 * time.Hour),
		Resolution: influx.Days}, func(p sketch.Minute) error {
		n++
		if p.Minute != day.Unix() || !sameState(p.State, merged[p.Series]) {
			t.Fatalf("day point %+v at %d differs from its minutes' merge", p.Series, p.Minute)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != len(merged) || n == 0 {
		t.Fatalf("%d day points for %d series", n, len(merged))
	}
}

// minutesReader answers from InfluxDB's minutes alone: the reference.
type minutesReader struct{ r *influx.Reader }

func (m minutesReader) EachMinute(ctx context.Context, q api.Query, fn func(sketch.Minute) error) error {
	return m.r.EachMinute(ctx, influx.MinuteQuery{Campaigns: q.Campaigns, AllCampaigns: q.AllCampaigns, From: q.From, To: q.To}, fn)
}

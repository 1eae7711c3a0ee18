package influx

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/axiomhq/hyperloglog"

	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/points_v3.lp and minute_v3.lp from the current encoders")

// backend is one kind of InfluxDB, with the query language the Reader
// uses on it, that the contract suite runs against. Today those are the
// real InfluxDB 1.8.10 of the tests and the demo, as it ships (Flux off:
// InfluxQL reads) and with Flux on (Flux reads); an InfluxDB 2.x or 3.x
// backend is one more value of this type.
type backend struct {
	name string
	// flux says whether the server answers Flux.
	flux bool
	// lang is the Config.QueryLanguage the suite's Readers use.
	lang string
	// bucket returns a Config for a fresh, empty bucket.
	bucket func(t *testing.T) Config
	// server starts a server of the test's own (for outages) and returns a
	// Config for it with functions to take it down and bring it back.
	server func(t *testing.T) (Config, func() error, func(context.Context) error)
	// missingBucket returns a Config whose bucket does not exist.
	missingBucket func(t *testing.T) Config
}

// influxDB18 is InfluxDB 1.8 with Flux on or off; lang is the language the
// Readers are told to use ("" is auto).
func influxDB18(name string, flux bool, lang string) backend {
	withLang := func(c Config) Config { c.QueryLanguage = lang; return c }
	return backend{
		name: name,
		flux: flux,
		lang: lang,
		bucket: func(t *testing.T) Config {
			return withLang(freshBucketOn(t, sharedServerFlux(t, flux)))
		},
		server: func(t *testing.T) (Config, func() error, func(context.Context) error) {
			s := influxtest.StartWith(t, influxtest.Options{DisableFlux: !flux})
			return withLang(Config{URL: s.URL(), Token: s.Token(), Org: s.Org(), Bucket: s.Bucket()}), s.Stop, s.Restart
		},
		missingBucket: func(t *testing.T) Config {
			c := withLang(freshBucketOn(t, sharedServerFlux(t, flux)))
			c.Bucket = "nosuchdb/rp"
			return c
		},
	}
}

// backends are every backend of the contract suite: InfluxDB 1.8 as it
// ships, read with InfluxQL (chosen automatically: Flux is off), and
// InfluxDB 1.8 with Flux on, read with Flux.
var backends = []backend{
	influxDB18("influxdb-1.8-default/influxql", false, ""),
	influxDB18("influxdb-1.8-flux/flux", true, QueryFlux),
}

// TestContract runs the storage contract against every backend.
func TestContract(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { runContract(t, b) })
	}
}

func runContract(t *testing.T, b backend) {
	tests := []struct {
		name string
		fn   func(*testing.T, backend)
	}{
		{"Ping", testPing},
		{"MinutesRoundTrip", testMinutesRoundTrip},
		{"IdempotentOverwrite", testIdempotentOverwrite},
		{"SparseFieldsNeverStale", testSparseFieldsNeverStale},
		{"ContributionsRoundTrip", testContributionsRoundTrip},
		{"ContributionsPerNode", testContributionsPerNode},
		{"Filters", testFilters},
		{"AwkwardTagValues", testAwkwardTagValues},
		{"QueryInjection", testQueryInjection},
		{"ReadsInTheBackendsLanguage", testLanguage},
		{"Setup", testSetup},
		{"SplitRequests", testSplitRequests},
		{"MissingBucketIsPermanent", testMissingBucket},
		{"PointTooLarge", testPointTooLarge},
		{"ContributionsSplitIntoParts", testContributionsSplitIntoParts},
		{"IsolatesRefusedPoints", testIsolatesRefusedPoints},
		{"ReadsEarlierFormats", testReadsEarlierFormats},
		{"InvalidPoints", testInvalidPoints},
		{"WriteThroughOutage", testWriteThroughOutage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, b) })
	}
}

// ctxT returns a context bounded well inside the test binary's timeout.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newPair(t *testing.T, cfg Config) (*Writer, *Reader) {
	t.Helper()
	w, err := NewWriter(cfg, nil)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	t.Cleanup(w.Close)
	r, err := NewReader(cfg, nil)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	t.Cleanup(r.Close)
	return w, r
}

func testPing(t *testing.T, b backend) {
	w, r := newPair(t, b.bucket(t))
	if err := w.Ping(ctxT(t)); err != nil {
		t.Fatalf("Writer.Ping: %v", err)
	}
	if err := r.Ping(ctxT(t)); err != nil {
		t.Fatalf("Reader.Ping: %v", err)
	}
	if err := r.CheckBucket(ctxT(t)); err != nil {
		t.Fatalf("CheckBucket: %v", err)
	}
	_, missing := newPair(t, b.missingBucket(t))
	if err := missing.CheckBucket(ctxT(t)); !errors.Is(err, ErrBucketNotFound) {
		t.Fatalf("CheckBucket of a missing bucket = %v, want ErrBucketNotFound", err)
	}
}

func series(campaign, source, country, region string) sketch.Series {
	return sketch.Series{Campaign: campaign, Source: source, Medium: "cpc", Type: "click", Country: country, Device: "mobile", Region: region}
}

// sortMinutes orders points by series then minute, for comparisons.
func sortMinutes(ps []sketch.Minute) {
	sort.Slice(ps, func(i, j int) bool {
		if a, b := ps[i].Series.String(), ps[j].Series.String(); a != b {
			return a < b
		}
		return ps[i].Minute < ps[j].Minute
	})
}

// checkState compares a state read back with the one written: counters
// exact, HLL estimate and quantiles identical (the encodings survive).
func checkState(t *testing.T, what string, got, want *sketch.State) {
	t.Helper()
	if got.Count != want.Count || got.ValueMicros != want.ValueMicros || got.CostMicros != want.CostMicros {
		t.Fatalf("%s: counters = (%d, %d, %d), want (%d, %d, %d)", what,
			got.Count, got.ValueMicros, got.CostMicros, want.Count, want.ValueMicros, want.CostMicros)
	}
	if len(got.Bots)+len(want.Bots) > 0 && !reflect.DeepEqual(got.Bots, want.Bots) {
		t.Fatalf("%s: bots = %v, want %v", what, got.Bots, want.Bots)
	}
	if len(got.Votes)+len(want.Votes) > 0 && !reflect.DeepEqual(got.Votes, want.Votes) {
		t.Fatalf("%s: votes = %v, want %v", what, got.Votes, want.Votes)
	}
	if g, w := got.UniquesEstimate(), want.UniquesEstimate(); g != w {
		t.Fatalf("%s: uniques estimate = %d, want %d", what, g, w)
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		if g, w := got.Quantile(q), want.Quantile(q); g != w {
			t.Fatalf("%s: p%v = %v, want %v", what, q*100, g, w)
		}
	}
}

func testMinutesRoundTrip(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	var pts []sketch.Minute
	for i, s := range []sketch.Series{
		series("spring", "google", "DE", "eu-1"),
		series("spring", "google", "FR", "eu-1"),
		series("spring", "", "", ""), // empty dimensions
		series("autumn", "google", "DE", "eu-1"),
	} {
		for m := 0; m < 3; m++ {
			visitors := 50 + 400*i // includes a large HLL
			pts = append(pts, sketch.Minute{Series: s, Minute: baseMinute + int64(60*m),
				State: newState(uint64(10*i+m), 100+i*7+m, visitors, 20*m)})
		}
	}
	pts = append(pts, sketch.Minute{Series: series("spring", "mail", "US", "us-1"), Minute: baseMinute, State: &sketch.State{Count: 3}})
	if err := w.Write(ctx, pts, nil); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if st := w.Stats(); st.PointsWritten != uint64(len(pts)) || st.Requests != 1 || st.Retries != 0 {
		t.Fatalf("Stats = %+v, want %d points in 1 request", st, len(pts))
	}

	got, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "spring",
		From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+180, 0)})
	if err != nil {
		t.Fatalf("QueryMinutes: %v", err)
	}
	var want []sketch.Minute
	for _, p := range pts {
		if p.Series.Campaign == "spring" {
			want = append(want, p)
		}
	}
	sortMinutes(got)
	sortMinutes(want)
	if len(got) != len(want) {
		t.Fatalf("QueryMinutes returned %d points, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Series != want[i].Series || got[i].Minute != want[i].Minute {
			t.Fatalf("point %d is %s@%d, want %s@%d", i, got[i].Series, got[i].Minute, want[i].Series, want[i].Minute)
		}
		checkState(t, fmt.Sprintf("%s@%d", want[i].Series, want[i].Minute), got[i].State, want[i].State)
	}

	// The derived fields are there for dashboards that read InfluxDB.
	var p sketch.Minute
	for _, c := range want {
		if c.State.Values != nil && c.Series.Source == "" {
			p = c
		}
	}
	rows := rawInfluxQL(t, ctx, r, fmt.Sprintf(`SELECT * FROM "tally" WHERE "campaign" = 'spring' AND "country" = %s AND "source" = %s AND time = %s`,
		influxQLString(TagValue(p.Series.Country)), influxQLString(TagValue(p.Series.Source)), influxQLTime(time.Unix(p.Minute, 0))))
	if len(rows) != 1 {
		t.Fatalf("raw query returned %d rows, want 1", len(rows))
	}
	row := rows[0]
	for k, want := range map[string]float64{
		"uniques":   float64(p.State.UniquesEstimate()),
		"revenue":   sketch.FromMicros(p.State.ValueMicros),
		"cost":      sketch.FromMicros(p.State.CostMicros),
		"bots":      float64(p.State.BotTotal()),
		"value_p50": p.State.Quantile(0.5),
		"value_p99": p.State.Quantile(0.99),
		"count":     float64(p.State.Count),
	} {
		if got, ok := asFloat(row[k]); !ok || got != want {
			t.Fatalf("field %s = %v (%T), want %v", k, row[k], row[k], want)
		}
	}
}

// asFloat returns a number decoded from an InfluxQL answer as a float64
// (InfluxQL prints a float with an integral value without a point).
func asFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

func testIdempotentOverwrite(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	s := series("over", "google", "DE", "eu-1")
	small := newState(1, 10, 30, 5)
	big := small.Clone()
	big.Count = 25
	big.AddValue(sketch.ToMicros(99.5))
	big.AddVisitor(12345)
	for _, st := range []*sketch.State{small, big, big} { // the repeat must change nothing
		if err := w.Write(ctx, []sketch.Minute{{Series: s, Minute: baseMinute, State: st}}, nil); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	got, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "over", From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)})
	if err != nil {
		t.Fatalf("QueryMinutes: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("QueryMinutes returned %d points after 3 writes of one minute, want 1", len(got))
	}
	checkState(t, "overwritten minute", got[0].State, big)
	if n := countPoints(t, ctx, r, MeasurementMinute, "over"); n != 1 {
		t.Fatalf("InfluxDB holds %d tally points, want 1", n)
	}
}

// testSparseFieldsNeverStale: a merged point leaves out the money, bots
// and uniques fields its series never had (InfluxDB keeps a field a
// rewrite leaves out, which is why that may only happen to fields that
// were never written), and a rewrite that brings one back to zero
// stores the zero: refunds cancelling revenue, a credit cancelling spend.
func testSparseFieldsNeverStale(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	click := series("sparse", "google", "DE", "eu-1")
	conversion, spend := click, click
	conversion.Type, spend.Type = "conversion", costType
	write := func(ms ...sketch.Minute) {
		t.Helper()
		if err := w.Write(ctx, ms, nil); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	fields := func(s sketch.Series) []string {
		t.Helper()
		rows := rawInfluxQL(t, ctx, r, fmt.Sprintf(`SELECT * FROM %s WHERE "campaign" = 'sparse' AND "type" = %s`,
			influxQLIdent(MeasurementMinute), influxQLString(s.Type)))
		if len(rows) != 1 {
			t.Fatalf("%s: %d rows", s.Type, len(rows))
		}
		var got []string
		for _, k := range []string{FieldValueMicros, FieldRevenue, FieldCostMicros, FieldCost, FieldBots, FieldUniques} {
			if rows[0][k] != nil {
				got = append(got, k)
			}
		}
		return got
	}
	read := func(s sketch.Series) *sketch.State {
		t.Helper()
		got, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "sparse", Type: s.Type, From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)})
		if err != nil || len(got) != 1 {
			t.Fatalf("QueryMinutes %s: %d points, %v", s.Type, len(got), err)
		}
		return got[0].State
	}

	// First writes: a click seen by visitors, a conversion with revenue, a
	// cost series with spend and nobody.
	clickSt := &sketch.State{Count: 4}
	clickSt.AddVisitor(0x9E3779B97F4A7C15)
	convSt := &sketch.State{Count: 1}
	convSt.AddValue(10_000_000)
	spendSt := &sketch.State{Count: 1, CostMicros: 3_000_000}
	write(sketch.Minute{Series: click, Minute: baseMinute, State: clickSt}, sketch.Minute{Series: conversion, Minute: baseMinute, State: convSt},
		sketch.Minute{Series: spend, Minute: baseMinute, State: spendSt})
	for _, c := range []struct {
		s    sketch.Series
		want []string
	}{
		{click, []string{FieldUniques}},
		{conversion, []string{FieldValueMicros, FieldRevenue}},
		{spend, []string{FieldCostMicros, FieldCost}},
	} {
		if got := fields(c.s); !slices.Equal(got, c.want) {
			t.Errorf("%s point has optional fields %v, want %v", c.s.Type, got, c.want)
		}
	}

	// Rewrites: a refund brings the revenue back to zero, a credit the
	// spend, and a bot shows up on the click.
	convSt.Count++
	convSt.AddValue(-10_000_000)
	spendSt.Count++
	spendSt.CostMicros = 0
	clickSt.AddBot("crawler")
	write(sketch.Minute{Series: click, Minute: baseMinute, State: clickSt}, sketch.Minute{Series: conversion, Minute: baseMinute, State: convSt},
		sketch.Minute{Series: spend, Minute: baseMinute, State: spendSt})
	checkState(t, "refunded conversion", read(conversion), convSt)
	checkState(t, "credited spend", read(spend), spendSt)
	checkState(t, "click with a bot", read(click), clickSt)
	if got := fields(click); !slices.Equal(got, []string{FieldBots, FieldUniques}) {
		t.Errorf("click point has optional fields %v after a bot", got)
	}

	// An imported row no longer a bot: the merge keeps its reason at 0,
	// which is written and read back as 0 (a rollup of this minute then
	// writes it as 0 too).
	clickSt.Bots["crawler"] = 0
	write(sketch.Minute{Series: click, Minute: baseMinute, State: clickSt})
	if got := read(click); got.BotTotal() != 0 || len(got.Bots) != 1 {
		t.Errorf("click with its bot reason at 0 reads bots %v", got.Bots)
	}
}

func testContributionsRoundTrip(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	var pts []ContribPoint
	for ai, agent := range []string{"edge-eu-1", "edge-us-1"} {
		for ci, campaign := range []string{"alpha", "beta", "gamma"} {
			s := series(campaign, "google", "DE", "r"+fmt.Sprint(ai))
			for m := int64(0); m < 3; m++ {
				minute := baseMinute + 60*m
				p := ContribPoint{Series: s, Minute: minute, Agent: agent}
				// Two CIDs: an agent restart inside the minute.
				for k := uint64(0); k < 2; k++ {
					st := newState(uint64(ai*100+ci*10)+k+uint64(m), 10+int(k), 20, 3)
					p.Contribs = append(p.Contribs, newContribution(s, minute, (k+1)<<32|uint64(ci), 3+k, st))
				}
				pts = append(pts, p)
			}
		}
	}
	if err := w.Write(ctx, nil, pts); err != nil {
		t.Fatalf("Write: %v", err)
	}

	key := func(p ContribPoint) string { return fmt.Sprintf("%s|%s|%d", p.Agent, p.Series, p.Minute) }
	byKey := make(map[string]ContribPoint, len(pts))
	for _, p := range pts {
		byKey[key(p)] = p
	}
	check := func(name string, got []ContribPoint, err error, want func(ContribPoint) bool) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n := 0
		for _, p := range pts {
			if want(p) {
				n++
			}
		}
		if len(got) != n {
			t.Fatalf("%s returned %d points, want %d", name, len(got), n)
		}
		for _, g := range got {
			w, ok := byKey[key(g)]
			if !ok || !want(w) {
				t.Fatalf("%s returned unexpected point %s", name, key(g))
			}
			if !contribsEqual(g.Contribs, w.Contribs) {
				t.Fatalf("%s: point %s: contributions differ:\n got %+v\nwant %+v", name, key(g), g.Contribs, w.Contribs)
			}
		}
	}
	from, to := time.Unix(baseMinute, 0), time.Unix(baseMinute+120, 0) // [m0, m2): m2 excluded
	inRange := func(p ContribPoint) bool { return p.Minute < baseMinute+120 }
	got, err := r.LoadContributions(ctx, from, to)
	check("LoadContributions", got, err, inRange)
	got, err = r.LoadContributionsOf(ctx, from, to, []string{"alpha", "gamma", "absent"})
	check("LoadContributionsOf", got, err, func(p ContribPoint) bool {
		return inRange(p) && (p.Series.Campaign == "alpha" || p.Series.Campaign == "gamma")
	})
	got, err = r.LoadContributionsFunc(ctx, from, to, func(s sketch.Series) bool { return s.Campaign == "beta" })
	check("LoadContributionsFunc", got, err, func(p ContribPoint) bool { return inRange(p) && p.Series.Campaign == "beta" })
	if got, err := r.LoadContributionsOf(ctx, from, to, nil); err != nil || len(got) != 0 {
		t.Fatalf("LoadContributionsOf(no campaigns) = %d points, %v; want none", len(got), err)
	}

	// The decoded state rebuilds the merge: counts add across CIDs.
	p := got[0]
	var merged sketch.State
	for _, c := range p.Contribs {
		st, err := c.State.Decode()
		if err != nil {
			t.Fatalf("decode contribution: %v", err)
		}
		if err := merged.Merge(st); err != nil {
			t.Fatalf("merge: %v", err)
		}
	}
	if want := p.Contribs[0].State.Count + p.Contribs[1].State.Count; merged.Count != want {
		t.Fatalf("merged count = %d, want %d", merged.Count, want)
	}
}

// contribsEqual compares contributions by what they hold: identity,
// counters, and the sketches' registers and bins (their encodings are
// not canonical, and a stored round trip changes them).
func contribsEqual(a, b []wire.Contribution) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Series != y.Series || x.Minute != y.Minute || x.CID != y.CID || x.Version != y.Version {
			return false
		}
		sx, errx := x.State.Decode()
		sy, erry := y.State.Decode()
		if errx != nil || erry != nil || !statesEqual(sx, sy) {
			return false
		}
	}
	return true
}

// statesEqual compares states by what they hold.
func statesEqual(x, y *sketch.State) bool {
	if x.Count != y.Count || x.ValueMicros != y.ValueMicros || x.CostMicros != y.CostMicros ||
		len(x.Bots) != len(y.Bots) || len(x.Votes) != len(y.Votes) {
		return false
	}
	for k, v := range x.Bots {
		if y.Bots[k] != v {
			return false
		}
	}
	for k, v := range x.Votes {
		if y.Votes[k] != v {
			return false
		}
	}
	return bytes.Equal(denseRegisters(x.Uniques), denseRegisters(y.Uniques)) && bytes.Equal(quantileBins(x), quantileBins(y))
}

// denseRegisters returns the library's dense encoding of a copy of h
// (nil for none): equal for sketches with equal registers.
func denseRegisters(h *hyperloglog.Sketch) []byte {
	if h == nil {
		return nil
	}
	d := hyperloglog.NewNoSparse()
	if err := d.Merge(h); err != nil {
		return []byte("precision mismatch")
	}
	b, _ := d.MarshalBinary()
	return b
}

// quantileBins returns the encoding of a state's value sketch (nil for
// none), which is canonical for equal bins.
func quantileBins(st *sketch.State) []byte {
	if st.Values == nil || st.Values.IsEmpty() {
		return nil
	}
	return sketch.AppendStoredQuantiles(nil, st.Values)
}

func testFilters(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	all := []sketch.Series{
		{Campaign: "f", Source: "google", Medium: "cpc", Type: "click", Country: "DE", Device: "mobile", Region: "eu"},
		{Campaign: "f", Source: "google", Medium: "cpc", Type: "impression", Country: "DE", Device: "desktop", Region: "eu"},
		{Campaign: "f", Source: "bing", Medium: "cpc", Type: "click", Country: "FR", Device: "mobile", Region: "eu"},
		{Campaign: "f", Source: "", Medium: "", Type: "pageview", Country: "US", Device: "", Region: "us"},
		{Campaign: "other", Source: "google", Medium: "cpc", Type: "click", Country: "DE", Device: "mobile", Region: "eu"},
	}
	var pts []sketch.Minute
	for i, s := range all {
		st := &sketch.State{Count: uint64(i + 1)}
		st.AddVisitor(uint64(i+1) * 0x9e3779b97f4a7c15)
		st.AddValue(1_500_000)
		pts = append(pts, sketch.Minute{Series: s, Minute: baseMinute, State: st})
	}
	if err := w.Write(ctx, pts, nil); err != nil {
		t.Fatalf("Write: %v", err)
	}
	from, to := time.Unix(baseMinute, 0), time.Unix(baseMinute+60, 0)
	for _, tc := range []struct {
		name string
		q    MinuteQuery
		want []int // indexes into all
	}{
		{"campaign", MinuteQuery{Campaign: "f"}, []int{0, 1, 2, 3}},
		{"source", MinuteQuery{Campaign: "f", Source: "google"}, []int{0, 1}},
		{"source+type", MinuteQuery{Campaign: "f", Source: "google", Type: "click"}, []int{0}},
		{"country", MinuteQuery{Campaign: "f", Country: "FR"}, []int{2}},
		{"device", MinuteQuery{Campaign: "f", Device: "mobile"}, []int{0, 2}},
		{"region", MinuteQuery{Campaign: "f", Region: "us"}, []int{3}},
		{"medium", MinuteQuery{Campaign: "f", Medium: "cpc"}, []int{0, 1, 2}},
		{"empty source via NoneTag", MinuteQuery{Campaign: "f", Source: NoneTag}, []int{3}},
		{"no match", MinuteQuery{Campaign: "f", Country: "JP"}, nil},
		{"unknown campaign", MinuteQuery{Campaign: "nope"}, nil},
		{"campaign other", MinuteQuery{Campaign: "other"}, []int{4}},
		{"campaign list", MinuteQuery{Campaigns: []string{"other", "nope"}}, []int{4}},
		{"campaign list of two", MinuteQuery{Campaigns: []string{"other", "f"}, Device: "mobile"}, []int{0, 2, 4}},
		{"all campaigns", MinuteQuery{AllCampaigns: true, Source: "google"}, []int{0, 1, 4}},
	} {
		tc.q.From, tc.q.To = from, to
		got, err := r.QueryMinutes(ctx, tc.q)
		if err != nil {
			t.Fatalf("%s: QueryMinutes: %v", tc.name, err)
		}
		var gotIdx []int
		for _, p := range got {
			gotIdx = append(gotIdx, int(p.State.Count)-1)
			if all[p.State.Count-1] != p.Series {
				t.Fatalf("%s: series %s came back as %s", tc.name, all[p.State.Count-1], p.Series)
			}
		}
		sort.Ints(gotIdx)
		if !reflect.DeepEqual(gotIdx, tc.want) {
			t.Fatalf("%s: got series %v, want %v", tc.name, gotIdx, tc.want)
		}
	}
	if _, err := r.QueryMinutes(ctx, MinuteQuery{From: from, To: to}); err == nil {
		t.Fatalf("QueryMinutes without campaign succeeded, want an error")
	}
	if _, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "f", AllCampaigns: true, From: from, To: to}); err == nil {
		t.Fatalf("QueryMinutes with both a campaign and all campaigns succeeded, want an error")
	}
	// CountersOnly: the same counts, no sketches.
	withSketches, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "f", From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	counters, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "f", From: from, To: to, CountersOnly: true})
	if err != nil || len(counters) != len(withSketches) || withSketches[0].State.Uniques == nil {
		t.Fatalf("CountersOnly: %d points, %v; want %d (with sketches: %+v)", len(counters), err, len(withSketches), withSketches[0].State)
	}
	for _, p := range counters {
		if p.State.Uniques != nil || p.State.Values != nil || p.State.ValueMicros != 1_500_000 || all[p.State.Count-1] != p.Series {
			t.Fatalf("CountersOnly point %+v", p)
		}
	}
	// StoredUniques and NoQuantiles: the same counts, the HLL still
	// encoded (and estimating the same), no value sketch.
	stored, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "f", From: from, To: to, StoredUniques: true, NoQuantiles: true})
	if err != nil || len(stored) != len(withSketches) {
		t.Fatalf("StoredUniques: %d points, %v; want %d", len(stored), err, len(withSketches))
	}
	byKey := map[sketch.Key]sketch.Minute{}
	for _, w := range withSketches {
		byKey[w.Key()] = w
	}
	for _, p := range stored {
		w := byKey[p.Key()]
		if w.State == nil {
			t.Fatalf("StoredUniques point %s at %d not read with sketches", p.Series, p.Minute)
		}
		if p.State.Uniques != nil || p.State.UniquesStored == nil || p.State.Values != nil || w.State.Values == nil ||
			p.Series != w.Series || p.State.Count != w.State.Count || p.State.ValueMicros != w.State.ValueMicros ||
			p.State.UniquesEstimate() != w.State.UniquesEstimate() {
			t.Fatalf("StoredUniques point %+v, want %+v without quantiles", p.State, w.State)
		}
	}
	// EachMinute stops at the first error of fn and returns it as is.
	stop := errors.New("enough")
	calls := 0
	err = r.EachMinute(ctx, MinuteQuery{AllCampaigns: true, From: from, To: to}, func(sketch.Minute) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Fatalf("EachMinute after fn failed: %v with %d calls; want the error of fn after 1 call", err, calls)
	}
}

// testAwkwardTagValues writes dimension values that line protocol and Flux
// both treat specially, and reads them back exactly (or as TagValue says).
func testAwkwardTagValues(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	campaigns := []string{
		`a,b c=d`,                // line-protocol separators
		`back\slash`,             // literal backslash
		`x\,y\ z\=w`,             // backslash before separators
		`quote"and'apostrophe`,   // Flux string delimiter
		`${interp} and $dollar$`, // Flux interpolation
		`trail\`,                 // trailing backslash: stored as U+FFFD
		"new\nline\ttab",         // control characters: stored as U+FFFD
		`ünïcödé 日本語 🎯`,
		`(none)`, // looks like the empty marker
		`=starts-with-equals`,
	}
	var pts []sketch.Minute
	var cps []ContribPoint
	for i, c := range campaigns {
		s := sketch.Series{Campaign: c, Source: c, Type: "click", Region: `r\`}
		pts = append(pts, sketch.Minute{Series: s, Minute: baseMinute, State: &sketch.State{Count: uint64(i + 1)}})
		cps = append(cps, ContribPoint{Series: s, Minute: baseMinute, Agent: "agent " + c,
			Contribs: []wire.Contribution{newContribution(s, baseMinute, 1, 1, &sketch.State{Count: uint64(i + 1)})}})
	}
	if err := w.Write(ctx, pts, cps); err != nil {
		t.Fatalf("Write: %v", err)
	}
	from, to := time.Unix(baseMinute, 0), time.Unix(baseMinute+60, 0)
	for i, c := range campaigns {
		got, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: c, Source: c, From: from, To: to})
		if err != nil {
			t.Fatalf("QueryMinutes(%q): %v", c, err)
		}
		if len(got) != 1 || got[0].State.Count != uint64(i+1) {
			t.Fatalf("QueryMinutes(%q) = %d points, want exactly the one with count %d", c, len(got), i+1)
		}
		if want := storedSeries(pts[i].Series); got[0].Series != want {
			t.Fatalf("QueryMinutes(%q) series = %#v, want %#v", c, got[0].Series, want)
		}
	}
	// Contributions keep the exact series, whatever the tags had to become.
	got, err := r.LoadContributions(ctx, from, to)
	if err != nil {
		t.Fatalf("LoadContributions: %v", err)
	}
	if len(got) != len(campaigns) {
		t.Fatalf("LoadContributions returned %d points, want %d", len(got), len(campaigns))
	}
	for _, p := range got {
		i := int(p.Contribs[0].State.Count) - 1
		if p.Series != pts[i].Series || p.Agent != TagValue(cps[i].Agent) && p.Agent != cps[i].Agent {
			t.Fatalf("contribution %d: series %#v agent %q, want %#v agent %q", i, p.Series, p.Agent, pts[i].Series, cps[i].Agent)
		}
	}
}

// testQueryInjection sends filter values that would change the query if
// they were pasted into it, in Flux or in InfluxQL (where a value that
// escaped its string could even start a second statement): each must
// match nothing and raise no error.
func testQueryInjection(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	pts := []sketch.Minute{
		{Series: series("victim", "google", "DE", "eu"), Minute: baseMinute, State: &sketch.State{Count: 7}},
		{Series: series("secret", "google", "DE", "eu"), Minute: baseMinute, State: &sketch.State{Count: 9}},
	}
	if err := w.Write(ctx, pts, nil); err != nil {
		t.Fatalf("Write: %v", err)
	}
	from, to := time.Unix(baseMinute, 0), time.Unix(baseMinute+60, 0)
	for _, evil := range []string{
		// Flux
		`x" or r.campaign =~ /.*/ or r._measurement == "`,
		`victim" or true or "`,
		`\" or true or \"`,
		`") |> drop(columns: ["campaign"]) |> yield(name: "x`,
		`${r.campaign}`,
		"\" or r.campaign != \"\n",
		`victim\`,
		`\x22 or true or \x22`,
		// InfluxQL
		`x' OR "campaign" =~ /.*/ OR "campaign" = '`,
		`victim' OR 'a' = 'a`,
		`\' OR true OR \'`,
		`'; DROP DATABASE "db"; SELECT * FROM "tally" WHERE 'x' = '`,
		`victim\' OR "campaign" != '`,
		"x'\nOR \"campaign\" != '",
		`" OR "campaign" != "`,
		`/.*/`,
	} {
		for _, q := range []MinuteQuery{
			{Campaign: evil, From: from, To: to},
			{Campaign: "victim", Source: evil, From: from, To: to},
			{Campaigns: []string{evil, "nope"}, From: from, To: to},
		} {
			got, err := r.QueryMinutes(ctx, q)
			if err != nil {
				t.Fatalf("QueryMinutes(%+v): %v (the value broke the query)", q, err)
			}
			if len(got) != 0 {
				t.Fatalf("QueryMinutes(%+v) returned %d points, want none", q, len(got))
			}
		}
		got, err := r.LoadContributionsOf(ctx, from, to, []string{evil})
		if err != nil || len(got) != 0 {
			t.Fatalf("LoadContributionsOf(%q) = %d points, %v; want none, no error", evil, len(got), err)
		}
	}
	// The server still works, the data is still there, and the real value
	// still matches.
	got, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "victim", From: from, To: to})
	if err != nil || len(got) != 1 || got[0].State.Count != 7 {
		t.Fatalf("QueryMinutes(victim) = %d points, %v; want the one point", len(got), err)
	}
	if err := r.CheckBucket(ctx); err != nil {
		t.Fatalf("CheckBucket after the injection attempts: %v", err)
	}
}

// testLanguage checks that the Reader reads with the language the backend
// stands for: InfluxQL chosen by itself where Flux is off, Flux when asked.
func testLanguage(t *testing.T, b backend) {
	_, r := newPair(t, b.bucket(t))
	if _, err := r.QueryMinutes(ctxT(t), MinuteQuery{Campaign: "x", From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)}); err != nil {
		t.Fatalf("QueryMinutes: %v", err)
	}
	want := b.lang
	if want == "" {
		want = QueryInfluxQL
	}
	if got := r.QueryLanguage(); got != want {
		t.Fatalf("QueryLanguage() = %q, want %q", got, want)
	}
}

func testSplitRequests(t *testing.T, b backend) {
	ctx := ctxT(t)
	cfg := b.bucket(t)
	cfg.BatchSize = 40
	w, r := newPair(t, cfg)
	var pts []sketch.Minute
	for i := 0; i < 130; i++ {
		pts = append(pts, sketch.Minute{Series: series("split", fmt.Sprintf("s%03d", i), "DE", "eu"), Minute: baseMinute,
			State: newState(uint64(i), 5, 3, 1)})
	}
	if err := w.Write(ctx, pts, nil); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if st := w.Stats(); st.Requests != 4 || st.PointsWritten != 130 {
		t.Fatalf("Stats = %+v, want 130 points in 4 requests", st)
	}
	got, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "split", From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)})
	if err != nil || len(got) != 130 {
		t.Fatalf("QueryMinutes = %d points, %v; want 130", len(got), err)
	}
}

func testMissingBucket(t *testing.T, b backend) {
	cfg := b.missingBucket(t)
	w, err := NewWriter(cfg, nil)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	defer w.Close()
	start := time.Now()
	err = w.Write(ctxT(t), []sketch.Minute{{Series: series("m", "g", "DE", "eu"), Minute: baseMinute, State: &sketch.State{Count: 1}}}, nil)
	var perr *PermanentError
	if !errors.As(err, &perr) {
		t.Fatalf("Write to a missing bucket = %v, want a *PermanentError", err)
	}
	if perr.StatusCode != http.StatusNotFound {
		t.Fatalf("status = %d, want 404 (%v)", perr.StatusCode, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("permanent failure took %s, want no retries", d)
	}
	if st := w.Stats(); st.Requests != 1 || st.Retries != 0 || st.PermanentFailures != 1 || st.LastError == "" {
		t.Fatalf("Stats = %+v, want 1 request, 0 retries, 1 permanent failure", st)
	}
}

// testPointTooLarge: a single contribution whose encoding cannot fit a
// string field (a poll minute with thousands of long answers) is refused
// before any request; Write fails, WriteIsolating writes the rest.
func testPointTooLarge(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	s := series("huge", "google", "DE", "eu")
	big := &sketch.State{Count: 1}
	for i := range 3000 {
		big.AddVotes(sketch.VoteKey("poll", fmt.Sprintf("answer number %d with a long text", i)), 1)
	}
	p := ContribPoint{Series: s, Minute: baseMinute, Agent: "edge-1", Contribs: []wire.Contribution{newContribution(s, baseMinute, 1, 1, big)}}
	ok := sketch.Minute{Series: s, Minute: baseMinute, State: newState(7, 10, 200, 10)}
	err := w.Write(ctx, []sketch.Minute{ok}, []ContribPoint{p})
	var tooLarge *PointTooLargeError
	var perr *PermanentError
	if !errors.As(err, &tooLarge) || !errors.As(err, &perr) {
		t.Fatalf("Write of an oversized contribution = %v, want *PointTooLargeError inside *PermanentError", err)
	}
	if tooLarge.Field != FieldContribs || tooLarge.Size <= MaxStringField || tooLarge.Contribs != 1 || tooLarge.Agent != "edge-1" {
		t.Fatalf("PointTooLargeError = %+v", tooLarge)
	}
	if st := w.Stats(); st.Requests != 0 {
		t.Fatalf("Stats = %+v, want no request sent", st)
	}
	refused, err := w.WriteIsolating(ctx, []sketch.Minute{ok}, []ContribPoint{p})
	if err != nil || len(refused) != 1 || refused[0].Reason != ReasonTooLarge || refused[0].Agent != "edge-1" || refused[0].Key() != (sketch.Key{Series: s, Minute: baseMinute}) {
		t.Fatalf("WriteIsolating = %+v, %v; want the contribution point refused as too_large", refused, err)
	}
	if n := countPoints(t, ctx, r, MeasurementMinute, "huge"); n != 1 {
		t.Fatalf("%d merged points written, want the 1 that fits", n)
	}
}

// testContributionsSplitIntoParts: however many dense contributions one
// agent has in a series-minute, they are written (as parts) and read
// back whole.
func testContributionsSplitIntoParts(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	s := series("parts", "google", "DE", "eu")
	dense := newState(7, 10, 20000, 10) // dense HLL: 7.3 KB stored, 9.8 KB of base64 each
	p := ContribPoint{Series: s, Minute: baseMinute, Agent: "edge-1", Node: "agg-1"}
	for cid := uint64(1); cid <= 30; cid++ {
		p.Contribs = append(p.Contribs, newContribution(s, baseMinute, cid, cid, dense))
	}
	if err := w.Write(ctx, nil, []ContribPoint{p}); err != nil {
		t.Fatalf("Write of 30 dense contributions: %v", err)
	}
	got, err := r.LoadContributions(ctx, time.Unix(baseMinute, 0), time.Unix(baseMinute+60, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 4 {
		t.Fatalf("%d points read back; 30 dense contributions need at least 4 parts", len(got))
	}
	var all []wire.Contribution
	for _, g := range got {
		if g.Agent != "edge-1" || g.Node != "agg-1" || g.Series != s {
			t.Fatalf("part %+v", g)
		}
		all = append(all, g.Contribs...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].CID < all[j].CID })
	if !contribsEqual(all, p.Contribs) {
		t.Fatalf("parts hold %d contributions, not the 30 written", len(all))
	}
}

// testIsolatesRefusedPoints: points the server refuses for good (older
// than the retention policy keeps, a field of another type) are returned
// as refusals and every other point is written.
func testIsolatesRefusedPoints(t *testing.T, b backend) {
	ctx := ctxT(t)
	cfg := b.bucket(t)
	srv := sharedServerFlux(t, b.flux)
	db := strings.SplitN(cfg.Bucket, "/", 2)[0]
	if err := srv.CreateRetentionPolicy(ctx, db, "hour", time.Hour); err != nil {
		t.Fatal(err)
	}
	cfg.Bucket = db + "/hour"
	w, r := newPair(t, cfg)
	now := time.Now().Truncate(time.Minute).Unix()
	var minutes []sketch.Minute
	for i := range 40 {
		minutes = append(minutes, sketch.Minute{Series: series("iso", fmt.Sprintf("src-%d", i), "DE", "eu"), Minute: now - 120, State: &sketch.State{Count: uint64(i + 1)}})
	}
	old := []int{3, 17, 29}
	for _, i := range old {
		minutes[i].Minute = now - 3*3600 // beyond the hour the policy keeps
	}
	refused, err := w.WriteIsolating(ctx, minutes, nil)
	if err != nil {
		t.Fatalf("WriteIsolating: %v", err)
	}
	reasons := map[string]string{}
	for _, rf := range refused {
		reasons[rf.Series.Source] = rf.Reason
	}
	want := map[string]string{"src-3": ReasonRetention, "src-17": ReasonRetention, "src-29": ReasonRetention}
	if !reflect.DeepEqual(reasons, want) {
		t.Fatalf("refused %v, want %v", reasons, want)
	}
	if n := countPoints(t, ctx, r, MeasurementMinute, "iso"); n != 40-3 {
		t.Fatalf("%d points stored, want the 37 accepted", n)
	}

	// A field of another type: in one shard (a week of the default
	// policy), "count" was first written as a float; a minute of another
	// week is unaffected.
	w2, r2 := newPair(t, b.bucket(t))
	conflict := series("iso2", "conflict", "DE", "eu")
	weekLater := baseMinute + 7*24*3600
	if err := w2.writeAPI(w2.cfg.Bucket).WriteRecord(ctx, fmt.Sprintf("tally,campaign=iso2,country=DE,device=(none),medium=(none),region=eu,source=other,type=(none) count=1.5 %d\n", weekLater)); err != nil {
		t.Fatal(err)
	}
	refused, err = w2.WriteIsolating(ctx, []sketch.Minute{
		{Series: series("iso2", "fine", "DE", "eu"), Minute: baseMinute, State: &sketch.State{Count: 1}},
		{Series: conflict, Minute: weekLater, State: &sketch.State{Count: 2}},
	}, nil)
	if err != nil || len(refused) != 1 || refused[0].Series != conflict || refused[0].Reason != ReasonFieldConflict {
		t.Fatalf("WriteIsolating = %+v, %v; want the conflicting minute refused", refused, err)
	}
	got, err := r2.QueryMinutes(ctx, MinuteQuery{Campaign: "iso2", Source: "fine", From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)})
	if err != nil || len(got) != 1 || got[0].State.Count != 1 {
		t.Fatalf("the fine minute reads back as %+v, %v", got, err)
	}
}

// testReadsEarlierFormats: what earlier releases wrote loads in place,
// and what this one writes is pinned by golden files.
//
//   - tally_contrib of format 1 (testdata/points_v1.lp, the first
//     release: no format tag, no part tag) and format 2
//     (points_v2.lp) in the minutes bucket, where those releases wrote
//     them, load like today's;
//   - merged minutes with the libraries' sketch encodings
//     (minute_v1.lp, written by the release before compact sketches)
//     read back to the states they were made from;
//   - merged minutes with every field (minute_v2.lp, written by the
//     release before sparse fields) load, and so do their rewrites
//     without the fields they never had;
//   - today's format-3 contribution point (points_v3.lp, in the
//     contributions bucket) and merged minute with its ledger
//     (minute_v3.lp) are pinned byte for byte and load;
//   - a contribution point of a format from the future is refused.
func testReadsEarlierFormats(t *testing.T, b backend) {
	ctx := ctxT(t)
	cfg := b.bucket(t)
	w, r := newPair(t, cfg)
	want := goldenContribPoint()
	load := func() []ContribPoint {
		t.Helper()
		got, err := r.LoadContributions(ctx, time.Unix(want.Minute, 0), time.Unix(want.Minute+60, 0))
		if err != nil {
			t.Fatalf("LoadContributions: %v", err)
		}
		return got
	}
	writeFile := func(bucket, name string) {
		t.Helper()
		lp, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.writeAPI(bucket).WriteRecord(ctx, string(lp)); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	writeFile(cfg.Bucket, "points_v1.lp")
	writeFile(cfg.Bucket, "points_v2.lp")
	got := load()
	if len(got) != 2 {
		t.Fatalf("formats 1 and 2 loaded as %+v", got)
	}
	for _, g := range got {
		if g.Series != want.Series || g.Agent != want.Agent || g.Node != want.Node || !contribsEqual(g.Contribs, want.Contribs) {
			t.Fatalf("an earlier format read as %+v, want %+v", g, want)
		}
	}

	// Merged minutes in the first encoding.
	writeFile(cfg.Bucket, "minute_v1.lp")
	for _, m := range goldenMinutes() {
		pts, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: m.Series.Campaign, Type: m.Series.Type, From: time.Unix(m.Minute, 0), To: time.Unix(m.Minute+60, 0)})
		if err != nil || len(pts) != 1 || !statesEqual(pts[0].State, m.State) {
			t.Fatalf("minute_v1.lp %s read as %+v, %v", m.Series.Type, pts, err)
		}
	}

	// Today's encodings, pinned.
	golden := func(name string, line []byte) {
		t.Helper()
		path := filepath.Join("testdata", name)
		if *updateGolden {
			if err := os.WriteFile(path, line, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		pinned, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(line, pinned) {
			t.Fatalf("the encoding differs from %s (%v): a change must bump its format or version byte\n%s", path, err, line)
		}
	}
	line, err := appendContrib(nil, &want)
	if err != nil {
		t.Fatal(err)
	}
	golden("points_v3.lp", line)
	writeFile(w.cfg.ContribBucket, "points_v3.lp")
	got = load()
	if len(got) != 3 || !contribsEqual(got[0].Contribs, want.Contribs) || !contribsEqual(got[1].Contribs, want.Contribs) ||
		!contribsEqual(got[2].Contribs, want.Contribs) {
		t.Fatalf("formats 1 to 3 loaded as %+v", got)
	}
	var minutes []byte
	for _, m := range goldenMinutes() {
		m.Ledger = goldenLedger(t, m)
		if minutes, err = appendMinute(minutes, &m); err != nil {
			t.Fatal(err)
		}
	}
	golden("minute_v3.lp", minutes)
	// minute_v2.lp has every field of every point, as the release before
	// sparse fields wrote them; minute_v3.lp (today's) rewrites its points
	// without the fields they never had, as an upgraded node does. Both
	// read back the same.
	for _, name := range []string{"minute_v2.lp", "minute_v3.lp"} {
		writeFile(cfg.Bucket, name)
		checkGoldenMinutes(t, ctx, r, name)
	}

	// A format from the future is refused, not misread.
	future := bytes.Replace(line, []byte(",format=3,"), []byte(",format=4,"), 1)
	if err := w.writeAPI(w.cfg.ContribBucket).WriteRecord(ctx, string(future)); err != nil {
		t.Fatal(err)
	}
	var corrupt *CorruptPointError
	if _, err := r.LoadContributions(ctx, time.Unix(want.Minute, 0), time.Unix(want.Minute+60, 0)); !errors.As(err, &corrupt) {
		t.Fatalf("a point of format 4 loaded with err %v, want a *CorruptPointError", err)
	}
}

// checkGoldenMinutes checks that the golden minutes and their ledgers read
// back from storage as goldenMinutes made them.
func checkGoldenMinutes(t *testing.T, ctx context.Context, r *Reader, name string) {
	t.Helper()
	for _, m := range goldenMinutes() {
		pts, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: m.Series.Campaign, Type: m.Series.Type, From: time.Unix(m.Minute, 0), To: time.Unix(m.Minute+60, 0)})
		if err != nil || len(pts) != 1 || !statesEqual(pts[0].State, m.State) {
			t.Fatalf("%s: %s read as %+v, %v", name, m.Series.Type, pts, err)
		}
		// The ledger loads as its contributions plus the minute's visitors.
		cps, err := r.LoadContributionsOf(ctx, time.Unix(m.Minute, 0), time.Unix(m.Minute+60, 0), []string{m.Series.Campaign})
		if err != nil {
			t.Fatal(err)
		}
		merged := &sketch.State{}
		ledgerSeen := false
		for _, cp := range cps {
			if cp.Series != m.Series {
				continue
			}
			for _, c := range cp.Contribs {
				st, err := c.State.Decode()
				if err != nil {
					t.Fatal(err)
				}
				if err := merged.Merge(st); err != nil {
					t.Fatal(err)
				}
			}
			ledgerSeen = ledgerSeen || cp.Agent == "edge-9"
		}
		if !ledgerSeen || !statesEqual(merged, m.State) {
			t.Fatalf("%s: %s ledger loads as %+v", name, m.Series.Type, cps)
		}
	}

}

// goldenMinutes are the merged minutes of testdata/minute_v1.lp, which
// the release before stored sketches wrote from exactly these states.
func goldenMinutes() []sketch.Minute {
	s := sketch.Series{Campaign: "spring", Source: "google", Medium: "cpc", Type: "conversion", Country: "DE", Device: "mobile", Region: "eu"}
	a := &sketch.State{Count: 3, CostMicros: 0}
	a.AddBot("crawler")
	for i := range 25 {
		a.AddVisitor(uint64(i+1) * 0x9E3779B97F4A7C15)
	}
	a.AddValue(49_900_000)
	a.AddValue(19_500_000)
	a.AddValue(120_000_000)
	b := &sketch.State{Count: 7, CostMicros: 2_500_000}
	for i := range 3000 {
		b.AddVisitor(uint64(i+1) * 0xBF58476D1CE4E5B9)
	}
	b.AddVotes(sketch.VoteKey("launch poll", "yes"), 2)
	s2 := s
	s2.Type = "click"
	return []sketch.Minute{{Series: s, Minute: 1_700_000_040, State: a}, {Series: s2, Minute: 1_700_000_100, State: b}}
}

// goldenLedger is a ledger for a golden minute: its counters split over
// two contributions of agent edge-9 (the HLL stays the minute's).
func goldenLedger(t *testing.T, m sketch.Minute) []byte {
	first := &sketch.State{Count: 1}
	rest := m.State.Clone()
	rest.Uniques = nil
	rest.Count--
	b, err := sketch.AppendStoredContribs(nil, []sketch.StoredContrib{
		{Agent: "edge-9", CID: 3<<32 | 1, Version: 2, State: first},
		{Agent: "edge-9", CID: 3<<32 | 2, Version: 5, State: rest},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenContribPoint is the point of testdata/points_v1.lp.
func goldenContribPoint() ContribPoint {
	s := sketch.Series{Campaign: "spring", Source: "google", Medium: "cpc", Type: "click", Country: "DE", Device: "mobile", Region: "eu"}
	st1 := &sketch.State{Count: 4}
	st1.AddBot("crawler")
	st1.AddVisitor(0x1111111111111111)
	st1.AddVisitor(0x2222222222222222)
	st2 := &sketch.State{Count: 5}
	st2.AddVisitor(0x3333333333333333)
	cs := []wire.Contribution{newContribution(s, 1_700_000_040, 1<<32|1, 2, st1), newContribution(s, 1_700_000_040, 2<<32|7, 1, st2)}
	return ContribPoint{Series: s, Minute: 1_700_000_040, Agent: "edge-1", Node: "agg-1", Contribs: cs}
}

func testInvalidPoints(t *testing.T, b backend) {
	w, _ := newPair(t, b.bucket(t))
	s := series("bad", "g", "DE", "eu")
	other := series("bad", "other", "DE", "eu")
	for name, call := range map[string]func() error{
		"nil state": func() error {
			return w.Write(ctxT(t), []sketch.Minute{{Series: s, Minute: baseMinute}}, nil)
		},
		"no agent": func() error {
			return w.Write(ctxT(t), nil, []ContribPoint{{Series: s, Minute: baseMinute,
				Contribs: []wire.Contribution{newContribution(s, baseMinute, 1, 1, &sketch.State{Count: 1})}}})
		},
		"no contributions": func() error {
			return w.Write(ctxT(t), nil, []ContribPoint{{Series: s, Minute: baseMinute, Agent: "a"}})
		},
		"contribution of another series": func() error {
			return w.Write(ctxT(t), nil, []ContribPoint{{Series: s, Minute: baseMinute, Agent: "a",
				Contribs: []wire.Contribution{newContribution(other, baseMinute, 1, 1, &sketch.State{Count: 1})}}})
		},
		"contribution of another minute": func() error {
			return w.Write(ctxT(t), nil, []ContribPoint{{Series: s, Minute: baseMinute, Agent: "a",
				Contribs: []wire.Contribution{newContribution(s, baseMinute+60, 1, 1, &sketch.State{Count: 1})}}})
		},
	} {
		var perr *PermanentError
		if err := call(); !errors.As(err, &perr) || perr.StatusCode != 0 {
			t.Fatalf("%s: Write = %v, want a *PermanentError before any request", name, err)
		}
	}
	if st := w.Stats(); st.Requests != 0 || st.PermanentFailures != 5 {
		t.Fatalf("Stats = %+v, want 0 requests and 5 permanent failures", st)
	}
}

// testWriteThroughOutage stops the server, starts a Write, brings the
// server back, and expects the Write to finish with every point stored.
func testWriteThroughOutage(t *testing.T, b backend) {
	ctx := ctxT(t)
	cfg, stop, restart := b.server(t)
	cfg.RetryInitial, cfg.RetryMax, cfg.Timeout = 50*time.Millisecond, 400*time.Millisecond, 5*time.Second
	w, r := newPair(t, cfg)
	s := series("outage", "google", "DE", "eu")
	pts := []sketch.Minute{{Series: s, Minute: baseMinute, State: newState(3, 42, 100, 10)}}
	cps := []ContribPoint{{Series: s, Minute: baseMinute, Agent: "edge-1",
		Contribs: []wire.Contribution{newContribution(s, baseMinute, 1, 9, pts[0].State)}}}
	// Warm a keep-alive connection, so the outage also kills one in use.
	if err := w.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop server: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Write(ctx, pts, cps) }()

	deadline := time.Now().Add(30 * time.Second)
	for w.Stats().Retries < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no retries during the outage: %+v", w.Stats())
		}
		select {
		case err := <-done:
			t.Fatalf("Write returned during the outage: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := restart(ctx); err != nil {
		t.Fatalf("restart server: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Write across the outage: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("Write did not finish after the server came back: %+v", w.Stats())
	}
	st := w.Stats()
	if st.PointsWritten != 2 || st.Retries < 3 || st.LastError == "" {
		t.Fatalf("Stats = %+v, want 2 points written after >= 3 retries", st)
	}
	got, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "outage", From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)})
	if err != nil || len(got) != 1 {
		t.Fatalf("QueryMinutes after outage = %d points, %v", len(got), err)
	}
	checkState(t, "after outage", got[0].State, pts[0].State)
	cs, err := r.LoadContributions(ctx, time.Unix(baseMinute, 0), time.Unix(baseMinute+60, 0))
	if err != nil || len(cs) != 1 || cs[0].Contribs[0].Version != 9 {
		t.Fatalf("LoadContributions after outage = %+v, %v", cs, err)
	}
}

// rawInfluxQL runs an InfluxQL statement on the Reader's bucket,
// bypassing the Reader's decoding, and returns each row's values (tags
// and columns). Both backends answer InfluxQL.
func rawInfluxQL(t *testing.T, ctx context.Context, r *Reader, stmt string) []map[string]any {
	t.Helper()
	db, rp := splitBucket(r.cfg.Bucket)
	var rows []map[string]any
	err := r.influxQL(ctx, http.MethodPost, stmt, db, rp, 0, func(_ *v1Series, tm int64, vals map[string]any) error {
		row := maps.Clone(vals)
		row["time"] = tm
		rows = append(rows, row)
		return nil
	})
	if err != nil {
		t.Fatalf("query %s: %v", stmt, err)
	}
	return rows
}

// countPoints counts the points of a measurement and campaign (one per
// series and minute: the count field exists on every point).
func countPoints(t *testing.T, ctx context.Context, r *Reader, measurement, campaign string) int64 {
	t.Helper()
	rows := rawInfluxQL(t, ctx, r, fmt.Sprintf(`SELECT count("count") FROM %s WHERE "campaign" = %s`,
		influxQLIdent(measurement), influxQLString(campaign)))
	if len(rows) == 0 {
		return 0
	}
	n, _ := rows[0]["count"].(int64)
	return n
}

// testContributionsPerNode: two nodes writing the same agent's point for
// the same series-minute (a handoff) keep both; a node rewriting its own
// point replaces only that one.
func testContributionsPerNode(t *testing.T, b backend) {
	ctx := ctxT(t)
	w, r := newPair(t, b.bucket(t))
	s := series("handoff", "google", "DE", "eu-1")
	point := func(node string, cid, version, count uint64) ContribPoint {
		return ContribPoint{Series: s, Minute: baseMinute, Agent: "edge-1", Node: node,
			Contribs: []wire.Contribution{newContribution(s, baseMinute, cid, version, &sketch.State{Count: count})}}
	}
	for _, cps := range [][]ContribPoint{
		{point("agg-1", 7, 3, 30)},
		{point("agg-2", 7, 5, 50), point("agg-2", 7, 5, 50)},
		{point("agg-1", 7, 4, 40)},
	} {
		if err := w.Write(ctx, nil, cps); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	got, err := r.LoadContributions(ctx, time.Unix(baseMinute, 0), time.Unix(baseMinute+60, 0))
	if err != nil {
		t.Fatal(err)
	}
	byNode := map[string]uint64{}
	for _, p := range got {
		if p.Series != s || p.Agent != "edge-1" || len(p.Contribs) != 1 {
			t.Fatalf("unexpected point %+v", p)
		}
		byNode[p.Node] = p.Contribs[0].Version
	}
	if len(got) != 2 || byNode["agg-1"] != 4 || byNode["agg-2"] != 5 {
		t.Fatalf("points by node (version) = %v from %d points; want agg-1:4 and agg-2:5", byNode, len(got))
	}
}

// testSetup: Setup leaves an existing bucket alone, creates a missing
// database, retention policy or default retention policy when allowed
// (and the new bucket then takes writes and reads), and otherwise refuses
// with a message naming influx.create_bucket and the statement to run.
func testSetup(t *testing.T, b backend) {
	ctx := ctxT(t)
	cfg := b.bucket(t)
	wantLang := b.lang
	if wantLang == "" {
		wantLang = QueryInfluxQL
	}
	setup := func(c Config, create bool) (ServerInfo, *Reader, error) {
		t.Helper()
		_, r := newPair(t, c)
		info, err := r.Setup(ctx, create)
		return info, r, err
	}

	info, r, err := setup(cfg, false)
	if err != nil {
		t.Fatalf("Setup of an existing bucket: %v", err)
	}
	if info.Created != "" || info.QueryLanguage != wantLang || !info.InfluxQL || info.Flux != (b.lang == QueryFlux) ||
		r.QueryLanguage() != wantLang || info.Version == "" || info.Bucket != cfg.Bucket {
		t.Fatalf("Setup of an existing bucket = %+v (reader reads with %q), want nothing created, language %q", info, r.QueryLanguage(), wantLang)
	}

	db, _ := splitBucket(cfg.Bucket)
	for _, tc := range []struct {
		name, bucket, created string
	}{
		{"missing database", freshName() + "/rp1", "database %q with retention policy \"rp1\""},
		{"missing retention policy", db + "/other", "retention policy \"other\" on database %q"},
		{"missing database, default policy", freshName(), "database %q"},
	} {
		c := cfg
		c.Bucket = tc.bucket
		cdb, _ := splitBucket(c.Bucket)
		want := fmt.Sprintf(tc.created, cdb)

		// Forbidden: one error naming the switch and the statement.
		_, r, err := setup(c, false)
		var serr *SetupError
		if !errors.As(err, &serr) || serr.Setting != SettingCreateBucket || serr.Temporary ||
			!strings.Contains(err.Error(), SettingCreateBucket+" is false") || !strings.Contains(err.Error(), "CREATE ") {
			t.Fatalf("%s: Setup with creation forbidden = %v, want a SetupError naming %s and the statement", tc.name, err, SettingCreateBucket)
		}
		if err := r.CheckBucket(ctx); !errors.Is(err, ErrBucketNotFound) {
			t.Fatalf("%s: after a forbidden Setup, CheckBucket = %v; want ErrBucketNotFound (nothing created)", tc.name, err)
		}

		// Allowed: created, then usable.
		info, r, err = setup(c, true)
		if err != nil || info.Created != want {
			t.Fatalf("%s: Setup = %+v, %v; want %s created", tc.name, info, err, want)
		}
		if err := r.CheckBucket(ctx); err != nil {
			t.Fatalf("%s: CheckBucket after Setup: %v", tc.name, err)
		}
		w, r2 := newPair(t, c)
		pt := sketch.Minute{Series: series("setup", "google", "DE", "eu"), Minute: baseMinute, State: newState(5, 12, 30, 4)}
		if err := w.Write(ctx, []sketch.Minute{pt}, nil); err != nil {
			t.Fatalf("%s: Write to the created bucket: %v", tc.name, err)
		}
		got, err := r2.QueryMinutes(ctx, MinuteQuery{Campaign: "setup", From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)})
		if err != nil || len(got) != 1 {
			t.Fatalf("%s: QueryMinutes from the created bucket = %d points, %v", tc.name, len(got), err)
		}
		checkState(t, tc.name, got[0].State, pt.State)

		// Once there, a second Setup creates nothing.
		if info, _, err := setup(c, true); err != nil || info.Created != "" {
			t.Fatalf("%s: second Setup = %+v, %v; want nothing created", tc.name, info, err)
		}
	}
}

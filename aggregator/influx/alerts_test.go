package influx

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// TestAlertStorage runs the alerting storage tests on InfluxDB 1.8 as it
// ships (Flux off: InfluxQL reads) and with Flux on (Flux reads).
func TestAlertStorage(t *testing.T) {
	tests := map[string]func(*testing.T, *Writer, *Reader){
		"AlertsStoredOnceByIdentity": testAlertsStoredOnceByIdentity,
		"AlertStatesLatest":          testAlertStatesLatest,
		"CampaignStepsSumExactly":    testCampaignStepsSumExactly,
		"ConfigDocsRoundTrip":        testConfigDocsRoundTrip,
	}
	for _, flux := range []bool{false, true} {
		lang := QueryInfluxQL
		if flux {
			lang = QueryFlux
		}
		for name, test := range tests {
			t.Run(lang+"/"+name, func(t *testing.T) {
				cfg := freshBucketOn(t, sharedServerFlux(t, flux))
				cfg.QueryLanguage = lang
				w, err := NewWriter(cfg, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(w.Close)
				r, err := NewReader(cfg, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(r.Close)
				test(t, w, r)
				if got := r.QueryLanguage(); got != lang {
					t.Fatalf("read with %q, want %q", got, lang)
				}
			})
		}
	}
}

// testAlertsStoredOnceByIdentity: a transition written again (by another
// node, or marked delivered) is the same point; firing and resolved are
// two; documents with quotes, backslashes and newlines come back byte
// for byte; campaigns and delivery filter.
func testAlertsStoredOnceByIdentity(t *testing.T, w *Writer, r *Reader) {
	ctx := context.Background()
	start := time.Date(2026, 3, 2, 10, 7, 0, 0, time.UTC)
	doc := []byte(`{"summary":"a \"quoted\" \\ back\nslash, and = signs"}`)
	firing := StoredAlert{Campaign: "spring sale", Metric: "share:source=a,b", Rule: "anomaly", State: "firing", Start: start, Doc: doc}
	if err := w.WriteAlerts(ctx, []StoredAlert{firing}, nil); err != nil {
		t.Fatal(err)
	}
	firing.Delivered = true
	resolved := firing
	resolved.State, resolved.Delivered, resolved.Doc = "resolved", false, []byte(`{"state":"resolved"}`)
	other := StoredAlert{Campaign: "other", Metric: "clicks", Rule: "anomaly", State: "firing", Start: start.Add(time.Minute), Doc: []byte(`{}`)}
	if err := w.WriteAlerts(ctx, []StoredAlert{firing, firing, resolved, other}, nil); err != nil {
		t.Fatal(err)
	}
	all, err := r.LoadAlerts(ctx, AlertQuery{AllCampaigns: true, From: start.Add(-time.Hour), To: start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Fatalf("%d transitions stored, want 3 (firing, resolved, other): %+v", len(all), all)
	}
	byState := map[string]StoredAlert{}
	for _, a := range all {
		if a.Campaign == "spring sale" {
			byState[a.State] = a
		}
	}
	if got := byState["firing"]; string(got.Doc) != string(doc) || !got.Delivered || got.Metric != firing.Metric || !got.Start.Equal(start) {
		t.Fatalf("firing read back as %+v (doc %s)", got, got.Doc)
	}
	if got := byState["resolved"]; got.Delivered {
		t.Fatalf("resolved read back delivered: %+v", got)
	}
	some, err := r.LoadAlerts(ctx, AlertQuery{Campaigns: []string{"other"}, From: start, To: start.Add(time.Hour), Undelivered: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(some) != 1 || some[0].Campaign != "other" {
		t.Fatalf("undelivered of campaign other: %+v", some)
	}
	if _, err := r.LoadAlerts(ctx, AlertQuery{From: start, To: start.Add(time.Hour)}); err == nil {
		t.Fatal("a query naming no campaign and not all of them: no error")
	}
	if err := w.WriteAlerts(ctx, []StoredAlert{{Campaign: "x", Metric: "m", Rule: "r", State: "firing", Start: start,
		Doc: make([]byte, MaxStringField+1)}}, nil); err == nil {
		t.Fatal("an oversized document: no error")
	}
}

// testAlertStatesLatest: the latest state of each campaign within the
// range comes back.
func testAlertStatesLatest(t *testing.T, w *Writer, r *Reader) {
	ctx := context.Background()
	m := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var states []StoredState
	for i := range 5 {
		for _, c := range []string{"a", "b"} {
			states = append(states, StoredState{Campaign: c, Minute: m.Add(time.Duration(i) * time.Minute), Doc: []byte(fmt.Sprintf(`{"c":%q,"i":%d}`, c, i))})
		}
	}
	states = states[:len(states)-1] // b's last is minute 3
	if err := w.WriteAlerts(ctx, nil, states); err != nil {
		t.Fatal(err)
	}
	got, err := r.LoadAlertStates(ctx, []string{"a", "b", "c"}, m.Add(-time.Hour), m.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": `{"c":"a","i":4}`, "b": `{"c":"b","i":3}`}
	have := map[string]string{}
	for _, s := range got {
		have[s.Campaign] = string(s.Doc)
	}
	if !maps.Equal(have, want) {
		t.Fatalf("latest states %v, want %v", have, want)
	}
}

// testCampaignStepsSumExactly: the step sums equal the sums of the minutes
// written, per type, source and field; steps start at their window's
// start.
func testCampaignStepsSumExactly(t *testing.T, w *Writer, r *Reader) {
	ctx := context.Background()
	base := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var ms []sketch.Minute
	type want struct {
		count          map[string]int64
		clicks         map[string]int64
		bots           int64
		revenue, cost  float64
		uniquesNonCost int64
	}
	wants := map[int64]*want{}
	for i := range 23 {
		minute := base.Add(time.Duration(i) * time.Minute)
		stepStart := minute.Truncate(5 * time.Minute).Unix()
		wt := wants[stepStart]
		if wt == nil {
			wt = &want{count: map[string]int64{}, clicks: map[string]int64{}}
			wants[stepStart] = wt
		}
		for j, typ := range []string{"click", "conversion", "cost", "pageview"} {
			for k, src := range []string{"google", "bing"} {
				st := &sketch.State{Count: uint64(1 + i + 3*j + k), ValueMicros: int64(1_250_000 * (j + 1)), CostMicros: int64(10_000 * (k + 1))}
				for v := range 1 + i%4 {
					st.AddVisitor(uint64(1000*i+10*j+k+100000*v) | 1)
				}
				st.AddBot("ua")
				ms = append(ms, sketch.Minute{Series: sketch.Series{Campaign: "c", Type: typ, Source: src, Region: "eu"}, Minute: minute.Unix(), State: st})
				wt.count[typ] += int64(st.Count)
				if typ == "click" {
					wt.clicks[src] += int64(st.Count)
				}
				wt.bots++
				wt.revenue += sketch.FromMicros(st.ValueMicros)
				wt.cost += sketch.FromMicros(st.CostMicros)
				if typ != "cost" {
					wt.uniquesNonCost += int64(st.UniquesEstimate())
				}
			}
		}
	}
	ms = append(ms, sketch.Minute{Series: sketch.Series{Campaign: "elsewhere", Type: "click"}, Minute: base.Unix(), State: &sketch.State{Count: 99}})
	if err := w.Write(ctx, ms, nil); err != nil {
		t.Fatal(err)
	}
	got, err := r.CampaignSteps(ctx, []string{"c"}, base, base.Add(time.Hour), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(wants) {
		t.Fatalf("%d steps, want %d", len(got), len(wants))
	}
	for _, s := range got {
		wt := wants[s.Start.Unix()]
		if wt == nil || s.Campaign != "c" {
			t.Fatalf("step %s of %q: not written", s.Start, s.Campaign)
		}
		if !maps.Equal(s.Count, wt.count) || !maps.Equal(s.ClicksBySource, wt.clicks) || s.Bots != wt.bots || s.Uniques != wt.uniquesNonCost ||
			fmt.Sprintf("%.6f/%.6f", s.Revenue, s.Cost) != fmt.Sprintf("%.6f/%.6f", wt.revenue, wt.cost) {
			t.Fatalf("step %s: %+v, want %+v", s.Start, s, *wt)
		}
	}
}

// testConfigDocsRoundTrip: every version written comes back.
func testConfigDocsRoundTrip(t *testing.T, w *Writer, r *Reader) {
	ctx := context.Background()
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	docs := []ConfigDoc{
		{Kind: "rule", Name: "ctr-floor", Written: at, Doc: []byte(`{"v":1}`)},
		{Kind: "rule", Name: "ctr-floor", Written: at.Add(time.Second), Doc: []byte(`{"v":2}`)},
		{Kind: "budget", Name: "spring sale", Written: at, Doc: []byte(`{"daily":5}`)},
	}
	if err := w.WriteConfigDocs(ctx, docs); err != nil {
		t.Fatal(err)
	}
	got, err := r.LoadConfigDocs(ctx, at.Add(-time.Hour), at.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d versions, want 3: %+v", len(got), got)
	}
	seen := map[string]bool{}
	for _, d := range got {
		seen[d.Kind+"/"+d.Name+"/"+string(d.Doc)] = true
	}
	for _, d := range docs {
		if !seen[d.Kind+"/"+d.Name+"/"+string(d.Doc)] {
			t.Fatalf("version %s/%s %s missing from %+v", d.Kind, d.Name, d.Doc, got)
		}
	}
}

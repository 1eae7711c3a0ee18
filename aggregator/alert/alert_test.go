package alert

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/anomaly"
	"github.com/tally-edge/tally/aggregator/forecast"
	"github.com/tally-edge/tally/internal/yamlconf"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func TestID(t *testing.T) {
	a := ID("spring", "clicks", "anomaly", t0.Add(17*time.Second))
	if a != ID("spring", "clicks", "anomaly", t0) || len(a) != 32 {
		t.Fatalf("same campaign, metric, rule and minute: %s vs %s", a, ID("spring", "clicks", "anomaly", t0))
	}
	for _, other := range []string{
		ID("spring2", "clicks", "anomaly", t0), ID("spring", "ctr", "anomaly", t0),
		ID("spring", "clicks", "cap", t0), ID("spring", "clicks", "anomaly", t0.Add(time.Minute)),
		ID("spr", "ingclicks", "anomaly", t0), // fields do not run into each other
	} {
		if other == a {
			t.Fatalf("a different alert has the same id %s", a)
		}
	}
}

func TestFromAnomaly(t *testing.T) {
	ev := anomaly.Event{Metric: anomaly.Conversions, Transition: anomaly.Transition{State: anomaly.Firing, Direction: anomaly.Drop,
		Start: t0, At: t0, Score: -9, Window: 15 * time.Minute, Observed: 0, Expected: 60}}
	fire := FromAnomaly("spring", ev, 8)
	if fire.State != StateFiring || fire.Severity != SeverityWarning || fire.Direction != "drop" || fire.Kind != KindAnomaly ||
		!strings.Contains(fire.Summary, "conversions is far below") {
		t.Fatalf("firing alert %+v", fire)
	}
	ev.Score = -20
	if FromAnomaly("spring", ev, 8).Severity != SeverityCritical {
		t.Fatal("score at 2.5x the threshold is not critical")
	}
	ev.State, ev.At, ev.Score = anomaly.Resolved, t0.Add(time.Hour), 20
	res := FromAnomaly("spring", ev, 8)
	if res.ID != fire.ID || res.State != StateResolved || res.End == nil || !res.End.Equal(t0.Add(time.Hour)) {
		t.Fatalf("resolved %+v, firing id %s", res, fire.ID)
	}
}

// TestConfigFiles decodes testdata/config/*.good.yaml strictly and checks
// that each *.bad.yaml fails with the error its first line names.
func TestConfigFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	if len(files) < 5 {
		t.Fatalf("only %d config fixtures", len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c Config
		err = yamlconf.Decode(raw, &c)
		if err == nil {
			err = c.Validate()
		}
		if strings.HasSuffix(f, ".good.yaml") {
			if err != nil {
				t.Errorf("%s: %v", f, err)
			}
			continue
		}
		want := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(raw), "\n", 2)[0], "# want:"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", f, err, want)
		}
	}
}

func TestValidateBounds(t *testing.T) {
	inf := math.Inf(1)
	neg := -0.5
	end := t0.Add(time.Hour)
	for name, c := range map[string]Config{
		"too many rules":    {Rules: make([]Rule, MaxRules+1)},
		"inf threshold":     {Rules: []Rule{{Name: "r", Kind: KindThreshold, Metric: "clicks", Op: ">", Value: inf}}},
		"reserved name":     {Rules: []Rule{{Name: "budget_x", Kind: KindThreshold, Metric: "clicks", Op: ">", Value: 1}}},
		"unknown metric":    {Rules: []Rule{{Name: "r", Kind: KindThreshold, Metric: "sales", Op: ">", Value: 1}}},
		"mixed kinds":       {Rules: []Rule{{Name: "r", Kind: KindAnomaly, Sensitivity: "high", Op: ">"}}},
		"long window":       {Rules: []Rule{{Name: "r", Kind: KindThreshold, Metric: "clicks", Op: ">", Value: 1, Window: 40 * 24 * time.Hour}}},
		"daily over total":  {Budgets: []Budget{{Campaign: "c", Daily: 10, Total: 5}}},
		"empty budget":      {Budgets: []Budget{{Campaign: "c"}}},
		"negative tol":      {Budgets: []Budget{{Campaign: "c", TargetCPA: 5, Tolerance: &neg}}},
		"two budgets":       {Budgets: []Budget{{Campaign: "c", Daily: 1}, {Campaign: "c", Daily: 2}}},
		"campaign newline":  {Budgets: []Budget{{Campaign: "c\nd", Daily: 1}}},
		"silence no end":    {Silences: []Silence{{ID: "s", Campaign: "c"}}},
		"silence too long":  {Silences: []Silence{{ID: "s", Campaign: "c", Starts: t0, Ends: t0.Add(100 * 24 * time.Hour)}}},
		"silence match all": {Silences: []Silence{{ID: "s", Ends: end}}},
		"silence comment":   {Silences: []Silence{{ID: "s", Campaign: "c", Ends: end, Comment: strings.Repeat("x", MaxTextLen+1)}}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSilences(t *testing.T) {
	c := Config{Silences: []Silence{
		{ID: "maint", Campaign: "spring", Starts: t0, Ends: t0.Add(time.Hour)},
		{ID: "noisy", Metric: "bot_share", Ends: t0.Add(24 * time.Hour)},
	}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	a := Alert{Campaign: "spring", Metric: "clicks", Rule: "anomaly"}
	b := Alert{Campaign: "autumn", Metric: "bot_share", Rule: "anomaly"}
	for _, tc := range []struct {
		a    Alert
		at   time.Time
		want bool
	}{
		{a, t0.Add(-time.Second), false}, {a, t0, true}, {a, t0.Add(59 * time.Minute), true}, {a, t0.Add(time.Hour), false},
		{b, t0, true}, {Alert{Campaign: "autumn", Metric: "clicks"}, t0, false},
	} {
		if got := c.Silenced(tc.a, tc.at); got != tc.want {
			t.Errorf("%+v at %v: silenced %v, want %v", tc.a, tc.at, got, tc.want)
		}
	}
	if p := c.Prune(t0.Add(2 * time.Hour)); len(p.Silences) != 1 || p.Silences[0].ID != "noisy" || len(c.Silences) != 2 {
		t.Fatalf("pruned %+v (original %d)", p.Silences, len(c.Silences))
	}
}

func TestAnomalySensitivity(t *testing.T) {
	c := Config{Rules: []Rule{
		{Name: "all", Kind: KindAnomaly, Sensitivity: "low"},
		{Name: "vip", Kind: KindAnomaly, Sensitivity: "high", Campaigns: []string{"vip"}, Metrics: []string{"spend", "conversions"}},
	}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	base := anomaly.DefaultMonitorConfig()
	if got := c.AnomalyConfig("other", base); got.Detector.Threshold != 10 || len(got.Metrics) != len(base.Metrics) {
		t.Fatalf("other: threshold %v, %d metrics", got.Detector.Threshold, len(got.Metrics))
	}
	got := c.AnomalyConfig("vip", base)
	if got.Detector.Threshold != 6 || len(got.Metrics) != 2 || got.Validate() != nil {
		t.Fatalf("vip: threshold %v, metrics %v, %v", got.Detector.Threshold, got.Metrics, got.Validate())
	}
	if base.Detector.Threshold != 8 {
		t.Fatal("the base configuration was changed")
	}
}

// values is a fixed set of metric values.
type values map[string][2]float64

func (v values) Metric(_, metric string, _ time.Duration) (float64, float64, bool) {
	x, ok := v[metric]
	return x[0], x[1], ok
}

func mustEval(t *testing.T, c Config) *Evaluator {
	t.Helper()
	e, err := NewEvaluator(c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestThresholdRule: the condition must hold For before firing, and be gone
// For before resolving; too little volume or another campaign never fires;
// an unknown value keeps the state.
func TestThresholdRule(t *testing.T) {
	c := Config{Rules: []Rule{{Name: "ctr-floor", Kind: KindThreshold, Campaigns: []string{"spring"}, Metric: "ctr",
		Op: "<", Value: 0.01, For: 3 * time.Minute, MinVolume: 1000, Severity: SeverityCritical}}}
	e := mustEval(t, c)
	low := values{"ctr": {0.005, 5000}}
	var fired []Alert
	for m := range 4 {
		now := t0.Add(time.Duration(m) * time.Minute)
		if got := e.Evaluate(now, "autumn", low, nil); len(got) != 0 {
			t.Fatalf("a campaign the rule does not name: %+v", got)
		}
		fired = append(fired, e.Evaluate(now, "spring", low, nil)...)
		if m < 3 && len(fired) != 0 {
			t.Fatalf("fired after %d minutes of a 3-minute hold", m)
		}
	}
	if len(fired) != 1 || fired[0].State != StateFiring || !fired[0].Start.Equal(t0) || fired[0].Severity != SeverityCritical ||
		fired[0].Direction != "below" || fired[0].ID != ID("spring", "ctr", "ctr-floor", t0) {
		t.Fatalf("fired %+v", fired)
	}
	if got := e.Evaluate(t0.Add(5*time.Minute), "spring", values{}, nil); len(got) != 0 {
		t.Fatalf("unknown value changed the state: %+v", got)
	}
	// Volume too low makes the condition false: it resolves after the hold.
	thin := values{"ctr": {0.005, 10}}
	var res []Alert
	for m := 6; m <= 9; m++ {
		res = append(res, e.Evaluate(t0.Add(time.Duration(m)*time.Minute), "spring", thin, nil)...)
	}
	if len(res) != 1 || res[0].State != StateResolved || res[0].ID != fired[0].ID || !res[0].At.Equal(t0.Add(9*time.Minute)) {
		t.Fatalf("resolution %+v", res)
	}
	if e.Conditions() != 0 {
		t.Fatalf("%d conditions held after resolution", e.Conditions())
	}
}

// TestEvaluatorRestore: a node that restores the firing alerts does not fire
// them again, and resolves them.
func TestEvaluatorRestore(t *testing.T) {
	c := Config{Rules: []Rule{{Name: "cap", Kind: KindThreshold, Metric: "spend", Op: ">", Value: 100, For: time.Minute}}}
	first := mustEval(t, c)
	fired := append(first.Evaluate(t0.Add(-time.Minute), "spring", values{"spend": {150, 150}}, nil),
		first.Evaluate(t0, "spring", values{"spend": {150, 150}}, nil)...)
	if len(fired) != 1 {
		t.Fatalf("fired %+v", fired)
	}
	second := mustEval(t, c)
	second.Restore(fired)
	if got := second.Evaluate(t0.Add(time.Minute), "spring", values{"spend": {160, 160}}, nil); len(got) != 0 {
		t.Fatalf("restored evaluator fired again: %+v", got)
	}
	got := append(second.Evaluate(t0.Add(2*time.Minute), "spring", values{"spend": {50, 50}}, nil),
		second.Evaluate(t0.Add(3*time.Minute), "spring", values{"spend": {50, 50}}, nil)...)
	if len(got) != 1 || got[0].State != StateResolved || got[0].ID != fired[0].ID {
		t.Fatalf("resolution after restore %+v", got)
	}
}

// pacingAt builds a forecast of a day that spent 10 a minute from midnight.
func pacingAt(t *testing.T, now time.Time, b Budget) *forecast.Pacing {
	t.Helper()
	f, err := forecast.New(forecast.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	day := now.Truncate(24 * time.Hour)
	for at := day; at.Before(now); at = at.Add(time.Minute) {
		if err := f.Observe(at, forecast.Amounts{Spend: 10, CostEvents: 1}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := f.Pacing(now, b.ForecastBudget())
	if err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestDailyBudgetRunsOut: 6,000 of 10,000 by 10:00 runs out at 16:40; the
// alert fires after the 5-minute hold and says when.
func TestDailyBudgetRunsOut(t *testing.T) {
	b := Budget{Campaign: "spring", Daily: 10000}
	e := mustEval(t, Config{Budgets: []Budget{b}})
	var got []Alert
	for m := range 6 {
		now := t0.Add(time.Duration(m) * time.Minute)
		got = append(got, e.Evaluate(now, "spring", values{}, pacingAt(t, now, b))...)
	}
	if len(got) != 1 || got[0].Rule != RuleDailyRunsOut || !strings.Contains(got[0].Summary, "runs out at 16:") || !got[0].Start.Equal(t0) {
		t.Fatalf("alerts %+v", got)
	}
	// Spent past the budget: exhausted (critical, at once), and the
	// runs-out warning resolves after its hold.
	late := t0.Add(8 * time.Hour)
	var later []Alert
	for m := range 6 {
		now := late.Add(time.Duration(m) * time.Minute)
		later = append(later, e.Evaluate(now, "spring", values{}, pacingAt(t, now, b))...)
	}
	if len(later) != 2 || later[0].Rule != RuleDailyExhausted || later[0].Severity != SeverityCritical ||
		!strings.Contains(later[0].Summary, "spent") || later[1].Rule != RuleDailyRunsOut || later[1].State != StateResolved {
		t.Fatalf("later alerts %+v", later)
	}
}

// TestTargets: CPA above target (also with no conversion at all once the
// spend would have bought enough), ROAS below target, silenced when a
// silence matches.
func TestTargets(t *testing.T) {
	tol := 0.1
	b := Budget{Campaign: "spring", TargetCPA: 20, TargetROAS: 3, Tolerance: &tol, MinConversions: 10, TargetWindow: time.Hour}
	cfg := Config{Budgets: []Budget{b}, Silences: []Silence{{ID: "roas-quiet", Campaign: "spring", Rule: RuleROASTarget, Ends: t0.Add(time.Hour)}}}
	run := func(v values) []Alert {
		e := mustEval(t, cfg)
		var out []Alert
		for m := range 6 {
			out = append(out, e.Evaluate(t0.Add(time.Duration(m)*time.Minute), "spring", v, nil)...)
		}
		return out
	}
	good := values{"spend": {1000, 1000}, "conversions": {50, 50}, "revenue": {4000, 50}}
	if got := run(good); len(got) != 0 {
		t.Fatalf("on target: %+v", got)
	}
	if got := run(values{"spend": {1000, 1000}, "conversions": {40, 40}, "revenue": {4000, 40}}); len(got) != 1 || got[0].Rule != RuleCPATarget {
		t.Fatalf("CPA 25 against 20 (+10%%): %+v", got)
	}
	if got := run(values{"spend": {150, 150}, "conversions": {0, 0}, "revenue": {0, 0}}); len(got) != 0 {
		t.Fatalf("150 spent without conversions is too little to judge: %+v", got)
	}
	if got := run(values{"spend": {250, 250}, "conversions": {0, 0}, "revenue": {0, 0}}); len(got) != 1 || got[0].Rule != RuleCPATarget {
		t.Fatalf("250 spent without a conversion: %+v", got)
	}
	got := run(values{"spend": {1000, 1000}, "conversions": {50, 50}, "revenue": {2000, 50}})
	if len(got) != 1 || got[0].Rule != RuleROASTarget || !got[0].Silenced || got[0].Direction != "below" {
		t.Fatalf("ROAS 2 against 3: %+v, want one silenced alert", got)
	}
}

// TestJSONRoundTrip: rules and budgets read back what they wrote, with
// durations as strings; unknown keys and bad durations are refused.
func TestJSONRoundTrip(t *testing.T) {
	tol := 0.15
	r := Rule{Name: "ctr-floor", Kind: KindThreshold, Campaigns: []string{"a"}, Metric: "ctr", Op: "<", Value: 0.005,
		Window: time.Hour, For: 10 * time.Minute, MinVolume: 1000, Severity: SeverityCritical}
	b := Budget{Campaign: "a", Daily: 500, Total: 12000, Start: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		End: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), TimeZone: "Europe/Berlin", TargetCPA: 25, TargetWindow: 24 * time.Hour, Tolerance: &tol}
	rb, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rb), `"window":"1h0m0s"`) || !strings.Contains(string(rb), `"for":"10m0s"`) {
		t.Fatalf("rule JSON %s: durations not strings", rb)
	}
	var r2 Rule
	if err := json.Unmarshal(rb, &r2); err != nil || !reflect.DeepEqual(r, r2) {
		t.Fatalf("rule read back as %+v (%v)", r2, err)
	}
	bb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var b2 Budget
	if err := json.Unmarshal(bb, &b2); err != nil || !reflect.DeepEqual(b, b2) {
		t.Fatalf("budget read back as %+v (%v) from %s", b2, err, bb)
	}
	for _, bad := range []string{`{"name":"x","kind":"threshold","colour":"red"}`, `{"name":"x","window":"soon"}`, `{"name":"x","window":900}`} {
		if err := json.Unmarshal([]byte(bad), &r2); err == nil {
			t.Fatalf("%s: no error", bad)
		}
	}
	var s Silence
	if err := json.Unmarshal([]byte(`{"id":"x","campaign":"a","ends":"2026-03-01T00:00:00Z","extra":1}`), &s); err == nil {
		t.Fatal("silence with an unknown key: no error")
	}
}

package alerting

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
)

func objectsOn(t *testing.T, file alert.Config, st *storage, clk *clock) *Objects {
	t.Helper()
	o, err := NewObjects(file, st, 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.now = clk.now
	return o
}

// TestObjectsAgreeAcrossNodes: an edit made on one node applies there at
// once and on another at its next poll; a deletion too; the file's
// objects cannot be changed through the API; an edit that would make the
// configuration invalid is refused; the later of two edits wins
// everywhere; a refresh keeps every object as it was.
func TestObjectsAgreeAcrossNodes(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	st := newStorage(&traffic{}, clk)
	file := alert.Config{Rules: []alert.Rule{{Name: "from-file", Kind: alert.KindAnomaly, Sensitivity: "low"}}}
	a, b := objectsOn(t, file, st, clk), objectsOn(t, file, st, clk)

	rule := alert.Rule{Name: "ctr-floor", Kind: alert.KindThreshold, Metric: "ctr", Op: "<", Value: 0.01}
	if err := a.Put(ctx, rule, "ann"); err != nil {
		t.Fatal(err)
	}
	if len(a.Current().Rules) != 2 || len(b.Current().Rules) != 1 {
		t.Fatalf("before b polls: a %d rules, b %d", len(a.Current().Rules), len(b.Current().Rules))
	}
	clk.add(time.Second)
	if err := b.Poll(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := b.Current().Rules; len(got) != 2 || got[1].Name != "ctr-floor" || b.Source(KindRule, "ctr-floor") != SourceAPI {
		t.Fatalf("b after its poll: %+v", got)
	}

	var oe *ObjectError
	if err := a.Put(ctx, alert.Rule{Name: "from-file", Kind: alert.KindAnomaly, Sensitivity: "high"}, "ann"); !errors.As(err, &oe) || oe.Status != 403 {
		t.Fatalf("changing the file's rule: %v", err)
	}
	if err := a.Put(ctx, alert.Rule{Name: "bad", Kind: alert.KindThreshold, Metric: "nonsense", Op: "<"}, "ann"); !errors.As(err, &oe) || oe.Status != 400 {
		t.Fatalf("an invalid rule: %v", err)
	}
	if err := a.Delete(ctx, KindRule, "nothing", "ann"); !errors.As(err, &oe) || oe.Status != 404 {
		t.Fatalf("deleting what does not exist: %v", err)
	}

	// Two edits of one rule: b's is later and wins on both nodes.
	clk.add(time.Second)
	r1, r2 := rule, rule
	r1.Value, r2.Value = 0.02, 0.03
	if err := a.Put(ctx, r1, "ann"); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Millisecond)
	if err := b.Put(ctx, r2, "bob"); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Second)
	for _, o := range []*Objects{a, b} {
		if err := o.Poll(ctx, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := o.Current().Rules[1].Value; got != 0.03 {
			t.Fatalf("after both edits: value %v, want the later 0.03", got)
		}
	}

	// A silence, then the rule deleted on b.
	s := alert.Silence{ID: "maintenance", Campaign: "shop", Ends: clk.now().Add(time.Hour)}
	if err := a.Put(ctx, s, "ann"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, KindRule, "ctr-floor", "bob"); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Second)
	if err := a.Poll(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := a.Current(); len(got.Rules) != 1 || len(got.Silences) != 1 || got.Silences[0].CreatedBy != "ann" {
		t.Fatalf("a after the deletion: %+v", got)
	}

	if err := a.Put(ctx, alert.Budget{Campaign: "shop", Daily: 500}, "ann"); err != nil {
		t.Fatal(err)
	}

	// Three days on, a fresh node reads only the last two refresh periods:
	// without a refresh it would see none of the API's objects; after one
	// it sees them all as they were.
	clk.add(72 * time.Hour)
	fresh := objectsOn(t, file, st, clk)
	if err := fresh.Poll(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := fresh.Current(); len(got.Budgets) != 0 {
		t.Fatalf("the test needs objects older than the poll window: %+v", got)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	c := objectsOn(t, file, st, clk)
	if err := c.Poll(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := c.Current(); len(got.Rules) != 1 || len(got.Silences) != 0 || len(got.Budgets) != 1 || got.Budgets[0].Daily != 500 {
		t.Fatalf("fresh node after a refresh: %+v (the silence ended, the rule was deleted)", got)
	}
	if c.Source(KindRule, "ctr-floor") != "" {
		t.Fatal("the deleted rule came back")
	}
}

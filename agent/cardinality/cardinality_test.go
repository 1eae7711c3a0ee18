package cardinality

import (
	"fmt"
	"testing"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
)

func ev(campaign string, minute int64) event.Event {
	return event.Event{Series: sketch.Series{Campaign: campaign, Source: "s", Medium: "m", Type: "click"}, UnixMillis: minute * 1000}
}

func TestFoldsBeyondTheLimitPerMinute(t *testing.T) {
	g := New(Config{MaxCampaigns: 3, MaxSources: -1})
	var evs []event.Event
	for i := range 5 {
		evs = append(evs, ev(fmt.Sprintf("c%d", i), 600))
	}
	evs = append(evs, ev("c0", 600), ev("c4", 660)) // known value; another minute
	g.Fold(evs, 1000)
	want := []string{"c0", "c1", "c2", Other, Other, "c0", "c4"}
	for i, w := range want {
		if evs[i].Series.Campaign != w {
			t.Fatalf("event %d: campaign %q, want %q", i, evs[i].Series.Campaign, w)
		}
	}
	if f := g.Folded(); f[0] != 2 || f[1] != 0 || f[2] != 0 {
		t.Fatalf("folded %v", f)
	}
}

func TestObserveRestoresStateWithoutCounting(t *testing.T) {
	g := New(Config{MaxCampaigns: 2})
	g.Observe([]event.Event{ev("a", 600), ev("b", 600)}, 1000)
	evs := []event.Event{ev("c", 600), ev("a", 600)}
	g.Fold(evs, 1000)
	if evs[0].Series.Campaign != Other || evs[1].Series.Campaign != "a" || g.Folded()[0] != 1 {
		t.Fatalf("after observe: %q %q folded %v", evs[0].Series.Campaign, evs[1].Series.Campaign, g.Folded())
	}
}

func TestEvictForgetsIdleMinutes(t *testing.T) {
	g := New(Config{MaxCampaigns: 1})
	g.Fold([]event.Event{ev("a", 600)}, 1000)
	g.Evict(2000)
	evs := []event.Event{ev("b", 600)}
	g.Fold(evs, 3000)
	if evs[0].Series.Campaign != "b" {
		t.Fatalf("evicted minute still limits: %q", evs[0].Series.Campaign)
	}
}

func TestFoldsPollAnswersBeyondTheLimit(t *testing.T) {
	g := New(Config{MaxAnswers: 2})
	vote := func(answer string) event.Event {
		e := ev("c", 600)
		e.Series.Type, e.Vote = event.PollVote, sketch.VoteKey("p", answer)
		return e
	}
	evs := []event.Event{vote("a"), vote("b"), vote("c"), vote("a"), ev("c", 600)}
	g.Fold(evs, 1000)
	want := []string{"a", "b", Other, "a", ""}
	for i, w := range want {
		if _, got := sketch.SplitVote(evs[i].Vote); got != w || (w == "" && evs[i].Vote != "") {
			t.Fatalf("event %d: answer %q, want %q", i, got, w)
		}
	}
	if p, _ := sketch.SplitVote(evs[2].Vote); p != "p" {
		t.Fatalf("the folded vote lost its poll: %q", evs[2].Vote)
	}
	if f := g.Folded(); f[3] != 1 || f[0] != 0 {
		t.Fatalf("folded %v", f)
	}
}

// TestSeriesBudgetFoldsWholeSeries: within per-dimension limits, a flood
// of distinct series (here by country and device) is bounded per minute;
// beyond the budget events move to the overflow series of their type and
// device, keeping every event, and known series keep their labels.
func TestSeriesBudgetFoldsWholeSeries(t *testing.T) {
	g := New(Config{MaxSeries: 10})
	countries := []string{"DE", "FR", "US", "JP", "BR", "IN", "CN", "GB", "IT", "ES", "NL", "SE", "NO", "PL", "CZ"}
	var evs []event.Event
	for i, c := range countries {
		e := ev("spring", 600)
		e.Series.Country, e.Series.Device = c, []string{"mobile", "desktop"}[i%2]
		evs = append(evs, e)
	}
	evs = append(evs, evs[0]) // a series admitted before
	g.Fold(evs, 1000)
	distinct := map[sketch.Series]int{}
	for _, e := range evs {
		distinct[e.Series]++
	}
	if len(distinct) != 10+2 { // the budget, plus one overflow series per device
		t.Fatalf("%d distinct series, want 12: %v", len(distinct), distinct)
	}
	if evs[15].Series != evs[0].Series || evs[0].Series.Country != "DE" {
		t.Fatalf("an admitted series was folded: %+v", evs[15].Series)
	}
	for _, e := range evs[10:15] {
		if e.Series.Campaign != Other || e.Series.Source != Other || e.Series.Medium != Other ||
			e.Series.Country != event.NoCountry || e.Series.Type != "click" {
			t.Fatalf("overflow series %+v", e.Series)
		}
	}
	if f := g.Folded(); f[series] != 5 {
		t.Fatalf("series folds counted %d, want 5", f[series])
	}
	// Replayed (already folded) events restore the budget without
	// counting: the next new series is over it.
	h := New(Config{MaxSeries: 10})
	h.Observe(evs, 1000)
	if f := h.Folded(); f[series] != 0 {
		t.Fatalf("observe counted folds: %v", f)
	}
	extra := []event.Event{ev("autumn", 600)}
	h.Fold(extra, 1000)
	if f := h.Folded(); f[series] != 1 || extra[0].Series.Campaign != Other {
		t.Fatalf("after replay a new series was admitted: %+v, folds %v", extra[0].Series, f)
	}
}

func TestEvictMinutesByEventTime(t *testing.T) {
	g := New(Config{})
	g.Fold([]event.Event{ev("a", 600), ev("b", 660), ev("c", 720)}, 1000)
	g.EvictMinutes(720)
	if len(g.minutes) != 1 || g.minutes[720] == nil {
		t.Fatalf("minutes left %v, want only 720", len(g.minutes))
	}
}

package loadgen

import (
	"testing"
	"time"
)

func TestDeterministicAndPlausible(t *testing.T) {
	a, b := New(Config{Seed: 42}), New(Config{Seed: 42})
	ts := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	types := map[string]int{}
	bots := 0
	truth := NewTruth()
	var evs []Event
	for range 20_000 {
		ea, eb := a.Event(ts), b.Event(ts)
		if ea.Type != eb.Type || ea.Visitor != eb.Visitor || ea.Campaign != eb.Campaign {
			t.Fatal("same seed, different events")
		}
		types[ea.Type]++
		if ea.Bot {
			bots++
		}
		evs = append(evs, ea)
	}
	truth.Add(evs)
	if types["impression"] < types["click"] || types["click"] < types["conversion"] || types["cost"] == 0 {
		t.Fatalf("implausible funnel %v", types)
	}
	if bots < 500 || bots > 1500 {
		t.Fatalf("%d bots of 20000 at 5%%", bots)
	}
	if truth.Total() != 20_000 {
		t.Fatalf("truth total %d", truth.Total())
	}
	if u := truth.Uniques("spring_sale"); u == 0 || u > 20_000 {
		t.Fatalf("uniques %d", u)
	}
}

package botfilter

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiterWindow(t *testing.T) {
	l := newLimiter(Rate{Events: 3, Window: 10 * time.Second, Slots: minSlots})
	const s = 1000 // one second in ms
	base := int64(1_700_000_000_000) / (10 * s) * (10 * s)
	for _, step := range []struct {
		at   int64 // ms after base
		want bool
	}{
		{0, false}, {1 * s, false}, {2 * s, false}, // 3 in the window: fine
		{3 * s, true}, // the 4th is over the rate
		// Next window: the previous one's 4 events weigh 1-f, f being how
		// far into the current window the event is.
		{10 * s, true},  // 4×1.0 + 1 = 5
		{19 * s, false}, // 4×0.1 + 2 = 2.4
		// Two windows on, the key starts afresh.
		{30 * s, false}, {30 * s, false}, {30 * s, false},
		{30 * s, true},
	} {
		if got := l.add(7, base+step.at); got != step.want {
			t.Fatalf("at +%dms: limited %v, want %v", step.at, got, step.want)
		}
	}
	if l.add(8, base) {
		t.Fatal("another key is limited by the first one's events")
	}
}

func TestLimiterOutOfOrder(t *testing.T) {
	l := newLimiter(Rate{Events: 2, Window: time.Minute, Slots: minSlots})
	const min = 60_000
	t0 := int64(1_700_000_000_000) / min * min
	l.add(1, t0+5*min) // the key's newest window is now 5
	// One window late: counted in the previous window and judged by it.
	if l.add(1, t0+4*min) || l.add(1, t0+4*min) || !l.add(1, t0+4*min) {
		t.Fatal("late events in the previous window are not limited at its rate")
	}
	// Older: not counted, not flagged, counted as late.
	for range 5 {
		if l.add(1, t0) {
			t.Fatal("an event older than the previous window was flagged")
		}
	}
	if got := l.late.Load(); got != 5 {
		t.Fatalf("late = %d, want 5", got)
	}
	// Same events, same verdicts: replays are deterministic.
	a := newLimiter(Rate{Events: 2, Window: time.Minute, Slots: minSlots})
	b := newLimiter(Rate{Events: 2, Window: time.Minute, Slots: minSlots})
	for i := range 500 {
		key, at := uint64(i%7), t0+int64(i*i%9000)*100
		if a.add(key, at) != b.add(key, at) {
			t.Fatalf("event %d: two tables disagree", i)
		}
	}
}

// TestLimiterEviction fills a minimal table with many more keys than it
// has slots: memory stays fixed, evictions are counted, and a heavy key
// keeps being limited while light ones churn through.
func TestLimiterEviction(t *testing.T) {
	l := newLimiter(Rate{Events: 10, Window: time.Minute, Slots: minSlots})
	before := len(l.shards[0].slots)
	t0 := int64(1_700_000_000_000)
	heavyLimited := 0
	for i := range 20_000 {
		if l.add(uint64(1_000_000+i), t0+int64(i)) {
			t.Fatalf("light key %d limited on its first event", i)
		}
		if i%10 == 0 && l.add(42, t0+int64(i)) {
			heavyLimited++
		}
	}
	if len(l.shards[0].slots) != before {
		t.Fatal("the table grew")
	}
	if l.evictions.Load() == 0 {
		t.Fatal("no evictions counted")
	}
	// 2000 events of the heavy key against a limit of 10: the ways of its
	// set mostly hold keys seen once, so it survives eviction.
	if heavyLimited < 1900 {
		t.Fatalf("heavy key limited %d times of 2000, want nearly all", heavyLimited)
	}
}

func TestIPKey(t *testing.T) {
	a := ipKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1"), 64)
	b := ipKey(netip.MustParseAddr("2001:db8:1:2:bbbb::2"), 64)
	c := ipKey(netip.MustParseAddr("2001:db8:1:3::1"), 64)
	if a != b || a == c {
		t.Fatal("IPv6 clients are not keyed by their /64")
	}
	if ipKey(netip.MustParseAddr("2001:db8:1:2::1"), 128) == ipKey(netip.MustParseAddr("2001:db8:1:2::2"), 128) {
		t.Fatal("/128 keys merge addresses")
	}
	if ipKey(netip.MustParseAddr("10.0.0.1"), 64) == ipKey(netip.MustParseAddr("10.0.0.2"), 64) {
		t.Fatal("IPv4 clients are merged")
	}
	if floorDiv(-1, 10) != -1 || floorDiv(10, 10) != 1 || floorDiv(9, 10) != 0 {
		t.Fatal("floorDiv")
	}
}

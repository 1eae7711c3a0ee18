package privacy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestSameSecretSameHashAcrossAgents(t *testing.T) {
	a, err := NewHasher("0123456789abcdef-secret", Day)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewHasher("0123456789abcdef-secret", Day)
	ts := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).UnixMilli()
	if a.Visitor(ts, "v1") != b.Visitor(ts, "v1") {
		t.Fatal("two hashers with one secret disagree")
	}
	if a.Visitor(ts, "v1") == a.Visitor(ts, "v2") {
		t.Fatal("different visitors collide")
	}
	other, _ := NewHasher("another-secret-of-16+", Day)
	if a.Visitor(ts, "v1") == other.Visitor(ts, "v1") {
		t.Fatal("different secrets give the same hash")
	}
}

func TestSaltRotatesWithPeriod(t *testing.T) {
	for _, tc := range []struct {
		period     Period
		a, b       time.Time
		wantChange bool
	}{
		{Day, time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 22, 23, 59, 0, 0, time.UTC), false},
		{Day, time.Date(2026, 11, 22, 23, 59, 0, 0, time.UTC), time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), true},
		{Week, time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC), false},
		{Week, time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), true},
		{Month, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), false},
		{Month, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), true},
	} {
		h, err := NewHasher("0123456789abcdef-secret", tc.period)
		if err != nil {
			t.Fatal(err)
		}
		changed := h.Anonymous(tc.a.UnixMilli(), "203.0.113.9", "UA", "site") != h.Anonymous(tc.b.UnixMilli(), "203.0.113.9", "UA", "site")
		if changed != tc.wantChange {
			t.Fatalf("%s %v→%v: changed=%v, want %v", tc.period, tc.a, tc.b, changed, tc.wantChange)
		}
	}
}

// TestWeekBoundaries: a week salt is one ISO 8601 week, Monday 00:00 UTC
// to the next Monday, also where the week spans a new year (2026 has 53
// ISO weeks: 2026-W53 runs from Mon 28 Dec 2026 to Sun 3 Jan 2027).
func TestWeekBoundaries(t *testing.T) {
	h, err := NewHasher("0123456789abcdef-secret", Week)
	if err != nil {
		t.Fatal(err)
	}
	at := func(y int, m time.Month, d, hh, mm int) uint64 {
		return h.Visitor(time.Date(y, m, d, hh, mm, 59, 999e6, time.UTC).UnixMilli(), "v1")
	}
	w53 := at(2026, 12, 28, 0, 0)
	for _, same := range []uint64{at(2026, 12, 31, 12, 0), at(2027, 1, 1, 0, 0), at(2027, 1, 3, 23, 59)} {
		if same != w53 {
			t.Fatal("one ISO week (2026-W53) gave two hashes")
		}
	}
	if at(2026, 12, 27, 23, 59) == w53 {
		t.Fatal("Sunday 27 Dec 2026 shares the salt of the next week")
	}
	if at(2027, 1, 4, 0, 0) == w53 {
		t.Fatal("Monday 4 Jan 2027 (2027-W01) shares the salt of 2026-W53")
	}
	// Other time zones do not move the boundary: the period is UTC.
	berlin := time.FixedZone("CET", 3600)
	if h.Visitor(time.Date(2027, 1, 4, 0, 30, 0, 0, berlin).UnixMilli(), "v1") != w53 {
		t.Fatal("00:30 CET on Monday (23:30 UTC Sunday) left the UTC week")
	}
}

// TestNeverKeepsOneSalt: with Never the hash of a visitor is the same at
// any time, from the epoch to far ahead, for ids and anonymous visitors
// alike; it still depends on the secret and differs from a dated salt.
func TestNeverKeepsOneSalt(t *testing.T) {
	h, err := NewHasher("0123456789abcdef-secret", Never)
	if err != nil {
		t.Fatal(err)
	}
	times := []time.Time{
		time.Unix(0, 0), time.Date(2026, 11, 22, 23, 59, 59, 0, time.UTC), time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2031, 6, 15, 8, 0, 0, 0, time.UTC),
		time.Date(2099, 12, 31, 23, 59, 0, 0, time.UTC),
	}
	v0, a0 := h.Visitor(times[0].UnixMilli(), "v1"), h.Anonymous(times[0].UnixMilli(), "203.0.113.9", "UA", "site")
	for _, ts := range times[1:] {
		fresh, _ := NewHasher("0123456789abcdef-secret", Never)
		for _, hh := range []*Hasher{h, fresh} {
			if hh.Visitor(ts.UnixMilli(), "v1") != v0 || hh.Anonymous(ts.UnixMilli(), "203.0.113.9", "UA", "site") != a0 {
				t.Fatalf("never: hash at %v differs from the hash at the epoch", ts)
			}
		}
	}
	other, _ := NewHasher("another-secret-of-16+", Never)
	if other.Visitor(0, "v1") == v0 {
		t.Fatal("never: different secrets give the same hash")
	}
	day, _ := NewHasher("0123456789abcdef-secret", Day)
	if day.Visitor(0, "v1") == v0 {
		t.Fatal("never and day salts agree on the first day of 1970")
	}
}

// TestDayRotatesEveryDay: with Day, one visitor hashes differently on each
// of 30 consecutive days and alike within each day.
func TestDayRotatesEveryDay(t *testing.T) {
	h, _ := NewHasher("0123456789abcdef-secret", Day)
	seen := map[uint64]int{}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for d := range 30 {
		morning := start.AddDate(0, 0, d).UnixMilli()
		night := start.AddDate(0, 0, d+1).UnixMilli() - 1
		v := h.Visitor(morning, "v1")
		if h.Visitor(night, "v1") != v {
			t.Fatalf("day %d: two hashes within one day", d)
		}
		if prev, ok := seen[v]; ok {
			t.Fatalf("day %d repeats the hash of day %d", d, prev)
		}
		seen[v] = d
	}
}

func TestRejectsWeakConfig(t *testing.T) {
	if _, err := NewHasher("short", Day); err == nil {
		t.Fatal("short secret accepted")
	}
	if _, err := NewHasher("short", Never); err == nil {
		t.Fatal("short secret accepted with never")
	}
	for _, p := range []Period{"year", "", "daily", "weekly", "Day", "NEVER", "never "} {
		_, err := NewHasher("0123456789abcdef-secret", p)
		if err == nil {
			t.Fatalf("period %q accepted", p)
		}
		if want := "want day, week, month or never"; !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", string(p))) {
			t.Fatalf("period %q: error %q does not name the value and %q", p, err, want)
		}
	}
	for _, p := range []Period{Day, Week, Month, Never} {
		if err := p.Validate(); err != nil {
			t.Fatalf("%s refused: %v", p, err)
		}
	}
}

// TestFastPathMatchesSlowPath: the cached period gives the same hashes as
// a fresh lookup, across period boundaries in both directions.
func TestFastPathMatchesSlowPath(t *testing.T) {
	for _, p := range []Period{Day, Week, Month, Never} {
		h, _ := NewHasher("0123456789abcdef-secret", p)
		start := time.Date(2026, 11, 28, 23, 0, 0, 0, time.UTC)
		for i := range 200 {
			ts := start.Add(time.Duration(i%50)*37*time.Minute + time.Duration(i/50)*-200*time.Hour).UnixMilli()
			fresh, _ := NewHasher("0123456789abcdef-secret", p)
			if h.Visitor(ts, "v") != fresh.Visitor(ts, "v") || h.Anonymous(ts, "ip", "ua", "s") != fresh.Anonymous(ts, "ip", "ua", "s") {
				t.Fatalf("%s at %v: cached and fresh hashers disagree", p, time.UnixMilli(ts).UTC())
			}
		}
	}
}

func BenchmarkAnonymous(b *testing.B) {
	h, _ := NewHasher("0123456789abcdef-secret", Day)
	ts := time.Now().UnixMilli()
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = h.Anonymous(ts, "198.51.100.7", ua, "shop.example.com")
	}
}

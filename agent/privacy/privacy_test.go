package privacy

import (
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

func TestRejectsWeakConfig(t *testing.T) {
	if _, err := NewHasher("short", Day); err == nil {
		t.Fatal("short secret accepted")
	}
	if _, err := NewHasher("0123456789abcdef-secret", "year"); err == nil {
		t.Fatal("unknown period accepted")
	}
}

// TestFastPathMatchesSlowPath: the cached period gives the same hashes as
// a fresh lookup, across period boundaries in both directions.
func TestFastPathMatchesSlowPath(t *testing.T) {
	for _, p := range []Period{Day, Week, Month} {
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

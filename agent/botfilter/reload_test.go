package botfilter

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestPrepareLists: a reload replaces the allow, deny and datacenter lists
// (files read again) at its commit and nothing before; a list that does
// not check changes nothing; the other settings and the cache counters
// carry over.
func TestPrepareLists(t *testing.T) {
	dir := t.TempDir()
	dcFile := filepath.Join(dir, "dc.txt")
	if err := os.WriteFile(dcFile, []byte("198.51.100.0/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := New(Config{RateIP: IPRate{Rate: Rate{Events: 1000, Window: time.Minute}}, Datacenter: Datacenter{Files: []string{dcFile}}})
	defer f.Close()
	const acme = "AcmeShopBrowser/1.0 (Windows NT 10.0)"
	if got := f.Check(acme, "203.0.113.9"); got != "" {
		t.Fatalf("before the reload: %q", got)
	}
	if got := f.Check(chromeUA, "198.51.100.7"); got != ReasonDatacenter {
		t.Fatalf("datacenter file: %q", got)
	}
	hits0, misses0 := f.CacheStats()

	// A file that does not check changes nothing.
	if _, err := f.PrepareLists(Config{Deny: List{UARegex: []string{"("}}}); err == nil {
		t.Fatal("PrepareLists accepted a broken regular expression")
	}
	if _, err := f.PrepareLists(Config{Datacenter: Datacenter{Files: []string{filepath.Join(dir, "missing.txt")}}}); err == nil {
		t.Fatal("PrepareLists accepted a missing datacenter file")
	}

	// The datacenter file refreshed, a user agent and a network denied.
	if err := os.WriteFile(dcFile, []byte("192.0.2.0/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	commit, err := f.PrepareLists(Config{Deny: List{UA: []string{"acmeshop"}, CIDRs: []string{"203.0.113.66"}},
		Datacenter: Datacenter{Files: []string{dcFile}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Check(acme, "203.0.113.9"); got != "" {
		t.Fatalf("PrepareLists alone changed a verdict: %q", got)
	}
	var wg sync.WaitGroup // commit while events are checked (-race)
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				f.Check(chromeUA, "203.0.113.1")
			}
		})
	}
	commit()
	wg.Wait()
	for _, tc := range []struct{ ua, ip, want string }{
		{acme, "203.0.113.9", ReasonDenyList},
		{chromeUA, "203.0.113.66", ReasonDenyList},
		{chromeUA, "198.51.100.7", ""},
		{chromeUA, "192.0.2.7", ReasonDatacenter},
		{googlebot, "203.0.113.9", ReasonCrawler},
	} {
		if got := f.Check(tc.ua, tc.ip); got != tc.want {
			t.Errorf("after the reload Check(%q, %s) = %q, want %q", tc.ua, tc.ip, got, tc.want)
		}
	}
	if hits, misses := f.CacheStats(); hits < hits0 || misses < misses0+1 {
		t.Fatalf("cache counters went back or stopped: %d/%d → %d/%d", hits0, misses0, hits, misses)
	}
	if f.rateIP == nil || !f.lists.Load().needIP {
		t.Fatal("the reload lost the rate layer or the address parsing it needs")
	}
}

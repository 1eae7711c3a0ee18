package botfilter

import (
	"strconv"
	"testing"
)

func TestVerdictCache(t *testing.T) {
	var c verdictCache
	c.init(256, 1<<30) // 16 per shard
	// Put more distinct user agents than the cache holds; each must be
	// found right after its put (pending or published), and no shard may
	// grow past its share plus one batch.
	for i := range 5000 {
		ua := "agent " + strconv.Itoa(i)
		c.put(ua, verdict(i%5))
		for range 3 { // the second lookup through the lock publishes
			if v, ok := c.get(ua); !ok || v != verdict(i%5) {
				t.Fatalf("get(%q) = %v, %v right after put", ua, v, ok)
			}
		}
		for j := range c.shards {
			s := &c.shards[j]
			s.mu.Lock()
			read, pending := len(*s.read.Load()), len(s.pending)
			s.mu.Unlock()
			if read > c.perShard || pending > c.perShard {
				t.Fatalf("shard %d holds %d published and %d pending, share %d", j, read, pending, c.perShard)
			}
		}
	}
	hits, misses := c.stats()
	if misses != 0 {
		t.Fatalf("%d misses, want none", misses)
	}
	// 15,000 hits, those from published maps sampled 1 in hitSample.
	if hits < 5000 || hits > 25_000 {
		t.Fatalf("hits %d, want about 15000", hits)
	}
	if _, ok := c.get("never seen"); ok {
		t.Fatal("hit for an unknown user agent")
	}
	if _, misses := c.stats(); misses != 1 {
		t.Fatalf("misses %d, want 1", misses)
	}
}

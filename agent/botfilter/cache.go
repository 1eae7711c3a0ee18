package botfilter

import (
	"hash/maphash"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
)

// cacheShards splits the verdict cache so that a full shard drops only its
// own share of the entries, and publishing a new snapshot copies only one
// shard.
const cacheShards = 16

// hitSample: one cache hit in hitSample is counted (as hitSample hits).
const hitSample = 32

// verdictCache maps user agents to verdicts, bounded in entries and in
// bytes: keys are the caller's truncated user agents (TruncateUA), and each
// entry is charged its key's length plus entryOverhead.
//
// Lookups are the hot path of every event, so they write no shared memory:
// a lock or a counter written by every lookup bounces its cache line
// between cores and made two cores slower than one. Each shard publishes
// an immutable map through an atomic pointer, which lookups read without
// locking; new verdicts wait in a small locked map until the next
// snapshot (as in sync.Map, whose read path this copies for string keys).
// Hits are counted one in hitSample for the same reason.
type verdictCache struct {
	seed maphash.Seed
	// perShard and perShardBytes bound each shard's published map; pending
	// entries are published before they exceed either.
	perShard, perShardBytes int
	shards                  [cacheShards]cacheShard
}

// entryOverhead is what one cached verdict costs besides its key: the
// string header, the map slot and the verdict, rounded up.
const entryOverhead = 64

type cacheShard struct {
	read atomic.Pointer[map[string]verdict] // immutable once published

	mu sync.Mutex
	// pending holds verdicts not yet in read; pendingHits counts lookups
	// it answered, which decide when to publish.
	pending     map[string]verdict
	pendingHits int
	// readBytes and pendingBytes are the bytes charged to read and pending.
	readBytes, pendingBytes int

	hits, misses atomic.Uint64
}

func (c *verdictCache) init(size, bytes int) {
	c.seed = maphash.MakeSeed()
	c.perShard = max(1, size/cacheShards)
	c.perShardBytes = max(MaxUserAgentBytes+entryOverhead, bytes/cacheShards)
	for i := range c.shards {
		s := &c.shards[i]
		s.read.Store(&map[string]verdict{})
		s.pending = map[string]verdict{}
	}
}

func (c *verdictCache) shard(ua string) *cacheShard {
	return &c.shards[maphash.String(c.seed, ua)%cacheShards]
}

func (c *verdictCache) get(ua string) (verdict, bool) {
	s := c.shard(ua)
	if v, ok := (*s.read.Load())[ua]; ok {
		if rand.Uint32()%hitSample == 0 {
			s.hits.Add(hitSample)
		}
		return v, true
	}
	s.mu.Lock()
	v, ok := s.pending[ua]
	if ok {
		s.pendingHits++
		// Publish once lookups through the lock add up to the number of
		// pending entries: hot new user agents leave the slow path soon,
		// and the copy is paid for by the lookups it saves.
		if s.pendingHits >= len(s.pending) {
			s.publish(c.perShard, c.perShardBytes)
		}
	}
	s.mu.Unlock()
	if ok {
		s.hits.Add(1)
	} else {
		s.misses.Add(1)
	}
	return v, ok
}

func (c *verdictCache) put(ua string, v verdict) {
	s := c.shard(ua)
	s.mu.Lock()
	if _, ok := s.pending[ua]; !ok {
		// Clone: ua may point into a request buffer that is reused.
		s.pending[strings.Clone(ua)] = v
		s.pendingBytes += len(ua) + entryOverhead
	}
	// Publish in batches so that the copy costs a few entries per put,
	// and pending never holds more than a shard's share.
	if len(s.pending) >= min(c.perShard, max(16, len(*s.read.Load())/4)) ||
		s.pendingBytes >= min(c.perShardBytes, max(16<<10, s.readBytes/4)) {
		s.publish(c.perShard, c.perShardBytes)
	}
	s.mu.Unlock()
}

// publish makes pending visible to lock-free lookups. Past perShard
// entries or perShardBytes bytes the old snapshot is dropped whole: crude
// but bounded, and rare while the working set of user agents is smaller
// than the cache. The caller holds s.mu.
func (s *cacheShard) publish(perShard, perShardBytes int) {
	old := *s.read.Load()
	next, bytes := s.pending, s.pendingBytes
	if len(old)+len(next) <= perShard && s.readBytes+s.pendingBytes <= perShardBytes {
		next = maps.Clone(old)
		maps.Copy(next, s.pending)
		bytes += s.readBytes
	}
	s.read.Store(&next)
	s.readBytes = bytes
	s.pending, s.pendingHits, s.pendingBytes = map[string]verdict{}, 0, 0
}

// bytes returns the bytes charged to the cache (an estimate of its heap).
func (c *verdictCache) bytes() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.readBytes + s.pendingBytes
		s.mu.Unlock()
	}
	return n
}

// stats sums the shards' counters; hits are sampled.
func (c *verdictCache) stats() (hits, misses uint64) {
	for i := range c.shards {
		hits += c.shards[i].hits.Load()
		misses += c.shards[i].misses.Load()
	}
	return hits, misses
}

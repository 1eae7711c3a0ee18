package botfilter

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
)

// The rate table is split into shards, each with its own lock, and each
// shard into sets of rateWays slots: a key lives in one set, chosen by its
// hash, and a full set evicts its least active key. Memory is fixed at
// Open: Slots × 24 bytes.
const (
	rateShards = 16
	rateWays   = 8
)

// limiter counts events per key in a sliding window of fixed-size table
// slots.
//
// The window is the classic sliding-window counter: each key keeps the
// count of the current fixed window and of the one before, and the rate at
// time t is prev×(1−f) + cur, f being how far t is into the current
// window. It is exact for steady traffic and off by at most the previous
// window's count for bursts at its edges, in either direction.
//
// Time is whatever the caller passes (event time for CheckEvent), per key:
// events arriving out of order count in their own window when it is the
// current or the previous one of that key; older ones are not counted and
// never flagged (counted in late instead).
type limiter struct {
	limit  uint64 // events per window
	window int64  // milliseconds
	seed   uint64 // per table: nobody outside can aim keys at one set
	sets   uint64 // per shard
	shards [rateShards]rateShard

	evictions, late atomic.Uint64
}

type rateShard struct {
	mu    sync.Mutex
	slots []rateSlot
	_     [32]byte // keep shards' locks on separate cache lines
}

// rateSlot is one tracked key. key 0 marks a free slot.
type rateSlot struct {
	key       uint64
	win       int64 // index of the current window: time / window
	cur, prev uint32
}

func newLimiter(r Rate) *limiter {
	l := &limiter{
		limit:  uint64(r.Events),
		window: r.Window.Milliseconds(),
		seed:   rand.Uint64(),
		sets:   uint64(max(1, r.Slots/(rateShards*rateWays))),
	}
	for i := range l.shards {
		l.shards[i].slots = make([]rateSlot, l.sets*rateWays)
	}
	return l
}

// add counts one event of key at unixMillis and reports whether the key is
// over its rate, this event included.
func (l *limiter) add(key uint64, unixMillis int64) bool {
	h := mix64(key ^ l.seed)
	if h == 0 {
		h = 1
	}
	w := floorDiv(unixMillis, l.window)
	elapsed := unixMillis - w*l.window

	sh := &l.shards[h%rateShards]
	base := (h >> 32) % l.sets * rateWays
	sh.mu.Lock()
	set := sh.slots[base : base+rateWays]
	s := find(set, h)
	if s == nil {
		s = l.evict(set, w)
		*s = rateSlot{key: h, win: w}
	}
	var limited bool
	switch d := w - s.win; {
	case d == 0:
		s.cur = satInc(s.cur)
	case d == 1:
		s.prev, s.cur, s.win = s.cur, 1, w
	case d > 1:
		s.prev, s.cur, s.win = 0, 1, w
	case d == -1:
		// Late, but in the key's previous window: count it there and
		// judge it by that window alone.
		s.prev = satInc(s.prev)
		limited = uint64(s.prev) > l.limit
		sh.mu.Unlock()
		return limited
	default:
		sh.mu.Unlock()
		l.late.Add(1)
		return false
	}
	// prev×(1−f) + cur > limit, scaled by the window to stay in integers:
	// counts < 2^32 and windows < 2^27 ms cannot overflow.
	rate := uint64(s.prev)*uint64(l.window-elapsed) + uint64(s.cur)*uint64(l.window)
	limited = rate > l.limit*uint64(l.window)
	sh.mu.Unlock()
	return limited
}

func find(set []rateSlot, key uint64) *rateSlot {
	for i := range set {
		if set[i].key == key {
			return &set[i]
		}
	}
	return nil
}

// evict picks the slot a new key takes in a full set: a free one, else one
// whose windows are over (forgetting it loses nothing), else the least
// active key, which then starts again from zero. Evicting can only make a
// key look slower than it is: an overloaded table lets bots through, it
// never flags a client for another client's traffic.
func (l *limiter) evict(set []rateSlot, w int64) *rateSlot {
	best, bestScore := 0, uint64(math.MaxUint64)
	for i := range set {
		s := &set[i]
		if s.key == 0 {
			return s
		}
		score := uint64(0)
		if w-s.win < 2 {
			score = 1 + uint64(s.cur) + uint64(s.prev)
		}
		if score < bestScore {
			best, bestScore = i, score
		}
	}
	if bestScore > 0 {
		l.evictions.Add(1)
	}
	return &set[best]
}

func satInc(n uint32) uint32 {
	if n == math.MaxUint32 {
		return n
	}
	return n + 1
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// mix64 is the murmur3 finaliser: every input bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// ipKey is the rate key of a client address: the IPv4 address, or its IPv6
// network of v6Bits bits.
func ipKey(a netip.Addr, v6Bits int) uint64 {
	if a.Is4() {
		b := a.As4()
		return 4<<56 | uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	}
	b := a.As16()
	var hi, lo uint64
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	switch {
	case v6Bits <= 0:
		hi, lo = 0, 0
	case v6Bits < 64:
		hi &^= ^uint64(0) >> v6Bits
		lo = 0
	case v6Bits < 128:
		lo &^= ^uint64(0) >> (v6Bits - 64)
	}
	return mix64(hi) ^ lo ^ 6<<56
}

package geo

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
)

// setBits and ways size the cache: 1<<setBits sets of ways 8-byte slots
// (512 KiB), a set in half a CPU cache line. The sets cannot be fewer:
// the set index supplies the key bits that the 50-bit tag of a slot
// leaves out (see cache).
const (
	setBits = 14
	ways    = 4
)

// Key kinds. A /24 (IPv4) or /48 (IPv6) is cached whole when the database
// network that holds the address is at least that wide, which is the
// common case; otherwise the wide entry is marked split and the address
// is cached alone (IPv4 /32) or with its /64 (IPv6). IPv6 networks longer
// than /64 are not cached.
const (
	kind24 = iota // IPv4 /24
	kind32        // IPv4 address
	kind48        // IPv6 /48
	kind64        // IPv6 /64
)

// Slot layout, low bits first: kind (2), valid (1), split (1), country
// code (10), tag (50). A zero slot is empty.
const (
	slotKind    = 3
	slotValid   = 1 << 2
	slotSplit   = 1 << 3
	slotCodeOff = 4
	slotTagOff  = setBits // the tag takes the 64-setBits bits above
	tagMask     = 1<<(64-setBits) - 1
)

// cache remembers the country of recently seen networks. It is a 4-way
// set-associative table of atomic words: a lookup is at most four atomic
// loads from one CPU cache line and writes nothing, so lookups on many
// cores share the table without bouncing cache lines. A miss stores its
// answer in the first slot of its set and shifts the others down, evicting
// the last (first in, first out per set). Ways keep addresses that share a
// set from evicting each other on every lookup: with one way, one address
// in twenty of a working set of 4096 missed every time; with two, one in
// a hundred; with four, about one in a thousand.
//
// Entries are exact, never a fingerprint: the key is multiplied by an odd
// constant, which is a bijection on 64 bits, so the set index (the top
// setBits of the product) and the tag (the rest) together identify the
// key. A random multiplier per cache keeps clients from choosing
// addresses that all fall in one set.
//
// Concurrent misses on one set may lose an entry or store one twice;
// both only cost a later lookup, since every slot is self-describing and
// the database never changes under the cache.
type cache struct {
	mult uint64
	sets [1 << setBits][ways]atomic.Uint64
}

func newCache() *cache {
	return &cache{mult: rand.Uint64() | 1}
}

// set returns the set of key and the slot word that key would have,
// without its value bits.
func (c *cache) set(kind int, key uint64) (*[ways]atomic.Uint64, uint64) {
	h := (key ^ uint64(kind)<<62) * c.mult
	return &c.sets[h>>(64-setBits)], (h&tagMask)<<slotTagOff | slotValid | uint64(kind)
}

// holds reports whether slot word w is the entry whose identity is id.
func holds(w, id uint64) bool {
	const identity = tagMask<<slotTagOff | slotValid | slotKind
	return w&identity == id
}

// load returns the word cached for key, if any.
func (c *cache) load(kind int, key uint64) (uint64, bool) {
	s, id := c.set(kind, key)
	for i := range s {
		if w := s[i].Load(); holds(w, id) {
			return w, true
		}
	}
	return 0, false
}

func (c *cache) store(kind int, key uint64, code uint16, split bool) {
	s, id := c.set(kind, key)
	w := id | uint64(code)<<slotCodeOff
	if split {
		w |= slotSplit
	}
	for i := range s {
		if old := s[i].Load(); old == 0 || holds(old, id) {
			s[i].Store(w)
			return
		}
	}
	for i := len(s) - 1; i > 0; i-- {
		s[i].Store(s[i-1].Load())
	}
	s[0].Store(w)
}

func wordCode(w uint64) uint16 { return uint16(w>>slotCodeOff) & 0x3ff }

// keys returns the wide and narrow cache keys of a (unmapped) address.
func keys(addr netip.Addr) (wideKind int, wide uint64, narrowKind int, narrow uint64) {
	if addr.Is4() {
		a := addr.As4()
		v := uint64(binary.BigEndian.Uint32(a[:]))
		return kind24, v >> 8, kind32, v
	}
	a := addr.As16()
	hi := binary.BigEndian.Uint64(a[:8])
	return kind48, hi >> 16, kind64, hi
}

// get returns the cached country code of addr.
func (c *cache) get(addr netip.Addr) (uint16, bool) {
	wk, wide, nk, narrow := keys(addr)
	w, ok := c.load(wk, wide)
	if !ok {
		return 0, false
	}
	if w&slotSplit != 0 {
		if w, ok = c.load(nk, narrow); !ok {
			return 0, false
		}
	}
	return wordCode(w), true
}

// put caches code for addr, whose database network has the given prefix
// length (in bits of its own address family).
func (c *cache) put(addr netip.Addr, bits int, code uint16) {
	wk, wide, nk, narrow := keys(addr)
	wideBits, narrowBits := 24, 32
	if wk == kind48 {
		wideBits, narrowBits = 48, 64
	}
	if bits <= wideBits {
		c.store(wk, wide, code, false)
		return
	}
	c.store(wk, wide, 0, true)
	if bits <= narrowBits {
		c.store(nk, narrow, code, false)
	}
}

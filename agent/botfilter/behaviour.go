package botfilter

import (
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// Behavioural signals of browser clients: what a request does, besides
// what its user agent says. Each has its own reason; those that could
// hide real people are off by default (README.md says what each costs).
//
//	no_script     a page's pageview beacon from a client that fetched no
//	              t.js in the last 30 to 60 seconds
//	client_hints  Sec-CH-UA headers that contradict the user agent
//	zero_time     pageviews of one visitor in a row with no time between
//
// No signal keeps anything beyond the minute it is used in: no_script and
// zero_time remember clients in generations of generationLength, looked
// up in the current and the previous generation and dropped after that,
// so an entry lives less than two generations (60 s); entries are keyed
// by a hash under a random seed of their generation, which dies with it.
// client_hints keeps nothing.

// generationLength is how long one generation of the behaviour memory
// takes new entries. An entry is readable for at least this long and
// dropped before twice this long.
const generationLength = 30 * time.Second

// memory remembers keys for less than two generations. It is bounded in
// entries; a full generation takes no more and says so (full), and the
// signals that read it then give no verdict rather than a wrong one.
type memory[V any] struct {
	max int

	mu        sync.Mutex
	gen       int64 // index of the current generation: unix time / generationLength
	cur, prev memoryGen[V]
	// expiry drops the generations once they are over, so that nothing
	// stays in memory for want of a later event. Armed only while entries
	// are held.
	expiry *time.Timer
	now    func() time.Time
	closed bool

	overflows atomic.Uint64
}

type memoryGen[V any] struct {
	seed    maphash.Seed
	entries map[uint64]V
	full    bool
}

func newMemory[V any](max int, now func() time.Time) *memory[V] {
	return &memory[V]{max: max, now: now}
}

func newMemoryGen[V any]() memoryGen[V] {
	return memoryGen[V]{seed: maphash.MakeSeed(), entries: map[uint64]V{}}
}

// rotate moves the memory to generation g. The caller holds m.mu.
func (m *memory[V]) rotate(g int64) {
	switch {
	case g == m.gen && m.cur.entries != nil:
		return
	case g == m.gen+1 && m.cur.entries != nil:
		m.prev, m.cur = m.cur, newMemoryGen[V]()
	default:
		m.prev, m.cur = memoryGen[V]{}, newMemoryGen[V]()
	}
	m.gen = g
}

func generation(t time.Time) int64 { return t.UnixNano() / int64(generationLength) }

// get returns the value of key in the current or previous generation,
// and whether a generation that may have held it overflowed (when the
// answer is "not found", that answer is then unreliable).
func (m *memory[V]) get(key string) (v V, found, unsure bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rotate(generation(m.now()))
	for _, g := range []*memoryGen[V]{&m.cur, &m.prev} {
		if g.entries == nil {
			continue
		}
		if v, ok := g.entries[maphash.String(g.seed, key)]; ok {
			return v, true, false
		}
		unsure = unsure || g.full
	}
	return v, false, unsure
}

// put stores key in the current generation; a full generation refuses it
// and marks itself full.
func (m *memory[V]) put(key string, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rotate(generation(m.now()))
	h := maphash.String(m.cur.seed, key)
	if _, ok := m.cur.entries[h]; !ok && len(m.cur.entries) >= m.max {
		m.cur.full = true
		m.overflows.Add(1)
		return
	}
	m.cur.entries[h] = v
	m.armExpiry()
}

// update replaces the value of key in the current generation with fn of
// its value in the current or previous one, under one lock. A full
// generation refuses new keys (fn's result is then dropped).
func (m *memory[V]) update(key string, fn func(v V, found bool) V) V {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rotate(generation(m.now()))
	var v V
	found := false
	for _, g := range []*memoryGen[V]{&m.cur, &m.prev} {
		if g.entries == nil {
			continue
		}
		if old, ok := g.entries[maphash.String(g.seed, key)]; ok {
			v, found = old, true
			break
		}
	}
	v = fn(v, found)
	h := maphash.String(m.cur.seed, key)
	if _, ok := m.cur.entries[h]; !ok && len(m.cur.entries) >= m.max {
		m.cur.full = true
		m.overflows.Add(1)
		return v
	}
	m.cur.entries[h] = v
	m.armExpiry()
	return v
}

// armExpiry makes sure a timer drops the memory's generations when they
// are over. The caller holds m.mu.
func (m *memory[V]) armExpiry() {
	if m.expiry != nil || m.closed {
		return
	}
	// The current generation is unreadable two generations after it began.
	end := time.Unix(0, (m.gen+2)*int64(generationLength))
	m.expiry = time.AfterFunc(end.Sub(m.now()), m.expire)
}

// expire drops every generation that is over and re-arms the timer while
// entries remain.
func (m *memory[V]) expire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expiry = nil
	m.rotate(generation(m.now()))
	if len(m.cur.entries) > 0 || len(m.prev.entries) > 0 {
		m.armExpiry()
	}
}

// size returns the entries held, over both generations.
func (m *memory[V]) size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.cur.entries) + len(m.prev.entries)
}

func (m *memory[V]) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.expiry != nil {
		m.expiry.Stop()
		m.expiry = nil
	}
	m.cur, m.prev = memoryGen[V]{}, memoryGen[V]{}
}

// clientKey is the key of a client for no_script: its address (an IPv6
// client's /64, whose host part privacy extensions change) and its user
// agent, which t.js's fetch and the beacon share.
func clientKey(ip, ua string) string {
	a, err := netip.ParseAddr(ip)
	if err == nil {
		a = a.Unmap()
		if a.Is6() {
			p, _ := a.Prefix(64)
			a = p.Addr()
		}
		ip = a.String()
	}
	return ip + "\x00" + TruncateUA(ua)
}

// zeroTimeState is what zero_time remembers of a visitor: the time of its
// last pageview and how many pageviews in a row came too soon.
type zeroTimeState struct {
	last   int64
	streak uint32
}

// behaviour holds the behavioural signals of a Filter; nil parts are off.
type behaviour struct {
	cfg     Behaviour
	scripts *memory[struct{}]
	visits  *memory[zeroTimeState]
	// on is set when any signal is on.
	on bool
}

func newBehaviour(cfg Behaviour, now func() time.Time) *behaviour {
	b := &behaviour{cfg: cfg, on: cfg.NoScript || cfg.ClientHints || cfg.ZeroTime.Pageviews > 0}
	if cfg.NoScript {
		b.scripts = newMemory[struct{}](cfg.Slots, now)
	}
	if cfg.ZeroTime.Pageviews > 0 {
		b.visits = newMemory[zeroTimeState](cfg.Slots, now)
	}
	return b
}

// ScriptFetched records that the client at ip with user agent ua fetched
// t.js (a 200 or a 304), for no_script. It does nothing when no_script is
// off. Safe for concurrent use.
func (f *Filter) ScriptFetched(ip, ua string) {
	if f.behaviour.scripts != nil {
		f.behaviour.scripts.put(clientKey(ip, ua), struct{}{})
	}
}

// CheckRequest is CheckEvent with what the event's HTTP request says:
// typ is the event type and req the request's signals (nil for events of
// logs and imports, which only zero_time then judges). It implements
// event.RequestBotFilter.
func (f *Filter) CheckRequest(ua, ip string, visitor uint64, unixMillis int64, typ string, req *event.BrowserRequest) string {
	return f.check(ua, ip, visitor, unixMillis, f.cfg.RateTime == RateTimeReceive, typ, req)
}

// behaviourReason returns the reason the behaviour of the event's client
// gives, or "".
func (f *Filter) behaviourReason(ua, ip string, visitor uint64, unixMillis int64, typ string, req *event.BrowserRequest) string {
	b := f.behaviour
	if req != nil && req.SecCHUA != "" {
		// Chromium writes its brands as it names them: no case folding
		// (and no allocation) needed.
		if strings.Contains(req.SecCHUA, `"HeadlessChrome"`) {
			return ReasonHeadless
		}
		if b.cfg.ClientHints && hintsContradict(ua, req) {
			return ReasonHints
		}
	}
	if b.scripts != nil && req != nil && req.Page && typ == "pageview" && ip != "" {
		if _, found, unsure := b.scripts.get(clientKey(ip, ua)); !found && !unsure {
			return ReasonNoScript
		}
	}
	if b.visits != nil && visitor != 0 && typ == "pageview" {
		minGap := b.cfg.ZeroTime.MinGap.Milliseconds()
		st := b.visits.update(strconv.FormatUint(visitor, 16), func(st zeroTimeState, found bool) zeroTimeState {
			if gap := unixMillis - st.last; found && gap >= 0 && gap < minGap {
				st.streak++
			} else {
				st.streak = 0
			}
			st.last = unixMillis
			return st
		})
		if st.streak+1 >= uint32(b.cfg.ZeroTime.Pageviews) {
			return ReasonZeroTime
		}
	}
	return ""
}

// hintsContradict reports whether a request's client hints contradict its
// user agent. Only Chromium browsers send Sec-CH-UA, and they send their
// own major version and platform in it. The checks leave alone what real
// browsers do: Chrome's "request desktop site" on Android sends a desktop
// Linux user agent with platform "Android" and mobile ?0, and brands other
// than Chromium's own (Edge, Opera, Samsung) carry their own versions.
func hintsContradict(ua string, req *event.BrowserRequest) bool {
	lower := strings.ToLower(TruncateUA(ua))
	chrome := productMajor(lower, "chrome/")
	if chrome < 0 {
		// A browser that names no Chrome version in its user agent
		// (Firefox, Safari) sends no hints: a Chromium browser pretending.
		return true
	}
	if v := brandMajor(req.SecCHUA, "Chromium"); v >= 0 && v != chrome {
		return true
	}
	if strings.TrimSpace(req.SecCHUAMobile) == "?1" && !strings.Contains(lower, "mobile") && !strings.Contains(lower, "android") {
		return true
	}
	platform := strings.ToLower(strings.Trim(strings.TrimSpace(req.SecCHUAPlatform), `"`))
	switch platform {
	case "windows":
		return !strings.Contains(lower, "windows")
	case "macos":
		return !strings.Contains(lower, "macintosh")
	case "android":
		return !strings.Contains(lower, "android") && !strings.Contains(lower, "linux")
	case "chrome os", "chromeos":
		return !strings.Contains(lower, "cros")
	case "linux":
		return !strings.Contains(lower, "linux") && !strings.Contains(lower, "x11")
	}
	return false
}

// productMajor returns the major version of the product that starts with
// prefix ("chrome/") in ua, or -1.
func productMajor(ua, prefix string) int {
	i := strings.Index(ua, prefix)
	if i < 0 {
		return -1
	}
	return leadingInt(ua[i+len(prefix):])
}

// brandMajor returns the version of brand in a Sec-CH-UA list
// (`"Chromium";v="124", "Google Chrome";v="124"`), or -1.
func brandMajor(list, brand string) int {
	for item := range strings.SplitSeq(list, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(item), ";")
		if strings.Trim(strings.TrimSpace(name), `"`) != brand {
			continue
		}
		_, v, ok := strings.Cut(params, "v=")
		if !ok {
			return -1
		}
		return leadingInt(strings.Trim(strings.TrimSpace(v), `"`))
	}
	return -1
}

func leadingInt(s string) int {
	n, digits := 0, 0
	for ; digits < len(s) && digits < 6 && s[digits] >= '0' && s[digits] <= '9'; digits++ {
		n = n*10 + int(s[digits]-'0')
	}
	if digits == 0 {
		return -1
	}
	return n
}

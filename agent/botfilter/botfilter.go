// Package botfilter decides at the edge whether an event comes from a bot,
// so bots are counted by reason and never shown as traffic.
//
// A Filter runs layers cheapest first; the first that matches names the
// reason, and an event no layer matches is traffic ("").
//
//  1. Lists from the configuration: deny (reason deny_list) wins over
//     allow, and an allowed event skips every later layer.
//  2. The user agent: a structural model of browsers' user agents and
//     one rule per reason (rules.go: headless, crawler, ua_contact,
//     ua_placeholder, ua_suffix, ua_tool), and optionally a missing user
//     agent (empty_ua). Verdicts of steps 1 and 2, which depend on the
//     user agent alone, are cached per distinct string (its first
//     MaxUserAgentBytes bytes).
//  3. Datacenter address ranges loaded from CIDR files (datacenter).
//  4. Behavioural signals of browser clients (no_script, client_hints,
//     zero_time; behaviour.go), off by default.
//  5. Per-IP and per-visitor sliding-window rate limits in fixed-size
//     tables (rate_ip, rate_visitor).
//
// README.md documents the configuration keys, the evaluation of the user
// agent layer and the trade-offs of each layer.
package botfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// Reasons an event is filtered. They are label values in metrics and field
// names in InfluxDB (bots_<reason>), so they are short snake_case and must
// not change.
const (
	ReasonDenyList = "deny_list"
	// User-agent rules (rules.go), one reason per rule.
	ReasonHeadless      = "headless"
	ReasonCrawler       = "crawler"
	ReasonUAContact     = "ua_contact"
	ReasonUAPlaceholder = "ua_placeholder"
	ReasonUASuffix      = "ua_suffix"
	ReasonUATool        = "ua_tool"
	ReasonEmptyUA       = "empty_ua"
	ReasonDatacenter    = "datacenter"
	// Behaviour of browser clients (behaviour.go), off by default.
	ReasonNoScript    = "no_script"
	ReasonHints       = "client_hints"
	ReasonZeroTime    = "zero_time"
	ReasonRateIP      = "rate_ip"
	ReasonRateVisitor = "rate_visitor"
)

// Reasons returns every reason a Filter can give, in layer order, so that
// metrics and dashboards can declare them up front.
func Reasons() []string {
	return []string{ReasonDenyList, ReasonHeadless, ReasonCrawler, ReasonUAContact, ReasonUAPlaceholder,
		ReasonUASuffix, ReasonUATool, ReasonEmptyUA, ReasonDatacenter, ReasonNoScript, ReasonHints,
		ReasonZeroTime, ReasonRateIP, ReasonRateVisitor}
}

// Filter classifies events. It is safe for concurrent use; its lists and
// ranges are fixed at Open, its caches and rate tables bounded in memory.
type Filter struct {
	cfg Config
	ua  *uaLayer
	// Address layers; nil when not configured (a nil set contains nothing).
	deny, allow, datacenter *rangeSet
	// datacenterDate is when the oldest datacenter file's data was
	// published (zero when no file says).
	datacenterDate time.Time
	// Behavioural signals; their parts are nil when off.
	behaviour *behaviour
	// Rate layers; nil when off.
	rateIP, rateVisitor *limiter
	// needIP is set when some layer looks at the address, so that events
	// are not parsed for nothing.
	needIP bool

	unparsedIPs atomic.Uint64
}

// Open validates cfg, reads its CIDR files and returns a Filter. Its
// errors name the configuration key or the file and line at fault.
func Open(cfg Config) (*Filter, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bot filter configuration: %w", err)
	}
	f := &Filter{cfg: cfg, ua: newUALayer(cfg, defaultLexicon)}
	var err error
	if f.deny, _, err = netSet(cfg.Deny.CIDRs, nil); err != nil {
		return nil, fmt.Errorf("deny.cidrs: %w", err)
	}
	if f.allow, _, err = netSet(cfg.Allow.CIDRs, nil); err != nil {
		return nil, fmt.Errorf("allow.cidrs: %w", err)
	}
	if f.datacenter, f.datacenterDate, err = netSet(cfg.Datacenter.CIDRs, cfg.Datacenter.Files); err != nil {
		return nil, fmt.Errorf("datacenter: %w", err)
	}
	f.behaviour = newBehaviour(cfg.Behaviour, cfg.Clock)
	if cfg.RateIP.Events > 0 {
		f.rateIP = newLimiter(cfg.RateIP.Rate)
	}
	if cfg.RateVisitor.Events > 0 {
		f.rateVisitor = newLimiter(cfg.RateVisitor)
	}
	f.needIP = f.deny != nil || f.allow != nil || f.datacenter != nil || f.rateIP != nil
	return f, nil
}

// New is Open for configurations written in code, such as tests: it
// panics when Open fails. Operator configuration goes through Open.
func New(cfg Config) *Filter {
	f, err := Open(cfg)
	if err != nil {
		panic(err)
	}
	return f
}

// netSet builds the set of inline networks and the networks of files, or
// nil when there are none, and returns the oldest data date of the files
// (zero when none says).
func netSet(inline, files []string) (*rangeSet, time.Time, error) {
	nets, err := parseNets(inline)
	if err != nil {
		return nil, time.Time{}, err
	}
	var errs []error
	var oldest time.Time
	for _, path := range files {
		more, date, err := readNetFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !date.IsZero() && (oldest.IsZero() || date.Before(oldest)) {
			oldest = date
		}
		nets = append(nets, more...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, time.Time{}, err
	}
	if len(nets) == 0 {
		return nil, oldest, nil
	}
	return newRangeSet(nets), oldest, nil
}

// Check returns the reason an event with this user agent and client IP is
// a bot, or "" for traffic. It implements event.BotFilter. Without a
// visitor the per-visitor limit does not apply, and without an event time
// the per-IP limit counts the event at Config.Clock's time: prefer
// CheckEvent.
func (f *Filter) Check(ua, ip string) string {
	return f.check(ua, ip, 0, 0, true, "", nil)
}

// CheckEvent returns the reason an event is a bot, or "" for traffic.
// visitor is the event's visitor hash (0 for none) and unixMillis its own
// time. The rate limits count the event at that time (unless rate_time is
// "receive"), so replaying or backfilling events reaches the same verdicts
// as receiving them live. It does not allocate once the user agent is in
// the cache.
func (f *Filter) CheckEvent(ua, ip string, visitor uint64, unixMillis int64) string {
	return f.check(ua, ip, visitor, unixMillis, f.cfg.RateTime == RateTimeReceive, "", nil)
}

// Close stops the timers that drop what the behavioural signals remember,
// and drops it. The Filter keeps working without them. Safe to call twice.
func (f *Filter) Close() {
	if m := f.behaviour.scripts; m != nil {
		m.close()
	}
	if m := f.behaviour.visits; m != nil {
		m.close()
	}
}

func (f *Filter) check(ua, ip string, visitor uint64, unixMillis int64, receiveTime bool, typ string, req *event.BrowserRequest) string {
	v := f.ua.verdict(ua)
	var addr netip.Addr
	if f.needIP && ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			f.unparsedIPs.Add(1)
		} else {
			addr = a.Unmap()
		}
	}

	// 1. Lists.
	if v == verdictDeny || f.deny.contains(addr) {
		return ReasonDenyList
	}
	if v == verdictAllow || f.allow.contains(addr) {
		return ""
	}
	// 2. User agent.
	if r := v.reason(); r != "" {
		return r
	}
	if ua == "" && f.cfg.FlagEmptyUA {
		return ReasonEmptyUA
	}
	// 3. Datacenter.
	if f.datacenter.contains(addr) {
		return ReasonDatacenter
	}
	// 4. Behaviour of browser clients: only when a signal is on or the
	// request carries client hints (a HeadlessChrome brand).
	if f.behaviour.on || req != nil && req.SecCHUA != "" {
		if r := f.behaviourReason(ua, ip, visitor, unixMillis, typ, req); r != "" {
			return r
		}
	}
	// 5. Rates. Both tables count the event, so each sees its key's
	// whole rate whichever flags it.
	if receiveTime && (f.rateIP != nil || f.rateVisitor != nil) {
		unixMillis = f.cfg.Clock().UnixMilli()
	}
	overIP := f.rateIP != nil && addr.IsValid() && f.rateIP.add(ipKey(addr, f.cfg.RateIP.IPv6Prefix), unixMillis)
	overVisitor := f.rateVisitor != nil && visitor != 0 && f.rateVisitor.add(visitor, unixMillis)
	switch {
	case overIP:
		return ReasonRateIP
	case overVisitor:
		return ReasonRateVisitor
	}
	return ""
}

// Stats are counters of a Filter since Open.
type Stats struct {
	// CacheHits and CacheMisses count user-agent verdict cache lookups.
	// Hits are sampled (one in 32 lookups is counted, as 32) so that
	// lookups write no shared memory: exact in expectation only.
	CacheHits, CacheMisses uint64
	// UnparsedIPs counts events whose IP was set but not an address; the
	// address layers skip them.
	UnparsedIPs uint64
	// DatacenterRanges is the number of merged datacenter ranges loaded.
	DatacenterRanges int
	// DatacenterDate is when the oldest datacenter file's data was
	// published, from its "# data-date:" comment; zero when none says.
	DatacenterDate time.Time
	// CacheBytes is what the verdict cache holds, charged as it is
	// bounded (cache_bytes).
	CacheBytes int
	// BehaviourClients is how many clients the behavioural signals
	// remember now (less than a minute each); BehaviourOverflows counts
	// clients they could not remember because a generation was full.
	BehaviourClients   int
	BehaviourOverflows uint64
	// RateIPEvictions and RateVisitorEvictions count active keys forgotten
	// because their rate table was full: when they grow, raise slots.
	RateIPEvictions, RateVisitorEvictions uint64
	// RateIPLate and RateVisitorLate count events older than their key's
	// previous window, not counted by the rate limits.
	RateIPLate, RateVisitorLate uint64
}

// Stats returns the filter's counters.
func (f *Filter) Stats() Stats {
	var s Stats
	s.CacheHits, s.CacheMisses = f.ua.cache.stats()
	s.UnparsedIPs = f.unparsedIPs.Load()
	s.DatacenterRanges = f.datacenter.size()
	s.DatacenterDate = f.datacenterDate
	s.CacheBytes = f.ua.cache.bytes()
	if m := f.behaviour.scripts; m != nil {
		s.BehaviourClients += m.size()
		s.BehaviourOverflows += m.overflows.Load()
	}
	if m := f.behaviour.visits; m != nil {
		s.BehaviourClients += m.size()
		s.BehaviourOverflows += m.overflows.Load()
	}
	if l := f.rateIP; l != nil {
		s.RateIPEvictions, s.RateIPLate = l.evictions.Load(), l.late.Load()
	}
	if l := f.rateVisitor; l != nil {
		s.RateVisitorEvictions, s.RateVisitorLate = l.evictions.Load(), l.late.Load()
	}
	return s
}

// CacheStats returns verdict cache hits and misses.
func (f *Filter) CacheStats() (hits, misses uint64) { return f.ua.cache.stats() }

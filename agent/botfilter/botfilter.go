// Package botfilter decides at the edge whether an event comes from a bot,
// so bots are counted by reason and never shown as traffic.
//
// A Filter runs layers cheapest first; the first that matches names the
// reason, and an event no layer matches is traffic ("").
//
//  1. Lists from the configuration: deny (reason deny_list) wins over
//     allow, and an allowed event skips every later layer.
//  2. The user agent: headless browsers and automation tools (headless),
//     crawlerdetect's list of crawlers and the generic rules of generic.go
//     (crawler), and optionally a missing user agent (empty_ua). Verdicts
//     of steps 1 and 2 that depend on the user agent alone are cached per
//     distinct string.
//  3. Datacenter address ranges loaded from CIDR files (datacenter).
//  4. Per-IP and per-visitor sliding-window rate limits in fixed-size
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
	if f.deny, err = netSet(cfg.Deny.CIDRs, nil); err != nil {
		return nil, fmt.Errorf("deny.cidrs: %w", err)
	}
	if f.allow, err = netSet(cfg.Allow.CIDRs, nil); err != nil {
		return nil, fmt.Errorf("allow.cidrs: %w", err)
	}
	if f.datacenter, err = netSet(cfg.Datacenter.CIDRs, cfg.Datacenter.Files); err != nil {
		return nil, fmt.Errorf("datacenter: %w", err)
	}
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
// nil when there are none.
func netSet(inline, files []string) (*rangeSet, error) {
	nets, err := parseNets(inline)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, path := range files {
		more, err := readNetFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		nets = append(nets, more...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(nets) == 0 {
		return nil, nil
	}
	return newRangeSet(nets), nil
}

// Check returns the reason an event with this user agent and client IP is
// a bot, or "" for traffic. It implements event.BotFilter. Without a
// visitor the per-visitor limit does not apply, and without an event time
// the per-IP limit counts the event at Config.Clock's time: prefer
// CheckEvent.
func (f *Filter) Check(ua, ip string) string {
	return f.check(ua, ip, 0, 0, true)
}

// CheckEvent returns the reason an event is a bot, or "" for traffic.
// visitor is the event's visitor hash (0 for none) and unixMillis its own
// time. The rate limits count the event at that time (unless rate_time is
// "receive"), so replaying or backfilling events reaches the same verdicts
// as receiving them live. It does not allocate once the user agent is in
// the cache.
func (f *Filter) CheckEvent(ua, ip string, visitor uint64, unixMillis int64) string {
	return f.check(ua, ip, visitor, unixMillis, f.cfg.RateTime == RateTimeReceive)
}

func (f *Filter) check(ua, ip string, visitor uint64, unixMillis int64, receiveTime bool) string {
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
	// 4. Rates. Both tables count the event, so each sees its key's
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

package botfilter

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Config tunes a Filter. Zero fields take the values of DefaultConfig, so
// Config{} is the default filter: user-agent layer only. The yaml tags are
// the keys under `bots:` in the agent configuration (see README.md).
type Config struct {
	// CacheSize bounds the user-agent verdict cache, in distinct user
	// agents (it holds at most about 1.25 × CacheSize, a few hundred bytes
	// each). Default 65536. A full cache shard is dropped whole (1/16 of
	// the entries): crude but bounded, and rare while the working set of
	// user agents is smaller than the cache.
	CacheSize int `yaml:"cache_size"`
	// CacheBytes bounds the same cache in bytes: user agents are cached by
	// their first MaxUserAgentBytes bytes, each charged its length plus 64
	// bytes. Default 16 MiB; it holds at most about 1.25 × this.
	CacheBytes int `yaml:"cache_bytes"`
	// FlagEmptyUA treats events without a user agent as bots (reason
	// empty_ua). Default false: server-side imports often have none.
	FlagEmptyUA bool `yaml:"flag_empty_ua"`

	// Allow lists clients that are never bots: known-good partners whose
	// tools would otherwise look automated. Nothing else is checked for
	// them, rate limits included. Your own uptime monitor belongs in Deny.
	Allow List `yaml:"allow"`
	// Deny lists clients that are always bots (reason deny_list). Deny
	// wins over Allow when both match.
	Deny List `yaml:"deny"`

	// Datacenter flags events from hosting and cloud address ranges
	// (reason datacenter).
	Datacenter Datacenter `yaml:"datacenter"`

	// RateIP flags events beyond a per-IP rate (reason rate_ip).
	RateIP IPRate `yaml:"rate_ip"`
	// RateVisitor flags events beyond a per-visitor rate (reason
	// rate_visitor). It needs CheckEvent: Check has no visitor.
	RateVisitor Rate `yaml:"rate_visitor"`
	// RateTime is the clock of the rate limits: "event" (the default) counts
	// each event at its own time, so batches, backfills and replays get the
	// same verdicts as live traffic; "receive" counts it at Clock's time, so
	// a client cannot spread its events by back-dating them. See README.md.
	RateTime string `yaml:"rate_time"`

	// Behaviour turns on the behavioural signals of browser clients
	// (reasons no_script, client_hints, zero_time). All are off by
	// default: each can hide real people, see README.md.
	Behaviour Behaviour `yaml:"behaviour"`

	// Clock is the time of events checked with Check, which carries no
	// event time. Nil means time.Now. CheckEvent uses the event's own time.
	Clock func() time.Time `yaml:"-"`
}

// List is an allow or deny list. An entry matches when any of its parts
// does.
type List struct {
	// UA are substrings of the user agent, matched ignoring ASCII case.
	UA []string `yaml:"ua"`
	// UARegex are regular expressions (Go RE2 syntax) matched against the
	// whole user agent as sent; write (?i) for case-insensitivity.
	UARegex []string `yaml:"ua_regex"`
	// CIDRs are networks (203.0.113.0/24, 2001:db8::/32) or single
	// addresses.
	CIDRs []string `yaml:"cidrs"`
}

// Datacenter configures the datacenter layer.
type Datacenter struct {
	// Files are CIDR lists, one network or address per line, `#` starting
	// a comment. Operators feed them the ranges their providers publish
	// (AWS ip-ranges.json, GCP cloud.json, Azure service tags, Oracle,
	// DigitalOcean, Hetzner, OVH...) converted to that format; Tally ships
	// no list because they change weekly. Read once, at Open.
	Files []string `yaml:"files"`
	// CIDRs are more networks, written inline.
	CIDRs []string `yaml:"cidrs"`
}

// Behaviour configures the behavioural signals. They keep what they
// remember of a client for less than a minute.
type Behaviour struct {
	// NoScript flags a page's pageview beacon (a POST /v1/events with an
	// Origin or Sec-Fetch-Site header) from a client (address and user
	// agent) that fetched no t.js in the last 30 to 60 seconds. It needs
	// browser.script_max_age 0 so that browsers revalidate t.js on every
	// page (a 304), and t.js served by the agent itself, not a CDN.
	NoScript bool `yaml:"no_script"`
	// ClientHints flags requests whose Sec-CH-UA headers contradict the
	// user agent (a Chromium browser that claims to be Firefox or another
	// Chrome version, platform or form factor). People who change their
	// user agent with an extension are flagged too. A HeadlessChrome
	// brand is flagged headless whatever this says.
	ClientHints bool `yaml:"client_hints"`
	// ZeroTime flags the pageviews of a visitor that come in a row with
	// no time between them.
	ZeroTime ZeroTime `yaml:"zero_time"`
	// Slots bounds what no_script and zero_time each remember per 30 s
	// generation, in clients (about 50 bytes each). Past it they stop
	// flagging until the next generation rather than guess. Default
	// 65536.
	Slots int `yaml:"slots"`
}

// ZeroTime is the zero-time visit signal.
type ZeroTime struct {
	// Pageviews is how many pageviews of one visitor in a row, each less
	// than MinGap after the one before, make the last one a bot's: 0 (the
	// default) turns the signal off, else 2 or more (e.g. 3).
	Pageviews int `yaml:"pageviews"`
	// MinGap is the least time a person spends on a page before the next
	// one. Default 1s; between 100ms and 1m.
	MinGap time.Duration `yaml:"min_gap"`
}

// Rate is one sliding-window rate limit.
type Rate struct {
	// Events is the most events one key may send in Window; the events
	// beyond it are flagged until the rate falls back under it. 0 (the
	// default) turns the limit off.
	Events int `yaml:"events"`
	// Window is the length of the sliding window. Default 1m; between 1s
	// and 24h.
	Window time.Duration `yaml:"window"`
	// Slots bounds the memory: how many keys are tracked at once, at 24
	// bytes each. Default 65536 (1.5 MiB). Past it the least active keys
	// are forgotten, so an overloaded table under-counts and lets traffic
	// through rather than flag it; see README.md.
	Slots int `yaml:"slots"`
}

// IPRate is the per-IP rate limit.
type IPRate struct {
	Rate `yaml:",inline"`
	// IPv6Prefix counts IPv6 clients per network of this many bits, since
	// one host usually holds a whole /64. Default 64. IPv4 clients are
	// counted per address.
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

// DefaultConfig returns the defaults: a 65536-entry verdict cache, empty
// user agents not flagged, no lists, no datacenter ranges, rate limits off
// (with a 1m window, 65536 slots and event time once turned on).
func DefaultConfig() Config {
	return Config{
		CacheSize:   65536,
		CacheBytes:  16 << 20,
		RateIP:      IPRate{Rate: Rate{Window: time.Minute, Slots: 65536}, IPv6Prefix: 64},
		RateVisitor: Rate{Window: time.Minute, Slots: 65536},
		RateTime:    RateTimeEvent,
		Behaviour:   Behaviour{Slots: 65536, ZeroTime: ZeroTime{MinGap: time.Second}},
	}
}

// Values of Config.RateTime.
const (
	RateTimeEvent   = "event"
	RateTimeReceive = "receive"
)

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.CacheSize == 0 {
		c.CacheSize = d.CacheSize
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = d.CacheBytes
	}
	c.RateIP.Rate = c.RateIP.withDefaults(d.RateIP.Rate)
	if c.RateIP.IPv6Prefix == 0 {
		c.RateIP.IPv6Prefix = d.RateIP.IPv6Prefix
	}
	c.RateVisitor = c.RateVisitor.withDefaults(d.RateVisitor)
	if c.RateTime == "" {
		c.RateTime = d.RateTime
	}
	if c.Behaviour.Slots == 0 {
		c.Behaviour.Slots = d.Behaviour.Slots
	}
	if c.Behaviour.ZeroTime.MinGap == 0 {
		c.Behaviour.ZeroTime.MinGap = d.Behaviour.ZeroTime.MinGap
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

func (r Rate) withDefaults(d Rate) Rate {
	if r.Window == 0 {
		r.Window = d.Window
	}
	if r.Slots == 0 {
		r.Slots = d.Slots
	}
	return r
}

// Limits of the knobs, also named by Validate.
const (
	maxCacheSize  = 1 << 24
	minCacheBytes = 64 << 10
	maxCacheBytes = 4 << 30
	maxRateEvents = 1_000_000_000
	minWindow     = time.Second
	maxWindow     = 24 * time.Hour
	minSlots      = rateShards * rateWays
	maxSlots      = 1 << 26
)

// Validate reports every problem of the configuration at once, after
// defaults are applied to zero fields. Keys are named as in YAML. It reads
// no files: Open does, and reports the files it cannot use.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.CacheSize < 0 || c.CacheSize > maxCacheSize {
		bad("cache_size %d: want 1 to %d (0 for the default)", c.CacheSize, maxCacheSize)
	}
	if c.CacheBytes < minCacheBytes || c.CacheBytes > maxCacheBytes {
		bad("cache_bytes %d: want %d to %d (0 for the default)", c.CacheBytes, minCacheBytes, maxCacheBytes)
	}
	for _, l := range []struct {
		name string
		list List
	}{{"allow", c.Allow}, {"deny", c.Deny}} {
		for i, s := range l.list.UA {
			if strings.TrimSpace(s) == "" {
				bad("%s.ua[%d]: empty substring would match every user agent", l.name, i)
			}
		}
		for i, s := range l.list.UARegex {
			if _, err := regexp.Compile(s); err != nil {
				bad("%s.ua_regex[%d] %q: %v", l.name, i, s, err)
			} else if regexp.MustCompile(s).MatchString("") {
				bad("%s.ua_regex[%d] %q: matches the empty string, so every user agent", l.name, i, s)
			}
		}
		for i, s := range l.list.CIDRs {
			if _, err := parseNet(s); err != nil {
				bad("%s.cidrs[%d]: %v", l.name, i, err)
			}
		}
	}
	for i, p := range c.Datacenter.Files {
		if strings.TrimSpace(p) == "" {
			bad("datacenter.files[%d]: empty path", i)
		}
	}
	for i, s := range c.Datacenter.CIDRs {
		if _, err := parseNet(s); err != nil {
			bad("datacenter.cidrs[%d]: %v", i, err)
		}
	}
	for _, r := range []struct {
		name string
		rate Rate
	}{{"rate_ip", c.RateIP.Rate}, {"rate_visitor", c.RateVisitor}} {
		if r.rate.Events < 0 || r.rate.Events > maxRateEvents {
			bad("%s.events %d: want 1 to %d, or 0 to turn the limit off", r.name, r.rate.Events, maxRateEvents)
		}
		if r.rate.Window < minWindow || r.rate.Window > maxWindow {
			bad("%s.window %v: want %v to %v", r.name, r.rate.Window, minWindow, maxWindow)
		}
		if r.rate.Slots < minSlots || r.rate.Slots > maxSlots {
			bad("%s.slots %d: want %d to %d", r.name, r.rate.Slots, minSlots, maxSlots)
		}
	}
	if c.RateTime != RateTimeEvent && c.RateTime != RateTimeReceive {
		bad("rate_time %q: want %q or %q", c.RateTime, RateTimeEvent, RateTimeReceive)
	}
	if b := c.Behaviour; b.Slots < 1 || b.Slots > maxSlots {
		bad("behaviour.slots %d: want 1 to %d", b.Slots, maxSlots)
	}
	if z := c.Behaviour.ZeroTime; z.Pageviews < 0 || z.Pageviews == 1 || z.Pageviews > 1000 {
		bad("behaviour.zero_time.pageviews %d: want 2 to 1000, or 0 to turn the signal off", z.Pageviews)
	}
	if z := c.Behaviour.ZeroTime; z.MinGap < 100*time.Millisecond || z.MinGap > time.Minute {
		bad("behaviour.zero_time.min_gap %v: want 100ms to 1m0s", z.MinGap)
	}
	if c.RateIP.IPv6Prefix < 1 || c.RateIP.IPv6Prefix > 128 {
		bad("rate_ip.ipv6_prefix %d: want 1 to 128", c.RateIP.IPv6Prefix)
	}
	return errors.Join(errs...)
}

package event

import (
	"math"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// Placeholder values for absent dimensions. They are real tag values in
// InfluxDB (which drops empty tags) and in the API.
const (
	NoCampaign = "(none)"
	NoSource   = "(direct)"
	NoMedium   = "(none)"
	NoCountry  = "ZZ"
	NoDevice   = "unknown"
	// DeviceBot is the device class of events the bot filter caught.
	DeviceBot = "bot"
)

// Devices is the closed set of device classes: what DeviceOf returns,
// DeviceBot and NoDevice. An event's own device field must name one of
// them (in any case); anything else counts as NoDevice.
var Devices = []string{"desktop", "mobile", "tablet", DeviceBot, NoDevice}

// Event is a validated, normalised event: everything the minute aggregator
// needs and nothing that identifies a person (the visitor is a salted hash).
type Event struct {
	Series sketch.Series
	// UnixMillis is the event time.
	UnixMillis int64
	// Visitor is the salted visitor hash; 0 when there is none.
	Visitor uint64
	// ValueMicros is the conversion value, CostMicros the spend, both in
	// micro-units.
	ValueMicros int64
	CostMicros  int64
	// HasValue is set when the event carried a value (so zero revenue
	// still lands in the quantile sketch).
	HasValue bool
	// Bot is the reason the event was filtered, or "" for real traffic.
	Bot string
	// Vote is the sketch.VoteKey of a poll_vote's poll and answer; "" for
	// other types.
	Vote string
	// Weight is how many events this one stands for (an ad network's
	// "120,000 impressions" row); 0 means 1.
	Weight uint64
	// Row, when not 0, makes the event an imported row: it becomes a
	// contribution of its own with this id (see RowID) and version
	// RowVersion, so importing the same row again replaces it instead of
	// adding to it.
	Row        uint64
	RowVersion uint64
	// Hash is HashSeries(&Series), or 0 when not computed yet. The
	// cardinality guard sets it once the series is final, so the rollup
	// need not hash it again; it is not journaled.
	Hash uint64
}

// Count returns how many events e stands for.
func (e *Event) Count() uint64 {
	if e.Weight == 0 {
		return 1
	}
	return e.Weight
}

// Context is what the normaliser needs besides the event itself. Sources
// do not fill it by hand: agent/source.Env builds it, so every source
// normalises alike.
type Context struct {
	// Now is the time of receipt, used when ts is absent.
	Now time.Time
	// Region is this agent's region label.
	Region string
	// ClientIP and UserAgent are the request's: the browser's own, or
	// what a trusted proxy forwarded. Empty for inputs that carry their
	// own (log lines, imports) and for authenticated server senders,
	// whose HTTP library's user agent says nothing about the visitor.
	ClientIP  string
	UserAgent string
	// TrustBody believes the event's own ip and ua fields (server
	// senders, trusted proxies, log lines). Without it they are ignored
	// and counted in Counters.IdentityIgnored: an anonymous client could
	// otherwise forge countries, dodge deny-lists and inflate uniques.
	TrustBody bool
	// Hasher hashes visitors; nil leaves every Visitor 0.
	Hasher Hasher
	// Bots classifies events; nil classifies none as bots.
	Bots BotFilter
	// Counters, if not nil, counts what normalisation replaced.
	Counters *Counters
	// MaxAge rejects events older than Now-MaxAge; MaxSkew rejects events
	// later than Now+MaxSkew.
	MaxAge, MaxSkew time.Duration
	// Devices caches device classes per user agent; nil classifies every
	// time.
	Devices *DeviceCache
	// Geo gives events without a valid country one from the client IP;
	// nil leaves them NoCountry.
	Geo Geo
	// Request is what the HTTP request says for the bot filter's
	// behavioural signals; nil for logs and imports.
	Request *BrowserRequest
}

// BrowserRequest is what an HTTP request says about its client besides
// its address and user agent, for the bot filter's behavioural signals.
type BrowserRequest struct {
	// Page is set when a page sent the request: it carries an Origin or a
	// Sec-Fetch-Site header, as browsers' beacons and fetches do.
	Page bool
	// SecCHUA, SecCHUAMobile and SecCHUAPlatform are the request's
	// Sec-CH-UA, Sec-CH-UA-Mobile and Sec-CH-UA-Platform headers.
	SecCHUA, SecCHUAMobile, SecCHUAPlatform string
}

// RequestBotFilter is a BotFilter that also judges the event's type and
// request (zero-time visits, beacons without t.js, client hints). When the
// filter implements it, Normalize calls CheckRequest instead of
// CheckEvent; req is Context.Request.
type RequestBotFilter interface {
	CheckRequest(ua, ip string, visitor uint64, unixMillis int64, typ string, req *BrowserRequest) string
}

// Hasher turns a visitor identity into a salted hash. Implementations must
// be safe for concurrent use.
type Hasher interface {
	// Visitor hashes an explicit visitor id seen at the given time.
	Visitor(unixMillis int64, id string) uint64
	// Anonymous hashes (ip, ua, site) for events without a visitor id.
	Anonymous(unixMillis int64, ip, ua, site string) uint64
}

// Geo maps a client IP to a country. Implementations must be safe for
// concurrent use and must not block; *geo.DB is one.
type Geo interface {
	// Country returns the ISO 3166-1 alpha-2 code of ip in upper case, or "".
	Country(ip string) string
}

// BotFilter decides whether an event comes from a bot. Implementations must
// be safe for concurrent use.
type BotFilter interface {
	// CheckEvent returns the reason the event is a bot, or "". visitor is
	// the salted visitor hash (0 when none) and unixMillis the event time,
	// for per-visitor rate limits.
	CheckEvent(ua, ip string, visitor uint64, unixMillis int64) string
}

// Normalize validates r and fills e. It returns an *Error naming the field
// when the event cannot be accepted. It keeps none of r's IP, UA, URL,
// Referrer and Visitor strings in e (sources may point them into buffers
// they reuse), nor do the caches it calls. A device outside the closed set or a
// country that is not an ISO 3166-1 alpha-2 code is not an error: the
// event counts with NoDevice or NoCountry, and c.Counters says how often.
func Normalize(r *Raw, c *Context, e *Event) error {
	typ, ok := knownType(r.Type)
	if !ok {
		if r.Type == "" {
			return fieldErr("type", "missing_type", "required")
		}
		return fieldErr("type", "unknown_type", "unknown type %q", truncate(r.Type, 40))
	}
	now := c.Now.UnixMilli()
	ts := now
	if r.TS.Set {
		ts = r.TS.UnixMillis
		if c.MaxSkew > 0 && ts > now+c.MaxSkew.Milliseconds() {
			return fieldErr("ts", "ts_future", "more than %s in the future", c.MaxSkew)
		}
		if c.MaxAge > 0 && ts < now-c.MaxAge.Milliseconds() {
			return fieldErr("ts", "ts_too_old", "older than the accepted age of %s", c.MaxAge)
		}
	}
	*e = Event{UnixMillis: ts}

	campaign, source, medium := r.Campaign, r.Source, r.Medium
	var site string
	if r.URL != "" && (campaign == "" || source == "" || medium == "" || r.Visitor == "") {
		var query string
		site, query = splitURL(r.URL)
		if query != "" && (campaign == "" || source == "" || medium == "") {
			utm(query, &campaign, &source, &medium)
		}
	}

	if r.Value != nil {
		if math.IsNaN(*r.Value) || math.IsInf(*r.Value, 0) || math.Abs(*r.Value) > 1e12 {
			return fieldErr("value", "bad_value", "must be a finite amount below 1e12")
		}
		e.ValueMicros = sketch.ToMicros(*r.Value)
		e.HasValue = true
	}
	if r.Cost != nil {
		if math.IsNaN(*r.Cost) || math.IsInf(*r.Cost, 0) || math.Abs(*r.Cost) > 1e12 {
			return fieldErr("cost", "bad_cost", "must be a finite amount below 1e12")
		}
		if *r.Cost < 0 && typ != "cost" {
			// A credit corrects spend: it belongs on a cost event. On
			// other series cost only grows, which lets the aggregator
			// store their cost fields only once they are not zero.
			return fieldErr("cost", "bad_cost", "a negative cost (a credit) is only taken on a cost event")
		}
		e.CostMicros = sketch.ToMicros(*r.Cost)
	}
	if typ == "cost" && r.Cost == nil {
		return fieldErr("cost", "missing_cost", "required for a cost event")
	}
	if typ == PollVote {
		answer := cleanVoteLabel(r.Answer, "")
		if answer == "" {
			return fieldErr("answer", "missing_answer", "required for a poll_vote event")
		}
		e.Vote = sketch.VoteKey(cleanVoteLabel(r.Poll, NoPoll), answer)
	}

	ip, ua := c.ClientIP, c.UserAgent
	if c.TrustBody {
		if r.IP != "" {
			ip = r.IP
		}
		if r.UA != "" {
			ua = r.UA
		}
	} else if (r.IP != "" || r.UA != "") && c.Counters != nil {
		c.Counters.IdentityIgnored.Add(1)
	}
	if len(ua) > MaxUserAgent {
		// Before any cache sees it: caches key on the user agent.
		ua = cutUTF8(ua, MaxUserAgent)
		if c.Counters != nil {
			c.Counters.UATruncated.Add(1)
		}
	}

	e.Series = sketch.Series{
		Campaign: cleanDim(campaign, NoCampaign),
		Source:   cleanDim(source, NoSource),
		Medium:   cleanDim(medium, NoMedium),
		Type:     typ,
		Country:  country(r.Country, ip, c.Geo, c.Counters),
		Region:   c.Region,
	}
	explicitDevice := r.Device != ""
	if explicitDevice {
		e.Series.Device = cleanDevice(r.Device, c.Counters)
	} else {
		e.Series.Device = c.Devices.Device(ua)
	}

	// Cost events describe spend, not people: no visitor, never a bot.
	if typ != "cost" && c.Hasher != nil {
		if r.Visitor != "" {
			e.Visitor = c.Hasher.Visitor(ts, r.Visitor)
		} else if ip != "" || ua != "" {
			e.Visitor = c.Hasher.Anonymous(ts, ip, ua, site)
		}
	}
	if c.Bots != nil && typ != "cost" {
		if rf, ok := c.Bots.(RequestBotFilter); ok {
			e.Bot = rf.CheckRequest(ua, ip, e.Visitor, ts, typ, c.Request)
		} else {
			e.Bot = c.Bots.CheckEvent(ua, ip, e.Visitor, ts)
		}
		if e.Bot != "" && !explicitDevice {
			e.Series.Device = DeviceBot
		}
	}
	return nil
}

// MaxUserAgent is the longest user agent kept, in bytes. Real browsers
// send 100 to 300; longer ones are cut before they reach the device and
// bot caches, so a client cannot grow them with megabyte headers.
const MaxUserAgent = 512

// TruncateUserAgent cuts ua to MaxUserAgent bytes (at a character
// boundary), as Normalize does, for sources that hand a request's user
// agent to the bot filter themselves.
func TruncateUserAgent(ua string) string {
	if len(ua) > MaxUserAgent {
		return cutUTF8(ua, MaxUserAgent)
	}
	return ua
}

// Counters count what normalisation replaced or ignored. Safe for
// concurrent use; the agent exports them as metrics.
type Counters struct {
	// UnknownDevice counts device fields outside Devices, counted as
	// NoDevice.
	UnknownDevice atomic.Uint64
	// UnknownCountry counts country fields that are not ISO 3166-1
	// alpha-2 codes, counted as NoCountry.
	UnknownCountry atomic.Uint64
	// UATruncated counts user agents cut to MaxUserAgent.
	UATruncated atomic.Uint64
	// IdentityIgnored counts events whose ip or ua fields were ignored
	// because the sender is not trusted to give them.
	IdentityIgnored atomic.Uint64
}

// country is the event's own country when it names one, else the client
// IP's, else NoCountry.
func country(field, ip string, g Geo, n *Counters) string {
	if strings.TrimSpace(field) != "" {
		cc := CleanCountry(field)
		if cc == NoCountry && n != nil && !strings.EqualFold(strings.TrimSpace(field), NoCountry) {
			n.UnknownCountry.Add(1)
		}
		if cc != NoCountry || g == nil || ip == "" {
			return cc
		}
	}
	if g == nil || ip == "" {
		return NoCountry
	}
	// The database is the operator's, but its codes still pass the same
	// closed set (some carry EU or AP for continents).
	if cc := CleanCountry(g.Country(ip)); cc != "" {
		return cc
	}
	return NoCountry
}

// cleanDevice maps a device field to one of Devices, or NoDevice.
func cleanDevice(s string, n *Counters) string {
	s = strings.TrimSpace(s)
	for _, d := range Devices {
		if strings.EqualFold(s, d) {
			return d
		}
	}
	if n != nil {
		n.UnknownDevice.Add(1)
	}
	return NoDevice
}

// cutUTF8 cuts s to at most n bytes without ending inside a UTF-8
// sequence.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && s[len(s)-1]&0xC0 == 0x80 {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xC0 {
		s = s[:len(s)-1]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// DeviceOf classifies a user agent as mobile, tablet or desktop. It is a
// deliberately small heuristic; an explicit device field wins over it, and
// events the bot filter catches are classed DeviceBot.
func DeviceOf(ua string) string {
	if ua == "" {
		return NoDevice
	}
	switch {
	case containsFold(ua, "ipad"), containsFold(ua, "tablet"),
		containsFold(ua, "android") && !containsFold(ua, "mobile"):
		return "tablet"
	case containsFold(ua, "mobi"), containsFold(ua, "iphone"), containsFold(ua, "ipod"):
		return "mobile"
	}
	return "desktop"
}

// containsFold reports whether s contains sub, ignoring ASCII case. sub
// must be lower-case ASCII. It does not allocate; checking the first byte
// before comparing keeps it fast on long user agents.
func containsFold(s, sub string) bool {
	n := len(sub)
	if n == 0 {
		return true
	}
	first := sub[0]
	for i := 0; i+n <= len(s); i++ {
		if lower(s[i]) != first {
			continue
		}
		j := 1
		for j < n && lower(s[i+j]) == sub[j] {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// splitURL returns the host and the query of a URL without allocating:
// the agent sees one per event, and url.Parse costs more than the rest of
// normalisation.
func splitURL(u string) (host, query string) {
	rest := u
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		host = rest[:end]
		if at := strings.LastIndexByte(host, '@'); at >= 0 {
			host = host[at+1:]
		}
		rest = rest[end:]
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		query = rest[i+1:]
	}
	return host, query
}

// utm fills the empty ones of campaign, source and medium from the
// utm_campaign, utm_source and utm_medium parameters of query. The first
// occurrence of a parameter wins, as url.Values.Get does.
func utm(query string, campaign, source, medium *string) {
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		key, value, _ := strings.Cut(pair, "=")
		var dst *string
		switch key {
		case "utm_campaign":
			dst = campaign
		case "utm_source":
			dst = source
		case "utm_medium":
			dst = medium
		default:
			continue
		}
		if *dst != "" {
			continue
		}
		if strings.ContainsAny(value, "%+") {
			v, err := url.QueryUnescape(value)
			if err != nil {
				continue
			}
			value = v
		}
		if value == "" {
			continue
		}
		// A copy: the URL may point into a buffer the source reuses
		// (Normalize keeps none of the request's strings), while the
		// value becomes a series label.
		*dst = strings.Clone(value)
	}
}

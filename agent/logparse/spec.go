package logparse

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/tally-edge/tally/agent/event"
)

// Format names accepted in Spec.Format.
const (
	// FormatCombined is the nginx and Apache "combined" format. Extra
	// space-separated fields after the user agent (as in the official
	// nginx image's "main" format) are ignored.
	FormatCombined = "combined"
	// FormatCommon is the Common Log Format (combined without referrer and
	// user agent). It also reads combined lines, ignoring their tail.
	FormatCommon = "common"
	// FormatNginx is any nginx log_format, given in Spec.NginxFormat.
	FormatNginx = "nginx"
	// FormatJSON is one flat JSON object per line (nginx escape=json and
	// most JSON access logs), keys mapped by Spec.JSONFields.
	FormatJSON = "json"
)

// TypeSkip is the rule type that drops the requests a rule matches.
const TypeSkip = "skip"

// MaxLineBytes is the longest line Parse accepts; longer lines fail with
// CodeTooLong. A reader should cut lines at this size too so one runaway
// line cannot make it buffer without bound.
const MaxLineBytes = 64 << 10

// Spec describes one log source: its line format, how requests map to
// events, and which proxies are trusted. Every field but Format has a
// usable zero value (its default), so a Spec decoded from YAML needs no
// pre-filling. Spec is meant to be embedded in the agent configuration as
// one entry of sources.logs (the yaml tags are the configuration keys).
type Spec struct {
	// Format is "combined", "common", "nginx" or "json". Required.
	Format string `yaml:"format"`
	// NginxFormat is the log_format of an "nginx" source: either the bare
	// format or a pasted directive, e.g.
	//   log_format main '$remote_addr - [$time_local] "$request" ' '$status';
	// Only with format "nginx".
	NginxFormat string `yaml:"nginx_format"`
	// JSONFields maps a field role (time, remote_addr, request, ...) to the
	// JSON key holding it, replacing that role's default keys. Only with
	// format "json"; see DefaultJSONFields.
	JSONFields map[string]string `yaml:"json_fields"`
	// Site is the host used to build Raw.URL when a line names none (no
	// $host, $http_host or absolute request URI), e.g. "www.example.com".
	// Set it for combined logs so visitors hash the same as events sent over
	// HTTP with full URLs. Default "": Raw.URL is then the path only.
	Site string `yaml:"site"`
	// Scheme is the URL scheme used with a host when the line has no
	// $scheme. "http" or "https"; default "https".
	Scheme string `yaml:"scheme"`
	// TrustedProxies are the CIDRs of proxies in front of the web server.
	// When $remote_addr is one of them, the client is the right-most
	// untrusted address of $http_x_forwarded_for. Leave empty when the
	// server already logs the client (nginx realip module). Default none.
	TrustedProxies []netip.Prefix `yaml:"trusted_proxies"`
	// Rules map requests to event types, in order: the first rule whose
	// conditions all hold decides. Requests no rule matches go to
	// DefaultRule.
	Rules []Rule `yaml:"rules"`
	// DefaultRule decides requests no rule matched: by default, successful
	// GETs of pages are pageviews and everything else is skipped.
	DefaultRule DefaultRule `yaml:"default_rule"`
}

// Rule maps matching requests to an event type. All conditions that are
// set must hold. Match and Regex test the path as logged (still
// percent-encoded, without the query).
type Rule struct {
	// Name labels the rule in error messages. Optional.
	Name string `yaml:"name"`
	// Match is a path prefix ending at a segment boundary: "/click"
	// matches "/click", "/click/ad-7", not "/clicks". A prefix ending in
	// "/" matches anything below it. At most one of Match and Regex.
	Match string `yaml:"match"`
	// Regex is an RE2 regular expression searched in the path (anchor it
	// with ^ and $ for an exact match). It is slower than Match.
	Regex string `yaml:"regex"`
	// Methods lists the HTTP methods accepted. Default: any.
	Methods []string `yaml:"methods"`
	// Status lists the statuses accepted: classes ("2xx") or codes
	// ("204"). Default 2xx and 3xx; for a "skip" rule, any status.
	Status []string `yaml:"status"`
	// Type is the event type (see event.Types) or "skip" to drop the
	// request. Required unless TypeParam is set, in which case it is the
	// type used when that parameter is absent.
	Type string `yaml:"type"`
	// TypeParam names a query parameter holding the event type (e.g. the
	// "e" of /t.gif?e=click). An unknown type fails with CodeBadType.
	TypeParam string `yaml:"type_param"`
	// ValueParam names the query parameter holding Raw.Value (conversion
	// revenue). A non-number fails the line with CodeBadValue.
	ValueParam string `yaml:"value_param"`
	// CostParam names the query parameter holding Raw.Cost. A non-number
	// fails the line with CodeBadCost. A "cost" rule needs it; on any
	// other rule a negative amount (a credit) fails the event, which only
	// a cost event may carry (event.Normalize).
	CostParam string `yaml:"cost_param"`
	// CampaignParam names a query parameter read before utm_campaign.
	CampaignParam string `yaml:"campaign_param"`
	// SourceParam names a query parameter read before utm_source.
	SourceParam string `yaml:"source_param"`
	// MediumParam names a query parameter read before utm_medium.
	MediumParam string `yaml:"medium_param"`
	// ContentParam names a query parameter read before utm_content.
	ContentParam string `yaml:"content_param"`
	// TermParam names a query parameter read before utm_term.
	TermParam string `yaml:"term_param"`
}

// DefaultRule decides requests that no Rule matched. A nil (absent) list
// takes its standard value from StandardDefaultRule; an empty list ([] in
// YAML) means none.
type DefaultRule struct {
	// Type is the event of accepted requests, or "skip" to produce events
	// only from explicit rules. Default "pageview".
	Type string `yaml:"type"`
	// Methods accepted. Default [GET]: HEAD, OPTIONS and POST are not page
	// views.
	Methods []string `yaml:"methods"`
	// Status accepted, as in Rule.Status. Default [2xx, 304]: other 3xx are
	// redirects whose target is logged (and counted) on its own line, and
	// 4xx/5xx are failures, not views.
	Status []string `yaml:"status"`
	// Extensions of page paths, lower case with the dot; "" is a path
	// without one ("/", "/products/shoe"). Anything else (.css, .js, .png,
	// .ico, robots.txt, ...) is an asset and skipped. "*" accepts any.
	Extensions []string `yaml:"extensions"`
	// SkipPaths are path prefixes (with Rule.Match semantics) that are
	// never pages: APIs, health checks, well-known files.
	SkipPaths []string `yaml:"skip_paths"`
}

// StandardDefaultRule returns the default rule with every field filled in:
// successful GETs of HTML-looking paths are pageviews.
func StandardDefaultRule() DefaultRule {
	return DefaultRule{
		Type:    "pageview",
		Methods: []string{"GET"},
		Status:  []string{"2xx", "304"},
		Extensions: []string{"", ".html", ".htm", ".shtml", ".xhtml", ".php", ".asp", ".aspx",
			".jsp", ".do", ".cfm"},
		SkipPaths: []string{"/api", "/graphql", "/.well-known", "/cdn-cgi", "/_next", "/wp-admin",
			"/wp-json", "/xmlrpc.php", "/health", "/healthz", "/livez", "/readyz", "/metrics",
			"/server-status", "/nginx_status"},
	}
}

// DefaultSpec returns a combined-format spec with the standard default
// rule, no explicit rules and no trusted proxies.
func DefaultSpec() Spec {
	return Spec{Format: FormatCombined, Scheme: "https", DefaultRule: StandardDefaultRule()}
}

// Validate reports every problem in s at once, each naming the field at
// fault (e.g. `rules[2] "checkout": regex "(": ...`).
func (s Spec) Validate() error {
	_, err := s.compile()
	return err
}

// compiled is the immutable result of compiling a Spec; Parsers share it.
type compiled struct {
	prog    *program // combined, common, nginx
	json    *jsonKeys
	rules   []rule
	def     defaultRule
	trusted []netip.Prefix
	site    string
	scheme  string
}

// rule is a compiled Rule.
type rule struct {
	prefix  string
	re      *regexp.Regexp
	methods []string // nil: any
	status  statusSet
	typ     string // canonical event type, "" when only typeParam gives it
	skip    bool
	// params names the query parameters of each slot read before the
	// standard ones ("" when unset).
	params [numSlots]string
}

type defaultRule struct {
	typ     string
	skip    bool
	methods []string
	status  statusSet
	exts    []string
	anyExt  bool
	// skipPaths holds the skip prefixes by their second byte (the one
	// after the leading '/'), so a path is checked only against the few
	// that can match it; skipAll holds the prefix "/", if given.
	skipPaths [256][]string
	skipAll   bool
}

// statusSet is a bitmap of the statuses 0..1023.
type statusSet [16]uint64

func (s *statusSet) has(code int) bool {
	return code >= 0 && code < 1024 && s[code>>6]&(1<<(code&63)) != 0
}

func (s *statusSet) add(lo, hi int) {
	for c := lo; c <= hi; c++ {
		s[c>>6] |= 1 << (c & 63)
	}
}

// parseStatusSet compiles entries like "2xx" and "304".
func parseStatusSet(list []string) (statusSet, error) {
	var s statusSet
	for i, e := range list {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case len(e) == 3 && e[0] >= '1' && e[0] <= '5' && e[1:] == "xx":
			base := int(e[0]-'0') * 100
			s.add(base, base+99)
		default:
			n, err := strconv.Atoi(e)
			if err != nil || len(e) != 3 || n < 100 || n > 599 {
				return s, fmt.Errorf("[%d] %q: want a class like 2xx or a code like 304", i, list[i])
			}
			s.add(n, n)
		}
	}
	return s, nil
}

func canonicalType(t string) (string, bool) {
	for _, k := range event.Types {
		if k == t {
			return k, true
		}
	}
	return "", false
}

func checkMethods(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for i, m := range list {
		u := strings.ToUpper(strings.TrimSpace(m))
		if !validMethod([]byte(u)) {
			return nil, fmt.Errorf("[%d] %q: not an HTTP method", i, m)
		}
		out = append(out, u)
	}
	return out, nil
}

func checkPathPrefix(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q: must start with /", p)
	}
	if strings.ContainsAny(p, "? \t") {
		return fmt.Errorf("%q: a path prefix holds no query or spaces", p)
	}
	return nil
}

func checkParam(p string) error {
	if p != "" && (strings.ContainsAny(p, "&= \t#?") || len(p) > 64) {
		return fmt.Errorf("%q: not a query parameter name", p)
	}
	return nil
}

// compile validates s and builds what Parsers share. It reports every
// problem, joined.
func (s *Spec) compile() (*compiled, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	c := &compiled{site: s.Site, scheme: s.Scheme}

	var err error
	switch s.Format {
	case FormatCombined, FormatCommon:
		src := combinedFormat
		if s.Format == FormatCommon {
			src = commonFormat
		}
		if c.prog, err = compileFormat(src); err != nil {
			bad("format %s: %w", s.Format, err) // a bug, but say so rather than panic
		}
	case FormatNginx:
		if strings.TrimSpace(s.NginxFormat) == "" {
			bad("nginx_format: required with format nginx")
		} else if c.prog, err = compileFormat(s.NginxFormat); err != nil {
			bad("nginx_format: %w", err)
		}
	case FormatJSON:
		if c.json, err = compileJSONKeys(s.JSONFields); err != nil {
			bad("json_fields: %w", err)
		}
	case "":
		bad("format: required (combined, common, nginx or json)")
	default:
		bad("format %q: want combined, common, nginx or json", s.Format)
	}
	if s.NginxFormat != "" && s.Format != FormatNginx {
		bad("nginx_format: only used with format nginx (format is %q)", s.Format)
	}
	if len(s.JSONFields) > 0 && s.Format != FormatJSON {
		bad("json_fields: only used with format json (format is %q)", s.Format)
	}

	if c.site != "" && !validHost([]byte(c.site)) {
		bad("site %q: want a host name, optionally with :port (no scheme or path)", s.Site)
	}
	switch s.Scheme {
	case "":
		c.scheme = "https"
	case "http", "https":
	default:
		bad("scheme %q: want http or https", s.Scheme)
	}

	for i, p := range s.TrustedProxies {
		if !p.IsValid() {
			bad("trusted_proxies[%d]: not a CIDR", i)
			continue
		}
		c.trusted = append(c.trusted, p.Masked())
	}
	if len(c.trusted) > 0 && c.prog != nil && !c.prog.has(roleXFF) {
		bad("trusted_proxies: the format logs no $http_x_forwarded_for, so the client behind a proxy is unknown")
	}

	for i := range s.Rules {
		r, rerrs := compileRule(&s.Rules[i])
		where := fmt.Sprintf("rules[%d]", i)
		if s.Rules[i].Name != "" {
			where += fmt.Sprintf(" %q", s.Rules[i].Name)
		}
		for _, e := range rerrs {
			bad("%s: %w", where, e)
		}
		c.rules = append(c.rules, r)
	}
	d, derrs := compileDefault(s.DefaultRule)
	for _, e := range derrs {
		bad("default_rule.%w", e)
	}
	c.def = d
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func compileRule(r *Rule) (rule, []error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var out rule
	if r.Match != "" && r.Regex != "" {
		bad("match and regex: set one, not both")
	}
	if r.Match != "" {
		if err := checkPathPrefix(r.Match); err != nil {
			bad("match %w", err)
		}
		out.prefix = r.Match
	}
	if r.Regex != "" {
		re, err := regexp.Compile(r.Regex)
		if err != nil {
			bad("regex %q: %w", r.Regex, err)
		}
		out.re = re
	}
	if len(r.Methods) > 0 {
		m, err := checkMethods(r.Methods)
		if err != nil {
			bad("methods%w", err)
		}
		out.methods = m
	}
	switch r.Type {
	case TypeSkip:
		out.skip = true
		if r.TypeParam != "" {
			bad("type_param: not with type skip")
		}
	case "":
		if r.TypeParam == "" {
			bad("type: required (an event type or skip) unless type_param is set")
		}
	default:
		t, ok := canonicalType(r.Type)
		if !ok {
			bad("type %q: want skip or one of %s", r.Type, strings.Join(event.Types, ", "))
		}
		out.typ = t
		if t == "cost" && r.CostParam == "" {
			bad("cost_param: required for a cost rule (a cost event without an amount is rejected)")
		}
	}
	if len(r.Status) > 0 {
		st, err := parseStatusSet(r.Status)
		if err != nil {
			bad("status%w", err)
		}
		out.status = st
	} else if out.skip {
		out.status.add(0, 1023)
	} else {
		out.status.add(200, 399)
	}
	params := [numSlots]struct{ key, val string }{
		slotCampaign: {"campaign_param", r.CampaignParam},
		slotSource:   {"source_param", r.SourceParam},
		slotMedium:   {"medium_param", r.MediumParam},
		slotContent:  {"content_param", r.ContentParam},
		slotTerm:     {"term_param", r.TermParam},
		slotValue:    {"value_param", r.ValueParam},
		slotCost:     {"cost_param", r.CostParam},
		slotType:     {"type_param", r.TypeParam},
	}
	for i, p := range params {
		if err := checkParam(p.val); err != nil {
			bad("%s %w", p.key, err)
		}
		out.params[i] = p.val
	}
	if out.skip {
		for _, p := range params[:slotType] {
			if p.val != "" {
				bad("%s: a skip rule produces no event to fill", p.key)
			}
		}
	}
	return out, errs
}

func compileDefault(d DefaultRule) (defaultRule, []error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	std := StandardDefaultRule()
	var out defaultRule
	switch d.Type {
	case "":
		out.typ = std.Type
	case TypeSkip:
		out.skip = true
	default:
		t, ok := canonicalType(d.Type)
		if !ok {
			bad("type %q: want skip or one of %s", d.Type, strings.Join(event.Types, ", "))
		}
		if t == "cost" {
			bad("type cost: the default rule has no cost amount to read")
		}
		out.typ = t
	}
	methods := d.Methods
	if methods == nil {
		methods = std.Methods
	}
	var err error
	if out.methods, err = checkMethods(methods); err != nil {
		bad("methods%w", err)
	}
	status := d.Status
	if status == nil {
		status = std.Status
	}
	if out.status, err = parseStatusSet(status); err != nil {
		bad("status%w", err)
	}
	exts := d.Extensions
	if exts == nil {
		exts = std.Extensions
	}
	for i, e := range exts {
		switch {
		case e == "*":
			out.anyExt = true
		case e == "" || (strings.HasPrefix(e, ".") && len(e) > 1 && len(e) <= 16 && !strings.ContainsAny(e, "/?; ")):
			out.exts = append(out.exts, strings.ToLower(e))
		default:
			bad("extensions[%d] %q: want \"\", \"*\" or a dot and a suffix like .html", i, e)
		}
	}
	skip := d.SkipPaths
	if skip == nil {
		skip = std.SkipPaths
	}
	for i, p := range skip {
		if err := checkPathPrefix(p); err != nil {
			bad("skip_paths[%d] %w", i, err)
		}
	}
	for _, p := range skip {
		if len(p) < 2 {
			out.skipAll = true
			continue
		}
		out.skipPaths[p[1]] = append(out.skipPaths[p[1]], p)
	}
	return out, errs
}

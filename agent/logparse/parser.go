package logparse

import (
	"bytes"
	"math"
	"net/netip"
	"strconv"
	"unsafe"

	"github.com/tally-edge/tally/agent/event"
)

// Parser turns access-log lines of one source into events. It holds
// per-line scratch space and small caches, so it is not safe for concurrent
// use: give every goroutine its own (Clone is cheap and shares the compiled
// format and rules).
type Parser struct {
	c       *compiled
	f       fields
	scratch []byte // unescaped fields and built URLs of the current line
	esc     bool   // the current text line holds a backslash (an escape)
	tc      timeCache
	intern  map[string]string // campaign, source, ... values seen recently
}

// Interning keeps the strings that outlive a line (the UTM dimensions) to
// one copy per distinct value: no allocation per line in the steady state.
// Both bounds keep a parser's memory small whatever the input.
const (
	maxInternLen     = 256
	maxInternEntries = 4096
)

// Compile validates spec and returns a Parser for it. The error reports
// every problem in spec, each naming its field (see Spec.Validate).
func Compile(spec Spec) (*Parser, error) {
	c, err := spec.compile()
	if err != nil {
		return nil, err
	}
	return newParser(c), nil
}

func newParser(c *compiled) *Parser {
	return &Parser{c: c, scratch: make([]byte, 0, 1024), intern: make(map[string]string, 64)}
}

// Clone returns a new Parser for the same spec, with its own buffers and
// caches, for use on another goroutine.
func (p *Parser) Clone() *Parser { return newParser(p.c) }

// fields holds the captured value of each role in the current line.
type fields struct {
	v   [numRoles][]byte
	set uint32
}

// put records the first value of a role; later ones are ignored.
func (f *fields) put(r role, b []byte) {
	if f.set&(1<<r) == 0 {
		f.v[r] = b
		f.set |= 1 << r
	}
}

func (f *fields) has(r role) bool { return f.set&(1<<r) != 0 }

// Parse reads one line (a trailing "\n" or "\r\n" is ignored) into r.
//
// It returns nil when the line is an event, an error matching ErrSkip
// when it is a well-formed line that maps to no event, and an *Error with
// a stable Code when it is malformed. Reason labels all three for metrics.
// Parse never panics, whatever the input. On a non-nil error r is left
// unchanged; on nil it is overwritten entirely.
//
// Ownership: r.IP, r.UA, r.URL and r.Referrer point into line or into the
// Parser's buffers, without copies. They stay valid only while line is not
// modified and until the next call to Parse on this Parser: use them (for
// example with event.Normalize, which keeps none of them) before reading
// the next line, or call Detach to keep r longer. All other fields (Type,
// Campaign, Source, Medium, Content, Term, Value, Cost) are owned by r and
// may be kept freely.
func (p *Parser) Parse(line []byte, r *event.Raw) error {
	for n := len(line); n > 0 && (line[n-1] == '\n' || line[n-1] == '\r'); n-- {
		line = line[:n-1]
	}
	if len(line) > MaxLineBytes {
		return newError(CodeTooLong, "line of "+strconv.Itoa(len(line))+" bytes is over the limit of "+strconv.Itoa(MaxLineBytes), nil)
	}
	if len(line) == 0 || line[0] <= ' ' && len(bytes.TrimSpace(line)) == 0 {
		return errSkipEmpty
	}
	p.scratch = p.scratch[:0]
	p.f.set = 0
	var err error
	if p.c.prog != nil {
		// One scan of the line instead of one per field: most lines hold
		// no escape at all.
		p.esc = bytes.IndexByte(line, '\\') >= 0
		err = p.c.prog.match(line, &p.f)
	} else {
		err = p.c.json.scan(line, &p.f, p)
	}
	if err != nil {
		return err
	}
	return p.finish(r)
}

// finish interprets the captured fields: validation first (so a malformed
// line is an error even when it would have been skipped), then rules, then
// the event.
func (p *Parser) finish(r *event.Raw) error {
	ms, err := p.eventTime()
	if err != nil {
		return err
	}
	status, err := p.status()
	if err != nil {
		return err
	}
	var q request
	if err := p.request(&q); err != nil {
		return err
	}
	rl, err := p.c.decide(q.method, q.path, status)
	if err != nil {
		return err
	}

	var pv params
	scanQuery(q.query, rl, &pv)
	typ := p.c.def.typ
	if rl != nil {
		typ = rl.typ
		if pv.prio[slotType] != 0 {
			v := p.decodeQuery(pv.v[slotType])
			t, ok := canonicalType(str(v))
			if !ok {
				return newError(CodeBadType, "unknown event type", v)
			}
			typ = t
		}
		if typ == "" {
			return errSkipRule
		}
	}
	value, err := p.amount(&pv, slotValue, CodeBadValue)
	if err != nil {
		return err
	}
	cost, err := p.amount(&pv, slotCost, CodeBadCost)
	if err != nil {
		return err
	}

	*r = event.Raw{
		Type:     typ,
		TS:       event.Time{UnixMillis: ms, Set: true},
		Campaign: p.dim(&pv, slotCampaign),
		Source:   p.dim(&pv, slotSource),
		Medium:   p.dim(&pv, slotMedium),
		Content:  p.dim(&pv, slotContent),
		Term:     p.dim(&pv, slotTerm),
		IP:       p.clientIP(),
		UA:       str(p.value(roleUA)),
		Referrer: str(p.value(roleReferer)),
		URL:      p.buildURL(&q),
		Value:    value,
		Cost:     cost,
	}
	return nil
}

// Detach copies the fields Parse leaves pointing into the line and the
// Parser (IP, UA, URL, Referrer) into one new allocation, so r may be kept
// after the line buffer is reused or Parse is called again.
func Detach(r *event.Raw) {
	if len(r.IP)+len(r.UA)+len(r.URL)+len(r.Referrer) == 0 {
		return
	}
	s := r.IP + r.UA + r.URL + r.Referrer // one allocation
	a, b, c := len(r.IP), len(r.IP)+len(r.UA), len(r.IP)+len(r.UA)+len(r.URL)
	r.IP, r.UA, r.URL, r.Referrer = s[:a], s[a:b], s[b:c], s[c:]
}

// str returns b as a string without copying. The caller guarantees b is
// not modified while the string is in use (see Parse on ownership).
func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// value returns the captured value of a role, unescaped, with the "-"
// placeholder read as absent (nil).
func (p *Parser) value(r role) []byte {
	if !p.f.has(r) {
		return nil
	}
	b := p.f.v[r]
	if len(b) == 1 && b[0] == '-' {
		return nil
	}
	if p.esc && bytes.IndexByte(b, '\\') >= 0 {
		b = p.unescapeLog(b)
	}
	return b
}

func (p *Parser) eventTime() (int64, error) {
	f := &p.f
	var parse func([]byte) (int64, bool)
	var b []byte
	switch {
	case f.has(roleTimeLocal):
		b, parse = f.v[roleTimeLocal], parseTimeLocal
	case f.has(roleTimeISO):
		b, parse = f.v[roleTimeISO], parseISO
	case f.has(roleMsec):
		b, parse = f.v[roleMsec], parseEpoch
	case f.has(roleTimeAny):
		b, parse = f.v[roleTimeAny], parseAnyTime
	default:
		return 0, newError(CodeBadTime, "no time field", nil)
	}
	if ms, ok := p.tc.lookup(b); ok {
		return ms, nil
	}
	ms, ok := parse(b)
	if !ok {
		return 0, newError(CodeBadTime, "cannot read time", b)
	}
	p.tc.store(b, ms)
	return ms, nil
}

func (p *Parser) status() (int, error) {
	if !p.f.has(roleStatus) {
		return 0, newError(CodeBadStatus, "no status field", nil)
	}
	b := p.f.v[roleStatus]
	if len(b) != 3 || !isDigit(b[0]) || !isDigit(b[1]) || !isDigit(b[2]) {
		return 0, newError(CodeBadStatus, "want three digits, got", b)
	}
	return int(b[0]-'0')*100 + int(b[1]-'0')*10 + int(b[2]-'0'), nil
}

// request is the request of a line, as slices of the line or scratch.
type request struct {
	method []byte
	path   []byte // without the query; empty for targets like "*"
	query  []byte // without the '?'
	// target is path?query as one slice when the line has it so (nil when
	// it comes from $uri and $args); full is the whole URL when the request
	// named one (absolute-form, as sent to proxies).
	target, full []byte
}

func (p *Parser) request(q *request) error {
	f := &p.f
	var target []byte
	if f.has(roleRequest) {
		line := p.value(roleRequest)
		if len(line) == 0 {
			return errSkipEmpty // nginx logs "-" for connections without a request
		}
		sp := bytes.IndexByte(line, ' ')
		if sp <= 0 {
			return newError(CodeBadRequest, "want METHOD TARGET [PROTOCOL], got", line)
		}
		q.method = line[:sp]
		rest := bytes.TrimLeft(line[sp+1:], " ")
		if j := bytes.LastIndexByte(rest, ' '); j >= 0 && bytes.HasPrefix(rest[j+1:], []byte("HTTP/")) {
			rest = bytes.TrimRight(rest[:j], " ")
		}
		if len(rest) == 0 {
			return newError(CodeBadRequest, "no target in request", line)
		}
		target = rest
	} else {
		if f.has(roleMethod) {
			if q.method = p.value(roleMethod); len(q.method) == 0 {
				return newError(CodeBadRequest, "empty method", nil)
			}
		}
		if target = p.value(roleRequestURI); len(target) == 0 {
			uri := p.value(roleURI)
			switch {
			case len(uri) == 0:
				return newError(CodeBadRequest, "no request, request_uri or uri field", nil)
			case bytes.IndexByte(uri, '?') >= 0 || uri[0] != '/':
				target = uri // json "uri" holding path and query
			default:
				q.path, q.query = uri, p.value(roleArgs)
				return p.checkMethod(q)
			}
		}
	}
	q.target = target
	switch {
	case target[0] == '/':
		q.path, q.query = splitQuery(target)
	case hasPrefixFold(target, "http://") || hasPrefixFold(target, "https://"):
		q.full = target
		rest := target[bytes.IndexByte(target, ':')+3:]
		i := bytes.IndexAny(rest, "/?")
		if i < 0 {
			q.path = []byte("/")
			q.target = nil
		} else {
			q.target = rest[i:]
			q.path, q.query = splitQuery(rest[i:])
			if len(q.path) == 0 {
				q.path = []byte("/")
			}
		}
	}
	// Anything else ("*", "host:443", garbage) keeps an empty path: no
	// rule with a path matches it and the default rule skips it.
	return p.checkMethod(q)
}

func (p *Parser) checkMethod(q *request) error {
	if q.method != nil && !validMethod(q.method) {
		return newError(CodeBadRequest, "not an HTTP method:", q.method)
	}
	return nil
}

func splitQuery(t []byte) (path, query []byte) {
	if i := bytes.IndexByte(t, '?'); i >= 0 {
		return t[:i], t[i+1:]
	}
	return t, nil
}

// validMethod accepts HTTP method tokens as servers log them: upper-case
// letters, '-' and '_' (PROPFIND, VERSION-CONTROL), at most 24 bytes.
func validMethod(m []byte) bool {
	if len(m) == 0 || len(m) > 24 {
		return false
	}
	for _, c := range m {
		if !('A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if lower(b[i]) != prefix[i] {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// buildURL returns the request URL: the absolute URL when the request
// named one, else scheme://host + path?query when the host is known (from
// the line or Spec.Site), else path?query.
func (p *Parser) buildURL(q *request) string {
	if q.full != nil {
		return str(q.full)
	}
	host := p.host()
	if host == nil && p.c.site == "" {
		if q.target != nil {
			return str(q.target)
		}
		if len(q.path) == 0 {
			return ""
		}
	}
	start := len(p.scratch)
	out := p.scratch
	if host != nil || p.c.site != "" {
		if s := p.value(roleScheme); string(s) == "http" || string(s) == "https" {
			out = append(out, s...)
		} else {
			out = append(out, p.c.scheme...)
		}
		out = append(out, "://"...)
		if host != nil {
			out = append(out, host...)
		} else {
			out = append(out, p.c.site...)
		}
	}
	if q.target != nil {
		out = append(out, q.target...)
	} else {
		out = append(out, q.path...)
		if len(q.query) > 0 {
			out = append(out, '?')
			out = append(out, q.query...)
		}
	}
	p.scratch = out
	return str(out[start:])
}

// host returns the first usable host the line names, or nil.
func (p *Parser) host() []byte {
	for _, r := range [...]role{roleHost, roleHTTPHost, roleServerName} {
		if !p.f.has(r) {
			continue
		}
		if b := p.value(r); validHost(b) && string(b) != "_" {
			return b
		}
	}
	return nil
}

// validHost accepts host names, IPv4, [IPv6] and a :port: enough to keep
// a spoofed Host header from turning into a URL with a different path.
func validHost(b []byte) bool {
	if len(b) == 0 || len(b) > 255 {
		return false
	}
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// clientIP returns $remote_addr, or, when that is a trusted proxy, the
// right-most untrusted hop of X-Forwarded-For (as agent/ingest does for
// HTTP requests). A hop that is not an address ends the walk.
func (p *Parser) clientIP() string {
	ra := p.value(roleRemoteAddr)
	if len(p.c.trusted) == 0 {
		return str(ra)
	}
	peer, err := netip.ParseAddr(str(ra))
	if err != nil || !p.trusted(peer) {
		return str(ra)
	}
	xff := p.value(roleXFF)
	client := ra
	for end := len(xff); end > 0; {
		start := bytes.LastIndexByte(xff[:end], ',') + 1
		hop := bytes.TrimSpace(xff[start:end])
		end = start - 1
		a, ip, ok := parseHop(hop)
		if !ok {
			break
		}
		if !p.trusted(a) {
			return str(ip)
		}
		client = ip
	}
	return str(client)
}

// parseHop reads one X-Forwarded-For entry: an address, or an address with
// a port ("192.0.2.1:443", "[2001:db8::1]:443"). ip is the address part.
func parseHop(hop []byte) (a netip.Addr, ip []byte, ok bool) {
	if a, err := netip.ParseAddr(str(hop)); err == nil {
		return a, hop, true
	}
	ap, err := netip.ParseAddrPort(str(hop))
	if err != nil {
		return a, nil, false
	}
	ip = hop[:bytes.LastIndexByte(hop, ':')]
	if len(ip) >= 2 && ip[0] == '[' {
		ip = ip[1 : len(ip)-1]
	}
	return ap.Addr(), ip, true
}

func (p *Parser) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, pr := range p.c.trusted {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// dim returns a query dimension as an owned, interned string.
func (p *Parser) dim(pv *params, slot int) string {
	if pv.prio[slot] == 0 {
		return ""
	}
	return p.own(p.decodeQuery(pv.v[slot]))
}

// own returns b as a string that does not alias any buffer: an interned
// copy for short values, a fresh one otherwise.
func (p *Parser) own(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > maxInternLen {
		return string(b)
	}
	if s, ok := p.intern[string(b)]; ok {
		return s
	}
	if len(p.intern) >= maxInternEntries {
		// Crude but bounded: the working set of campaigns is small.
		clear(p.intern)
	}
	s := string(b)
	p.intern[s] = s
	return s
}

// amount reads the value or cost parameter; nil when absent.
func (p *Parser) amount(pv *params, slot int, code string) (*float64, error) {
	if pv.prio[slot] == 0 {
		return nil, nil
	}
	b := p.decodeQuery(pv.v[slot])
	f, err := strconv.ParseFloat(str(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, newError(code, "not a number:", b)
	}
	return &f, nil
}

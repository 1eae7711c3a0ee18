package logparse

import (
	"bytes"
	"unicode/utf8"
)

// decide applies the rules to a request. It returns the matching rule, nil
// for the default rule, or a skip error.
func (c *compiled) decide(method, path []byte, status int) (*rule, error) {
	for i := range c.rules {
		rl := &c.rules[i]
		if !rl.status.has(status) ||
			rl.methods != nil && !hasMethod(rl.methods, method) ||
			rl.prefix != "" && !matchPrefix(path, rl.prefix) ||
			rl.re != nil && !rl.re.Match(path) {
			continue
		}
		if rl.skip {
			return nil, errSkipRule
		}
		return rl, nil
	}
	d := &c.def
	switch {
	case d.skip:
		return nil, errSkipDefault
	case !hasMethod(d.methods, method):
		return nil, errSkipMethod
	case !d.status.has(status):
		return nil, errSkipStatus
	case len(path) == 0 || path[0] != '/':
		return nil, errSkipPath
	}
	if d.skipAll {
		return nil, errSkipPath
	}
	if len(path) > 1 {
		for _, sp := range d.skipPaths[path[1]] {
			if matchPrefix(path, sp) {
				return nil, errSkipPath
			}
		}
	}
	if !d.anyExt && !d.pageExt(path) {
		return nil, errSkipAsset
	}
	return nil, nil
}

func hasMethod(list []string, m []byte) bool {
	for _, s := range list {
		if s == string(m) {
			return true
		}
	}
	return false
}

// matchPrefix reports whether path starts with prefix at a segment
// boundary: "/click" matches "/click" and "/click/x" but not "/clicks". A
// prefix ending in "/" matches anything below it.
func matchPrefix(path []byte, prefix string) bool {
	// The last byte first: it tells most non-matching paths apart without
	// a call to compare the rest.
	n := len(prefix)
	if len(path) < n || n == 0 || path[n-1] != prefix[n-1] || string(path[:n]) != prefix {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}

// pageExt reports whether the last path segment has a page extension.
func (d *defaultRule) pageExt(path []byte) bool {
	seg := path[bytes.LastIndexByte(path, '/')+1:]
	if i := bytes.IndexByte(seg, ';'); i >= 0 { // /page.jsp;jsessionid=...
		seg = seg[:i]
	}
	var ext []byte
	if i := bytes.LastIndexByte(seg, '.'); i >= 0 {
		ext = seg[i:]
	}
	for _, e := range d.exts {
		if len(e) == len(ext) && equalFold(ext, e) {
			return true
		}
	}
	return false
}

// equalFold compares b to the lower-case ASCII s, ignoring b's case.
func equalFold(b []byte, s string) bool {
	for i := range len(s) {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

// Query parameter slots a rule or the UTM convention can fill.
const (
	slotCampaign = iota
	slotSource
	slotMedium
	slotContent
	slotTerm
	slotValue
	slotCost
	slotType
	numSlots
)

// params holds the raw (still percent-encoded) query values found for each
// slot. prio is 0 for none, 1 when a rule's own parameter gave the value,
// 2 for the standard utm_* one; a lower priority wins, and within one
// priority the first occurrence.
type params struct {
	v    [numSlots][]byte
	prio [numSlots]uint8
}

// scanQuery finds the slots' parameters in one pass over the query.
func scanQuery(q []byte, rl *rule, out *params) {
	for len(q) > 0 {
		var pair []byte
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			pair, q = q[:i], q[i+1:]
		} else {
			pair, q = q, nil
		}
		key, val := pair, []byte(nil)
		if i := bytes.IndexByte(pair, '='); i >= 0 {
			key, val = pair[:i], pair[i+1:]
		}
		if len(key) == 0 {
			continue
		}
		var kbuf [64]byte
		if bytes.IndexByte(key, '%') >= 0 || bytes.IndexByte(key, '+') >= 0 {
			if len(key) > len(kbuf) {
				continue
			}
			key = percentDecode(kbuf[:0], key)
		}
		if rl != nil {
			for s := range numSlots {
				if n := rl.params[s]; n != "" && out.prio[s] != 1 && string(key) == n {
					out.v[s], out.prio[s] = val, 1
				}
			}
		}
		if len(key) > 4 && string(key[:4]) == "utm_" {
			s := -1
			switch string(key[4:]) {
			case "campaign":
				s = slotCampaign
			case "source":
				s = slotSource
			case "medium":
				s = slotMedium
			case "content":
				s = slotContent
			case "term":
				s = slotTerm
			}
			if s >= 0 && out.prio[s] == 0 {
				out.v[s], out.prio[s] = val, 2
			}
		}
	}
}

// decodeQuery percent-decodes a query value ('+' is a space) into scratch
// when it needs decoding. Invalid escapes are kept as they are.
func (p *Parser) decodeQuery(b []byte) []byte {
	if bytes.IndexByte(b, '%') < 0 && bytes.IndexByte(b, '+') < 0 {
		return b
	}
	start := len(p.scratch)
	p.scratch = percentDecode(p.scratch, b)
	return p.scratch[start:]
}

func percentDecode(out, b []byte) []byte {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '+':
			out = append(out, ' ')
		case c == '%' && i+2 < len(b):
			hi, ok1 := unhex(b[i+1])
			lo, ok2 := unhex(b[i+2])
			if ok1 && ok2 {
				out = append(out, hi<<4|lo)
				i += 2
			} else {
				out = append(out, c)
			}
		default:
			out = append(out, c)
		}
	}
	return out
}

// unescapeLog decodes the escapes servers write in text logs into scratch:
// nginx \xHH (default escaping) and \" \\ \n \t \r \uXXXX (escape=json,
// Apache). An unknown escape is kept as written.
func (p *Parser) unescapeLog(b []byte) []byte {
	start := len(p.scratch)
	out := p.scratch
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' || i+1 >= len(b) {
			out = append(out, c)
			continue
		}
		switch n := b[i+1]; n {
		case 'x':
			if i+3 < len(b) {
				hi, ok1 := unhex(b[i+2])
				lo, ok2 := unhex(b[i+3])
				if ok1 && ok2 {
					out = append(out, hi<<4|lo)
					i += 3
					continue
				}
			}
			out = append(out, c)
		case '"', '\\', '/':
			out = append(out, n)
			i++
		case 'n':
			out = append(out, '\n')
			i++
		case 't':
			out = append(out, '\t')
			i++
		case 'r':
			out = append(out, '\r')
			i++
		case 'u':
			if r, ok := hex4(b[i+2:]); ok {
				if !utf8.ValidRune(r) {
					r = utf8.RuneError // lone surrogate
				}
				out = utf8.AppendRune(out, r)
				i += 5
				continue
			}
			out = append(out, c)
		default:
			out = append(out, c)
		}
	}
	p.scratch = out
	return out[start:]
}

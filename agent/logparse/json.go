package logparse

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonRoles lists the field roles of the json format with their default
// keys, in the order the README documents them. Time values may be RFC
// 3339, $time_local, $msec or unix milliseconds (a number of 12+ digits).
func jsonRoles() []struct {
	name string
	role role
	keys []string
} {
	return []struct {
		name string
		role role
		keys []string
	}{
		{"time", roleTimeAny, []string{"time", "ts", "timestamp", "@timestamp", "time_iso8601", "time_local", "msec"}},
		{"remote_addr", roleRemoteAddr, []string{"remote_addr", "client_ip"}},
		{"request", roleRequest, []string{"request"}},
		{"request_method", roleMethod, []string{"request_method", "method"}},
		{"request_uri", roleRequestURI, []string{"request_uri"}},
		{"uri", roleURI, []string{"uri", "path"}},
		{"args", roleArgs, []string{"args", "query_string"}},
		{"status", roleStatus, []string{"status"}},
		{"http_referer", roleReferer, []string{"http_referer", "referer", "referrer"}},
		{"http_user_agent", roleUA, []string{"http_user_agent", "user_agent", "ua"}},
		{"http_x_forwarded_for", roleXFF, []string{"http_x_forwarded_for", "x_forwarded_for", "xff"}},
		{"host", roleHost, []string{"host", "http_host", "server_name"}},
		{"scheme", roleScheme, []string{"scheme"}},
	}
}

// DefaultJSONFields returns, for each field role of the json format, the
// keys looked for when Spec.JSONFields does not name one. When a line holds
// several keys of one role, the first in the line wins.
func DefaultJSONFields() map[string][]string {
	m := make(map[string][]string)
	for _, r := range jsonRoles() {
		m[r.name] = r.keys
	}
	return m
}

// jsonKeys is a compiled key mapping.
type jsonKeys struct {
	roles map[string]role
}

func compileJSONKeys(override map[string]string) (*jsonKeys, error) {
	k := &jsonKeys{roles: make(map[string]role)}
	known := jsonRoles()
	names := make([]string, 0, len(known))
	for _, r := range known {
		names = append(names, r.name)
	}
	var errs []error
	byKey := make(map[string]string) // override key -> role name
	for _, name := range slices.Sorted(maps.Keys(override)) {
		key := override[name]
		switch {
		case !slices.Contains(names, name):
			errs = append(errs, fmt.Errorf("unknown role %q (want one of %s)", name, strings.Join(names, ", ")))
		case key == "":
			errs = append(errs, fmt.Errorf("%s: empty key", name))
		case byKey[key] != "":
			errs = append(errs, fmt.Errorf("%s and %s: both mapped to key %q", byKey[key], name, key))
		default:
			byKey[key] = name
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Defaults first, so an explicit mapping wins over a default key.
	for _, r := range known {
		if _, ok := override[r.name]; ok {
			continue
		}
		for _, key := range r.keys {
			k.roles[key] = r.role
		}
	}
	for _, r := range known {
		if key, ok := override[r.name]; ok {
			k.roles[key] = r.role
		}
	}
	return k, nil
}

// scan reads one JSON object into f, unescaping mapped strings into p's
// scratch buffer. Keys that map to no role are skipped whatever their
// value; mapped values must be scalars. No allocation.
func (k *jsonKeys) scan(line []byte, f *fields, p *Parser) error {
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return newError(CodeBadJSON, "not a JSON object:", line)
	}
	i = skipWS(line, i+1)
	if i < len(line) && line[i] == '}' {
		return jsonTail(line, i+1)
	}
	for {
		if i >= len(line) || line[i] != '"' {
			return newError(CodeBadJSON, "expected a key at", tail(line, i))
		}
		ks, ke, next, esc := scanString(line, i)
		if next < 0 {
			return newError(CodeBadJSON, "unterminated key at", tail(line, i))
		}
		key := line[ks:ke]
		if esc {
			var ok bool
			if key, ok = p.unescapeJSON(key); !ok {
				return newError(CodeBadJSON, "bad escape in key", key)
			}
		}
		r, mapped := k.roles[string(key)]
		i = skipWS(line, next)
		if i >= len(line) || line[i] != ':' {
			return newError(CodeBadJSON, "expected : after key", key)
		}
		i = skipWS(line, i+1)
		if i >= len(line) {
			return newError(CodeBadJSON, "missing value of", key)
		}
		switch c := line[i]; {
		case c == '"':
			vs, ve, next, esc := scanString(line, i)
			if next < 0 {
				return newError(CodeBadJSON, "unterminated string value of", key)
			}
			if mapped && !f.has(r) {
				v := line[vs:ve]
				if esc {
					var ok bool
					if v, ok = p.unescapeJSON(v); !ok {
						return newError(CodeBadJSON, "bad escape in value of", key)
					}
				}
				f.put(r, v)
			}
			i = next
		case c == '{' || c == '[':
			if mapped {
				return newError(CodeBadJSON, "want a string or number, not an object or array, in", key)
			}
			next := skipNested(line, i)
			if next < 0 {
				return newError(CodeBadJSON, "unbalanced or too deeply nested value of", key)
			}
			i = next
		default:
			j := i
			for j < len(line) && !isJSONDelim(line[j]) {
				j++
			}
			tok := line[i:j]
			isNull := string(tok) == "null"
			if !isNull && string(tok) != "true" && string(tok) != "false" && !validNumber(tok) {
				return newError(CodeBadJSON, "bad value", tok)
			}
			if mapped && !isNull && !f.has(r) {
				f.put(r, tok)
			}
			i = j
		}
		i = skipWS(line, i)
		if i >= len(line) {
			return newError(CodeBadJSON, "unterminated object", nil)
		}
		switch line[i] {
		case ',':
			i = skipWS(line, i+1)
			continue
		case '}':
			return jsonTail(line, i+1)
		}
		return newError(CodeBadJSON, "expected , or } at", tail(line, i))
	}
}

func jsonTail(line []byte, i int) error {
	if skipWS(line, i) != len(line) {
		return newError(CodeBadJSON, "text after the object:", line[i:])
	}
	return nil
}

func tail(line []byte, i int) []byte {
	if i >= len(line) {
		return []byte{}
	}
	return line[i:]
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

func isJSONDelim(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ':'
}

// scanString reads the JSON string whose opening quote is at b[i]. It
// returns the bounds of its raw content, the index after the closing quote
// (-1 when unterminated) and whether the content holds escapes.
func scanString(b []byte, i int) (start, end, next int, esc bool) {
	start = i + 1
	for k := start; k < len(b); {
		j := bytes.IndexByte(b[k:], '"')
		if j < 0 {
			break
		}
		j += k
		n := 0
		for x := j - 1; x >= start && b[x] == '\\'; x-- {
			n++
		}
		if n%2 == 0 {
			return start, j, j + 1, bytes.IndexByte(b[start:j], '\\') >= 0
		}
		k = j + 1
	}
	return 0, 0, -1, false
}

// skipNested skips the object or array starting at b[i] and returns the
// index after it, or -1. It checks that brackets pair up (to 64 levels) but
// not what lies between them: the value is ignored anyway.
func skipNested(b []byte, i int) int {
	var stack uint64 // bit set: '{'
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '"':
			_, _, next, _ := scanString(b, i)
			if next < 0 {
				return -1
			}
			i = next
			continue
		case '{', '[':
			if depth == 64 {
				return -1
			}
			stack <<= 1
			if c == '{' {
				stack |= 1
			}
			depth++
		case '}', ']':
			if depth == 0 || (stack&1 == 1) != (c == '}') {
				return -1
			}
			stack >>= 1
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return -1
}

// validNumber checks the JSON number grammar.
func validNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	d := i
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	if i == d || (b[d] == '0' && i-d > 1) {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d = i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d = i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == d {
			return false
		}
	}
	return i == len(b)
}

// unescapeJSON decodes the escapes of a JSON string's content into the
// parser's scratch buffer. It reports false for an invalid escape.
func (p *Parser) unescapeJSON(s []byte) ([]byte, bool) {
	start := len(p.scratch)
	out := p.scratch
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(s) {
			return nil, false
		}
		switch s[i] {
		case '"', '\\', '/':
			out = append(out, s[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(s[i+1:])
			if !ok {
				return nil, false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(0), false
				if i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					r2, ok2 = hex4(s[i+3:])
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false
		}
	}
	p.scratch = out
	return out[start:], true
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		v, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

package logparse

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// The presets, written as nginx formats. $remote_ident stands where nginx
// writes a literal "-" and Apache the identd user (%l), so both servers'
// lines match.
const (
	combinedFormat = `$remote_addr $remote_ident $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`
	commonFormat   = `$remote_addr $remote_ident $remote_user [$time_local] "$request" $status $body_bytes_sent`
)

// role is what a captured field means to the parser.
type role uint8

const (
	roleIgnore role = iota
	roleRemoteAddr
	roleTimeLocal // 02/Jan/2006:15:04:05 -0700
	roleTimeISO   // 2006-01-02T15:04:05+00:00
	roleMsec      // 1136214245.123
	roleTimeAny   // json: any of the three, or unix milliseconds
	roleRequest   // GET /path?q HTTP/1.1
	roleMethod
	roleRequestURI // /path?q
	roleURI        // /path (nginx: decoded, without args)
	roleArgs       // q
	roleStatus
	roleReferer
	roleUA
	roleXFF
	roleHost
	roleHTTPHost
	roleServerName
	roleScheme
	numRoles
)

// varRole returns the role of an nginx variable the parser understands;
// any other variable is captured and ignored (roleIgnore).
func varRole(name string) role {
	switch name {
	case "remote_addr":
		return roleRemoteAddr
	case "time_local":
		return roleTimeLocal
	case "time_iso8601":
		return roleTimeISO
	case "msec":
		return roleMsec
	case "request":
		return roleRequest
	case "request_method":
		return roleMethod
	case "request_uri":
		return roleRequestURI
	case "uri", "document_uri":
		return roleURI
	case "args", "query_string":
		return roleArgs
	case "status":
		return roleStatus
	case "http_referer":
		return roleReferer
	case "http_user_agent":
		return roleUA
	case "http_x_forwarded_for", "proxy_add_x_forwarded_for":
		return roleXFF
	case "host":
		return roleHost
	case "http_host":
		return roleHTTPHost
	case "server_name":
		return roleServerName
	case "scheme":
		return roleScheme
	}
	return roleIgnore
}

// op captures one variable: the bytes from the current position up to
// the literal that follows it in the format.
type op struct {
	role role
	name string // variable name, for messages
	// term is the literal after the variable; empty only for the last
	// variable, which then takes the rest of the line.
	term []byte
	// quoted variables sit between double quotes: they end at a quote
	// that no backslash escapes (Apache writes \", nginx \x22).
	quoted bool
	// skip is how many bytes of the value come before any possible
	// terminator: $time_local holds a space at offset 20, so a space after
	// it must be searched from there.
	skip int
}

// program is a compiled line format: a literal prefix, then variables
// each followed by their literal separator.
type program struct {
	prefix []byte
	ops    []op
	roles  uint32 // bit per role the format captures
}

func (p *program) has(r role) bool { return p.roles&(1<<r) != 0 }

// compileFormat compiles an nginx log_format (bare, or as pasted from the
// configuration) into a program.
func compileFormat(src string) (*program, error) {
	format, err := unwrapNginx(src)
	if err != nil {
		return nil, err
	}
	type token struct {
		lit  []byte
		name string // variable when non-empty
		pos  int
	}
	var toks []token
	var lit []byte
	for i := 0; i < len(format); {
		c := format[i]
		if c != '$' {
			lit = append(lit, c)
			i++
			continue
		}
		start := i
		var name string
		if i+1 < len(format) && format[i+1] == '{' {
			end := strings.IndexByte(format[i+2:], '}')
			if end < 0 {
				return nil, fmt.Errorf("%s: ${ without a closing }", at(format, start))
			}
			name = format[i+2 : i+2+end]
			i += 3 + end
			if name == "" || strings.IndexFunc(name, func(r rune) bool { return !isNameChar(byte(r)) || r > 127 }) >= 0 {
				return nil, fmt.Errorf("%s: ${%s} is not a variable name", at(format, start), name)
			}
		} else {
			j := i + 1
			for j < len(format) && isNameChar(format[j]) {
				j++
			}
			if j == i+1 {
				return nil, fmt.Errorf("%s: $ must be followed by a variable name (letters, digits, _)", at(format, start))
			}
			name = format[i+1 : j]
			i = j
		}
		toks = append(toks, token{lit: lit}, token{name: strings.ToLower(name), pos: start})
		lit = nil
	}
	toks = append(toks, token{lit: lit})

	// toks alternates literal, variable, literal, ..., literal.
	p := &program{prefix: toks[0].lit}
	if len(toks) == 1 {
		return nil, errors.New("no $variables: nothing to parse")
	}
	for k := 1; k < len(toks); k += 2 {
		v, before, after := toks[k], toks[k-1].lit, toks[k+1].lit
		last := k+2 >= len(toks)
		if len(after) == 0 && !last {
			return nil, fmt.Errorf("%s: $%s is directly followed by $%s: nothing separates them", at(format, v.pos), v.name, toks[k+2].name)
		}
		r := varRole(v.name)
		o := op{role: r, name: v.name, term: after}
		o.quoted = len(before) > 0 && before[len(before)-1] == '"' && len(after) > 0 && after[0] == '"'
		if r == roleTimeLocal && len(after) > 0 && after[0] == ' ' {
			o.skip = 21
		}
		p.ops = append(p.ops, o)
		p.roles |= 1 << r
	}
	switch {
	case !p.has(roleTimeLocal) && !p.has(roleTimeISO) && !p.has(roleMsec):
		return nil, errors.New("no $time_local, $time_iso8601 or $msec: lines would have no event time")
	case !p.has(roleRequest) && !(p.has(roleMethod) && (p.has(roleRequestURI) || p.has(roleURI))):
		return nil, errors.New("no $request (or $request_method with $request_uri or $uri): requests cannot be mapped to events")
	case !p.has(roleStatus):
		return nil, errors.New("no $status: failed requests could not be told from successful ones")
	}
	return p, nil
}

// at locates byte i of format for an error message: a 1-based column and
// the text before it (the column alone is little help in a format pasted
// over several quoted pieces).
func at(format string, i int) string {
	from := max(0, i-16)
	return fmt.Sprintf("column %d (after %q)", i+1, format[from:i])
}

func isNameChar(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// unwrapNginx turns a log_format as written in nginx.conf into the bare
// format: an optional "log_format NAME" and "escape=...", then one or more
// quoted pieces, concatenated, and an optional ";". A string starting with
// neither ' nor log_format is already bare and returned as is.
func unwrapNginx(src string) (string, error) {
	s := strings.TrimSpace(src)
	if s == "" {
		return "", errors.New("empty format")
	}
	if !strings.HasPrefix(s, "'") && !strings.HasPrefix(s, "log_format ") && !strings.HasPrefix(s, "log_format\t") {
		return s, nil
	}
	s = strings.TrimSpace(strings.TrimSuffix(s, ";"))
	if rest, ok := strings.CutPrefix(s, "log_format"); ok {
		rest = strings.TrimSpace(rest)
		name, after, _ := strings.Cut(rest, " ")
		if name == "" || name[0] == '\'' || name[0] == '"' {
			return "", errors.New("log_format: a name must come before the format")
		}
		s = strings.TrimSpace(after)
	}
	if rest, ok := strings.CutPrefix(s, "escape="); ok {
		mode, after, _ := strings.Cut(rest, " ")
		switch mode {
		case "default", "json", "none":
		default:
			return "", fmt.Errorf("escape=%s: want default, json or none", mode)
		}
		s = strings.TrimSpace(after)
	}
	var out strings.Builder
	for s != "" {
		q := s[0]
		if q != '\'' && q != '"' {
			return "", fmt.Errorf("unexpected %q: the format pieces must be quoted strings", truncateStr(s, 20))
		}
		i := 1
		closed := false
		for i < len(s) {
			c := s[i]
			if c == q {
				closed = true
				i++
				break
			}
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					out.WriteByte('\n')
				case 't':
					out.WriteByte('\t')
				case 'r':
					out.WriteByte('\r')
				case '"', '\'', '\\':
					out.WriteByte(s[i])
				default:
					out.WriteByte('\\')
					out.WriteByte(s[i])
				}
				i++
				continue
			}
			out.WriteByte(c)
			i++
		}
		if !closed {
			return "", fmt.Errorf("unterminated %c-quoted string", q)
		}
		s = strings.TrimSpace(s[i:])
	}
	if out.Len() == 0 {
		return "", errors.New("empty format")
	}
	return out.String(), nil
}

func truncateStr(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// match splits line by the program into f. It is the hot path of the
// text formats: byte scanning only, no allocation.
func (p *program) match(line []byte, f *fields) error {
	if !bytes.HasPrefix(line, p.prefix) {
		return newError(CodeNoMatch, "line does not start with", p.prefix)
	}
	pos := len(p.prefix)
	for i := range p.ops {
		o := &p.ops[i]
		var end, next int
		if len(o.term) == 0 { // last variable: the rest of the line
			end, next = len(line), len(line)
		} else {
			final := i == len(p.ops)-1
			from := pos + o.skip
			if from > len(line) {
				return newError(CodeNoMatch, "line ends inside $"+o.name, nil)
			}
			if o.quoted {
				end = findQuoted(line, from, o.term, final)
			} else {
				end = findTerm(line, from, o.term, final)
			}
			if end < 0 {
				return newError(CodeNoMatch, "no "+o.name+" followed by", o.term)
			}
			next = end + len(o.term)
		}
		if o.role != roleIgnore {
			f.put(o.role, line[pos:end])
		}
		pos = next
	}
	return nil
}

// findQuoted returns the index of the first unescaped '"' at or after from
// that starts term; when final, term must also end the line or be followed
// by a space (extra fields appended to a known format are ignored). It
// returns -1 when there is none.
func findQuoted(line []byte, from int, term []byte, final bool) int {
	for k := from; k < len(line); {
		j := bytes.IndexByte(line[k:], '"')
		if j < 0 {
			return -1
		}
		j += k
		// A quote preceded by an odd number of backslashes is escaped.
		n := 0
		for b := j - 1; b >= from && line[b] == '\\'; b-- {
			n++
		}
		if n%2 == 0 && bytes.HasPrefix(line[j:], term) && (!final || endsField(line, j+len(term))) {
			return j
		}
		k = j + 1
	}
	return -1
}

// findTerm is findQuoted for an unquoted variable: the first occurrence
// of term.
func findTerm(line []byte, from int, term []byte, final bool) int {
	for k := from; k <= len(line); {
		j := bytes.Index(line[k:], term)
		if j < 0 {
			return -1
		}
		j += k
		if !final || endsField(line, j+len(term)) {
			return j
		}
		k = j + 1
	}
	return -1
}

func endsField(line []byte, i int) bool { return i == len(line) || line[i] == ' ' }

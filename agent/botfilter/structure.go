package botfilter

import "strings"

// The structure of a user agent. RFC 9110 (and every browser since
// Netscape) writes a user agent as products ("Name/1.2") and comments
// ("(...)"), and real browsers follow one shape:
//
//	Mozilla/5.0 (<platform>) <engine> [(<engine comment>)] <browser tokens> [<suffixes>]
//
// e.g. "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36
// (KHTML, like Gecko) Chrome/125.0.0.0 Mobile Safari/537.36". The parser
// splits a user agent into these parts once (on a cache miss) so that the
// rules of rules.go can ask where a word stands: a crawler word is a
// crawler's name when it names a product, and a phone's model when it
// stands in the platform comment ("Spider 8").

// itemKind is the kind of one part of a user agent.
type itemKind uint8

const (
	itemProduct itemKind = iota // "Name/version", "Name" or a bare "1.2.3"
	itemComment                 // "(...)", the text inside the parentheses
	itemBracket                 // "[...]", an in-app browser's block
)

// item is one part of a user agent, lower-cased.
type item struct {
	kind itemKind
	// text is the whole part (inside the brackets for comments and blocks).
	text string
	// name and version split a product at its first '/'; version is ""
	// for a product without one.
	name, version string
}

// parsed is a user agent split into items, lower-cased.
type parsed struct {
	items []item
	// unbalanced is set when a comment or block is never closed.
	unbalanced bool
}

// parseUA splits ua (already lower-cased) into items. Separators are
// spaces between products; a product ends at a space or at an opening
// parenthesis or bracket. Comments nest ("(like Safari/8617.2.4.10.8,
// panda)" holds none, some tools' do).
func parseUA(ua string) parsed {
	var p parsed
	for i := 0; i < len(ua); {
		c := ua[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == '[':
			open, closeCh := c, byte(')')
			kind := itemComment
			if c == '[' {
				closeCh, kind = ']', itemBracket
			}
			depth, j := 0, i
			for ; j < len(ua); j++ {
				if ua[j] == open {
					depth++
				} else if ua[j] == closeCh {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			if j >= len(ua) {
				p.unbalanced = true
				p.items = append(p.items, item{kind: kind, text: ua[i+1:]})
				i = len(ua)
				continue
			}
			p.items = append(p.items, item{kind: kind, text: ua[i+1 : j]})
			i = j + 1
		default:
			j := i
			for j < len(ua) && ua[j] != ' ' && ua[j] != '\t' && ua[j] != '(' && ua[j] != '[' {
				j++
			}
			text := ua[i:j]
			it := item{kind: itemProduct, text: text, name: text}
			if slash := strings.IndexByte(text, '/'); slash >= 0 {
				it.name, it.version = text[:slash], text[slash+1:]
			}
			p.items = append(p.items, it)
			i = j
		}
	}
	return p
}

// browserShape describes a user agent that starts like a browser's.
type browserShape struct {
	ok bool
	// platform is the first comment ("windows nt 10.0; win64; x64").
	platform string
	// rest are the items after the platform comment.
	rest []item
}

// shape reports whether p starts as browsers do: a Mozilla product (UC
// Browser's old "Mozilla 5.0" included) and a platform comment.
func (p *parsed) shape() browserShape {
	items := p.items
	if len(items) == 0 || items[0].kind != itemProduct {
		return browserShape{}
	}
	switch {
	case items[0].name == "mozilla" && items[0].version != "":
		items = items[1:]
	case items[0].text == "mozilla" && len(items) > 1 && items[1].text == "5.0":
		items = items[2:]
	default:
		return browserShape{}
	}
	if len(items) == 0 || items[0].kind != itemComment {
		return browserShape{}
	}
	return browserShape{ok: true, platform: items[0].text, rest: items[1:]}
}

// fields splits a comment into its ';'-separated fields, trimmed.
func fields(comment string) []string {
	parts := strings.Split(comment, ";")
	out := parts[:0]
	for _, f := range parts {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// isVersion reports whether s reads as a version number: a digit first
// ("125.0.6422.165", "4.0", "10_15_7", "3b2").
func isVersion(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }

// wordAt reports whether w occurs in s at index i as a whole word: not
// preceded or followed by a letter or digit.
func wordAt(s string, i int, w string) bool {
	if i > 0 && isAlnum(s[i-1]) {
		return false
	}
	end := i + len(w)
	return end == len(s) || !isAlnum(s[end])
}

// hasWord reports whether w occurs in s as a whole word.
func hasWord(s, w string) bool {
	for from := 0; ; {
		i := strings.Index(s[from:], w)
		if i < 0 {
			return false
		}
		i += from
		if wordAt(s, i, w) {
			return true
		}
		from = i + 1
	}
}

// endsWord reports whether w ends a word of s ("googlebot" ends with
// "bot"; "robots" does not).
func endsWord(s, w string) bool {
	for from := 0; ; {
		i := strings.Index(s[from:], w)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(w)
		if end == len(s) || !isAlnum(s[end]) {
			return true
		}
		from = i + 1
	}
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || 'A' <= c && c <= 'Z'
}

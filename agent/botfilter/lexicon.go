package botfilter

import "strings"

// lexicon is what the user-agent rules know by name, learnt from data
// (lexicon_gen.go, made by TestLexiconGenerated from testdata/eval):
//
//   - crawler names: the literal names of public crawler pattern lists
//     (crawlerdetect, crawler-user-agents, isbot, uap-core), matched as
//     whole words where a name can stand, never inside a phone's model;
//   - browser tokens: the product names real browsers put in their user
//     agents (engines, browsers, in-app browsers, vendor tokens), learnt
//     from the browser lists;
//   - vendor tokens: the product names of browser and app pattern lists
//     (uap-core, my-ua-parser). A browser-shaped user agent with a product
//     in neither list is suspicious (ua_suffix); a user agent without a
//     browser's shape needs a browser token (ua_tool).
//
// The leave-one-source-out evaluation builds a lexicon without each
// source in turn, so a rule that only fits one source shows up.
type lexicon struct {
	// byFirst indexes crawler names by their first word.
	byFirst map[string][]string
	// prefixes are crawler names matched at the start of a user agent.
	prefixes        []string
	browser, vendor map[string]struct{}
}

func newLexicon(names, prefixes, browser, vendor []string) *lexicon {
	l := &lexicon{byFirst: map[string][]string{}, browser: set(browser), vendor: set(vendor)}
	for _, n := range names {
		first := n
		if i := strings.IndexFunc(n, func(r rune) bool { return r > 0x7f || !isAlnum(byte(r)) }); i > 0 {
			first = n[:i]
		}
		l.byFirst[first] = append(l.byFirst[first], n)
	}
	l.prefixes = prefixes
	return l
}

func set(words []string) map[string]struct{} {
	m := make(map[string]struct{}, len(words))
	for _, w := range words {
		m[w] = struct{}{}
	}
	return m
}

// defaultLexicon is built from every source.
var defaultLexicon = newLexicon(genCrawlerNames, genCrawlerPrefixes, genBrowserTokens, genVendorTokens)

// knownBrowserToken reports whether real browsers send the product name.
func (l *lexicon) knownBrowserToken(name string) bool {
	_, ok := l.browser[name]
	return ok
}

// knownSuffix reports whether the product name may follow a browser's
// engine: real browsers send it, or a browser pattern list names it.
func (l *lexicon) knownSuffix(name string) bool {
	if _, ok := l.browser[name]; ok {
		return true
	}
	_, ok := l.vendor[name]
	return ok
}

// crawlerName returns the crawler name found in s as whole words, or "".
// s is lower-case text where a name may stand.
func (l *lexicon) crawlerName(s string) string {
	for i := 0; i < len(s); {
		if !isAlnum(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isAlnum(s[j]) {
			j++
		}
		for _, n := range l.byFirst[s[i:j]] {
			if strings.HasPrefix(s[i:], n) && (i+len(n) == len(s) || !isAlnum(s[i+len(n)])) {
				return n
			}
		}
		i = j
	}
	return ""
}

// crawlerPrefix returns the crawler name ua starts with, or "".
func (l *lexicon) crawlerPrefix(ua string) string {
	for _, p := range l.prefixes {
		if strings.HasPrefix(ua, p) && (len(ua) == len(p) || !isAlnum(ua[len(p)])) {
			return p
		}
	}
	return ""
}

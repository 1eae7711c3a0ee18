package botfilter

import (
	"regexp"
	"strings"
)

// verdict is what the user agent alone says about an event. Everything
// that depends on the user agent only is decided once per distinct string
// and cached.
type verdict uint8

const (
	verdictBrowser verdict = iota
	verdictDeny
	verdictAllow
	verdictCrawler
	verdictHeadless
	verdictContact
	verdictPlaceholder
	verdictSuffix
	verdictTool
)

// reason is the Reason* of a verdict that filters, "" for the others.
func (v verdict) reason() string {
	switch v {
	case verdictDeny:
		return ReasonDenyList
	case verdictCrawler:
		return ReasonCrawler
	case verdictHeadless:
		return ReasonHeadless
	case verdictContact:
		return ReasonUAContact
	case verdictPlaceholder:
		return ReasonUAPlaceholder
	case verdictSuffix:
		return ReasonUASuffix
	case verdictTool:
		return ReasonUATool
	}
	return ""
}

// MaxUserAgentBytes is how much of a user agent the filter reads: longer
// ones are judged, cached and counted by their first MaxUserAgentBytes
// bytes. Real browsers send under 400 bytes (in-app browsers with their
// blocks under 600), so nothing real is cut; a 1 MiB user agent costs the
// cache no more than a real one.
const MaxUserAgentBytes = 1024

// TruncateUA returns the part of ua the filter reads.
func TruncateUA(ua string) string {
	if len(ua) > MaxUserAgentBytes {
		return ua[:MaxUserAgentBytes]
	}
	return ua
}

// uaLayer classifies user agents: deny and allow lists, then the rules of
// rules.go with the lexicon of lexicon.go.
type uaLayer struct {
	denySubs, allowSubs []string // lower-case
	denyRe, allowRe     []*regexp.Regexp
	lex                 *lexicon
	cache               verdictCache
}

func newUALayer(cfg Config, lex *lexicon) *uaLayer {
	u := &uaLayer{
		denySubs:  lowerAll(cfg.Deny.UA),
		allowSubs: lowerAll(cfg.Allow.UA),
		denyRe:    compileAll(cfg.Deny.UARegex),
		allowRe:   compileAll(cfg.Allow.UARegex),
		lex:       lex,
	}
	u.cache.init(cfg.CacheSize, cfg.CacheBytes)
	return u
}

// verdict returns the cached verdict of ua, classifying it on a miss.
func (u *uaLayer) verdict(ua string) verdict {
	if ua == "" {
		return verdictBrowser
	}
	ua = TruncateUA(ua)
	if v, ok := u.cache.get(ua); ok {
		return v
	}
	v := u.classify(ua)
	u.cache.put(ua, v)
	return v
}

func (u *uaLayer) classify(ua string) verdict {
	lower := strings.ToLower(ua)
	if containsAny(lower, u.denySubs) || matchAny(ua, u.denyRe) {
		return verdictDeny
	}
	if containsAny(lower, u.allowSubs) || matchAny(ua, u.allowRe) {
		return verdictAllow
	}
	return classify(lower, u.lex)
}

func matchAny(s string, res []*regexp.Regexp) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func lowerAll(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		out = append(out, strings.ToLower(s))
	}
	return out
}

// compileAll compiles patterns already checked by Validate.
func compileAll(in []string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, 0, len(in))
	for _, s := range in {
		out = append(out, regexp.MustCompile(s))
	}
	return out
}

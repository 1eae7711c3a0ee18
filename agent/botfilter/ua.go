package botfilter

import (
	"regexp"
	"strings"

	"github.com/x-way/crawlerdetect"
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
)

// uaLayer classifies user agents: deny and allow lists, headless markers,
// crawlerdetect, and the generic rules of generic.go.
type uaLayer struct {
	denySubs, allowSubs []string // lower-case
	denyRe, allowRe     []*regexp.Regexp
	detect              *crawlerdetect.CrawlerDetect
	cache               verdictCache
}

func newUALayer(cfg Config) *uaLayer {
	u := &uaLayer{
		denySubs:  lowerAll(cfg.Deny.UA),
		allowSubs: lowerAll(cfg.Allow.UA),
		denyRe:    compileAll(cfg.Deny.UARegex),
		allowRe:   compileAll(cfg.Allow.UARegex),
		detect:    crawlerdetect.New(),
	}
	u.cache.init(cfg.CacheSize)
	return u
}

// verdict returns the cached verdict of ua, classifying it on a miss.
func (u *uaLayer) verdict(ua string) verdict {
	if ua == "" {
		return verdictBrowser
	}
	if v, ok := u.cache.get(ua); ok {
		return v
	}
	v := u.classify(ua)
	u.cache.put(ua, v)
	return v
}

// headlessMarkers are substrings automation tools leave in user agents.
// Electron is an app shell, not a browser people browse with; an app
// whose Electron traffic is real goes in the allow list.
var headlessMarkers = []string{"headlesschrome", "phantomjs", "puppeteer", "playwright", "selenium", "webdriver", "electron/"}

func (u *uaLayer) classify(ua string) verdict {
	lower := strings.ToLower(ua)
	if containsAny(lower, u.denySubs) || matchAny(ua, u.denyRe) {
		return verdictDeny
	}
	if containsAny(lower, u.allowSubs) || matchAny(ua, u.allowRe) {
		return verdictAllow
	}
	if containsAny(lower, headlessMarkers) {
		return verdictHeadless
	}
	// The generic rules are cheap string scans; crawlerdetect is one
	// large regular expression (tens of microseconds), so it goes last.
	if genericBot(lower) || u.detect.IsCrawler(ua) {
		return verdictCrawler
	}
	return verdictBrowser
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
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

// Package botfilter decides at the edge whether an event comes from a bot,
// so bots are counted as filtered and never as traffic.
//
// This is the user-agent layer: a list of known crawlers maintained by the
// crawlerdetect library (regularly updated upstream), plus markers of
// headless browsers and automation tools. Verdicts are cached per user-agent
// string because UAs repeat and the list costs tens to hundreds of
// microseconds per call.
package botfilter

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/x-way/crawlerdetect"
)

// Reasons a request is filtered. They are label values in metrics and
// field names in InfluxDB (bots_<reason>), so keep them short snake_case.
const (
	ReasonCrawler  = "crawler"
	ReasonHeadless = "headless"
	ReasonEmptyUA  = "empty_ua"
)

// Config tunes the filter.
type Config struct {
	// CacheSize bounds the verdict cache (distinct UA strings). Default 65536.
	CacheSize int
	// FlagEmptyUA treats requests without a user agent as bots. Default
	// false: server-side imports often have none.
	FlagEmptyUA bool
}

// Filter classifies user agents. It is safe for concurrent use.
type Filter struct {
	cfg    Config
	detect *crawlerdetect.CrawlerDetect

	mu    sync.RWMutex
	cache map[string]string

	hits, misses atomic.Uint64
}

// New returns a Filter.
func New(cfg Config) *Filter {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 65536
	}
	return &Filter{cfg: cfg, detect: crawlerdetect.New(), cache: make(map[string]string, 1024)}
}

// headlessMarkers are substrings automation tools leave in user agents.
var headlessMarkers = []string{"headlesschrome", "phantomjs", "puppeteer", "playwright", "selenium", "webdriver", "electron/"}

// Check returns the reason ua is a bot, or "" for a browser. The ip is
// unused by this layer.
func (f *Filter) Check(ua, ip string) string {
	if ua == "" {
		if f.cfg.FlagEmptyUA {
			return ReasonEmptyUA
		}
		return ""
	}
	f.mu.RLock()
	v, ok := f.cache[ua]
	f.mu.RUnlock()
	if ok {
		f.hits.Add(1)
		return v
	}
	f.misses.Add(1)
	v = f.classify(ua)
	f.mu.Lock()
	if len(f.cache) >= f.cfg.CacheSize {
		// Dropping the whole cache is crude but bounded and rare: the
		// working set of UAs is small compared to the cache.
		clear(f.cache)
	}
	f.cache[strings.Clone(ua)] = v
	f.mu.Unlock()
	return v
}

func (f *Filter) classify(ua string) string {
	lower := strings.ToLower(ua)
	for _, m := range headlessMarkers {
		if strings.Contains(lower, m) {
			return ReasonHeadless
		}
	}
	if f.detect.IsCrawler(ua) {
		return ReasonCrawler
	}
	return ""
}

// CacheStats returns verdict cache hits and misses.
func (f *Filter) CacheStats() (hits, misses uint64) { return f.hits.Load(), f.misses.Load() }

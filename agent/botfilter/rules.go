package botfilter

import "strings"

// The rules of the user-agent layer, in the order they are tried. Each
// names its own reason, so operators see which rule filtered what:
//
//	headless        automation tools name themselves (HeadlessChrome, ...)
//	crawler         a crawler's name or a crawler word names a product
//	ua_contact      a URL, e-mail address or host name: an operator's contact
//	ua_placeholder  a version left as a template ("Firefox/firefoxversion")
//	ua_suffix       a browser's shape with a product no browser sends
//	ua_tool         no browser's shape at all ("Exporter/0.24.0")
//
// The rules know the structure of browser user agents (structure.go) and
// the names of the lexicon (lexicon.go). Native app stacks (CFNetwork,
// Dalvik, Dart) are people using an app, and are left alone.

// classify returns the verdict of the rules for ua (lower-cased).
func classify(ua string, lex *lexicon) verdict {
	if containsAny(ua, headlessMarkers) {
		return verdictHeadless
	}
	p := parseUA(ua)
	shape := p.shape()
	if namesCrawler(&p, shape, lex) || lex.crawlerPrefix(ua) != "" {
		return verdictCrawler
	}
	if hasContact(ua) {
		return verdictContact
	}
	if hasPlaceholder(&p) {
		return verdictPlaceholder
	}
	if shape.ok {
		return browserRules(ua, shape, lex)
	}
	return productRules(&p, lex)
}

// headlessMarkers are substrings automation tools leave in user agents.
// Electron is not one: desktop apps people use (Slack, Obsidian, Teams)
// are built on it, and Obsidian is among the hundred most common user
// agents of top-user-agents.
var headlessMarkers = []string{"headlesschrome", "phantomjs", "puppeteer", "playwright", "selenium", "webdriver"}

// crawlerWords end the names of crawlers and tools ("Googlebot",
// "YisouSpider", "LinkChecker"): a product named so is automated. They are
// matched at the end of a word, and only where a product's name stands:
// a phone called "Spider 8" is a model in the platform comment. "preview"
// alone is not one: "Safari Technology Preview" is a browser.
var crawlerWords = []string{
	"bot", "bots", "spider", "crawler", "crawl", "scraper", "scrapy", "fetcher", "indexer", "archiver",
	"checker", "validator", "monitor", "monitoring", "scanner", "linkpreview", "urlpreview", "unfurl", "webhook", "webhooks",
	"parser", "agent", "sniffer", "harvester", "proxy", "downloader", "extractor", "analyzer",
	"http-client", "httpclient", "http_client", "urllib", "curl", "wget", "-ai", "-user",
}

// crawlerStarts begin the names of tools ("python-requests",
// "Go-http-client" end differently, "Apache-HttpClient" is a word above).
var crawlerStarts = []string{"python", "java", "perl", "ruby", "php", "node", "go-http", "okhttp", "libwww",
	"lwp", "http", "wget", "curl", "scan", "crawl", "spider", "bot", "headless", "test"}

// namesCrawler reports whether a crawler name or word stands where a
// product's name does: the products outside comments, the products inside
// them ("Googlebot/2.1" in "(compatible; Googlebot/2.1; +http://...)"),
// and every field of a "compatible" comment.
func namesCrawler(p *parsed, shape browserShape, lex *lexicon) bool {
	for i := range p.items {
		it := &p.items[i]
		switch it.kind {
		case itemProduct:
			if lex.crawlerName(it.text) != "" || isCrawlerWord(it.name) {
				return true
			}
		case itemComment, itemBracket:
			fs := fields(it.text)
			// A foreign "compatible" comment holds a tool's products.
			compatible := len(fs) > 1 && fs[0] == "compatible" && !hasAnyPrefix(fs[1], browserCompatible...)
			for _, f := range fs {
				if compatible || strings.HasPrefix(f, "+") {
					if lex.crawlerName(f) != "" || anyWordCrawler(f) {
						return true
					}
					continue
				}
				// A platform field: only the names of products in it
				// ("Build/KOT49H", "FBDV/iPhone15,2") may be checked, and
				// a field of one word ending in "bot" ("TSMbot"): a phone
				// model has a number or a space ("Spider 8").
				if botField(f) {
					return true
				}
				for rest := f; ; {
					slash := strings.IndexByte(rest, '/')
					if slash < 0 {
						break
					}
					name := rest[:slash]
					if sp := strings.LastIndexAny(name, " ,"); sp >= 0 {
						name = name[sp+1:]
					}
					if lex.crawlerName(name) != "" || isCrawlerWord(name) {
						return true
					}
					rest = rest[slash+1:]
				}
			}
		}
	}
	// Products run together ("Screaming Frog SEO Spider/12.3" is four
	// items): crawler names of several words are looked for across them.
	var run strings.Builder
	for i := range p.items {
		if p.items[i].kind == itemProduct {
			run.WriteString(p.items[i].text)
		}
		run.WriteByte(' ')
	}
	return lex.crawlerName(run.String()) != ""
}

// isCrawlerWord reports whether a product name is a crawler's by its
// words: it ends with a crawler word or starts with a tool's.
func isCrawlerWord(name string) bool {
	if !strings.ContainsFunc(name, func(r rune) bool { return 'a' <= r && r <= 'z' }) {
		return false
	}
	// Each part of a compound name counts ("Storebot-Google").
	for part := range strings.FieldsFuncSeq(name, func(r rune) bool { return r == '-' || r == '_' || r == '.' }) {
		for _, w := range crawlerWords {
			if strings.HasSuffix(part, w) {
				return true
			}
		}
	}
	for _, w := range crawlerWords {
		if strings.HasSuffix(name, w) {
			return true
		}
	}
	for _, w := range crawlerStarts {
		if strings.HasPrefix(name, w) && (len(name) == len(w) || !isAlnum(name[len(w)]) || name[len(w)] >= '0' && name[len(w)] <= '9') {
			return true
		}
	}
	return false
}

// botField reports whether a platform field is a robot's name: one word
// of letters (hyphens allowed) ending in a robot's word ("TSMbot",
// "ips-agent"). A phone model has a number or a space ("Spider 8"), and
// UC Browser's "Proxy" field is no robot's.
func botField(f string) bool {
	if len(f) < 5 || f == "robot" {
		return false
	}
	for i := 0; i < len(f); i++ {
		if (f[i] < 'a' || f[i] > 'z') && f[i] != '-' && f[i] != '_' {
			return false
		}
	}
	for _, w := range []string{"bot", "crawler", "spider", "scanner", "agent", "checker", "monitor"} {
		if strings.HasSuffix(f, w) {
			return true
		}
	}
	return false
}

// anyWordCrawler reports whether any word of a compatible-comment field
// is a crawler word.
func anyWordCrawler(f string) bool {
	for _, w := range strings.FieldsFunc(f, func(r rune) bool { return r == ' ' || r == '/' || r == ':' }) {
		if isCrawlerWord(w) {
			return true
		}
	}
	return false
}

// hasContact: a URL, a host name or an e-mail address. Crawlers carry
// their operator's contact (Google's "+http://www.google.com/bot.html"
// set the custom); browsers carry none.
func hasContact(ua string) bool {
	if strings.Contains(ua, "http://") || strings.Contains(ua, "https://") || strings.Contains(ua, "www.") {
		return true
	}
	for i := 1; i < len(ua); i++ {
		if ua[i] == '@' && isAlnum(ua[i-1]) && isHostName(token(ua[i+1:])) {
			return true
		}
	}
	for _, tld := range []string{".com", ".net", ".org", ".io", ".ai", ".co"} {
		if endsWord(ua, tld) && hasWordSuffixAfterAlnum(ua, tld) {
			return true
		}
	}
	return false
}

// hasWordSuffixAfterAlnum reports whether suffix follows a letter or
// digit and ends a word: "example.com" but not ".com" alone.
func hasWordSuffixAfterAlnum(ua, suffix string) bool {
	for from := 0; ; {
		i := strings.Index(ua[from:], suffix)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(suffix)
		if i > 0 && isAlnum(ua[i-1]) && (end == len(ua) || strings.IndexByte(" /;),]", ua[end]) >= 0) {
			return true
		}
		from = i + 1
	}
}

// isHostName reports whether s looks like a.b.tld, the top-level domain
// being letters: "ops@example.com" is an address, "ios@3.0.2" a version.
func isHostName(s string) bool {
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 || dot == len(s)-1 {
		return false
	}
	for _, c := range []byte(s[dot+1:]) {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// token returns s up to the first separator of user-agent products.
func token(s string) string {
	if i := strings.IndexAny(s, " ;(),"); i >= 0 {
		return s[:i]
	}
	return s
}

// versioned are the products whose version a browser always writes as a
// number; a word there is a template nobody filled in
// ("Gecko/geckotrail Firefox/firefoxversion", "Chrome/W.X.Y.Z").
var versioned = map[string]bool{"mozilla": true, "applewebkit": true, "chrome": true, "safari": true,
	"firefox": true, "gecko": true, "version": true, "edg": true, "opr": true, "crios": true, "fxios": true}

// hasPlaceholder reports a browser product whose version is not a number,
// or template syntax anywhere.
func hasPlaceholder(p *parsed) bool {
	for i := range p.items {
		it := &p.items[i]
		if it.kind == itemProduct && versioned[it.name] && it.version != "" && !isVersion(it.version) {
			return true
		}
		// "%20" is an app's URL-encoded space; "%s" a format verb.
		if strings.ContainsAny(it.text, "{}$<>") || strings.Contains(it.text, "%s") || strings.Contains(it.text, "x.x") {
			return true
		}
	}
	return false
}

// browserRules check a user agent of a browser's shape: after the
// platform comment, every product must be one browsers send (or a bare
// version), the engine comment must be the engine's own, and a Mozilla
// product must be followed by an engine or name a browser in its comment.
func browserRules(ua string, shape browserShape, lex *lexicon) verdict {
	if foreignCompatible(ua) {
		return verdictTool
	}
	engine := false
	// Electron apps name themselves before Chrome ("obsidian/1.11.7
	// Chrome/142 Electron/39.5.1"): one product of their own is theirs.
	appName := strings.Contains(ua, " electron/")
	// In-app browsers append their parameters as key/value pairs whose
	// values are words ("NetType/WIFI Language/zh_CN"); a tool appends a
	// product with a version. With such a list, unknown products are the
	// app's.
	params := false
	for _, it := range shape.rest {
		if it.kind == itemProduct && it.version != "" && !isVersion(it.version) && !versioned[it.name] {
			params = true
		}
	}
	for i, it := range shape.rest {
		switch it.kind {
		case itemProduct:
			switch it.name {
			case "applewebkit", "gecko", "presto", "khtml", "trident", "goanna", "webkit":
				engine = true
			}
			if it.text == "like" || it.text == "gecko" {
				engine = true
			}
			// A product with a version that no browser sends is a tool's
			// ("... Safari/537.36 Tool/1.0"). A bare word is left alone:
			// browsers and apps append those too ("Brave", "Debian",
			// "Twitter for iPhone"), and crawlers that do are mostly named.
			if it.version != "" && it.name != "" && !params && !isVersion(it.name) && !lex.knownSuffix(it.name) && !strings.HasSuffix(it.name, "browser") {
				if !appName {
					return verdictSuffix
				}
				appName = false
			}
		case itemComment:
			if i > 0 && shape.rest[i-1].kind == itemProduct && shape.rest[i-1].name == "applewebkit" && !engineComment(it.text) {
				return verdictSuffix
			}
		}
	}
	if !engine && !platformNamesBrowser(shape.platform) {
		return verdictTool
	}
	return verdictBrowser
}

// engineComment reports whether the comment after AppleWebKit is the
// engine's own: "KHTML, like Gecko", in any spacing, Safari's early
// versions adding ", Safari/419.3".
func engineComment(c string) bool {
	c = strings.NewReplacer(" ", "", ",", "").Replace(c)
	return c == "khtmllikegecko" || strings.HasPrefix(c, "khtmllikegeckosafari")
}

// platformNamesBrowser reports whether a Mozilla product's comment names
// the browser or device itself, as Internet Explorer ("compatible; MSIE
// 9.0"), consoles and feature phones do without an engine product.
func platformNamesBrowser(platform string) bool {
	fs := fields(platform)
	if len(fs) == 0 || len(fs) == 1 && fs[0] == "compatible" {
		return false
	}
	return true
}

// foreignCompatible: "compatible;" followed by anything but a browser.
// Internet Explorer wrote "(compatible; MSIE 9.0; ...)", and so did the
// shells and toolbars built on it (MSIE or Trident then appears later in
// the same comment), as did Konqueror and a few browsers of the 1990s.
// Every other product behind "compatible;" is a tool naming itself
// ("Mozilla/5.0 (compatible; SomeMonitor/1.0; ...)").
func foreignCompatible(ua string) bool {
	for rest := ua; ; {
		i := strings.Index(rest, "compatible;")
		if i < 0 {
			return false
		}
		rest = strings.TrimLeft(rest[i+len("compatible;"):], " ")
		comment := rest
		if end := strings.IndexByte(rest, ')'); end >= 0 {
			comment = rest[:end]
		}
		if !hasAnyPrefix(rest, browserCompatible...) &&
			!strings.Contains(comment, "msie") && !strings.Contains(comment, "trident/") {
			return true
		}
	}
}

// browserCompatible are the browsers that write "compatible;" before
// their own name.
var browserCompatible = []string{"msie", "konqueror", "iemobile", "opera", "icab", "omniweb", "u;"}

// punctuation reports whether s holds no letter or digit (a stray ")").
func punctuation(s string) bool {
	for i := 0; i < len(s); i++ {
		if isAlnum(s[i]) {
			return false
		}
	}
	return true
}

// appStacks are the HTTP stacks of native apps: a person using an app.
var appStacks = []string{"cfnetwork", "darwin", "dalvik", "dart"}

// productRules check a user agent without a browser's shape. It is a
// tool unless it is a native app's stack or one of its products is a
// browser's (Opera's "Opera/9.80 (...) Presto/2.12", a feature phone's
// "Nokia6300/2.0 Profile/MIDP-2.0 Configuration/CLDC-1.1").
func productRules(p *parsed, lex *lexicon) verdict {
	products := 0
	for i := range p.items {
		it := &p.items[i]
		if it.kind != itemProduct {
			continue
		}
		products++
		for _, s := range appStacks {
			if it.name == s {
				return verdictBrowser
			}
		}
		if it.version != "" && it.name != "mozilla" && (lex.knownBrowserToken(it.name) || strings.HasSuffix(it.name, "browser")) {
			return verdictBrowser
		}
	}
	if products == 1 && len(p.items) == 1 && deviceModel(p.items[0].text) {
		// In-app browsers and apps that send nothing but the device's
		// name ("iPhone14,2", "SM-G991B").
		return verdictBrowser
	}
	return verdictTool
}

// deviceModel reports whether s reads as a device model code: letters
// and digits, both, with at most ',', '-' and '_' between, and no '/'.
func deviceModel(s string) bool {
	letters, digits := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z':
			letters = true
		case '0' <= c && c <= '9':
			digits = true
		case c == ',' || c == '-' || c == '_':
		default:
			return false
		}
	}
	return letters && digits && len(s) >= 4
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

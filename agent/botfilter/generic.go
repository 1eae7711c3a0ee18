package botfilter

import "strings"

// Generic rules complete crawlerdetect's list of names. A list of names
// always trails the long tail of small tools (a monitor that launched last
// week, a webhook sender, an in-house scraper), but their user agents
// break the grammar of browser user agents in a few recurring ways, and
// real browsers never do. Each rule below states the invariant it relies
// on. They were written from that grammar and checked on the development
// half of testdata/eval only (see eval_test.go); tokens that real apps put
// in their native HTTP stacks (Dalvik, CFNetwork, Dart) are left alone.

// genericBot reports whether ua, lower-cased, is automated by shape or by
// its own words.
func genericBot(ua string) bool {
	return hasContact(ua) ||
		foreignCompatible(ua) ||
		!hasVersion(ua) ||
		containsAny(ua, botWords) ||
		hasWordSuffix(ua, "-ai") ||
		hasWordSuffix(ua, "-user")
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
		if hasWordSuffix(ua, tld) {
			return true
		}
	}
	return false
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
		if !hasAnyPrefix(rest, "msie", "konqueror", "iemobile", "opera", "icab", "omniweb", "u;") &&
			!strings.Contains(comment, "msie") && !strings.Contains(comment, "trident/") {
			return true
		}
	}
}

// hasVersion: some product token carries a version ("Name/1.2", "Roku/DVP-
// 9.10"). Browsers, apps and HTTP libraries all do; hand-written user
// agents ("Determ", "Library Of Congress Web Archiving", "venus/planet")
// often do not.
func hasVersion(ua string) bool {
	for i := 1; i < len(ua); i++ {
		if ua[i] == '/' && isAlnum(ua[i-1]) && strings.ContainsAny(token(ua[i+1:]), "0123456789") {
			return true
		}
	}
	return false
}

// botWords are words of automation that no browser user agent contains,
// and HTTP libraries crawlerdetect does not list. Words that browsers or
// app names do hold are left out: "proxy" (UC Mini's "SpeedMode; Proxy"),
// "preview" (Safari Technology Preview), "health" or "measure" (an app's
// own user agent, "Health/1.0 CFNetwork/1410 Darwin/22.6.0", is a person).
var botWords = []string{
	"scanner", "scanning", "scan/", "-scan", "scrap", "webhook", "unfurl", "linkpreview",
	"link preview", "link-preview", "synthetic", "archiv", "parser", "monitor", "audit",
	"research", "agent",
	"healthcheck", "health-check", "health check", "speedtest", "screenshot",
	"http client", "httpclient", "http-client", "http_client", "http request", "httprequest",
	"undici", "deno/", "bun/", "cpp-httplib", "htmlunit", "jsoup", "powershell", "colly",
	"requests/", "httpx", "hyper/",
}

// hasWordSuffix reports whether suffix ends a word of ua: it follows a
// letter or digit and is followed by the end or a separator. "-ai" and
// "-user" end the names of AI crawlers and of agents fetching for a
// person ("cohere-ai", "ChatGPT-User/1.0"); no browser token ends so.
func hasWordSuffix(ua, suffix string) bool {
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

// token returns s up to the first separator of user-agent products.
func token(s string) string {
	if i := strings.IndexAny(s, " ;(),"); i >= 0 {
		return s[:i]
	}
	return s
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || 'A' <= c && c <= 'Z'
}

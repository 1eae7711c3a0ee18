package botfilter

import "testing"

func TestCheck(t *testing.T) {
	f := New(Config{})
	for _, tc := range []struct{ ua, want string }{
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", ""},
		{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", ""},
		{"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ReasonCrawler},
		{"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", ReasonCrawler},
		{"curl/8.5.0", ReasonCrawler},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36", ReasonHeadless},
		{"", ""},
	} {
		// Twice: the second answer comes from the cache.
		for range 2 {
			if got := f.Check(tc.ua, ""); got != tc.want {
				t.Fatalf("Check(%q) = %q, want %q", tc.ua, got, tc.want)
			}
		}
	}
	if hits, _ := f.CacheStats(); hits == 0 {
		t.Fatal("cache never hit")
	}
	if got := New(Config{FlagEmptyUA: true}).Check("", ""); got != ReasonEmptyUA {
		t.Fatalf("empty UA with FlagEmptyUA = %q", got)
	}
}

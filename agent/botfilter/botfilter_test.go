package botfilter

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	chromeUA  = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
	iphoneUA  = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
	googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)

func TestCheck(t *testing.T) {
	f := New(Config{})
	for _, tc := range []struct{ ua, want string }{
		{chromeUA, ""},
		{iphoneUA, ""},
		{googlebot, ReasonCrawler},
		{"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", ReasonCrawler},
		{"curl/8.5.0", ReasonCrawler},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36", ReasonHeadless},
		// Crawler names and words name a product.
		{"Mozilla/5.0 (compatible; ExampleMonitor; +https://monitor.example)", ReasonCrawler},
		{"Mozilla/5.0 (compatible; Acme-Checker/2.0)", ReasonCrawler},
		{"acme-webhooks/3.1", ReasonCrawler},
		{"ChatGPT-User/1.0", ReasonCrawler},
		{"example-ai", ReasonCrawler},
		{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; TSMbot) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/136.0.0.0 Safari/537.36", ReasonCrawler},
		// Contact.
		{"ops@example.com", ReasonUAContact},
		{"Exampleco.com/1.0", ReasonUAContact},
		// Placeholders left in a template.
		{"Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/geckotrail Firefox/firefoxversion", ReasonUAPlaceholder},
		{"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/W.X.Y.Z Mobile Safari/537.36", ReasonUAPlaceholder},
		// A browser's shape with a tool's product after the browser or in
		// the engine comment.
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Tool/1.0", ReasonUASuffix},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko; SomeFetcher) Chrome/120.0.0.0 Safari/537.36", ReasonUASuffix},
		// No browser's shape.
		{"SomeTool/1.0", ReasonUATool},
		{"Exporter/0.24.0", ReasonUATool},
		{"Mozilla/5.0 (compatible)", ReasonUATool},
		{"Mozilla/5.0", ReasonUATool},
		{"Some Company Link Fetching Service", ReasonUATool},
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

// TestPeopleOutsideBrowsers guards the generic rules against user agents
// of people that the evaluation set (desktop and mobile browsers) lacks:
// in-app browsers, TVs and consoles, native app HTTP stacks, old IE.
func TestPeopleOutsideBrowsers(t *testing.T) {
	f := New(Config{})
	for _, ua := range []string{
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/468.0.0.47.106;FBBV/625263936;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/627134458]",
		"Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/125.0.6422.165 Mobile Safari/537.36 Instagram 334.0.0.42.95 Android (34/14; 480dpi; 1080x2340; samsung; SM-S918B; dm3q; qcom; en_GB; 601420827)",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 musical_ly_34.5.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US ByteFullLocale/en-US isDarkMode/0 WKWebView/1 RevealType/Dialog BytedanceWebview/d8a21c6",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [LinkedInApp]/9.29.8170",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Snapchat/13.0.0.0 (like Safari/8617.2.4.10.8, panda)",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/320.0.641665143 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 DuckDuckGo/7 Safari/605.1.15",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 11_2_1 like Mac OS X) AppleWebKit/604.4.7 (KHTML, like Gecko) Mobile/15C153 (Ecosia ios@3.0.2.609)",
		"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0.4430.210 Mobile Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0",
		"Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.5) AppleWebKit/537.36 (KHTML, like Gecko) 85.0.4183.93/6.5 TV Safari/537.36",
		"Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/87.0.4280.88 Safari/537.36 WebAppManager",
		"Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edge/44.18363.8131",
		"Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
		"Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)",
		"Mozilla/4.0 (compatible; GoogleToolbar 5.0.2124.2070; Windows 6.0; MSIE 8.0.6001.18241)",
		"Mozilla/5.0 (compatible; Konqueror/4.5; Linux) KHTML/4.5.5 (like Gecko)",
		"UCWEB/2.0 (Java; U; MIDP-2.0; Nokia203/20.37) U2/1.0.0 UCMini/11.0.6.1040 (SpeedMode; Proxy; Android 5.1; itel_it1409 ) U2/1.0.0 Mobile",
		"Safari%20Technology%20Preview/11601.6.17 CFNetwork/760.5.1 Darwin/15.5.0 (x86_64)",
		"Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230805.001)",
		"MyShop/4.2.1 CFNetwork/1494.0.7 Darwin/23.4.0",
		"Health/1.0 CFNetwork/1410.0.3 Darwin/22.6.0",
		"Dart/3.3 (dart:io)",
		// Electron desktop apps (Obsidian is in top-user-agents).
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) obsidian/1.11.7 Chrome/142.0.7444.265 Electron/39.5.1 Safari/537.36",
		// A phone whose model holds a crawler word, in a browser and in an app.
		"Mozilla/5.0 (Linux; Android 11; Spider 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Linux; Android 11; Spider 8 Build/RP1A.200720.011; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/445.0.0.34.118;]",
		"Dalvik/2.1.0 (Linux; U; Android 11; Spider 8 Build/RP1A.200720.011)",
		"Mozilla/5.0 (Linux; Android 10; Bot-K1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
		// UC Browser, old and new forms.
		"Mozilla 5.0 (Linux; U; Android 2.3.5; en-us; HTC Vision Build/GRI40) UC AppleWebKit/534.31 (KHTML, like Gecko) Mobile Safari/534.31",
		"Mozilla/5.0 (Linux; U; Android 6.0.1; en-US; Redmi Note 4 Build/MMB29M) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 UCBrowser/11.4.2.995 U3/0.8.0 Mobile Safari/534.30",
		"UCWEB/2.0 (MIDP-2.0; U; Adr 4.0.4; en-US; ZTE_U795) U2/1.0.0 UCBrowser/10.7.6.805 U2/1.0.0 Mobile",
		// In-app browsers that append a bare name, or send only the device's.
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 iPhone14,2",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 9_0_1 like Mac OS X) AppleWebKit/601.1.46 (KHTML, like Gecko) Mobile/13A404 Twitter for iPhone",
		"iPhone14,2",
		"SM-G991B",
	} {
		if got := f.Check(ua, ""); got != "" {
			t.Errorf("Check(%q) = %q, want a person", ua, got)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path
}

// TestLayers checks each layer's reason and that the first match wins, in
// the documented order.
func TestLayers(t *testing.T) {
	dc := writeFile(t, "dc.txt", "# test cloud\n192.0.2.0/24\n2001:db8:100::/40 # v6 block\n")
	f, err := Open(Config{
		FlagEmptyUA: true,
		Allow:       List{UA: []string{"PartnerPreview/"}, CIDRs: []string{"198.51.100.0/24"}},
		Deny: List{UA: []string{"uptime-kuma"}, UARegex: []string{`^InternalProbe/\d`},
			CIDRs: []string{"203.0.113.7", "198.51.100.66/32"}},
		Datacenter:  Datacenter{Files: []string{dc}, CIDRs: []string{"100.64.0.0/10"}},
		RateIP:      IPRate{Rate: Rate{Events: 3, Window: 10 * time.Second}},
		RateVisitor: Rate{Events: 2, Window: 10 * time.Second},
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	const t0 = 1_700_000_000_000
	for _, tc := range []struct {
		name, ua, ip string
		visitor      uint64
		want         string
	}{
		{"browser", chromeUA, "10.1.1.1", 0, ""},
		{"deny ua substring, any case", "Uptime-Kuma/1.23", "10.1.1.1", 0, ReasonDenyList},
		{"deny ua regex", "InternalProbe/2", "10.1.1.1", 0, ReasonDenyList},
		{"deny ip", chromeUA, "203.0.113.7", 0, ReasonDenyList},
		{"deny wins over allow", chromeUA, "198.51.100.66", 0, ReasonDenyList},
		{"deny ua wins over allowed ip", "uptime-kuma", "198.51.100.1", 0, ReasonDenyList},
		{"allowed ua skips the crawler list", "PartnerPreview/1.0 (+https://partner.example)", "192.0.2.10", 0, ""},
		{"allowed ip skips datacenter", googlebot, "198.51.100.1", 0, ""},
		{"crawler before datacenter", googlebot, "192.0.2.10", 0, ReasonCrawler},
		{"empty ua", "", "10.1.1.1", 0, ReasonEmptyUA},
		{"datacenter file v4", chromeUA, "192.0.2.200", 0, ReasonDatacenter},
		{"datacenter file v6", chromeUA, "2001:db8:1ff::1", 0, ReasonDatacenter},
		{"datacenter inline", chromeUA, "100.100.1.1", 0, ReasonDatacenter},
		{"v4-mapped v6 is v4", chromeUA, "::ffff:192.0.2.1", 0, ReasonDatacenter},
		{"outside ranges", chromeUA, "2001:db8:200::1", 0, ""},
		{"unparsable ip skips address layers", chromeUA, "not-an-ip", 0, ""},
	} {
		if got := f.CheckEvent(tc.ua, tc.ip, tc.visitor, t0); got != tc.want {
			t.Errorf("%s: CheckEvent(%q, %q) = %q, want %q", tc.name, tc.ua, tc.ip, got, tc.want)
		}
	}
	if s := f.Stats(); s.UnparsedIPs != 1 || s.DatacenterRanges != 3 {
		t.Errorf("stats %+v: want 1 unparsed IP and 3 datacenter ranges", s)
	}

	// Rates: 3 per IP and 2 per visitor in 10s. Distinct visitors from one
	// IP hit the IP limit; one visitor over several IPs the visitor limit.
	ip := []string{"", "", "", ReasonRateIP, ReasonRateIP}
	for i, want := range ip {
		if got := f.CheckEvent(chromeUA, "10.9.9.9", uint64(100+i), t0+int64(i)); got != want {
			t.Fatalf("event %d from one IP: %q, want %q", i, got, want)
		}
	}
	visitor := []string{"", "", ReasonRateVisitor, ReasonRateVisitor}
	for i, want := range visitor {
		if got := f.CheckEvent(chromeUA, "10.8.0."+string(rune('1'+i)), 42, t0+int64(i)); got != want {
			t.Fatalf("event %d of one visitor: %q, want %q", i, got, want)
		}
	}
	// Without a visitor only the IP counts.
	for i := range 3 {
		if got := f.CheckEvent(chromeUA, "10.7.0.1", 0, t0+int64(i)); got != "" {
			t.Fatalf("event %d without visitor: %q", i, got)
		}
	}
}

// TestCheckClock checks that Check, which has no event time, rate-limits
// at Config.Clock's time.
func TestCheckClock(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := New(Config{RateIP: IPRate{Rate: Rate{Events: 1, Window: time.Minute}}, Clock: func() time.Time { return now }})
	if got := f.Check(chromeUA, "10.0.0.1"); got != "" {
		t.Fatalf("first event: %q", got)
	}
	if got := f.Check(chromeUA, "10.0.0.1"); got != ReasonRateIP {
		t.Fatalf("second event in the same minute: %q, want %q", got, ReasonRateIP)
	}
	now = now.Add(2 * time.Minute)
	if got := f.Check(chromeUA, "10.0.0.1"); got != "" {
		t.Fatalf("two minutes later: %q", got)
	}

	// rate_time receive: CheckEvent ignores the (back-dated) event times.
	f = New(Config{RateVisitor: Rate{Events: 1, Window: time.Minute}, RateTime: RateTimeReceive,
		Clock: func() time.Time { return now }})
	for i, want := range []string{"", ReasonRateVisitor} {
		if got := f.CheckEvent(chromeUA, "", 9, now.Add(-time.Duration(i)*time.Hour).UnixMilli()); got != want {
			t.Fatalf("receive time, event %d: %q, want %q", i, got, want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	bad := writeFile(t, "bad.txt", "10.0.0.0/8\n\n# fine\n10.0.0.0/33\n")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"invalid config", Config{RateIP: IPRate{Rate: Rate{Events: -1}}}, "rate_ip.events -1"},
		{"missing file", Config{Datacenter: Datacenter{Files: []string{filepath.Join(t.TempDir(), "nope.txt")}}}, "open CIDR list"},
		{"bad line", Config{Datacenter: Datacenter{Files: []string{bad}}}, "bad.txt:4:"},
	} {
		_, err := Open(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	f := New(Config{
		Datacenter:  Datacenter{CIDRs: []string{"192.0.2.0/24", "2001:db8::/32"}},
		RateIP:      IPRate{Rate: Rate{Events: 1000}},
		RateVisitor: Rate{Events: 1000},
	})
	f.Check(chromeUA, "")
	ms := int64(1_700_000_000_000)
	allocs := testing.AllocsPerRun(1000, func() {
		ms++
		f.CheckEvent(chromeUA, "2001:db8:1::7", 7, ms)
		f.CheckEvent(chromeUA, "10.1.2.3", 7, ms)
	})
	if allocs != 0 {
		t.Fatalf("CheckEvent on a cached user agent allocates %v times", allocs)
	}
}

// TestConcurrent exercises the caches and rate tables from many
// goroutines, for the race detector.
func TestConcurrent(t *testing.T) {
	f := New(Config{CacheSize: 64, RateIP: IPRate{Rate: Rate{Events: 5, Slots: minSlots}}, RateVisitor: Rate{Events: 5, Slots: minSlots}})
	uas := []string{chromeUA, iphoneUA, googlebot, "curl/8", ""}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				ua := uas[i%len(uas)]
				if i%7 == 0 {
					ua = chromeUA + " x" + string(rune('a'+i%26)) + string(rune('a'+g))
				}
				f.CheckEvent(ua, "10.0.0."+string(rune('0'+i%10)), uint64(i%300), int64(i))
			}
		})
	}
	wg.Wait()
	if s := f.Stats(); s.CacheHits == 0 || s.CacheMisses == 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMetrics(t *testing.T) {
	dc := writeFile(t, "dc.txt", "# data-date: 2026-06-17T19:00:00Z\n192.0.2.0/24\n")
	f := New(Config{RateIP: IPRate{Rate: Rate{Events: 5}}, Datacenter: Datacenter{Files: []string{dc}},
		Behaviour: Behaviour{NoScript: true}})
	defer f.Close()
	f.Check(chromeUA, "192.0.2.1")
	f.Check(chromeUA, "bad ip")
	f.ScriptFetched("192.0.2.1", chromeUA)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(f); err != nil {
		t.Fatalf("register: %v", err)
	}
	want := `
# HELP tally_agent_bots_unparsed_ips_total Events whose IP was not an address, skipped by the address layers.
# TYPE tally_agent_bots_unparsed_ips_total counter
tally_agent_bots_unparsed_ips_total 1
# HELP tally_agent_bots_datacenter_ranges Merged datacenter address ranges loaded.
# TYPE tally_agent_bots_datacenter_ranges gauge
tally_agent_bots_datacenter_ranges 1
# HELP tally_agent_bots_datacenter_data_timestamp_seconds When the oldest datacenter list loaded was published (its data-date comment), in unix seconds; absent when no list says.
# TYPE tally_agent_bots_datacenter_data_timestamp_seconds gauge
tally_agent_bots_datacenter_data_timestamp_seconds 1.7817228e+09
# HELP tally_agent_bots_behaviour_clients Clients the behavioural signals remember now, each for less than a minute.
# TYPE tally_agent_bots_behaviour_clients gauge
tally_agent_bots_behaviour_clients 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tally_agent_bots_unparsed_ips_total",
		"tally_agent_bots_datacenter_ranges", "tally_agent_bots_datacenter_data_timestamp_seconds",
		"tally_agent_bots_behaviour_clients"); err != nil {
		t.Fatal(err)
	}
	if s := f.Stats(); s.CacheBytes != len(chromeUA)+entryOverhead {
		t.Fatalf("cache bytes %d, want %d", s.CacheBytes, len(chromeUA)+entryOverhead)
	}
	if n := testutil.CollectAndCount(f); n != 10 {
		t.Fatalf("collected %d metrics, want 10", n)
	}
}

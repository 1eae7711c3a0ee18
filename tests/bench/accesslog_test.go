package bench

import (
	"bufio"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tally-edge/tally/internal/loadgen"
)

// logTruth is what tally-agent import-log must report for a generated
// log under the default rule of `-format combined` (import-log takes no
// rules): how many lines, events and bots, and how many lines are
// skipped or rejected.
type logTruth struct {
	Lines, Events, Bots, Skipped, Rejected int
	Bytes                                  int64
}

// logLine builds one combined-format line; its methods append to a
// reused buffer so that writing a million lines stays a small part of the
// benchmark's run (and of its CPU profile).
type logLine struct {
	buf        []byte
	lastSecond int64
	stamp      []byte
}

func (l *logLine) begin(ip string, ts time.Time) {
	if s := ts.Unix(); s != l.lastSecond || l.stamp == nil {
		l.lastSecond = s
		l.stamp = ts.AppendFormat(l.stamp[:0], "02/Jan/2006:15:04:05 -0700")
	}
	l.buf = append(l.buf[:0], ip...)
	l.buf = append(l.buf, " - - ["...)
	l.buf = append(l.buf, l.stamp...)
	l.buf = append(l.buf, "] \""...)
}

func (l *logLine) end(status, size int, referrer, ua string) []byte {
	l.buf = append(l.buf, "\" "...)
	l.buf = strconv.AppendInt(l.buf, int64(status), 10)
	l.buf = append(l.buf, ' ')
	l.buf = strconv.AppendInt(l.buf, int64(size), 10)
	l.buf = append(l.buf, " \""...)
	if referrer == "" {
		referrer = "-"
	}
	l.buf = append(l.buf, referrer...)
	l.buf = append(l.buf, "\" \""...)
	l.buf = append(l.buf, ua...)
	l.buf = append(l.buf, "\"\n"...)
	return l.buf
}

var (
	dayCampaigns = []string{"spring_sale", "black_friday", "cyber_monday", "newsletter_nov", "newsletter_dec", "brand_awareness",
		"retargeting_q4", "app_install", "summer+sale", "r%C3%A9ductions_hiver", "partner_launch", "holiday_gift_guide"}
	dayChannels = []string{"utm_source=google&utm_medium=cpc", "utm_source=facebook&utm_medium=paid_social",
		"utm_source=newsletter&utm_medium=email", "utm_source=instagram&utm_medium=social", "utm_source=bing&utm_medium=cpc",
		"utm_source=partner_blog&utm_medium=referral", "utm_source=tiktok&utm_medium=paid_social", "utm_source=google&utm_medium=organic"}
	dayReferrers = []string{"", "https://www.google.com/", "https://www.bing.com/", "https://l.facebook.com/", "https://t.co/abc",
		"https://shop.example.com/", "https://shop.example.com/products/trail-runner", "android-app://com.google.android.gm/"}
	dayAssets = []string{"/static/app.9f2c1.css", "/static/app.3b7e0.js", "/static/vendor.77a1d.js", "/img/hero.webp",
		"/img/p/1042.jpg", "/favicon.ico", "/fonts/inter.woff2", "/robots.txt", "/sitemap.xml"}
	dayPages = []string{"/", "/products/trail-runner", "/products/city-sneaker", "/c/shoes", "/c/shoes?page=2", "/blog/how-to-choose.html",
		"/about", "/cart", "/search?q=boots", "/p/1042", "/p/2210", "/landing/winter/"}
	dayNotFound = []string{"/wp-login.php", "/.env", "/old-page.html", "/products/discontinued", "/xmlrpc.php", "/admin/config.php"}
)

// spread returns the time of line i of n spread evenly over span from
// start. It divides first: i × span overflows int64 nanoseconds for a day
// of a million lines (beyond line 106,751), which would send the log back
// and forth in time instead of forward.
func spread(start time.Time, span time.Duration, i, n int) time.Time {
	return start.Add(time.Duration(i) * (span / time.Duration(n)))
}

// writeDayLog writes n combined lines spread evenly over the 24 hours
// before end, as a shop's nginx would log them: page views (most with UTM
// landings), ad clicks answered with a 302, order confirmations, assets,
// 404s from scanners, API POSTs and HEADs, about 5 % crawler user agents,
// and a few TLS handshakes sent to the plain port (malformed). Visitors
// come from a pool of 40,000 (IP, user agent) pairs.
func writeDayLog(path string, n int, end time.Time) (logTruth, error) {
	return writeShopLog(path, n, end, 24*time.Hour, dayCampaigns, nil)
}

// writeShopLog writes the log writeDayLog describes over span before end,
// with campaigns for the UTM landings and ad clicks. If pageviews is not
// nil, it counts there each campaign's human page views ("" for those
// without a campaign, as the API's campaign list names them).
func writeShopLog(path string, n int, end time.Time, span time.Duration, campaigns []string, pageviews map[string]uint64) (logTruth, error) {
	var tr logTruth
	f, err := os.Create(path)
	if err != nil {
		return tr, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(20261122, 1))
	type visitor struct{ ip, ua string }
	visitors := make([]visitor, 40_000)
	for i := range visitors {
		ip := strconv.Itoa(rng.IntN(223)+1) + "." + strconv.Itoa(rng.IntN(256)) + "." + strconv.Itoa(rng.IntN(256)) + "." + strconv.Itoa(rng.IntN(254)+1)
		if i%10 == 0 {
			ip = "2001:db8:" + strconv.FormatInt(int64(rng.IntN(1<<16)), 16) + "::" + strconv.FormatInt(int64(rng.IntN(1<<16)), 16)
		}
		visitors[i] = visitor{ip, loadgen.BrowserUAs[rng.IntN(len(loadgen.BrowserUAs))]}
	}
	crawlerIPs := make([]string, 200)
	for i := range crawlerIPs {
		crawlerIPs[i] = "66.249." + strconv.Itoa(64+i%32) + "." + strconv.Itoa(i+1)
	}
	start := end.Add(-span)
	var l logLine
	for i := range n {
		ts := spread(start, span, i, n)
		v := visitors[rng.IntN(len(visitors))]
		bot := rng.IntN(100) < 5
		if bot {
			v = visitor{crawlerIPs[rng.IntN(len(crawlerIPs))], loadgen.CrawlerUAs[rng.IntN(len(loadgen.CrawlerUAs))]}
		}
		referrer := dayReferrers[rng.IntN(len(dayReferrers))]
		campaign := ""
		utm := func() string {
			campaign = campaigns[rng.IntN(len(campaigns))]
			return "utm_campaign=" + campaign + "&" + dayChannels[rng.IntN(len(dayChannels))]
		}
		l.begin(v.ip, ts)
		status, size, page := 200, 512+rng.IntN(40_000), false
		switch k := rng.IntN(1000); {
		case k < 1: // a TLS handshake on the plain port: bad_request
			l.buf = append(l.buf, `\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03`...)
			status, size, referrer, v.ua = 400, 157, "", "-"
			tr.Rejected++
		case k < 400: // landing page with UTM parameters
			p := dayPages[rng.IntN(len(dayPages))]
			sep := "?"
			if strings.Contains(p, "?") {
				sep = "&"
			}
			l.buf = append(l.buf, "GET "+p+sep+utm()+" HTTP/1.1"...)
			page = true
			if pageviews != nil && !bot {
				pageviews[campaign]++
			}
		case k < 620: // navigation, no campaign; some 304s
			l.buf = append(l.buf, "GET "+dayPages[rng.IntN(len(dayPages))]+" HTTP/2.0"...)
			if rng.IntN(20) == 0 {
				status, size = 304, 0
			}
			page = true
		case k < 660: // ad click, redirected: skip_status under the default rule
			l.buf = append(l.buf, "GET /click?"+utm()+"&ad="+strconv.Itoa(rng.IntN(500))+" HTTP/1.1"...)
			status, size = 302, 145
			tr.Skipped++
		case k < 670: // order confirmation
			l.buf = append(l.buf, "GET /checkout/thanks?order="+strconv.Itoa(100000+i)+"&total="+strconv.Itoa(rng.IntN(300))+".90 HTTP/1.1"...)
			page = true
		case k < 890: // assets
			l.buf = append(l.buf, "GET "+dayAssets[rng.IntN(len(dayAssets))]+" HTTP/2.0"...)
			tr.Skipped++
		case k < 930: // scanners and dead links
			l.buf = append(l.buf, "GET "+dayNotFound[rng.IntN(len(dayNotFound))]+" HTTP/1.1"...)
			status, size = 404, 153
			tr.Skipped++
		case k < 980: // API and cart calls
			l.buf = append(l.buf, "POST /api/cart HTTP/1.1"...)
			status, size = 201, 64
			tr.Skipped++
		default: // uptime checks
			l.buf = append(l.buf, "HEAD / HTTP/1.1"...)
			size = 0
			tr.Skipped++
		}
		if page && campaign == "" && pageviews != nil && !bot {
			pageviews[""]++
		}
		if page {
			if bot {
				tr.Bots++
			} else {
				tr.Events++
			}
		}
		line := l.end(status, size, referrer, v.ua)
		tr.Lines++
		tr.Bytes += int64(len(line))
		if _, err := w.Write(line); err != nil {
			f.Close()
			return tr, err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return tr, err
	}
	return tr, f.Close()
}

// desktopUAs are browser user agents that all map to the device
// "desktop", so the wide log's series are exactly campaign × source.
var desktopUAs = []string{loadgen.BrowserUAs[0], loadgen.BrowserUAs[1], loadgen.BrowserUAs[5], loadgen.BrowserUAs[6]}

// writeWideLog writes n page-view lines over the span before end whose
// series cycle through campaigns × sources distinct (campaign, source)
// pairs with one medium, country and device: every series is active in
// every minute.
func writeWideLog(path string, n, campaigns, sources int, span time.Duration, end time.Time) (logTruth, error) {
	var tr logTruth
	f, err := os.Create(path)
	if err != nil {
		return tr, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	series := campaigns * sources
	start := end.Add(-span)
	var l logLine
	for i := range n {
		ts := spread(start, span, i, n)
		s := i % series
		ip := "10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255)
		l.begin(ip, ts)
		l.buf = append(l.buf, "GET /landing?utm_campaign=c"...)
		l.buf = strconv.AppendInt(l.buf, int64(s/sources), 10)
		l.buf = append(l.buf, "&utm_source=s"...)
		l.buf = strconv.AppendInt(l.buf, int64(s%sources), 10)
		l.buf = append(l.buf, "&utm_medium=cpc HTTP/1.1"...)
		line := l.end(200, 4096, "https://www.google.com/", desktopUAs[i%len(desktopUAs)])
		tr.Lines++
		tr.Events++
		tr.Bytes += int64(len(line))
		if _, err := w.Write(line); err != nil {
			f.Close()
			return tr, err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return tr, err
	}
	return tr, f.Close()
}

// Package loadgen generates realistic campaign traffic for the demo, the
// end-to-end tests and benchmarks, and keeps the ground truth of what it
// generated so tests can compare the system's numbers against it.
//
// The truth is computed from the raw input (visitor ids, amounts in
// cents), never through the agent's code, so a bug there cannot hide
// itself.
package loadgen

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Event is one generated event in the ingest contract's JSON shape.
type Event struct {
	Type     string   `json:"type"`
	TS       int64    `json:"ts"`
	Campaign string   `json:"campaign,omitempty"`
	Source   string   `json:"source,omitempty"`
	Medium   string   `json:"medium,omitempty"`
	Country  string   `json:"country,omitempty"`
	Visitor  string   `json:"visitor,omitempty"`
	IP       string   `json:"ip,omitempty"`
	UA       string   `json:"ua,omitempty"`
	URL      string   `json:"url,omitempty"`
	Value    *float64 `json:"value,omitempty"`
	Cost     *float64 `json:"cost,omitempty"`
	Poll     string   `json:"poll,omitempty"`
	Answer   string   `json:"answer,omitempty"`

	// Bot is the generator's own label: this event comes from a crawler.
	Bot bool `json:"-"`
	// cents of value or cost, exact.
	cents int64
}

// Config shapes the traffic.
type Config struct {
	Seed uint64
	// Campaigns is the number of campaigns. Default 6.
	Campaigns int
	// Visitors is the size of the visitor pool. Default 20,000.
	Visitors int
	// Countries and Channels bound how many countries and (source,
	// medium) pairs appear: fewer means fewer series. Defaults 8 and 7.
	Countries, Channels int
	// BotShare is the fraction of events from crawlers. Zero means the
	// default 0.05; a negative value means no bots.
	BotShare float64
}

// Campaign names, in order; Config.Campaigns takes a prefix (and numbers
// more when it asks for more).
var campaignNames = []string{"spring_sale", "black_friday", "newsletter_nov", "brand_awareness", "retargeting_q4", "app_install"}

var channels = []struct{ source, medium string }{
	{"google", "cpc"}, {"facebook", "paid_social"}, {"newsletter", "email"}, {"instagram", "social"},
	{"bing", "cpc"}, {"partner_blog", "referral"}, {"", ""},
}

var countries = []string{"US", "DE", "FR", "GB", "BR", "JP", "IN", "CA"}

// BrowserUAs are real browser user agents the bot filter must let through.
var BrowserUAs = []string{
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
	"Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
}

// CrawlerUAs are well-known crawler user agents the bot filter must catch.
var CrawlerUAs = []string{
	"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
	"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
	"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
	"Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
	"python-requests/2.32.3",
	"curl/8.5.0",
}

// types and their weights: a plausible funnel.
var types = []struct {
	name   string
	weight int
}{
	{"impression", 560}, {"pageview", 200}, {"click", 120}, {"email_open", 40}, {"email_click", 15},
	{"conversion", 25}, {"cost", 10}, {"video_play", 15}, {"form_submit", 10}, {"bounce", 5}, {"poll_vote", 10},
}

// polls are the generated polls and their answers; answers earlier in a
// list get more votes.
var polls = []struct {
	name    string
	answers []string
}{
	{"next_product", []string{"running shoes", "rain jacket", "backpack", "smart watch"}},
	{"how_did_you_hear", []string{"search", "friend", "podcast", "newsletter", "other"}},
}

var typeTotal = func() int {
	n := 0
	for _, t := range types {
		n += t.weight
	}
	return n
}()

// Generator produces events. It is not safe for concurrent use.
type Generator struct {
	cfg       Config
	rng       *rand.Rand
	campaigns []string
}

// New returns a Generator.
func New(cfg Config) *Generator {
	if cfg.Campaigns <= 0 {
		cfg.Campaigns = 6
	}
	if cfg.Visitors <= 0 {
		cfg.Visitors = 20_000
	}
	if cfg.Countries <= 0 || cfg.Countries > len(countries) {
		cfg.Countries = len(countries)
	}
	if cfg.Channels <= 0 || cfg.Channels > len(channels) {
		cfg.Channels = len(channels)
	}
	switch {
	case cfg.BotShare == 0 || cfg.BotShare >= 1:
		cfg.BotShare = 0.05
	case cfg.BotShare < 0:
		cfg.BotShare = 0
	}
	g := &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	for i := range cfg.Campaigns {
		if i < len(campaignNames) {
			g.campaigns = append(g.campaigns, campaignNames[i])
		} else {
			g.campaigns = append(g.campaigns, fmt.Sprintf("campaign_%03d", i))
		}
	}
	return g
}

// Campaigns returns the campaign names in use.
func (g *Generator) Campaigns() []string { return g.campaigns }

// Event returns one event stamped at ts.
func (g *Generator) Event(ts time.Time) Event {
	r := g.rng
	campaign := g.campaigns[zipf(r, len(g.campaigns))]
	ch := channels[r.IntN(g.cfg.Channels)]
	typ := pickType(r)
	e := Event{Type: typ, TS: ts.UnixMilli(), Campaign: campaign, Source: ch.source, Medium: ch.medium,
		Country: countries[zipf(r, g.cfg.Countries)]}
	if typ == "cost" {
		// Spend reported by the ad network: no visitor, no UA.
		cents := int64(50 + r.IntN(5000))
		c := float64(cents) / 100
		e.Cost, e.cents = &c, cents
		return e
	}
	v := r.IntN(g.cfg.Visitors)
	e.Visitor = fmt.Sprintf("v%06d", v)
	e.IP = fmt.Sprintf("198.51.100.%d", v%250+1)
	if r.Float64() < g.cfg.BotShare {
		e.Bot = true
		e.UA = CrawlerUAs[r.IntN(len(CrawlerUAs))]
		e.Visitor = ""
	} else {
		e.UA = BrowserUAs[v%len(BrowserUAs)]
	}
	if typ == "pageview" || typ == "click" {
		e.URL = fmt.Sprintf("https://shop.example.com/p/%d?utm_campaign=%s", r.IntN(500), campaign)
	}
	if typ == "poll_vote" {
		p := polls[r.IntN(len(polls))]
		e.Poll, e.Answer = p.name, p.answers[zipf(r, len(p.answers))]
	}
	if typ == "conversion" {
		cents := int64(500 + r.IntN(30000))
		val := float64(cents) / 100
		e.Value, e.cents = &val, cents
	}
	return e
}

func pickType(r *rand.Rand) string {
	n := r.IntN(typeTotal)
	for _, t := range types {
		if n < t.weight {
			return t.name
		}
		n -= t.weight
	}
	return types[0].name
}

// zipf picks an index in [0, n) with a skew towards small indexes, as
// real campaign and country mixes are.
func zipf(r *rand.Rand, n int) int {
	for {
		i := int(float64(n) * r.Float64() * r.Float64())
		if i < n {
			return i
		}
	}
}

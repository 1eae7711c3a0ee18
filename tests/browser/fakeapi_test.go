package browser

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/dashboard"
)

// fakeAPI serves the API contract's routes from generated data, and the
// real embedded dashboard at /. It stands in for an aggregator until the
// real API exists; the scenarios talk to it only through the backend
// interface and the HTTP contract, so they run unchanged against a real
// aggregator.
//
// Data is a set of cells per campaign-minute, each with its five
// dimensions and exact counters, so totals, breakdowns, filters and
// series all add up the same way. Uniques in the fake are plain sums.
type fakeAPI struct {
	srv       *httptest.Server
	campaigns []string
	tokens    map[string]principal

	mu      sync.Mutex
	data    map[string]map[int64][]cell // campaign -> minute -> cells
	pending map[campaignMinute]bool     // changed since the last stream message
	// provisional marks campaign-minutes the stream says are provisional.
	provisional map[campaignMinute]bool
	subs        map[*subscriber]bool
	nextID      int64
	log         []streamMessage // recent messages, for Last-Event-ID resumes
	streamDown  bool
	nodeDown    bool
	failing     map[string]int // path -> requests still to fail with 503
	resumes     []string       // Last-Event-ID headers seen, in order

	stop chan struct{}
	wg   sync.WaitGroup
}

type principal struct {
	Subject   string   `json:"subject"`
	Role      string   `json:"role"`
	Campaigns []string `json:"campaigns,omitempty"`
}

// sees reports whether p may read campaign c.
func (p principal) sees(c string) bool { return p.Campaigns == nil || slices.Contains(p.Campaigns, c) }

type campaignMinute struct {
	campaign string
	minute   int64
}

// dims are a cell's source, medium, region, country and device.
type dims [5]string

var dimNames = []string{"source", "medium", "region", "country", "device"}

var dimValues = [5][]string{
	{"google", "facebook", "newsletter", "linkedin"},
	{"cpc", "social", "email"},
	{"eu", "us", "apac"},
	{"DE", "US", "FR", "JP", "GB"},
	{"desktop", "mobile", "tablet"},
}

// counters are exact: money in cents.
type counters struct {
	Impressions, Clicks, Conversions, Pageviews, Uniques uint64
	Crawler, Headless                                    uint64
	RevenueCents, CostCents                              int64
}

func (c *counters) add(o counters) {
	c.Impressions += o.Impressions
	c.Clicks += o.Clicks
	c.Conversions += o.Conversions
	c.Pageviews += o.Pageviews
	c.Uniques += o.Uniques
	c.Crawler += o.Crawler
	c.Headless += o.Headless
	c.RevenueCents += o.RevenueCents
	c.CostCents += o.CostCents
}

func (c counters) kpis() kpi.KPIs {
	k := kpi.KPIs{Impressions: c.Impressions, Clicks: c.Clicks, Conversions: c.Conversions, Pageviews: c.Pageviews,
		Uniques: c.Uniques, Revenue: float64(c.RevenueCents) / 100, Cost: float64(c.CostCents) / 100,
		BotsFiltered: c.Crawler + c.Headless}
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	k.CTR = ratio(float64(k.Clicks), float64(k.Impressions))
	k.CVR = ratio(float64(k.Conversions), float64(k.Clicks))
	k.CPA = ratio(k.Cost, float64(k.Conversions))
	k.ROAS = ratio(k.Revenue, k.Cost)
	return k
}

type cell struct {
	dims dims
	c    counters
}

type streamMessage struct {
	id      int64
	updates []live.Update
}

type subscriber struct {
	who  principal
	ch   chan streamMessage
	kill chan struct{}
	once sync.Once
}

func (s *subscriber) close() { s.once.Do(func() { close(s.kill) }) }

// fakeOptions shape the generated data.
type fakeOptions struct {
	Campaigns int
	// HistoryDays of sparse history (every 15th minute) before the last
	// three hours, which are dense.
	HistoryDays int
	Seed        uint64
}

// Token values of the fake; the viewer sees the first and third campaign.
const (
	fakeAdminToken   = "admin-token-0123456789"
	fakeAnalystToken = "analyst-token-0123456789"
	fakeViewerToken  = "viewer-token-0123456789"
)

// liveGap is a stretch of minutes without data around the edge of the
// live window (60 minutes) at start, so the window's edge moving while a
// test runs never changes a total.
const liveGapFrom, liveGapTo = 75, 40 // minutes before start

func newFakeAPI(opts fakeOptions) *fakeAPI {
	f := &fakeAPI{
		data:    map[string]map[int64][]cell{},
		pending: map[campaignMinute]bool{},
		subs:    map[*subscriber]bool{},
		stop:    make(chan struct{}),
	}
	for i := range opts.Campaigns {
		f.campaigns = append(f.campaigns, fmt.Sprintf("campaign_%03d", i))
	}
	f.tokens = map[string]principal{
		fakeAdminToken:   {Subject: "root", Role: "admin"},
		fakeAnalystToken: {Subject: "ana", Role: "analyst"},
		fakeViewerToken:  {Subject: "vic", Role: "viewer", Campaigns: []string{f.campaigns[0], f.campaigns[2]}},
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 7))
	now := time.Now().Unix() / 60 * 60
	first := now - int64(opts.HistoryDays)*86400
	for _, c := range f.campaigns {
		m := map[int64][]cell{}
		f.data[c] = m
		for t := first; t <= now; t += 60 {
			ago := (now - t) / 60
			if ago >= liveGapTo && ago <= liveGapFrom {
				continue
			}
			if ago > 180 && ago%15 != 0 {
				continue
			}
			if slices.ContainsFunc(windowEdges, func(e int64) bool { return nearEdge(ago, e) }) {
				continue // keep the other windows' edges empty too
			}
			for range 2 {
				m[t] = append(m[t], randomCell(rng))
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/whoami", f.auth(f.whoami))
	mux.HandleFunc("GET /api/v1/campaigns", f.auth(f.campaignsRoute))
	mux.HandleFunc("GET /api/v1/kpis", f.auth(f.kpisRoute))
	mux.HandleFunc("GET /api/v1/series", f.auth(f.seriesRoute))
	mux.HandleFunc("GET /api/v1/bots", f.auth(f.botsRoute))
	mux.HandleFunc("GET /api/v1/polls", f.auth(f.pollsRoute))
	mux.HandleFunc("GET /api/v1/export.csv", f.auth(f.exportRoute))
	mux.HandleFunc("GET /api/v1/stream", f.auth(f.streamRoute))
	mux.Handle("GET /", http.FileServerFS(dashboard.Assets()))
	f.srv = httptest.NewServer(mux)
	f.wg.Add(1)
	go f.publishLoop()
	return f
}

// windowEdges are the edges (minutes before start) of the windows the
// scenarios read besides the live one: the 24 h and 7 d ranges, and the
// periods they are compared with (the previous one, the same one a week
// before; for the hour too).
var windowEdges = []int64{2 * 60, 24 * 60, 2 * 24 * 60, 7 * 24 * 60, 7*24*60 + 60, 8 * 24 * 60}

// nearEdge reports whether a minute ago minutes old is within half an
// hour of the edge of a window of size minutes.
func nearEdge(ago, size int64) bool { return ago >= size-30 && ago <= size+30 }

func randomCell(rng *rand.Rand) cell {
	var d dims
	for i, vs := range dimValues {
		d[i] = vs[rng.IntN(len(vs))]
	}
	imp := 20 + rng.Uint64N(200)
	clicks := imp * (2 + rng.Uint64N(8)) / 100
	conv := clicks * rng.Uint64N(20) / 100
	// Big-ticket sales ($1,000 to $6,000 each): a campaign's week of
	// revenue runs into millions, wider than a narrow tile.
	return cell{dims: d, c: counters{
		Impressions: imp, Clicks: clicks, Conversions: conv, Pageviews: clicks + rng.Uint64N(10),
		Uniques: imp / 2, Crawler: rng.Uint64N(4), Headless: rng.Uint64N(2),
		RevenueCents: int64(conv) * (100000 + rng.Int64N(500000)), CostCents: int64(clicks) * (20 + rng.Int64N(60)),
	}}
}

// Close stops the server and the publisher.
func (f *fakeAPI) Close() {
	close(f.stop)
	f.mu.Lock()
	for s := range f.subs {
		s.close()
	}
	f.mu.Unlock()
	f.srv.CloseClientConnections()
	f.srv.Close()
	f.wg.Wait()
}

// add records traffic in the current minute of campaign, in the cell of
// the given dimensions, and queues it for the stream.
func (f *fakeAPI) add(campaign string, d dims, c counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	minute := time.Now().Unix() / 60 * 60
	m := f.data[campaign]
	cells := m[minute]
	i := slices.IndexFunc(cells, func(x cell) bool { return x.dims == d })
	if i < 0 {
		cells = append(cells, cell{dims: d})
		i = len(cells) - 1
	}
	cells[i].c.add(c)
	m[minute] = cells
	f.pending[campaignMinute{campaign, minute}] = true
}

// setProvisional makes the stream mark the current minute of campaign
// provisional (as an owner does while agents' live counters run ahead of
// their flush), or not, and publishes it again.
func (f *fakeAPI) setProvisional(campaign string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.provisional == nil {
		f.provisional = map[campaignMinute]bool{}
	}
	cm := campaignMinute{campaign, time.Now().Unix() / 60 * 60}
	f.provisional[cm] = on
	f.pending[cm] = true
}

// setStreamDown drops every stream connection and refuses new ones (503)
// while down is true.
func (f *fakeAPI) setStreamDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.streamDown = down
	if down {
		for s := range f.subs {
			s.close()
		}
	}
}

// setNodeDown makes every API request fail at the connection level, as
// a dead node does.
func (f *fakeAPI) setNodeDown(down bool) {
	f.mu.Lock()
	f.nodeDown = down
	if down {
		for s := range f.subs {
			s.close()
		}
	}
	f.mu.Unlock()
}

// failRequests makes the next n requests to path fail with 503 while
// the rest of the API answers. (A dropped connection would not do: the
// browser retries a GET whose reused connection was closed.)
func (f *fakeAPI) failRequests(path string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing == nil {
		f.failing = map[string]int{}
	}
	f.failing[path] += n
}

// resumeIDs returns the Last-Event-ID headers of the stream's reconnects.
func (f *fakeAPI) resumeIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.resumes)
}

// publishLoop sends at most one message per second with the latest state
// of every campaign-minute that changed.
func (f *fakeAPI) publishLoop() {
	defer f.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		f.mu.Lock()
		if len(f.pending) == 0 {
			f.mu.Unlock()
			continue
		}
		var us []live.Update
		for cm := range f.pending {
			us = append(us, live.Update{Campaign: cm.campaign, Minute: cm.minute, KPIs: f.minuteLocked(cm.campaign, cm.minute).kpis(),
				Provisional: f.provisional[cm]})
		}
		clear(f.pending)
		f.nextID++
		msg := streamMessage{id: f.nextID, updates: us}
		f.log = append(f.log, msg)
		if len(f.log) > 120 {
			f.log = f.log[len(f.log)-120:]
		}
		for s := range f.subs {
			select {
			case s.ch <- msg:
			default: // cannot keep up: dropped, never blocks the publisher
				s.close()
				delete(f.subs, s)
			}
		}
		f.mu.Unlock()
	}
}

func (f *fakeAPI) minuteLocked(campaign string, minute int64) counters {
	var c counters
	for _, x := range f.data[campaign][minute] {
		c.add(x.c)
	}
	return c
}

// ---- HTTP ----

func (f *fakeAPI) auth(h func(http.ResponseWriter, *http.Request, principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down := f.nodeDown
		fail := f.failing[r.URL.Path] > 0
		if fail {
			f.failing[r.URL.Path]--
		}
		armed := 0
		for _, n := range f.failing {
			armed += n
		}
		f.mu.Unlock()
		if fail {
			writeErr(w, http.StatusServiceUnavailable, "the node is restarting")
			return
		}
		if armed > 0 {
			// While failures are armed, the requests that succeed answer
			// after those that fail, as a slow query does.
			time.Sleep(300 * time.Millisecond)
		}
		if down {
			panic(http.ErrAbortHandler) // the connection just dies
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		who, known := f.tokens[tok]
		if !ok || !known {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeErr(w, http.StatusUnauthorized, "missing or invalid bearer token")
			return
		}
		h(w, r, who)
	}
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

type paramErr struct{ param, msg string }

func (e *paramErr) Error() string { return fmt.Sprintf("parameter %q: %s", e.param, e.msg) }

// query is a parsed request: the window as minute starts [first, last],
// the dimension filters and by.
type query struct {
	campaigns   []string
	first, last int64 // minute starts, inclusive
	from, to    time.Time
	filter      map[int]string
	by          int // index into dimNames, -1 none, 5 campaign
}

var windows = map[string]time.Duration{"1m": time.Minute, "5m": 5 * time.Minute, "15m": 15 * time.Minute,
	"60m": time.Hour, "1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour}

// parse reads the shared parameters. A sliding window covers the minute
// in progress and the ones before it, as the live view does.
func (f *fakeAPI) parse(r *http.Request, who principal, needCampaign, allowByCampaign bool) (query, error) {
	q := r.URL.Query()
	var qq query
	if c := q.Get("campaign"); c != "" {
		if !slices.Contains(f.campaigns, c) && who.Campaigns == nil {
			qq.campaigns = []string{c} // unknown: no data
		} else if !who.sees(c) {
			return qq, errForbidden
		} else {
			qq.campaigns = []string{c}
		}
	} else if needCampaign {
		return qq, &paramErr{"campaign", "required"}
	} else {
		for _, c := range f.campaigns {
			if who.sees(c) {
				qq.campaigns = append(qq.campaigns, c)
			}
		}
	}
	now := time.Now()
	if w := q.Get("window"); w != "" {
		if q.Get("from") != "" || q.Get("to") != "" {
			return qq, &paramErr{"window", "give either window or from/to, not both"}
		}
		d, ok := windows[w]
		if !ok {
			return qq, &paramErr{"window", "want one of 1m, 5m, 15m, 60m, 1h, 24h, 7d"}
		}
		qq.last = now.Unix() / 60 * 60
		qq.first = qq.last - int64(d/time.Second) + 60
		qq.from, qq.to = time.Unix(qq.first, 0), now
	} else {
		qq.to = now
		if v := q.Get("to"); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return qq, &paramErr{"to", "want RFC 3339"}
			}
			qq.to = t
		}
		qq.from = qq.to.Add(-time.Hour)
		if v := q.Get("from"); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return qq, &paramErr{"from", "want RFC 3339"}
			}
			qq.from = t
		}
		qq.first = (qq.from.Unix() + 59) / 60 * 60
		qq.last = (qq.to.Unix() - 1) / 60 * 60
	}
	qq.filter = map[int]string{}
	for i, n := range dimNames {
		if v := q.Get(n); v != "" {
			qq.filter[i] = v
		}
	}
	qq.by = -1
	if b := q.Get("by"); b != "" {
		qq.by = slices.Index(dimNames, b)
		if b == "campaign" && allowByCampaign && q.Get("campaign") == "" {
			qq.by = 5
		}
		if qq.by < 0 {
			return qq, &paramErr{"by", "want source, medium, country, device or region"}
		}
	}
	return qq, nil
}

var errForbidden = errors.New("campaign outside the token's scope")

func (f *fakeAPI) fail(w http.ResponseWriter, err error) {
	if errors.Is(err, errForbidden) {
		writeErr(w, http.StatusForbidden, err.Error())
		return
	}
	writeErr(w, http.StatusBadRequest, err.Error())
}

// groups adds up the query's cells per step bucket and group key.
// step 0 means one bucket for the whole window.
func (f *fakeAPI) groups(q query, step int64) map[int64]map[string]*counters {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int64]map[string]*counters{}
	for _, c := range q.campaigns {
		for minute, cells := range f.data[c] {
			if minute < q.first || minute > q.last {
				continue
			}
			bucket := int64(0)
			if step > 0 {
				bucket = minute / step * step
			}
		cells:
			for _, x := range cells {
				for i, v := range q.filter {
					if x.dims[i] != v {
						continue cells
					}
				}
				key := ""
				switch {
				case q.by == 5:
					key = c
				case q.by >= 0:
					key = x.dims[q.by]
				}
				g := out[bucket]
				if g == nil {
					g = map[string]*counters{}
					out[bucket] = g
				}
				if g[key] == nil {
					g[key] = &counters{}
				}
				g[key].add(x.c)
			}
		}
	}
	return out
}

func (f *fakeAPI) whoami(w http.ResponseWriter, r *http.Request, who principal) { writeJSON(w, who) }

func (f *fakeAPI) campaignsRoute(w http.ResponseWriter, r *http.Request, who principal) {
	q, err := f.parse(r, who, false, false)
	if err != nil {
		f.fail(w, err)
		return
	}
	prev := q
	n := q.last - q.first + 60
	prev.first, prev.last = q.first-n, q.last-n
	type entry struct {
		Campaign string   `json:"campaign"`
		KPIs     kpi.KPIs `json:"kpis"`
		Previous kpi.KPIs `json:"previous"`
	}
	resp := struct {
		From      time.Time     `json:"from"`
		To        time.Time     `json:"to"`
		Campaigns []entry       `json:"campaigns"`
		Total     api.TotalKPIs `json:"total"`
	}{From: q.from.UTC(), To: q.to.UTC(), Campaigns: []entry{},
		Total: api.TotalKPIs{KPIs: total(f.groups(q, 0)).kpis(), Previous: total(f.groups(prev, 0)).kpis()}}
	for _, c := range q.campaigns {
		one, onePrev := q, prev
		one.campaigns, onePrev.campaigns = []string{c}, []string{c}
		resp.Campaigns = append(resp.Campaigns, entry{Campaign: c, KPIs: total(f.groups(one, 0)).kpis(), Previous: total(f.groups(onePrev, 0)).kpis()})
	}
	writeJSON(w, resp)
}

func total(g map[int64]map[string]*counters) counters {
	var c counters
	for _, keys := range g {
		for _, x := range keys {
			c.add(*x)
		}
	}
	return c
}

func (f *fakeAPI) kpisRoute(w http.ResponseWriter, r *http.Request, who principal) {
	q, err := f.parse(r, who, true, false)
	if err != nil {
		f.fail(w, err)
		return
	}
	g := f.groups(q, 0)
	if q.by < 0 {
		writeJSON(w, total(g).kpis())
		return
	}
	type group struct {
		Key  string   `json:"key"`
		KPIs kpi.KPIs `json:"kpis"`
	}
	resp := struct {
		Campaign string   `json:"campaign"`
		By       string   `json:"by"`
		Total    kpi.KPIs `json:"total"`
		Groups   []group  `json:"groups"`
	}{Campaign: q.campaigns[0], By: dimNames[q.by], Total: total(g).kpis(), Groups: []group{}}
	for key, c := range g[0] {
		resp.Groups = append(resp.Groups, group{key, c.kpis()})
	}
	slices.SortFunc(resp.Groups, func(a, b group) int { return strings.Compare(a.Key, b.Key) })
	writeJSON(w, resp)
}

func parseStep(v string) (int64, error) {
	if v == "1d" {
		return 86400, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d%time.Minute != 0 || d < time.Minute || d > 24*time.Hour {
		return 0, &paramErr{"step", "want a whole number of minutes from 1m to 24h (or 1d)"}
	}
	return int64(d / time.Second), nil
}

var allMetrics = []string{"impressions", "clicks", "conversions", "pageviews", "uniques", "revenue", "cost", "ctr", "cvr", "cpa", "roas", "bots_filtered"}

func metricValues(k kpi.KPIs) map[string]float64 {
	return map[string]float64{"impressions": float64(k.Impressions), "clicks": float64(k.Clicks), "conversions": float64(k.Conversions),
		"pageviews": float64(k.Pageviews), "uniques": float64(k.Uniques), "revenue": k.Revenue, "cost": k.Cost, "ctr": k.CTR,
		"cvr": k.CVR, "cpa": k.CPA, "roas": k.ROAS, "bots_filtered": float64(k.BotsFiltered)}
}

type seriesPoint struct {
	T      time.Time          `json:"t"`
	Values map[string]float64 `json:"values"`
}

type seriesOne struct {
	Key    string        `json:"key"`
	Points []seriesPoint `json:"points"`
}

// series answers the buckets of q by step, one series per group key,
// with every bucket of the window present (zeros where nothing happened).
func (f *fakeAPI) series(q query, step int64) []seriesOne {
	g := f.groups(q, step)
	keys := map[string]bool{}
	for _, b := range g {
		for k := range b {
			keys[k] = true
		}
	}
	if q.by < 0 {
		keys[""] = true
	}
	var out []seriesOne
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	}) {
		s := seriesOne{Key: key, Points: []seriesPoint{}}
		for b := q.first / step * step; b <= q.last; b += step {
			var c counters
			if x := g[b][key]; x != nil {
				c = *x
			}
			s.Points = append(s.Points, seriesPoint{T: time.Unix(b, 0).UTC(), Values: metricValues(c.kpis())})
		}
		out = append(out, s)
	}
	return out
}

func (f *fakeAPI) seriesRoute(w http.ResponseWriter, r *http.Request, who principal) {
	q, err := f.parse(r, who, false, true)
	if err != nil {
		f.fail(w, err)
		return
	}
	step, err := parseStep(r.URL.Query().Get("step"))
	if err != nil {
		f.fail(w, err)
		return
	}
	metrics := strings.Split(r.URL.Query().Get("metric"), ",")
	for _, m := range metrics {
		if !slices.Contains(allMetrics, m) {
			f.fail(w, &paramErr{"metric", fmt.Sprintf("unknown metric %q", m)})
			return
		}
	}
	series := f.series(q, step)
	for _, s := range series {
		for i, p := range s.Points {
			vals := map[string]float64{}
			for _, m := range metrics {
				vals[m] = p.Values[m]
			}
			s.Points[i].Values = vals
		}
	}
	writeJSON(w, map[string]any{"campaign": r.URL.Query().Get("campaign"), "step": r.URL.Query().Get("step"),
		"from": q.from.UTC(), "to": q.to.UTC(), "metrics": metrics, "series": series})
}

func (f *fakeAPI) botsRoute(w http.ResponseWriter, r *http.Request, who principal) {
	q, err := f.parse(r, who, true, false)
	if err != nil {
		f.fail(w, err)
		return
	}
	c := total(f.groups(q, 0))
	all := c.Impressions + c.Clicks + c.Conversions + c.Pageviews + c.Crawler + c.Headless
	share := 0.0
	if all > 0 {
		share = float64(c.Crawler+c.Headless) / float64(all)
	}
	writeJSON(w, map[string]any{"total": c.Crawler + c.Headless, "by_reason": map[string]uint64{"crawler": c.Crawler, "headless": c.Headless}, "share": share})
}

// pollsRoute answers with one poll whose answers are the campaign's
// conversions and its other clicks, so the results move with the window.
func (f *fakeAPI) pollsRoute(w http.ResponseWriter, r *http.Request, who principal) {
	q, err := f.parse(r, who, true, false)
	if err != nil {
		f.fail(w, err)
		return
	}
	c := total(f.groups(q, 0))
	polls := []api.Poll{}
	if n := c.Clicks; n > 0 {
		yes, no := c.Conversions, n-min(c.Conversions, n)
		p := api.Poll{Poll: "Would you buy again?", Total: yes + no}
		for _, a := range []api.Answer{{Answer: "yes", Votes: yes}, {Answer: "not yet", Votes: no}} {
			a.Share = float64(a.Votes) / float64(p.Total)
			p.Answers = append(p.Answers, a)
		}
		polls = append(polls, p)
	}
	writeJSON(w, api.PollsResponse{Polls: polls})
}

func (f *fakeAPI) exportRoute(w http.ResponseWriter, r *http.Request, who principal) {
	q, err := f.parse(r, who, true, false)
	if err != nil {
		f.fail(w, err)
		return
	}
	step, err := parseStep(r.URL.Query().Get("step"))
	if err != nil {
		f.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="tally-%s-%s.csv"`, q.campaigns[0], q.from.UTC().Format("20060102T1504Z")))
	cw := csv.NewWriter(w)
	head := []string{"time", "campaign"}
	if q.by >= 0 {
		head = append(head, dimNames[q.by])
	}
	cw.Write(append(head, allMetrics...))
	for _, s := range f.series(q, step) {
		for _, p := range s.Points {
			row := []string{p.T.Format(time.RFC3339), q.campaigns[0]}
			if q.by >= 0 {
				row = append(row, s.Key)
			}
			for _, m := range allMetrics {
				row = append(row, strconv.FormatFloat(p.Values[m], 'f', -1, 64))
			}
			cw.Write(row)
		}
	}
	cw.Flush()
}

// streamRoute is the SSE stream: status and snapshot on connect (or the
// messages after Last-Event-ID), then each published message, filtered
// to what the caller may see; a ping comment every 15 s.
func (f *fakeAPI) streamRoute(w http.ResponseWriter, r *http.Request, who principal) {
	f.mu.Lock()
	if f.streamDown {
		f.mu.Unlock()
		writeErr(w, http.StatusServiceUnavailable, "stream unavailable")
		return
	}
	s := &subscriber{who: who, ch: make(chan streamMessage, 16), kill: make(chan struct{})}
	var backlog []streamMessage
	resumed := false
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		f.resumes = append(f.resumes, last)
		if n, err := strconv.ParseInt(last, 10, 64); err == nil && len(f.log) > 0 && n >= f.log[0].id-1 && n <= f.nextID {
			for _, m := range f.log {
				if m.id > n {
					backlog = append(backlog, m)
				}
			}
			resumed = true
		}
	}
	var snapshot []live.Update
	if !resumed {
		now := time.Now().Unix() / 60 * 60
		for _, c := range f.campaigns {
			if !who.sees(c) {
				continue
			}
			for minute := now - 59*60; minute <= now; minute += 60 {
				if len(f.data[c][minute]) > 0 {
					snapshot = append(snapshot, live.Update{Campaign: c, Minute: minute, KPIs: f.minuteLocked(c, minute).kpis()})
				}
			}
		}
	}
	id := f.nextID
	f.subs[s] = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, s)
		f.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	send := func(event string, id int64, v any) error {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", id, event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	visible := func(us []live.Update) []live.Update {
		var out []live.Update
		for _, u := range us {
			if who.sees(u.Campaign) {
				out = append(out, u)
			}
		}
		return out
	}
	if err := send("status", id, map[string]any{"node": "fake-1", "members": 1}); err != nil {
		return
	}
	if !resumed {
		if err := send("snapshot", id, map[string]any{"updates": orEmpty(snapshot)}); err != nil {
			return
		}
	}
	for _, m := range backlog {
		if us := visible(m.updates); len(us) > 0 {
			if err := send("minutes", m.id, map[string]any{"updates": us}); err != nil {
				return
			}
		}
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kill:
			return
		case <-f.stop:
			return
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case m := <-s.ch:
			if us := visible(m.updates); len(us) > 0 {
				if err := send("minutes", m.id, map[string]any{"updates": us}); err != nil {
					return
				}
			}
		}
	}
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

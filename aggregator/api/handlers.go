package api

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/sketch"
)

// now is the request time, whole seconds so that answers show plain
// RFC 3339 times.
func (s *Server) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Second) }

// scoped builds the query of the caller's campaigns: campaign= when given
// (403 when outside the caller's scope), else every campaign the caller
// may see. It notes the campaigns for the audit line of the request ctx
// belongs to.
func scoped(ctx context.Context, q url.Values, p *auth.Principal, w window, requireCampaign bool) (Query, string, error) {
	c := q.Get(pCampaign)
	if c == "" && (requireCampaign || q.Has(pCampaign)) {
		return Query{}, "", badParam(pCampaign, "required")
	}
	query := Query{From: w.From, To: w.To, Source: q.Get("source"), Medium: q.Get("medium"),
		Country: q.Get("country"), Device: q.Get("device"), Region: q.Get("region")}
	switch {
	case c != "":
		if !p.CanSee(c) {
			return Query{}, "", errForbidden{c}
		}
		query.Campaigns = []string{c}
		auth.NoteCampaignsContext(ctx, c)
	case p.AllCampaigns():
		query.AllCampaigns = true
		auth.NoteCampaignsContext(ctx, "*")
	default:
		query.Campaigns = p.Campaigns
		auth.NoteCampaignsContext(ctx, p.Campaigns...)
	}
	return query, c, nil
}

// each runs q against the source within the query timeout. Every caller
// folds points with kpi.Accumulator, which reads stored HyperLogLogs
// itself (Query.StoredUniques) and no value sketch (Query.NoQuantiles).
func (s *Server) each(ctx context.Context, q Query, fn func(sketch.Minute) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	q.StoredUniques, q.NoQuantiles = true, true
	return s.source.EachMinute(ctx, q, fn)
}

// whoami serves GET /api/v1/whoami: the caller as the API sees it.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return writeJSON(w, p)
}

// CampaignKPIs is one row of GET /api/v1/campaigns.
type CampaignKPIs struct {
	Campaign string   `json:"campaign"`
	KPIs     kpi.KPIs `json:"kpis"`
	// Previous covers the window of the same length just before.
	Previous kpi.KPIs `json:"previous"`
}

// CampaignsResponse is the body of GET /api/v1/campaigns.
type CampaignsResponse struct {
	From      time.Time      `json:"from"`
	To        time.Time      `json:"to"`
	Campaigns []CampaignKPIs `json:"campaigns"`
	// Total is every listed campaign together, uniques merged (a visitor
	// of two campaigns counts once), so it is not the sum of the rows.
	Total TotalKPIs `json:"total"`
}

// TotalKPIs are the KPIs of every campaign of a list together.
type TotalKPIs struct {
	KPIs     kpi.KPIs `json:"kpis"`
	Previous kpi.KPIs `json:"previous"`
}

// campaigns serves GET /api/v1/campaigns.
func (s *Server) campaigns(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	resp, err := s.Campaigns(r.Context(), p, r.URL.Query())
	if err != nil {
		return err
	}
	return writeJSON(w, resp)
}

// Campaigns answers GET /api/v1/campaigns for p, args being the route's
// query parameters: headline KPIs per campaign p may see over the window
// and the one before it, sorted by name.
func (s *Server) Campaigns(ctx context.Context, p *auth.Principal, args url.Values) (CampaignsResponse, error) {
	if err := checkParams(args, campaignsParams); err != nil {
		return CampaignsResponse{}, err
	}
	win, err := parseWindow(args, s.now(), s.cfg.MaxWindow)
	if err != nil {
		return CampaignsResponse{}, err
	}
	q, _, err := scoped(ctx, args, p, win, false)
	if err != nil {
		return CampaignsResponse{}, err
	}
	q.From = win.From.Add(-win.Len())
	q.Splits = []time.Time{win.From}
	cur := map[string]*kpi.Accumulator{}
	prev := map[string]*kpi.Accumulator{}
	var curTotal, prevTotal kpi.Accumulator
	fromSec := ceilMinute(win.From)
	err = s.each(ctx, q, func(pt sketch.Minute) error {
		m, total := cur, &curTotal
		if pt.Minute < fromSec {
			m, total = prev, &prevTotal
		}
		if err := total.Add(pt); err != nil {
			return err
		}
		acc := m[pt.Series.Campaign]
		if acc == nil {
			if len(cur)+len(prev) >= s.cfg.MaxPoints {
				return &tooLargeError{paramError{pWindow, fmt.Sprintf("more than %d campaigns: narrow the filters", s.cfg.MaxPoints/2)}}
			}
			acc = &kpi.Accumulator{}
			m[pt.Series.Campaign] = acc
		}
		return acc.Add(pt)
	})
	if err != nil {
		return CampaignsResponse{}, err
	}
	names := make([]string, 0, len(cur)+len(prev))
	for _, m := range []map[string]*kpi.Accumulator{cur, prev} {
		for c := range m {
			if !slices.Contains(names, c) {
				names = append(names, c)
			}
		}
	}
	slices.Sort(names)
	resp := CampaignsResponse{From: win.From, To: win.To, Campaigns: make([]CampaignKPIs, 0, len(names))}
	result := func(a *kpi.Accumulator) kpi.KPIs {
		if a == nil {
			return kpi.KPIs{}
		}
		k, _ := a.Result()
		return k
	}
	for _, c := range names {
		resp.Campaigns = append(resp.Campaigns, CampaignKPIs{Campaign: c, KPIs: result(cur[c]), Previous: result(prev[c])})
	}
	resp.Total = TotalKPIs{KPIs: result(&curTotal), Previous: result(&prevTotal)}
	return resp, nil
}

// Group is one group of a breakdown.
type Group struct {
	Key  string   `json:"key"`
	KPIs kpi.KPIs `json:"kpis"`
}

// BreakdownResponse is the body of GET /api/v1/kpis with by=.
type BreakdownResponse struct {
	Campaign string   `json:"campaign"`
	By       string   `json:"by"`
	Total    kpi.KPIs `json:"total"`
	Groups   []Group  `json:"groups"`
}

// kpis serves GET /api/v1/kpis: one flat object of numbers (the total)
// without by=, the breakdown with it.
func (s *Server) kpis(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	resp, err := s.KPIs(r.Context(), p, r.URL.Query())
	switch {
	case err != nil:
		return err
	case resp.By == "":
		return writeJSON(w, resp.Total)
	}
	return writeJSON(w, resp)
}

// KPIs answers GET /api/v1/kpis for p, args being the route's query
// parameters: the KPIs of one campaign over the window (default: the
// last hour) in Total and, with by=, a breakdown by one dimension in
// Groups (By is then set; without by= Groups is empty).
func (s *Server) KPIs(ctx context.Context, p *auth.Principal, args url.Values) (BreakdownResponse, error) {
	if err := checkParams(args, kpisParams); err != nil {
		return BreakdownResponse{}, err
	}
	win, err := parseWindow(args, s.now(), s.cfg.MaxWindow)
	if err != nil {
		return BreakdownResponse{}, err
	}
	by, err := parseBy(args, false)
	if err != nil {
		return BreakdownResponse{}, err
	}
	q, campaign, err := scoped(ctx, args, p, win, true)
	if err != nil {
		return BreakdownResponse{}, err
	}
	resp := BreakdownResponse{Campaign: campaign, By: by, Groups: []Group{}}
	var total kpi.Accumulator
	if by == "" {
		if err := s.each(ctx, q, total.Add); err != nil {
			return BreakdownResponse{}, err
		}
		resp.Total, _ = total.Result()
		return resp, nil
	}
	g := newGrid(win, 0, dimension(by), false, s.cfg.MaxPoints, pBy)
	err = s.each(ctx, q, func(pt sketch.Minute) error {
		if err := total.Add(pt); err != nil {
			return err
		}
		return g.add(pt)
	})
	if err != nil {
		return BreakdownResponse{}, err
	}
	resp.Total, _ = total.Result()
	for _, k := range g.keys() {
		resp.Groups = append(resp.Groups, Group{Key: k, KPIs: g.at(0, k)})
	}
	return resp, nil
}

// SeriesPoint is one step of a series.
type SeriesPoint struct {
	T      time.Time          `json:"t"`
	Values map[string]float64 `json:"values"`
}

// Series is the points of one group ("" without by=).
type Series struct {
	Key    string        `json:"key"`
	Points []SeriesPoint `json:"points"`
}

// SeriesResponse is the body of GET /api/v1/series.
type SeriesResponse struct {
	Campaign string    `json:"campaign"`
	Step     string    `json:"step"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	By       string    `json:"by,omitempty"`
	Metrics  []string  `json:"metrics"`
	Series   []Series  `json:"series"`
}

// series serves GET /api/v1/series.
func (s *Server) series(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	resp, err := s.Series(r.Context(), p, r.URL.Query())
	if err != nil {
		return err
	}
	return writeJSON(w, resp)
}

// Series answers GET /api/v1/series for p, args being the route's query
// parameters: metrics per step, optionally per group; uniques are merged
// per step from the sketches.
func (s *Server) Series(ctx context.Context, p *auth.Principal, args url.Values) (SeriesResponse, error) {
	if err := checkParams(args, seriesParams); err != nil {
		return SeriesResponse{}, err
	}
	metrics, err := parseMetrics(args)
	if err != nil {
		return SeriesResponse{}, err
	}
	step, stepName, err := parseStep(args)
	if err != nil {
		return SeriesResponse{}, err
	}
	win, err := parseWindow(args, s.now(), s.cfg.MaxWindow)
	if err != nil {
		return SeriesResponse{}, err
	}
	by, err := parseBy(args, args.Get(pCampaign) == "")
	if err != nil {
		return SeriesResponse{}, err
	}
	keyOf, bound := func(sketch.Series) string { return "" }, pStep
	if by != "" {
		keyOf, bound = dimension(by), pBy
	}
	g := newGrid(win, step, keyOf, !slices.Contains(metrics, "uniques"), s.cfg.MaxPoints, bound)
	if n := g.buckets(); n > MaxSeriesPoints {
		return SeriesResponse{}, badParam(pStep, "%d points per series, more than %d: use a coarser step or a shorter window", n, MaxSeriesPoints)
	}
	q, campaign, err := scoped(ctx, args, p, win, false)
	if err != nil {
		return SeriesResponse{}, err
	}
	q.CountersOnly = g.skipUniques
	q.Step = step
	if err := s.each(ctx, q, g.add); err != nil {
		return SeriesResponse{}, err
	}
	keys := g.keys()
	if by == "" {
		keys = []string{""}
	}
	resp := SeriesResponse{Campaign: campaign, Step: stepName, From: win.From, To: win.To, By: by, Metrics: metrics,
		Series: make([]Series, 0, len(keys))}
	for _, key := range keys {
		sr := Series{Key: key, Points: make([]SeriesPoint, 0, g.buckets())}
		for t := g.first; t <= g.last; t += g.step {
			k := g.at(t, key)
			vals := make(map[string]float64, len(metrics))
			for _, m := range metrics {
				vals[m] = metricValue(k, m)
			}
			sr.Points = append(sr.Points, SeriesPoint{T: time.Unix(t, 0).UTC(), Values: vals})
		}
		resp.Series = append(resp.Series, sr)
	}
	return resp, nil
}

// BotsResponse is the body of GET /api/v1/bots.
type BotsResponse struct {
	// Total is the number of bot events filtered at the edge.
	Total uint64 `json:"total"`
	// ByReason splits Total by the layer that caught them (crawler,
	// headless, datacenter, rate_ip, …).
	ByReason map[string]uint64 `json:"by_reason"`
	// Share is Total over all events, bots included (0 with no events).
	Share float64 `json:"share"`
}

// bots serves GET /api/v1/bots.
func (s *Server) bots(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	resp, err := s.Bots(r.Context(), p, r.URL.Query())
	if err != nil {
		return err
	}
	return writeJSON(w, resp)
}

// Bots answers GET /api/v1/bots for p, args being the route's query
// parameters: filtered bot events of one campaign over the window, by
// reason.
func (s *Server) Bots(ctx context.Context, p *auth.Principal, args url.Values) (BotsResponse, error) {
	k, t, err := s.counters(ctx, p, args, botsParams, "")
	if err != nil {
		return BotsResponse{}, err
	}
	resp := BotsResponse{Total: k.BotsFiltered, ByReason: t.Bots}
	var all uint64
	for _, n := range t.ByType {
		all += n
	}
	if all+k.BotsFiltered > 0 {
		resp.Share = float64(k.BotsFiltered) / float64(all+k.BotsFiltered)
	}
	return resp, nil
}

// PollsResponse is the body of GET /api/v1/polls.
type PollsResponse struct {
	// Polls lists every poll with votes in the window, by name.
	Polls []Poll `json:"polls"`
}

// Poll is the result of one poll.
type Poll struct {
	Poll string `json:"poll"`
	// Total is the number of votes over every answer.
	Total uint64 `json:"total"`
	// Answers are ordered by votes, most first (ties by answer).
	Answers []Answer `json:"answers"`
}

// Answer is one answer of a poll.
type Answer struct {
	Answer string `json:"answer"`
	Votes  uint64 `json:"votes"`
	// Share is Votes over the poll's Total.
	Share float64 `json:"share"`
}

// polls serves GET /api/v1/polls.
func (s *Server) polls(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	resp, err := s.Polls(r.Context(), p, r.URL.Query())
	if err != nil {
		return err
	}
	return writeJSON(w, resp)
}

// Polls answers GET /api/v1/polls for p, args being the route's query
// parameters: the votes of one campaign's polls over the window, by
// answer, exact.
func (s *Server) Polls(ctx context.Context, p *auth.Principal, args url.Values) (PollsResponse, error) {
	_, t, err := s.counters(ctx, p, args, pollsParams, pollVoteType)
	if err != nil {
		return PollsResponse{}, err
	}
	return PollsResponse{Polls: pollResults(t.Votes)}, nil
}

// pollVoteType is the event type of the series that carry votes.
const pollVoteType = "poll_vote"

// counters sums the exact counters (no sketches) of the one campaign of
// args (checked against allowed) over its window and filters, of the
// series of type typ ("": every type).
func (s *Server) counters(ctx context.Context, p *auth.Principal, args url.Values, allowed []string, typ string) (kpi.KPIs, kpi.Totals, error) {
	if err := checkParams(args, allowed); err != nil {
		return kpi.KPIs{}, kpi.Totals{}, err
	}
	win, err := parseWindow(args, s.now(), s.cfg.MaxWindow)
	if err != nil {
		return kpi.KPIs{}, kpi.Totals{}, err
	}
	q, _, err := scoped(ctx, args, p, win, true)
	if err != nil {
		return kpi.KPIs{}, kpi.Totals{}, err
	}
	q.CountersOnly, q.Type = true, typ
	acc := kpi.Accumulator{SkipUniques: true}
	if err := s.each(ctx, q, acc.Add); err != nil {
		return kpi.KPIs{}, kpi.Totals{}, err
	}
	k, t := acc.Result()
	return k, t, nil
}

// pollResults groups votes by poll.
func pollResults(votes map[string]uint64) []Poll {
	byPoll := map[string]*Poll{}
	for key, n := range votes {
		poll, answer := sketch.SplitVote(key)
		pr := byPoll[poll]
		if pr == nil {
			pr = &Poll{Poll: poll}
			byPoll[poll] = pr
		}
		pr.Total += n
		pr.Answers = append(pr.Answers, Answer{Answer: answer, Votes: n})
	}
	out := make([]Poll, 0, len(byPoll))
	for _, pr := range byPoll {
		for i := range pr.Answers {
			pr.Answers[i].Share = float64(pr.Answers[i].Votes) / float64(pr.Total)
		}
		slices.SortFunc(pr.Answers, func(a, b Answer) int {
			return cmp.Or(cmp.Compare(b.Votes, a.Votes), strings.Compare(a.Answer, b.Answer))
		})
		out = append(out, *pr)
	}
	slices.SortFunc(out, func(a, b Poll) int { return strings.Compare(a.Poll, b.Poll) })
	return out
}

// export serves GET /api/v1/export.csv: one row per step, campaign and
// group (steps without data are left out), streamed a day of steps at a
// time so that memory does not grow with the window.
func (s *Server) export(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	uq := r.URL.Query()
	step, _, err := parseStep(uq)
	if err != nil {
		return err
	}
	win, err := parseWindow(uq, s.now(), s.cfg.MaxWindow)
	if err != nil {
		return err
	}
	by, err := parseBy(uq, false)
	if err != nil {
		return err
	}
	q, campaign, err := scoped(r.Context(), uq, p, win, false)
	if err != nil {
		return err
	}
	dim := func(sketch.Series) string { return "" }
	if by != "" {
		dim = dimension(by)
	}
	keyOf := func(sr sketch.Series) string { return sr.Campaign + "\x00" + dim(sr) }
	stepSec := int64(step / time.Second)
	perChunk := max(1, int64(24*time.Hour/step)) * stepSec
	all := newGrid(win, step, keyOf, false, s.cfg.MaxPoints, pStep)

	// chunk folds the steps of [start, start+perChunk) ∩ window.
	chunk := func(start int64) (*grid, error) {
		cw := window{From: maxTime(win.From, time.Unix(start, 0)), To: minTime(win.To, time.Unix(start+perChunk, 0))}
		g := newGrid(cw, step, keyOf, false, s.cfg.MaxPoints, pStep)
		cq := q
		cq.From, cq.To, cq.Step = cw.From, cw.To, step
		return g, s.each(r.Context(), cq, g.add)
	}
	// The first chunk is read before anything is written, so that bad
	// bounds and a storage failure still get a proper status code.
	g, err := chunk(all.first)
	if err != nil {
		return err
	}
	name := "all"
	if campaign != "" {
		name = campaign
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="tally-%s-%s.csv"`,
		fileSafe(name), win.From.UTC().Format("20060102T150405Z")))
	cw := csv.NewWriter(w)
	header := []string{"time", "campaign"}
	if by != "" {
		header = append(header, by)
	}
	_ = cw.Write(append(header, Metrics...))
	rc := http.NewResponseController(w)
	for start := all.first; start <= all.last; start += perChunk {
		if start != all.first {
			if g, err = chunk(start); err != nil {
				// The status line is gone: end the response abruptly so
				// the client sees a broken download, not a short file.
				s.log.Error("export failed mid-stream", "route", "export", "err", err)
				panic(http.ErrAbortHandler)
			}
		}
		// Each day of rows gets WriteTimeout to reach the client: a
		// client that stops reading cannot hold the query slot.
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		writeRows(cw, g, by != "")
		cw.Flush()
		if err := cw.Error(); err != nil {
			return nil // the client went away
		}
		_ = rc.Flush()
	}
	return nil
}

// writeRows writes a chunk's cells with data, by time then key.
func writeRows(cw *csv.Writer, g *grid, withDim bool) {
	cells := make([]cell, 0, len(g.cells))
	for c := range g.cells {
		cells = append(cells, c)
	}
	slices.SortFunc(cells, func(a, b cell) int {
		if a.t != b.t {
			return int(a.t - b.t)
		}
		return strings.Compare(a.key, b.key)
	})
	for _, c := range cells {
		campaign, dim, _ := strings.Cut(c.key, "\x00")
		row := []string{time.Unix(c.t, 0).UTC().Format(time.RFC3339), campaign}
		if withDim {
			row = append(row, dim)
		}
		k := g.at(c.t, c.key)
		for _, m := range Metrics {
			row = append(row, strconv.FormatFloat(metricValue(k, m), 'f', -1, 64))
		}
		_ = cw.Write(row)
	}
}

func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 128 && (r == '-' || r == '_' || r == '.' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return r
		}
		return '_'
	}, s)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

var errNoStream = errors.New("the live stream is not available on this node")

// stream serves GET /api/v1/stream: Server-Sent Events of the caller's
// campaigns (or of the campaigns= it names, all of which it must see),
// until the caller's credential expires or a reload revokes it. A subject may hold
// MaxStreamsPerSubject streams at once and the node MaxStreams.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Hub == nil {
		return errNoStream
	}
	only, err := parseList(r.URL.Query(), pCampaigns, MaxFilterCampaigns)
	if err != nil {
		return err
	}
	for _, c := range only {
		if !p.CanSee(c) {
			return errForbidden{c}
		}
	}
	// A JWT is accepted up to its leeway after exp; its stream would end
	// at once, so refuse it as the expired credential it is.
	if !p.Expires.IsZero() && !time.Now().Before(p.Expires) {
		return fmt.Errorf("%w: the token has expired", auth.ErrUnauthenticated)
	}
	release, err := s.streams.acquire(r.Context(), p.Subject)
	if err != nil {
		return err
	}
	defer release()
	switch {
	case len(only) > 0:
		auth.NoteCampaigns(r, only...)
	case p.AllCampaigns():
		auth.NoteCampaigns(r, "*")
	default:
		auth.NoteCampaigns(r, p.Campaigns...)
	}
	named := make(map[string]bool, len(only))
	for _, c := range only {
		named[c] = true
	}
	scope := func(c string) bool { return p.CanSee(c) && (len(named) == 0 || named[c]) }
	auth.StreamStarted(r)
	r, revoked, stop := auth.UntilRevoked(r, p)
	defer stop()
	err = s.cfg.Hub.ServeUntil(w, r, scope, s.cfg.Status(), p.Expires)
	switch {
	case errors.Is(err, live.ErrExpired):
		auth.NoteOutcome(r, "token_expired")
	case revoked():
		auth.NoteOutcome(r, "token_revoked")
	case errors.Is(err, live.ErrDropped):
		auth.NoteOutcome(r, "dropped_slow")
	case r.Context().Err() != nil:
		auth.NoteOutcome(r, "client_gone")
	default:
		auth.NoteOutcome(r, "node_stopping")
	}
	return nil
}

// SessionResponse is the body of POST /api/v1/session.
type SessionResponse struct {
	// Token is the session's bearer token.
	Token string `json:"token"`
	// Expires is when the session ends (and any stream opened with it).
	Expires   time.Time `json:"expires"`
	Subject   string    `json:"subject"`
	Role      auth.Role `json:"role"`
	Campaigns []string  `json:"campaigns,omitempty"`
}

// session serves POST /api/v1/session: a sign-in link token (as the
// bearer token) is exchanged, once, for a session token. It is the only
// route that accepts a link token, and it accepts nothing else.
func (s *Server) session(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	start := time.Now()
	if s.cfg.Auth == nil {
		return fmt.Errorf("%w: no credentials are configured", auth.ErrUnauthenticated)
	}
	sw := &statusWriter{ResponseWriter: w}
	token, p, err := s.cfg.Auth.Links().Exchange(auth.BearerToken(r.Header.Get("Authorization")))
	if err != nil {
		s.answerError(sw, r, "session", err)
	} else {
		_ = writeJSON(sw, SessionResponse{Token: token, Expires: p.Expires, Subject: p.Subject, Role: p.Role, Campaigns: p.Campaigns})
	}
	s.cfg.Audit.Record(r, "session", p, nil, sw.status(), 0, time.Since(start))
	return nil
}

// LinkRequest is the body of POST /api/v1/links.
type LinkRequest struct {
	// Subject the session will stand for; default the caller's.
	Subject string `json:"subject"`
	// Role of the session: admin, analyst or viewer.
	Role string `json:"role"`
	// Campaigns is a viewer's scope.
	Campaigns []string `json:"campaigns,omitempty"`
	// TTL is the link's lifetime (Go duration, e.g. "15m"); default the
	// node's auth.links.link_ttl, at most 24h.
	TTL string `json:"ttl,omitempty"`
}

// LinkResponse is the body of POST /api/v1/links.
type LinkResponse struct {
	// LinkToken opens one session (POST /api/v1/session) until Expires.
	LinkToken string    `json:"link_token"`
	Expires   time.Time `json:"expires"`
	// Path is the dashboard link, relative to a node's address.
	Path string `json:"path"`
	// ThisNodeOnly is true when no shared links secret is configured:
	// the link then opens a session on this node only.
	ThisNodeOnly bool `json:"this_node_only"`
}

// requestError is a bad request body (400).
type requestError struct{ msg string }

func (e *requestError) Error() string { return "body: " + e.msg }

// mintLink serves POST /api/v1/links (admins): a short-lived, single-use
// sign-in link for the dashboard.
func (s *Server) mintLink(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxLinkBody))
	dec.DisallowUnknownFields()
	var req LinkRequest
	if err := dec.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return &requestError{fmt.Sprintf("larger than %d bytes", maxLinkBody)}
		}
		return &requestError{"want a JSON object {subject, role, campaigns, ttl}: " + err.Error()}
	}
	if dec.More() {
		return &requestError{"one JSON object only"}
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return &requestError{fmt.Sprintf("ttl %q: want a duration such as 15m", req.TTL)}
		}
		ttl = d
	}
	who := auth.Principal{Subject: cmp.Or(req.Subject, p.Subject), Role: auth.Role(req.Role), Campaigns: req.Campaigns}
	links := s.cfg.Auth.Links()
	token, exp, err := links.MintLink(who, ttl)
	if err != nil {
		return &requestError{err.Error()}
	}
	auth.NoteCampaigns(r, req.Campaigns...)
	auth.NoteOutcome(r, "link_for_"+string(who.Role))
	return writeJSON(w, LinkResponse{LinkToken: token, Expires: exp, Path: "/?link=" + token, ThisNodeOnly: !links.Shared()})
}

//go:embed openapi.json
var openAPIDoc []byte

// openAPI serves GET /api/v1/openapi.json.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDoc)
	return nil
}

var _ live.Publisher = (*live.Hub)(nil)

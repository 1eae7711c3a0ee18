package rollup

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/sketch"
)

// Reader is what a Source reads (influx.Reader).
type Reader interface {
	EachMinute(ctx context.Context, q influx.MinuteQuery, fn func(sketch.Minute) error) error
	LoadMarkers(ctx context.Context, res influx.Resolution, from, to time.Time, campaigns []string) ([]influx.Marker, error)
	LoadSince(ctx context.Context) (since int64, ok bool, err error)
}

// Source answers the API's questions (api.Source) from the coarsest
// resolution that answers each part of the window exactly: whole days
// from daily rollups, whole hours from hourly ones, the rest from
// minutes, wherever the answer's buckets (api.Query.Step, Splits) do not
// cut the period and its marker is clean or absent (see the package
// doc). A campaign whose period is dirty is read at the next finer
// resolution there, by itself or with the campaigns that share its plan.
// Where the finer points are past their retention, the coarser ones are
// all there is and are used.
type Source struct {
	Reader Reader
	// Retention says which finer points are gone (zero: kept forever).
	Retention influx.Retention
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	mu        sync.Mutex
	since     int64 // the since mark, once known
	sinceOK   bool
	sinceRead time.Time
}

// sinceTTL is how long Source trusts the since mark it read (another
// node's first start may move it later, never earlier).
const sinceTTL = time.Minute

// sinceMark returns the since mark (see Roller.Init): rollups answer
// only periods starting at or after it. ok is false while there is none;
// then only minutes answer.
func (s *Source) sinceMark(ctx context.Context) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sinceOK && time.Since(s.sinceRead) < sinceTTL {
		return s.since, true, nil
	}
	since, ok, err := s.Reader.LoadSince(ctx)
	if err != nil || !ok {
		return 0, false, err
	}
	s.since, s.sinceOK, s.sinceRead = since, true, time.Now()
	return since, true, nil
}

// span is a run of one resolution: points starting in [from, to).
type span struct {
	res      influx.Resolution
	from, to int64
}

// EachMinute implements api.Source.
func (s *Source) EachMinute(ctx context.Context, q api.Query, fn func(sketch.Minute) error) error {
	base := influx.MinuteQuery{Campaigns: q.Campaigns, AllCampaigns: q.AllCampaigns, From: q.From, To: q.To,
		Source: q.Source, Medium: q.Medium, Country: q.Country, Device: q.Device, Region: q.Region, Type: q.Type,
		CountersOnly: q.CountersOnly, StoredUniques: q.StoredUniques, NoQuantiles: q.NoQuantiles}
	lo, hi := ceilSec(q.From), ceilSec(q.To)
	stepSec := int64(q.Step / time.Second)
	useHours := stepSec == 0 || stepSec%hour == 0
	if !useHours || hi-lo < hour {
		return s.Reader.EachMinute(ctx, base, fn)
	}
	since, ok, err := s.sinceMark(ctx)
	if err != nil {
		return fmt.Errorf("read the rollups' since mark: %w", err)
	}
	if !ok || since >= hi {
		return s.Reader.EachMinute(ctx, base, fn)
	}
	useDays := stepSec == 0 || stepSec%day == 0
	splits := make([]int64, 0, len(q.Splits))
	for _, t := range q.Splits {
		splits = append(splits, ceilSec(t))
	}
	if lo < since {
		// Minutes stored before rollups existed have no markers: only
		// the minutes answer for them.
		splits = append(splits, since)
	}
	generic := s.plan(lo, hi, useDays, splits, since)

	// Markers of every period the plan reads from rollups.
	dirtyDays, err := s.dirty(ctx, influx.Days, generic, q)
	if err != nil {
		return err
	}
	var hourSpans []span
	for _, sp := range generic {
		if sp.res == influx.Hours {
			hourSpans = append(hourSpans, sp)
		}
	}
	for _, ds := range dirtyDays {
		for d := range ds {
			hourSpans = append(hourSpans, span{influx.Hours, d, d + day})
		}
	}
	dirtyHours, err := s.dirty(ctx, influx.Hours, hourSpans, q)
	if err != nil {
		return err
	}

	// Each campaign with a dirty period gets its own plan; campaigns with
	// the same plan are read together, the others with the generic one.
	special := map[string]bool{}
	for c := range dirtyDays {
		special[c] = true
	}
	for c := range dirtyHours {
		special[c] = true
	}
	groups := map[string][]string{}
	plans := map[string][]span{}
	for c := range special {
		p := s.refine(generic, dirtyDays[c], dirtyHours[c])
		key := planKey(p)
		groups[key] = append(groups[key], c)
		plans[key] = p
	}
	// The generic group: everything asked but the special campaigns.
	gq := base
	switch {
	case q.AllCampaigns:
		gq.ExcludeCampaigns = slices.Sorted(mapsKeys(special))
		if err := s.read(ctx, gq, generic, fn); err != nil {
			return err
		}
	default:
		var rest []string
		for _, c := range q.Campaigns {
			if !special[campaignKey(c)] {
				rest = append(rest, c)
			}
		}
		if len(rest) > 0 {
			gq.Campaigns = rest
			if err := s.read(ctx, gq, generic, fn); err != nil {
				return err
			}
		}
	}
	for _, key := range slices.Sorted(mapsKeys(groups)) {
		cq := base
		cq.AllCampaigns, cq.Campaigns = false, groups[key]
		slices.Sort(cq.Campaigns)
		if err := s.read(ctx, cq, plans[key], fn); err != nil {
			return err
		}
	}
	return nil
}

// read runs q over each span of a plan, merging neighbouring spans of one
// resolution into one query.
func (s *Source) read(ctx context.Context, q influx.MinuteQuery, plan []span, fn func(sketch.Minute) error) error {
	for i := 0; i < len(plan); {
		sp := plan[i]
		i++
		for i < len(plan) && plan[i].res == sp.res && plan[i].from == sp.to {
			sp.to = plan[i].to
			i++
		}
		rq := q
		rq.Resolution = sp.res
		rq.From, rq.To = time.Unix(sp.from, 0), time.Unix(sp.to, 0)
		if sp.res == influx.Minutes {
			// The window's own bounds where they are not whole seconds.
			if sp.from <= ceilSec(q.From) {
				rq.From = q.From
			}
			if sp.to >= ceilSec(q.To) {
				rq.To = q.To
			}
		}
		if err := s.Reader.EachMinute(ctx, rq, fn); err != nil {
			return err
		}
	}
	return nil
}

// plan cuts [lo, hi) into whole days (when useDays), whole hours and
// runs of minutes, no period containing a split strictly inside it and
// only minutes before since.
func (s *Source) plan(lo, hi int64, useDays bool, splits []int64, since int64) []span {
	cut := func(a, b int64) bool {
		for _, sp := range splits {
			if a < sp && sp < b {
				return true
			}
		}
		return false
	}
	var out []span
	add := func(sp span) {
		if n := len(out); n > 0 && out[n-1].res == sp.res && out[n-1].to == sp.from {
			out[n-1].to = sp.to
			return
		}
		out = append(out, sp)
	}
	for t := lo; t < hi; {
		switch {
		case t < since:
			end := min(hi, since, floor(t, hour)+hour)
			add(span{influx.Minutes, t, end})
			t = end
		case useDays && t%day == 0 && t+day <= hi && !cut(t, t+day):
			add(span{influx.Days, t, t + day})
			t += day
		case t%hour == 0 && t+hour <= hi && !cut(t, t+hour):
			add(span{influx.Hours, t, t + hour})
			t += hour
		default:
			end := min(hi, floor(t, hour)+hour)
			add(span{influx.Minutes, t, end})
			t = end
		}
	}
	return out
}

// refine replaces, in a plan, the dirty days of one campaign with their
// hours and its dirty hours with their minutes, unless the finer points
// are past their retention.
func (s *Source) refine(plan []span, dirtyDays, dirtyHours map[int64]bool) []span {
	now := s.now().Unix()
	gone := func(res influx.Resolution, end int64) bool {
		keep := s.Retention.Minutes
		if res == influx.Hours {
			keep = s.Retention.Hours
		}
		return keep > 0 && end <= now-int64(keep/time.Second)
	}
	var out []span
	add := func(sp span) {
		if n := len(out); n > 0 && out[n-1].res == sp.res && out[n-1].to == sp.from {
			out[n-1].to = sp.to
			return
		}
		out = append(out, sp)
	}
	hours := func(from, to int64) {
		for h := from; h < to; h += hour {
			if dirtyHours[h] && !gone(influx.Minutes, h+hour) {
				add(span{influx.Minutes, h, h + hour})
			} else {
				add(span{influx.Hours, h, h + hour})
			}
		}
	}
	for _, sp := range plan {
		switch sp.res {
		case influx.Days:
			for d := sp.from; d < sp.to; d += day {
				if dirtyDays[d] && !gone(influx.Hours, d+day) {
					hours(d, d+day)
				} else {
					add(span{influx.Days, d, d + day})
				}
			}
		case influx.Hours:
			hours(sp.from, sp.to)
		default:
			add(sp)
		}
	}
	return out
}

// dirty returns, per campaign, the starts of the periods of resolution
// res within spans whose markers are dirty.
func (s *Source) dirty(ctx context.Context, res influx.Resolution, spans []span, q api.Query) (map[string]map[int64]bool, error) {
	var own []span
	for _, sp := range spans {
		if sp.res == res {
			own = append(own, sp)
		}
	}
	slices.SortFunc(own, func(a, b span) int { return int(a.from - b.from) })
	var ranges []span
	for _, sp := range own {
		if n := len(ranges); n > 0 && sp.from <= ranges[n-1].to {
			ranges[n-1].to = max(ranges[n-1].to, sp.to)
			continue
		}
		ranges = append(ranges, sp)
	}
	out := map[string]map[int64]bool{}
	var campaigns []string
	if !q.AllCampaigns {
		campaigns = q.Campaigns
	}
	for _, r := range ranges {
		ms, err := s.Reader.LoadMarkers(ctx, res, time.Unix(r.from, 0), time.Unix(r.to, 0), campaigns)
		if err != nil {
			return nil, fmt.Errorf("read %s markers: %w", res, err)
		}
		for _, m := range ms {
			if m.Clean() {
				continue
			}
			c := campaignKey(m.Campaign)
			if out[c] == nil {
				out[c] = map[int64]bool{}
			}
			out[c][m.Start] = true
		}
	}
	return out, nil
}

func planKey(p []span) string {
	var b strings.Builder
	for _, sp := range p {
		fmt.Fprintf(&b, "%s:%d-%d;", sp.res, sp.from, sp.to)
	}
	return b.String()
}

func (s *Source) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// ceilSec is t in unix seconds, rounded up.
func ceilSec(t time.Time) int64 {
	sec := t.Unix()
	if t.Nanosecond() > 0 {
		sec++
	}
	return sec
}

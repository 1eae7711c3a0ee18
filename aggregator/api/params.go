package api

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tally-edge/tally/aggregator/auth"
)

// paramError names the query parameter at fault; it answers 400.
type paramError struct{ param, msg string }

func (e *paramError) Error() string { return fmt.Sprintf("parameter %q: %s", e.param, e.msg) }

func badParam(param, format string, args ...any) error {
	return &paramError{param, fmt.Sprintf(format, args...)}
}

// Parameter names shared by the data routes.
const (
	pCampaign  = "campaign"
	pCampaigns = "campaigns"
	pWindow    = "window"
	pFrom      = "from"
	pTo        = "to"
	pBy        = "by"
	pStep      = "step"
	pMetric    = "metric"
	// pAccessToken is the stream's bearer token in the query.
	pAccessToken = "access_token"
)

// Dimensions are the series dimensions a query can filter on and group
// by (campaign aside).
var Dimensions = []string{"source", "medium", "country", "device", "region"}

var (
	windowParams = []string{pWindow, pFrom, pTo}
	filterParams = Dimensions
	// dataParams are taken by every data route: the window and filters.
	dataParams = params(windowParams, filterParams)

	// The parameters of each data route; the answer functions (Campaigns,
	// KPIs, …) check their arguments against them too, so GraphQL's
	// arguments meet REST's bounds.
	campaignsParams = dataParams
	kpisParams      = params([]string{pCampaign, pBy}, dataParams)
	seriesParams    = params([]string{pCampaign, pMetric, pStep, pBy}, dataParams)
	botsParams      = params([]string{pCampaign}, dataParams)
	pollsParams     = params([]string{pCampaign}, dataParams)
)

// params lists a route's parameters: the names plus the shared groups.
func params(names ...[]string) []string { return slices.Concat(names...) }

// maxParamLen bounds every parameter value but those of paramLimits.
const maxParamLen = 512

// paramLimits are the parameters allowed longer values: a list of
// campaigns and a bearer token.
var paramLimits = map[string]int{
	pCampaigns:   MaxFilterCampaigns * (auth.MaxNameBytes + 1),
	pAccessToken: auth.MaxTokenBytes,
}

// checkParams refuses unknown and repeated parameters, so a typo never
// silently becomes a default.
func checkParams(q url.Values, allowed []string) error {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			return badParam(k, "unknown parameter (this route takes %s)", strings.Join(allowed, ", "))
		}
		if len(q[k]) > 1 {
			return badParam(k, "given more than once")
		}
		if limit := cmp.Or(paramLimits[k], maxParamLen); len(q[k][0]) > limit {
			return badParam(k, "longer than %d bytes", limit)
		}
	}
	return nil
}

// window is a parsed time range [From, To). Sliding is the window=
// value when the range is sliding (ends now).
type window struct {
	From, To time.Time
	Sliding  string
}

// Len is the window's length.
func (w window) Len() time.Duration { return w.To.Sub(w.From) }

// parseWindow reads window= or from=/to=. window= is a sliding window
// ending now: 1m, 5m, 15m, 60m, 1h, 24h, 7d, or any whole number of
// minutes (Go syntax) or of days ("3d") up to maxWindow. from/to are
// RFC 3339; to defaults to now and from to to-1h.
func parseWindow(q url.Values, now time.Time, maxWindow time.Duration) (window, error) {
	if v := q.Get(pWindow); v != "" {
		if q.Has(pFrom) || q.Has(pTo) {
			return window{}, badParam(pWindow, "give either window or from/to, not both")
		}
		d, err := parseSpan(v)
		if err != nil {
			return window{}, badParam(pWindow, "%v", err)
		}
		if d > maxWindow {
			return window{}, badParam(pWindow, "longer than the maximum of %s", maxWindow)
		}
		return window{From: now.Add(-d), To: now, Sliding: v}, nil
	} else if q.Has(pWindow) {
		return window{}, badParam(pWindow, "empty")
	}
	var (
		w   window
		err error
	)
	if w.To, err = parseTime(q.Get(pTo), now); err != nil {
		return w, badParam(pTo, "%v", err)
	}
	if w.From, err = parseTime(q.Get(pFrom), w.To.Add(-time.Hour)); err != nil {
		return w, badParam(pFrom, "%v", err)
	}
	if !w.From.Before(w.To) {
		return w, badParam(pFrom, "must be before to")
	}
	if w.Len() > maxWindow {
		return w, badParam(pTo, "window longer than the maximum of %s", maxWindow)
	}
	return w, nil
}

func parseTime(v string, def time.Time) (time.Time, error) {
	if v == "" {
		return def, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errors.New("want an RFC 3339 time such as 2026-11-22T10:00:00Z")
	}
	return t, nil
}

// parseSpan reads a duration of whole minutes: Go syntax ("15m", "1h",
// "90m") or days ("1d", "7d").
func parseSpan(v string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > 366 {
			return 0, fmt.Errorf("%q: want a duration such as 15m, 1h or 7d", v)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return 0, fmt.Errorf("%q: want a duration such as 15m, 1h or 7d", v)
		}
	}
	if d < time.Minute || d%time.Minute != 0 {
		return 0, fmt.Errorf("%q: want a whole number of minutes, at least 1m", v)
	}
	return d, nil
}

// parseStep reads step=: 1m, 5m, 15m, 1h, 6h, 1d or any whole number of
// minutes from 1m to 24h. Default 1m.
func parseStep(q url.Values) (time.Duration, string, error) {
	v := q.Get(pStep)
	if v == "" {
		if q.Has(pStep) {
			return 0, "", badParam(pStep, "empty")
		}
		return time.Minute, "1m", nil
	}
	d, err := parseSpan(v)
	if err != nil {
		return 0, "", badParam(pStep, "%v", err)
	}
	if d > 24*time.Hour {
		return 0, "", badParam(pStep, "%q: at most 1d", v)
	}
	return d, v, nil
}

// parseBy reads by=: a dimension, or campaign where allowed.
func parseBy(q url.Values, campaignAllowed bool) (string, error) {
	v := q.Get(pBy)
	if v == "" {
		if q.Has(pBy) {
			return "", badParam(pBy, "empty")
		}
		return "", nil
	}
	if slices.Contains(Dimensions, v) || (campaignAllowed && v == "campaign") {
		return v, nil
	}
	want := strings.Join(Dimensions, ", ")
	if campaignAllowed {
		want += ", campaign"
	}
	return "", badParam(pBy, "%q: want one of %s", v, want)
}

// Metrics are the values a series or export can carry.
var Metrics = []string{"impressions", "clicks", "conversions", "pageviews", "uniques", "revenue", "cost",
	"ctr", "cvr", "cpa", "roas", "bots_filtered"}

// parseMetrics reads metric=m1,m2 (required, no repeats).
func parseMetrics(q url.Values) ([]string, error) {
	v := q.Get(pMetric)
	if v == "" {
		return nil, badParam(pMetric, "required: one or more of %s, comma-separated", strings.Join(Metrics, ", "))
	}
	var out []string
	for m := range strings.SplitSeq(v, ",") {
		m = strings.TrimSpace(m)
		if !slices.Contains(Metrics, m) {
			return nil, badParam(pMetric, "%q: want one or more of %s", m, strings.Join(Metrics, ", "))
		}
		if slices.Contains(out, m) {
			return nil, badParam(pMetric, "%q given twice", m)
		}
		out = append(out, m)
	}
	return out, nil
}

// parseList reads a comma-separated list of at most max names, each at
// most auth.MaxNameBytes long (empty: none). Repeats count once.
func parseList(q url.Values, name string, max int) ([]string, error) {
	v := q.Get(name)
	if v == "" {
		if q.Has(name) {
			return nil, badParam(name, "empty")
		}
		return nil, nil
	}
	var out []string
	for c := range strings.SplitSeq(v, ",") {
		switch {
		case c == "":
			return nil, badParam(name, "empty name in the list")
		case len(c) > auth.MaxNameBytes:
			return nil, badParam(name, "a name longer than %d bytes", auth.MaxNameBytes)
		case slices.Contains(out, c):
			continue
		case len(out) == max:
			return nil, badParam(name, "more than %d names", max)
		}
		out = append(out, c)
	}
	return out, nil
}

package ingest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/merge"
)

// Late data. A batch for minutes that are neither in memory nor in the
// window rebuilt at start is accepted like any other: the store holds the
// minutes it creates as pending, and the writer leaves them alone. The
// loader reads what storage holds of exactly those campaign-minutes,
// merges it in, and makes them writable. So:
//
//   - the ack never waits for storage (a batch of week-old data is
//     acknowledged as fast as one of this minute);
//   - a load costs what it touches: the campaigns and minutes pending,
//     never every campaign of a span (one query covers at most LoadSpan
//     of one run of nearby minutes, for up to LoadCampaigns campaigns
//     pending over the same run);
//   - while storage cannot be read, pending minutes stay in memory and in
//     the write-ahead log, and the loader retries; beyond MaxPendingLoads
//     campaign-minutes, batches are answered busy.

// maxGap is the largest gap between pending minutes of one campaign that
// one query still spans: loading a few minutes more costs less than
// another query.
const maxGap = 5 * time.Minute

// maxPerPass bounds the campaign-minutes one loader pass takes on.
const maxPerPass = 4096

// kickLoader wakes the loader.
func (p *Pipeline) kickLoader() {
	select {
	case p.loadKick <- struct{}{}:
	default:
	}
}

// RunLoader loads late minutes until ctx is done.
func (p *Pipeline) RunLoader(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.loadKick:
		case <-t.C:
		}
		for ctx.Err() == nil {
			n, err := p.LoadPending(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				failures++
				msg := err.Error()
				p.loadErr.Store(&msg)
				if failures == 1 || failures%30 == 0 {
					p.log.Warn("loading late minutes from InfluxDB failed; they wait in memory and in the write-ahead log", "reason", "late_load_failed",
						"err", err, "attempts", failures)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(min(time.Duration(failures)*time.Second, 10*time.Second)):
				}
				continue
			}
			if failures > 0 {
				p.log.Info("loading late minutes works again", "attempts", failures)
				failures = 0
			}
			p.loadErr.Store(nil)
			if n == 0 {
				break
			}
		}
	}
}

// loadQuery is one query: some campaigns over one run of minutes
// [from, to), and the pending campaign-minutes it settles.
type loadQuery struct {
	from, to  int64
	campaigns []string
	settles   []merge.CampaignMinute
}

// LoadPending runs one pass: it loads the pending campaign-minutes (up to
// maxPerPass) and returns how many it settled.
func (p *Pipeline) LoadPending(ctx context.Context) (int, error) {
	cms := p.store.PendingLoads(maxPerPass)
	if len(cms) == 0 {
		return 0, nil
	}
	done := 0
	for _, q := range planLoads(cms, int64(p.cfg.LoadSpan/time.Second), p.cfg.LoadCampaigns) {
		qctx, cancel := context.WithTimeout(ctx, p.cfg.LoadTimeout)
		pts, err := p.storage.LoadContributionsOf(qctx, time.Unix(q.from, 0), time.Unix(q.to, 0), q.campaigns)
		cancel()
		var corrupt *influx.CorruptPointError
		if errors.As(err, &corrupt) {
			p.log.Error("some stored contribution points cannot be read; loading the others", "reason", "corrupt_points", "skipped", corrupt.Skipped, "first", corrupt.First)
			err = nil
		}
		if err != nil {
			p.m.loadQueries.WithLabelValues("error").Inc()
			return done, err
		}
		p.m.loadQueries.WithLabelValues("ok").Inc()
		ds, err := decodePoints(pts)
		if err == nil {
			err = p.store.FinishLoad(q.settles, ds)
		}
		if err != nil {
			p.m.loadQueries.WithLabelValues("error").Inc()
			return done, err
		}
		p.m.lateLoaded.Add(float64(len(q.settles)))
		done += len(q.settles)
	}
	return done, nil
}

// planLoads groups pending campaign-minutes into queries: per campaign,
// runs of minutes no more than maxGap apart and span seconds long; runs
// with the same bounds share a query of up to maxCampaigns campaigns.
func planLoads(cms []merge.CampaignMinute, span int64, maxCampaigns int) []loadQuery {
	byCampaign := map[string][]int64{}
	for _, cm := range cms {
		byCampaign[cm.Campaign] = append(byCampaign[cm.Campaign], cm.Minute)
	}
	type run struct{ from, to int64 }
	byRun := map[run][]string{}
	for c, ms := range byCampaign {
		slices.Sort(ms)
		first, last := ms[0], ms[0]
		for _, m := range ms[1:] {
			if m-last > int64(maxGap/time.Second) || m+60-first > span {
				byRun[run{first, last + 60}] = append(byRun[run{first, last + 60}], c)
				first = m
			}
			last = m
		}
		byRun[run{first, last + 60}] = append(byRun[run{first, last + 60}], c)
	}
	runs := make([]run, 0, len(byRun))
	for r := range byRun {
		runs = append(runs, r)
	}
	slices.SortFunc(runs, func(a, b run) int { return int(a.from - b.from) })
	pending := map[merge.CampaignMinute]bool{}
	for _, cm := range cms {
		pending[cm] = true
	}
	var out []loadQuery
	for _, r := range runs {
		cs := byRun[r]
		slices.SortFunc(cs, strings.Compare)
		for len(cs) > 0 {
			part := cs[:min(len(cs), maxCampaigns)]
			cs = cs[len(part):]
			q := loadQuery{from: r.from, to: r.to, campaigns: part}
			for _, c := range part {
				for m := r.from; m < r.to; m += 60 {
					if cm := (merge.CampaignMinute{Campaign: c, Minute: m}); pending[cm] {
						q.settles = append(q.settles, cm)
					}
				}
			}
			out = append(out, q)
		}
	}
	return out
}

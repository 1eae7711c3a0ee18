package archive

import (
	"context"
	"sync/atomic"
	"time"
)

// DayKey is the ownership key of a day's export: the cluster member
// that owns it (rendezvous hashing over the live members, as for
// campaigns) is the one that exports the day, so days spread over the
// nodes and each is exported by one.
func DayKey(day string) string { return "(archive) " + day }

// Scheduler exports settled days on a cluster node: every interval it
// looks at the last DaysBack settled days and exports those this node
// owns that are not archived yet, or whose counters changed since (late
// data). Ownership is asked through Owns at each look, so a day moves
// with membership like a campaign. Two nodes that disagree for a moment
// may both export a day; they write the same bytes, and Export skips a
// day whose manifest already matches, so the cost is bounded work, never
// a duplicate in the archive.
type Scheduler struct {
	a    *Archiver
	cfg  Config
	owns func(key string) bool
	now  func() time.Time

	exported, unchanged, failed atomic.Int64
	lastSuccess                 atomic.Int64 // unix seconds of the last run without a failure
}

// NewScheduler returns a Scheduler; owns reports whether this node owns a
// key (nil: it owns every key, a single node).
func NewScheduler(a *Archiver, cfg Config, owns func(key string) bool) *Scheduler {
	if owns == nil {
		owns = func(string) bool { return true }
	}
	return &Scheduler{a: a, cfg: cfg, owns: owns, now: a.o.Now}
}

// SchedulerStats counts what a Scheduler did since it started.
type SchedulerStats struct {
	Exported, Unchanged, Failed int64
	// LastSuccess is the end of the last pass in which nothing failed.
	LastSuccess time.Time
}

// Stats returns a snapshot of the counters; safe for concurrent use.
func (s *Scheduler) Stats() SchedulerStats {
	st := SchedulerStats{Exported: s.exported.Load(), Unchanged: s.unchanged.Load(), Failed: s.failed.Load()}
	if t := s.lastSuccess.Load(); t > 0 {
		st.LastSuccess = time.Unix(t, 0)
	}
	return st
}

// Run passes over the window once after start (after delay) and then
// every interval, until ctx ends. It returns ctx's error.
func (s *Scheduler) Run(ctx context.Context, delay time.Duration) error {
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		s.Pass(ctx)
		t.Reset(s.cfg.Interval)
	}
}

// SettledDays returns the days of the window at time now, oldest first:
// the DaysBack latest days that ended at least SettleAfter ago.
func SettledDays(now time.Time, cfg Config) []time.Time {
	last := now.UTC().Add(-cfg.SettleAfter).Truncate(24 * time.Hour).Add(-24 * time.Hour)
	days := make([]time.Time, 0, cfg.DaysBack)
	for i := cfg.DaysBack - 1; i >= 0; i-- {
		days = append(days, last.Add(-time.Duration(i)*24*time.Hour))
	}
	return days
}

// Pass exports the owned days of the window that need it, oldest first,
// and returns how many it exported. A day that fails is logged and
// counted; the others still run.
func (s *Scheduler) Pass(ctx context.Context) int {
	n, failed := 0, false
	for _, day := range SettledDays(s.now(), s.cfg) {
		ds := dayString(day)
		if !s.owns(DayKey(ds)) {
			continue
		}
		res, err := s.a.Export(ctx, day, false)
		switch {
		case ctx.Err() != nil:
			return n
		case err != nil:
			failed = true
			s.failed.Add(1)
			s.a.log.Error("scheduled export failed; the next pass tries again", "day", ds, "err", err)
		case res.Outcome == Exported:
			n++
			s.exported.Add(1)
		default:
			s.unchanged.Add(1)
		}
	}
	if !failed {
		s.lastSuccess.Store(s.now().Unix())
	}
	return n
}

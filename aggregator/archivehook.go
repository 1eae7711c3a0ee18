package aggregator

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/archive"
	"github.com/tally-edge/tally/aggregator/cluster"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/aggregator/influx"
)

// runScheduledArchive exports settled days to the archive until ctx ends,
// when archive.schedule is on: each day is exported by the member that
// owns archive.DayKey(day) in the current view, so one node exports it.
// The archive never holds back ingest: an unreachable store is logged and
// tried again at the next interval.
func runScheduledArchive(ctx context.Context, cfg config.Config, reader *influx.Reader, cl *cluster.Cluster,
	reg prometheus.Registerer, logger *slog.Logger) {
	if !cfg.Archive.Schedule {
		return
	}
	log := logger.With("component", "archive")
	var sched atomic.Pointer[archive.Scheduler]
	stat := func(f func(archive.SchedulerStats) float64) func() float64 {
		return func() float64 {
			if s := sched.Load(); s != nil {
				return f(s.Stats())
			}
			return 0
		}
	}
	for name, f := range map[string]func(archive.SchedulerStats) float64{
		"tally_aggregator_archive_days_exported_total":  func(s archive.SchedulerStats) float64 { return float64(s.Exported) },
		"tally_aggregator_archive_days_unchanged_total": func(s archive.SchedulerStats) float64 { return float64(s.Unchanged) },
		"tally_aggregator_archive_failures_total":       func(s archive.SchedulerStats) float64 { return float64(s.Failed) },
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name,
			Help: "Scheduled archive exports of days this node owns, by outcome (docs/archive.md)."}, stat(f)))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_archive_last_success_timestamp_seconds",
		Help: "End of the last scheduled archive pass in which no day failed."},
		stat(func(s archive.SchedulerStats) float64 {
			if s.LastSuccess.IsZero() {
				return 0
			}
			return float64(s.LastSuccess.Unix())
		})))

	owns := func(key string) bool { return cl.View().Owner(key).Name == cfg.Name }
	// The first pass waits until ownership has settled after start.
	delay := cfg.Cluster.HandoffSettle + 10*time.Second
	for {
		store, err := archive.OpenStore(ctx, cfg.Archive)
		if err == nil {
			var a *archive.Archiver
			a, err = archive.New(archive.Options{Store: store, Source: archive.InfluxSource{Reader: reader}, Node: cfg.Name,
				TempDir: cfg.Archive.TempDir, Logger: logger})
			if err == nil {
				s := archive.NewScheduler(a, cfg.Archive, owns)
				sched.Store(s)
				log.Info("scheduled archive export on", "target", store.String(), "interval", cfg.Archive.Interval,
					"days_back", cfg.Archive.DaysBack)
				_ = s.Run(ctx, delay)
				return
			}
		}
		log.Error("archive store unavailable; trying again later", "err", err, "in", cfg.Archive.Interval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(cfg.Archive.Interval):
		}
	}
}

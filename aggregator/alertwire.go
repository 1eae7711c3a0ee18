package aggregator

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/alerting"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/ingest"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/aggregator/merge"
	"github.com/tally-edge/tally/aggregator/notify"
	"github.com/tally-edge/tally/sketch"
)

// alertSide is the node's alerting: the objects in force, the read side
// the API asks, and (unless alerts.disabled) the engine judging the
// campaigns this node owns with the notifier delivering its alerts.
type alertSide struct {
	objects  *alerting.Objects
	service  *alerting.Service
	engine   *alerting.Engine // nil when disabled
	notifier *notify.Notifier // nil when disabled
}

// newAlertSide builds alerting over the merge store, InfluxDB and the
// fan-out (which carries alerts to every node's stream).
func newAlertSide(cfg config.Config, store *merge.Store, fan *live.Fanout, iw *influx.Writer, reader *influx.Reader, clustered bool,
	reg prometheus.Registerer, logger *slog.Logger) (*alertSide, error) {
	st := alertStorage{iw, reader}
	objects, err := alerting.NewObjects(cfg.Alerts.Config, st, cfg.Alerts.ObjectsRefresh, logger)
	if err != nil {
		return nil, err
	}
	a := &alertSide{objects: objects, service: alerting.NewService(reader, objects, cfg.Alerts.Forecast)}
	if cfg.Alerts.Disabled {
		return a, nil
	}
	ncfg := cfg.Alerts.Notify
	if ncfg.DeadLetterDir == "" {
		ncfg.DeadLetterDir = filepath.Join(cfg.DataDir, "dead-letters")
	}
	// The notifier reports to the engine, which sends to the notifier.
	var eng atomic.Pointer[alerting.Engine]
	ncfg.Done = func(al alert.Alert, target string, ok bool) {
		if e := eng.Load(); e != nil {
			e.Done(al, target, ok)
		}
	}
	if a.notifier, err = notify.New(ncfg, reg, logger); err != nil {
		return nil, err
	}
	a.engine, err = alerting.NewEngine(alerting.EngineConfig{Config: cfg.Alerts, Node: cfg.Name, Source: mergedSource{store, fan},
		Storage: st, Objects: objects, Publish: fan, Send: a.notifier, Clustered: clustered}, reg, logger)
	if err != nil {
		a.notifier.Close()
		return nil, err
	}
	eng.Store(a.engine)
	return a, nil
}

// run polls the alerting objects (refreshing them when keeper says so)
// and judges until ctx is done.
func (a *alertSide) run(ctx context.Context, poll time.Duration, keeper func() bool) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.objects.Run(ctx, poll, keeper)
	}()
	if a.engine != nil {
		a.engine.Run(ctx)
	}
	<-done
}

// close stops the notifier: deliveries in flight finish, queued ones are
// tried once more, the rest become dead letters.
func (a *alertSide) close() {
	if a.notifier != nil {
		a.notifier.Close()
	}
}

// alertStorage is alerting's storage over the writer and the reader.
type alertStorage struct {
	w *influx.Writer
	r *influx.Reader
}

func (s alertStorage) WriteAlerts(ctx context.Context, alerts []influx.StoredAlert, states []influx.StoredState) error {
	return s.w.WriteAlerts(ctx, alerts, states)
}

func (s alertStorage) LoadAlerts(ctx context.Context, q influx.AlertQuery) ([]influx.StoredAlert, error) {
	return s.r.LoadAlerts(ctx, q)
}

func (s alertStorage) LoadAlertStates(ctx context.Context, campaigns []string, from, to time.Time) ([]influx.StoredState, error) {
	return s.r.LoadAlertStates(ctx, campaigns, from, to)
}

func (s alertStorage) CampaignSteps(ctx context.Context, campaigns []string, from, to time.Time, every time.Duration) ([]influx.StepTotals, error) {
	return s.r.CampaignSteps(ctx, campaigns, from, to, every)
}

func (s alertStorage) WriteConfigDocs(ctx context.Context, docs []influx.ConfigDoc) error {
	return s.w.WriteConfigDocs(ctx, docs)
}

func (s alertStorage) LoadConfigDocs(ctx context.Context, from, to time.Time) ([]influx.ConfigDoc, error) {
	return s.r.LoadConfigDocs(ctx, from, to)
}

// mergedSource is alerting.MinuteSource over the merge store: the merged
// minutes this node holds as their owner.
type mergedSource struct {
	store *merge.Store
	fan   *live.Fanout
}

func (m mergedSource) Steps(campaign string, minutes []time.Time, withUniques bool) ([]alerting.Step, error) {
	cms := make([]merge.CampaignMinute, len(minutes))
	index := make(map[int64]int, len(minutes))
	for i, t := range minutes {
		cms[i] = merge.CampaignMinute{Campaign: campaign, Minute: t.Unix()}
		index[t.Unix()] = i
	}
	held := make([][]sketch.Minute, len(minutes))
	err := m.store.CampaignView(cms, func(cm merge.CampaignMinute, series []sketch.Minute, _ uint64) {
		held[index[cm.Minute]] = append([]sketch.Minute(nil), series...) // the states are fresh merges; the slice is reused
	})
	if err != nil {
		return nil, err
	}
	out := make([]alerting.Step, len(minutes))
	for i, series := range held {
		out[i] = alerting.StepOfSeries(series, withUniques) // outside the store's lock
	}
	return out, nil
}

func (m mergedSource) Campaigns(since time.Time) []string {
	return m.fan.Campaigns(time.Since(since))
}

// rebuilder is the handoff's cluster.Rebuilder: the merge pipeline first
// (its open minutes), then alerting (its detectors, from InfluxDB).
type rebuilder struct {
	pipe   *ingest.Pipeline
	alerts *alerting.Engine // nil when alerting is disabled
}

func (r rebuilder) TakeOver(ctx context.Context, owns func(campaign string) bool) (int, error) {
	n, err := r.pipe.TakeOver(ctx, owns)
	if err == nil && r.alerts != nil {
		r.alerts.TakeOver(owns)
	}
	return n, err
}

func (r rebuilder) DropForeign(foreign func(campaign string) bool) int {
	if r.alerts != nil {
		r.alerts.DropForeign(foreign)
	}
	return r.pipe.DropForeign(foreign)
}

// writtenPublisher hands the writer's live view to the fan-out and tells
// alerting which campaign-minutes were written (late data for its
// detectors' history).
type writtenPublisher struct {
	fan    live.Publisher
	alerts *alerting.Engine
}

func (p writtenPublisher) Publish(us []live.Update) {
	p.fan.Publish(us)
	if p.alerts != nil {
		p.alerts.Written(us)
	}
}

package alerting

import (
	"errors"
	"fmt"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/anomaly"
	"github.com/tally-edge/tally/aggregator/forecast"
	"github.com/tally-edge/tally/aggregator/notify"
)

// Config is the alerts: section of the aggregator's configuration.
type Config struct {
	// Disabled turns alerting off on this node: no detection, no
	// delivery; the API still lists stored alerts. Default false.
	Disabled bool `yaml:"disabled"`
	// Settle is how long after a minute ends its merged value is taken as
	// final and judged for good: the agents' flush interval plus the
	// write interval and a forward, with room to spare. Default 10s.
	Settle time.Duration `yaml:"settle"`
	// PeekInterval is how often the minute in progress is judged by what
	// it holds so far (an alert fires before the minute is over; see
	// anomaly.Detector.Peek). 0 turns peeking off. Default 5s.
	PeekInterval time.Duration `yaml:"peek_interval"`
	// PeekMinShare is the least share of a minute that must have elapsed
	// (after Settle) before it is peeked at. Default 0.2.
	PeekMinShare float64 `yaml:"peek_min_share"`
	// JudgeLag is how old a minute may be and still be judged: older
	// minutes (a backfill, a campaign taken over long after) are history
	// the detectors learn from, never alerts. Default 15m.
	JudgeLag time.Duration `yaml:"judge_lag"`
	// MaxCampaigns bounds the campaigns one node watches (about 0.6 MB
	// each); campaigns beyond it are not watched and are counted.
	// Default 1000.
	MaxCampaigns int `yaml:"max_campaigns"`
	// Monitor is the detector configuration of every campaign and metric
	// (see docs/alerts.md); anomaly rules change its threshold and metrics
	// per campaign.
	Monitor anomaly.MonitorConfig `yaml:"monitor"`
	// Forecast tunes the projections of campaigns with a budget and of
	// GET /api/v1/forecast (the time zone is the budget's).
	Forecast forecast.Config `yaml:"forecast"`
	// Rules, Budgets and Silences from this file; the admin API adds more
	// (stored in InfluxDB), and cannot change these.
	alert.Config `yaml:",inline"`
	// Notify is where alerts go.
	Notify notify.Config `yaml:"notify"`
	// ObjectsPoll is how often a node reads the objects edited through
	// the API from InfluxDB (an edit on another node applies here within
	// it). Default 5s.
	ObjectsPoll time.Duration `yaml:"objects_poll"`
	// ObjectsRefresh is how often the objects are written again, so that
	// the retention policy never ages out a rule that is still in force.
	// Default 24h; the retention policy must be longer than twice it.
	ObjectsRefresh time.Duration `yaml:"objects_refresh"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	fc := forecast.DefaultConfig()
	return Config{Settle: 10 * time.Second, PeekInterval: 5 * time.Second, PeekMinShare: 0.2, JudgeLag: 15 * time.Minute,
		MaxCampaigns: 1000, Monitor: anomaly.DefaultMonitorConfig(), Forecast: fc, Notify: notify.DefaultConfig(),
		ObjectsPoll: 5 * time.Second, ObjectsRefresh: 24 * time.Hour}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Settle < time.Second || c.Settle > 10*time.Minute {
		add("settle %v: must be in [1s, 10m]", c.Settle)
	}
	if c.PeekInterval < 0 || (c.PeekInterval > 0 && c.PeekInterval < time.Second) || c.PeekInterval > time.Minute {
		add("peek_interval %v: 0 (off) or in [1s, 1m]", c.PeekInterval)
	}
	if !(c.PeekMinShare > 0 && c.PeekMinShare <= 1) {
		add("peek_min_share %v: must be in (0, 1]", c.PeekMinShare)
	}
	if c.JudgeLag < 2*time.Minute || c.JudgeLag > 24*time.Hour {
		add("judge_lag %v: must be in [2m, 24h]", c.JudgeLag)
	}
	if c.JudgeLag <= c.Settle+time.Minute {
		add("judge_lag %v: must be longer than settle %v and a minute", c.JudgeLag, c.Settle)
	}
	if c.MaxCampaigns < 1 || c.MaxCampaigns > 1_000_000 {
		add("max_campaigns %d: must be 1..1000000", c.MaxCampaigns)
	}
	if err := c.Monitor.Validate(); err != nil {
		add("monitor: %w", err)
	}
	if c.Monitor.Detector.Slot != 0 && (24*time.Hour)%c.Monitor.Detector.Slot != 0 {
		add("monitor.detector.slot %v: must divide a day", c.Monitor.Detector.Slot)
	}
	if err := c.Forecast.Validate(); err != nil {
		add("forecast: %w", err)
	}
	if err := c.Config.Validate(); err != nil {
		add("%w", err)
	}
	if err := c.Notify.Validate(); err != nil {
		add("notify: %w", err)
	}
	if c.ObjectsPoll < time.Second || c.ObjectsPoll > 10*time.Minute {
		add("objects_poll %v: must be in [1s, 10m]", c.ObjectsPoll)
	}
	if c.ObjectsRefresh < time.Hour || c.ObjectsRefresh > 30*24*time.Hour {
		add("objects_refresh %v: must be in [1h, 720h]", c.ObjectsRefresh)
	}
	return errors.Join(errs...)
}

// History is how far back alerting reads minutes from storage when it
// rebuilds a campaign, with forecasts (budgets) in use: a retention of
// minutes shorter than this leaves the seasonal baselines and forecasts
// less history than configured.
func (c Config) History() time.Duration { return c.history(true) }

// history is how far back a campaign's detectors (and, with a budget, its
// forecaster) are rebuilt from storage: what the seasonal baselines look
// at, and the forecaster's days.
func (c Config) history(forecasts bool) time.Duration {
	d := c.Monitor.Detector
	back := max(time.Duration(d.SeasonalDays)*24*time.Hour, time.Duration(d.SeasonalWeeks)*7*24*time.Hour) + d.Neighbourhood + 2*time.Hour
	back = max(back, d.RollingWindow+2*time.Hour)
	if forecasts {
		back = max(back, time.Duration(c.Forecast.HistoryDays+1)*24*time.Hour)
	}
	return back
}

package anomaly

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes every detector of a deployment. One configuration serves
// every campaign and metric: the detector measures each series' own noise,
// so nothing here is per series. Durations are rounded to the series' step
// (windows) or slot (history) when a detector is built.
type Config struct {
	// Threshold is the score (standard deviations of the variance-stabilised
	// deviation) at or beyond which a point counts as anomalous. Default 8:
	// marketing series are heavy-tailed, and an alert that cries wolf is
	// muted by its reader.
	Threshold float64 `yaml:"threshold"`
	// ResolveThreshold is the score below which a firing alert starts to
	// resolve (hysteresis: between the two thresholds it keeps its state).
	// Default 3.
	ResolveThreshold float64 `yaml:"resolve_threshold"`
	// Persistence is how many consecutive points must be anomalous in the
	// same direction before an alert fires. Default 2 (one point of noise
	// never alerts; at one-minute steps an alert fires in the second minute).
	Persistence int `yaml:"persistence"`
	// ResolvePoints is how many consecutive points below ResolveThreshold
	// resolve a firing alert. Default 3.
	ResolvePoints int `yaml:"resolve_points"`
	// Cooldown is how long after an alert resolves a new alert of the same
	// metric and direction waits. Default 24h: one episode, one message.
	Cooldown time.Duration `yaml:"cooldown"`
	// Windows are the lengths over which a point's deviation is judged; the
	// largest score wins. A short window catches a sharp spike at once, a
	// long one a moderate shift that lasts (a drop to zero of a metric that
	// counts a few events a minute). A window shorter than the step is one
	// step (at 5-minute steps the default is 5m, 15m, 1h). Default 1m, 2m,
	// 5m, 15m, 1h.
	Windows []time.Duration `yaml:"windows"`
	// Slot is the resolution of the history the seasonal baseline is read
	// from. Memory per series is about 12 bytes × History/Slot. Default 5m.
	Slot time.Duration `yaml:"slot"`
	// SeasonalDays is how many previous days at the same time of day feed
	// the seasonal baseline. Default 7.
	SeasonalDays int `yaml:"seasonal_days"`
	// SeasonalWeeks is how many previous weeks at the same time of week
	// feed it too. Default 2.
	SeasonalWeeks int `yaml:"seasonal_weeks"`
	// Neighbourhood widens each seasonal sample to the times this close to
	// it (more samples, a steadier median). Default 15m.
	Neighbourhood time.Duration `yaml:"neighbourhood"`
	// MinSeasonalHistory is the history needed before the seasonal baseline
	// replaces the rolling one. Default 48h (two days at the same time).
	MinSeasonalHistory time.Duration `yaml:"min_seasonal_history"`
	// RollingWindow is the recent past the rolling baseline is taken from
	// while the history is too short for the seasonal one. Default 6h.
	RollingWindow time.Duration `yaml:"rolling_window"`
	// MinHistory is the history needed before a series is judged at all.
	// Default 6h.
	MinHistory time.Duration `yaml:"min_history"`
	// MinVolume is the fewest events (expected or observed, in the window
	// judged) for a deviation to count: "3 clicks instead of 0" is no news.
	// Money counts in events behind it (cost events, conversions). Default 10.
	MinVolume float64 `yaml:"min_volume"`
	// Spikes and Drops choose the directions that alert. Default both.
	Spikes *bool `yaml:"spikes"`
	Drops  *bool `yaml:"drops"`
}

// DefaultConfig returns the configuration the benchmark in docs/alerts.md
// was measured with.
func DefaultConfig() Config {
	t := true
	return Config{
		Threshold:          8,
		ResolveThreshold:   3,
		Persistence:        2,
		ResolvePoints:      3,
		Cooldown:           24 * time.Hour,
		Windows:            []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour},
		Slot:               5 * time.Minute,
		SeasonalDays:       7,
		SeasonalWeeks:      2,
		Neighbourhood:      15 * time.Minute,
		MinSeasonalHistory: 48 * time.Hour,
		RollingWindow:      6 * time.Hour,
		MinHistory:         6 * time.Hour,
		MinVolume:          10,
		Spikes:             &t,
		Drops:              &t,
	}
}

// Bounds that keep one detector's memory and work small.
const (
	maxWindows      = 8
	maxWindow       = 24 * time.Hour
	maxSeasonalDays = 28
	maxSeasonalWeek = 8
	minSlot         = time.Second
)

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	if c.Threshold <= 0 {
		errs = append(errs, fmt.Errorf("threshold %v: must be > 0", c.Threshold))
	}
	if c.ResolveThreshold < 0 || c.ResolveThreshold >= c.Threshold {
		errs = append(errs, fmt.Errorf("resolve_threshold %v: must be >= 0 and below threshold %v", c.ResolveThreshold, c.Threshold))
	}
	if c.Persistence < 1 || c.Persistence > 1000 {
		errs = append(errs, fmt.Errorf("persistence %d: must be 1..1000", c.Persistence))
	}
	if c.ResolvePoints < 1 || c.ResolvePoints > 1000 {
		errs = append(errs, fmt.Errorf("resolve_points %d: must be 1..1000", c.ResolvePoints))
	}
	if c.Cooldown < 0 {
		errs = append(errs, fmt.Errorf("cooldown %v: must be >= 0", c.Cooldown))
	}
	if len(c.Windows) == 0 || len(c.Windows) > maxWindows {
		errs = append(errs, fmt.Errorf("windows: need 1..%d, have %d", maxWindows, len(c.Windows)))
	}
	for _, w := range c.Windows {
		if w <= 0 || w > maxWindow {
			errs = append(errs, fmt.Errorf("window %v: must be in (0, %v]", w, maxWindow))
		}
	}
	if c.Slot < minSlot || c.Slot > time.Hour {
		errs = append(errs, fmt.Errorf("slot %v: must be in [%v, 1h]", c.Slot, minSlot))
	}
	if c.SeasonalDays < 0 || c.SeasonalDays > maxSeasonalDays {
		errs = append(errs, fmt.Errorf("seasonal_days %d: must be 0..%d", c.SeasonalDays, maxSeasonalDays))
	}
	if c.SeasonalWeeks < 0 || c.SeasonalWeeks > maxSeasonalWeek {
		errs = append(errs, fmt.Errorf("seasonal_weeks %d: must be 0..%d", c.SeasonalWeeks, maxSeasonalWeek))
	}
	if c.SeasonalDays == 0 && c.SeasonalWeeks == 0 {
		errs = append(errs, errors.New("seasonal_days and seasonal_weeks are both 0: no seasonal baseline"))
	}
	if c.Neighbourhood < 0 || c.Neighbourhood > 6*time.Hour {
		errs = append(errs, fmt.Errorf("neighbourhood %v: must be in [0, 6h]", c.Neighbourhood))
	}
	if c.MinSeasonalHistory < 24*time.Hour {
		errs = append(errs, fmt.Errorf("min_seasonal_history %v: must be at least 24h", c.MinSeasonalHistory))
	}
	if c.RollingWindow <= 0 || c.RollingWindow > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("rolling_window %v: must be in (0, 168h]", c.RollingWindow))
	}
	if c.MinHistory < 0 || c.MinHistory > c.MinSeasonalHistory {
		errs = append(errs, fmt.Errorf("min_history %v: must be in [0, min_seasonal_history]", c.MinHistory))
	}
	if c.MinVolume < 0 {
		errs = append(errs, fmt.Errorf("min_volume %v: must be >= 0", c.MinVolume))
	}
	if !c.spikes() && !c.drops() {
		errs = append(errs, errors.New("spikes and drops are both off: nothing would alert"))
	}
	return errors.Join(errs...)
}

func (c Config) spikes() bool { return c.Spikes == nil || *c.Spikes }
func (c Config) drops() bool  { return c.Drops == nil || *c.Drops }

// Package reload puts a daemon's configuration file back in force while it
// runs, when the operator asks (SIGHUP, `systemctl reload`), without
// dropping a connection or an open stream.
//
// A reload reads and validates the file exactly as a start does. Then the
// daemon prepares every part it can change in place (tokens, keys, lists,
// parsing rules, certificates) and, only if every part prepared, commits
// them all: a reload that fails anywhere changes nothing, and says why in
// the log and in <prefix>_config_reload_failures_total and
// <prefix>_config_last_reload_successful. Keys that cannot change in a
// running process (listen addresses, directories, cluster settings...) are
// compared with the configuration the process started with; a change to
// one is logged and shown in <prefix>_config_restart_pending until the next
// restart puts it in force.
package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source is where a daemon's new configurations come from.
type Source[C any] struct {
	// Requests yields one value per reload asked for. Requests that
	// arrive while one is being applied are coalesced into one more.
	Requests <-chan struct{}
	// Load reads and validates the configuration file again.
	Load func() (C, error)
	// Level is the logger's level, which reloads set from log_level.
	// Nil: the level is not the daemon's to change.
	Level *Level
	// Notify, when set, is told when a reload begins (true) and ends
	// (false), e.g. to tell systemd RELOADING=1 and then READY=1.
	Notify func(reloading bool)
}

// Enabled reports whether the source can deliver reloads at all.
func (s Source[C]) Enabled() bool { return s.Requests != nil && s.Load != nil }

// Requests returns a channel of capacity one fed by trigger: each call of
// trigger asks for one reload, and calls made while one is pending are
// coalesced into it. trigger never blocks.
func Requests() (requests <-chan struct{}, trigger func()) {
	ch := make(chan struct{}, 1)
	return ch, func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Reloader applies the configurations a Source delivers. Its fields are
// set before Run and not changed after.
type Reloader[C any] struct {
	Source Source[C]
	// Apply puts cfg in force, all or nothing: when it returns an error,
	// nothing of the running configuration has changed. It runs on Run's
	// goroutine, one reload at a time.
	Apply func(cfg C) error
	// LogLevel returns the log_level cfg sets ("" for none).
	LogLevel func(cfg C) string
	// Reloadable reports whether Apply puts the key (a path as Diff
	// writes it, e.g. "auth.tokens" or "sources.logs[0].rules") in force.
	// A change to any other key waits for a restart.
	Reloadable func(key string) bool
	Metrics    *Metrics
	Logger     *slog.Logger
}

// Run applies reloads until ctx ends. started is the configuration the
// process started with: keys Apply cannot change stay as they are there
// until a restart.
func (r *Reloader[C]) Run(ctx context.Context, started C) {
	if !r.Source.Enabled() {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.Source.Requests:
		}
		_ = r.Reload(started)
	}
}

// Reload reads the configuration once, applies it and reports the
// outcome. Run calls it for each request; it returns what it logged.
func (r *Reloader[C]) Reload(started C) error {
	if r.Source.Notify != nil {
		r.Source.Notify(true)
		defer r.Source.Notify(false)
	}
	start := time.Now()
	cfg, err := r.Source.Load()
	if err == nil && r.LogLevel != nil {
		_, err = ParseLevel(r.LogLevel(cfg))
	}
	if err == nil {
		err = r.Apply(cfg)
	}
	if err != nil {
		r.Metrics.failed()
		r.Logger.Error("configuration reload failed; the running configuration is unchanged", "reason_code", "config_reload_failed", "err", err)
		return err
	}
	if r.LogLevel != nil {
		r.Source.Level.Set(r.LogLevel(cfg)) // checked above
	}
	var pending []string
	for _, k := range Diff(started, cfg) {
		if r.Reloadable == nil || !r.Reloadable(k) {
			pending = append(pending, k)
		}
	}
	r.Metrics.succeeded(len(pending) > 0)
	r.Logger.Info("configuration reloaded", "took", time.Since(start).Round(time.Millisecond), "log_level", r.Source.Level.String())
	if len(pending) > 0 {
		r.Logger.Warn("configuration keys changed that take effect only at the next restart", "reason_code", "config_restart_pending",
			"keys", strings.Join(pending, ", "))
	}
	return nil
}

// Metrics are a daemon's reload counters and gauges.
type Metrics struct {
	reloads, failures       prometheus.Counter
	lastOK, lastOKTime      prometheus.Gauge
	restartPending, lastTry prometheus.Gauge
}

// NewMetrics registers the reload metrics under prefix (tally_agent,
// tally_aggregator) with reg. The process's start counts as the first
// successful load.
func NewMetrics(reg prometheus.Registerer, prefix string) *Metrics {
	m := &Metrics{
		reloads: prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "_config_reloads_total",
			Help: "Configuration reloads asked for (SIGHUP), successful or not."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "_config_reload_failures_total",
			Help: "Configuration reloads that failed (the file did not validate, or a part could not be prepared); the running configuration was kept."}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "_config_last_reload_successful",
			Help: "1 when the last configuration load (the start or a reload) succeeded, 0 when it failed."}),
		lastOKTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load (the start or a reload)."}),
		lastTry: prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "_config_last_reload_timestamp_seconds",
			Help: "Unix time of the last configuration load attempt (the start or a reload)."}),
		restartPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "_config_restart_pending",
			Help: "1 when the configuration in force differs from the file in keys that take effect only at a restart."}),
	}
	reg.MustRegister(m.reloads, m.failures, m.lastOK, m.lastOKTime, m.lastTry, m.restartPending)
	now := float64(time.Now().UnixNano()) / 1e9
	m.lastOK.Set(1)
	m.lastOKTime.Set(now)
	m.lastTry.Set(now)
	return m
}

func (m *Metrics) failed() {
	if m == nil {
		return
	}
	m.failures.Inc()
	m.lastOK.Set(0)
	m.lastTry.Set(float64(time.Now().UnixNano()) / 1e9)
	m.reloads.Inc() // last: whoever sees the count sees the outcome
}

func (m *Metrics) succeeded(restartPending bool) {
	if m == nil {
		return
	}
	now := float64(time.Now().UnixNano()) / 1e9
	m.lastOK.Set(1)
	m.lastOKTime.Set(now)
	m.lastTry.Set(now)
	if restartPending {
		m.restartPending.Set(1)
	} else {
		m.restartPending.Set(0)
	}
	m.reloads.Inc() // last: whoever sees the count sees the outcome
}

// Steps prepares every part of a reload and commits them only if all
// prepared: the daemons' Apply functions are a list of steps.
type Steps struct {
	commits []func()
	errs    []error
}

// Add records the outcome of preparing one part: its commit (nil when
// there is nothing to change) or why it cannot be prepared, naming the
// configuration key.
func (s *Steps) Add(key string, commit func(), err error) {
	if err != nil {
		s.errs = append(s.errs, fmt.Errorf("%s: %w", key, err))
		return
	}
	if commit != nil {
		s.commits = append(s.commits, commit)
	}
}

// Commit commits every prepared part, or none and returns every reason
// when some part failed.
func (s *Steps) Commit() error {
	if err := errors.Join(s.errs...); err != nil {
		return err
	}
	for _, c := range s.commits {
		c()
	}
	return nil
}

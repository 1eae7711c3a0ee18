package notify

import (
	"errors"

	"fmt"
	"github.com/tally-edge/tally/aggregator/alert"
	"net/url"
	"regexp"
	"time"
)

// Config is where alerts go and how hard delivery tries. Every URL comes
// from this (admin) configuration; nothing in an alert chooses where it is
// sent.
type Config struct {
	// Webhooks receive one POST per alert transition.
	Webhooks []Webhook `yaml:"webhooks"`
	// Alertmanagers receive every alert through Alertmanager's v2 API.
	Alertmanagers []Alertmanager `yaml:"alertmanagers"`
	// DashboardURL is the dashboard's base URL; alerts link to their time
	// range on it ("" for no link).
	DashboardURL string `yaml:"dashboard_url"`
	// DeadLetterDir keeps the deliveries that failed for good, as JSON
	// lines ("" keeps none, and says so in the metrics).
	DeadLetterDir string `yaml:"dead_letter_dir"`
	// DeadLetterMaxBytes bounds the dead letters on disk (two files of
	// half of it; the oldest half goes first). Default 64 MiB.
	DeadLetterMaxBytes int64 `yaml:"dead_letter_max_bytes"`
	// QueueLength bounds the alerts waiting for one target; beyond it they
	// go to the dead letters at once. Default 10000.
	QueueLength int `yaml:"queue_length"`
	// MaxPayloadBytes bounds one request body. Default 256 KiB.
	MaxPayloadBytes int `yaml:"max_payload_bytes"`
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Attempts is how many times one delivery is tried. Default 8.
	Attempts int `yaml:"attempts"`
	// BackoffMin and BackoffMax bound the wait between attempts
	// (exponential with jitter; a Retry-After answer is honoured up to
	// BackoffMax). Defaults 1s and 5m.
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
	// ResendInterval is how often firing alerts are pushed to
	// Alertmanager again (it forgets an alert not refreshed before its
	// end time, which is set to four intervals ahead). Default 1m.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// MaxActive bounds the firing alerts kept for re-sending. Default 10000.
	MaxActive int `yaml:"max_active"`
	// ShutdownTimeout bounds the final deliveries at Close; what remains
	// goes to the dead letters. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Done, if set, is called once for every target Send queued an alert
	// transition for, when that target is done with it: delivered, or
	// given up on (a dead letter). It runs on the target's goroutine and
	// must not block. Not configuration: the caller's hook.
	Done func(a alert.Alert, target string, delivered bool) `yaml:"-"`
}

// Webhook is one HTTP receiver.
type Webhook struct {
	// Name labels the receiver in metrics and dead letters: lower case
	// letters, digits, _ . -, unique.
	Name string `yaml:"name"`
	// URL is http or https, without user information.
	URL string `yaml:"url"`
	// Format is "json" (Tally's payload, signed) or "slack" (a Slack
	// incoming-webhook message). Default json.
	Format string `yaml:"format"`
	// Secret signs the body with HMAC-SHA256 (X-Tally-Signature); at least
	// 16 bytes; use ${VAR}. Optional for slack.
	Secret string `yaml:"secret"`
	// Campaigns limits the receiver to these campaigns; empty for all.
	Campaigns []string `yaml:"campaigns"`
	// MinSeverity drops alerts below it: info, warning or critical.
	// Default info.
	MinSeverity string `yaml:"min_severity"`
	// Silenced also delivers alerts an active silence mutes. Default false.
	Silenced bool `yaml:"silenced"`
}

// Alertmanager is one Alertmanager instance (of a cluster: list each).
type Alertmanager struct {
	Name string `yaml:"name"`
	// URL is the base URL, e.g. http://alertmanager:9093.
	URL string `yaml:"url"`
	// BearerToken is sent as Authorization when set.
	BearerToken string `yaml:"bearer_token"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{DeadLetterMaxBytes: 64 << 20, QueueLength: 10000, MaxPayloadBytes: 256 << 10, Timeout: 10 * time.Second,
		Attempts: 8, BackoffMin: time.Second, BackoffMax: 5 * time.Minute, ResendInterval: time.Minute, MaxActive: 10000,
		ShutdownTimeout: 10 * time.Second}
}

// Bounds of the configuration.
const (
	maxTargets = 64
	maxURL     = 2048
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

var severityRank = map[string]int{"": 0, "info": 0, "warning": 1, "critical": 2}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Webhooks)+len(c.Alertmanagers) > maxTargets {
		add("%d targets, at most %d", len(c.Webhooks)+len(c.Alertmanagers), maxTargets)
	}
	names := map[string]bool{}
	name := func(kind string, i int, n string) {
		if !nameRE.MatchString(n) {
			add("%s[%d]: name %q: want %s", kind, i, n, nameRE)
		} else if names[n] {
			add("%s[%d]: name %q used twice", kind, i, n)
		}
		names[n] = true
	}
	for i, w := range c.Webhooks {
		name("webhooks", i, w.Name)
		if err := checkURL(w.URL); err != nil {
			add("webhooks[%d] %s: %w", i, w.Name, err)
		}
		switch w.Format {
		case "", "json", "slack":
		default:
			add("webhooks[%d] %s: format %q: want json or slack", i, w.Name, w.Format)
		}
		if w.Secret != "" && len(w.Secret) < 16 {
			add("webhooks[%d] %s: secret shorter than 16 bytes", i, w.Name)
		}
		if _, ok := severityRank[w.MinSeverity]; !ok {
			add("webhooks[%d] %s: min_severity %q: want info, warning or critical", i, w.Name, w.MinSeverity)
		}
		if len(w.Campaigns) > 1000 {
			add("webhooks[%d] %s: more than 1000 campaigns", i, w.Name)
		}
	}
	for i, a := range c.Alertmanagers {
		name("alertmanagers", i, a.Name)
		if err := checkURL(a.URL); err != nil {
			add("alertmanagers[%d] %s: %w", i, a.Name, err)
		}
	}
	if c.DashboardURL != "" {
		if err := checkURL(c.DashboardURL); err != nil {
			add("dashboard_url: %w", err)
		}
	}
	if c.DeadLetterMaxBytes < 64<<10 {
		add("dead_letter_max_bytes %d: at least 64 KiB", c.DeadLetterMaxBytes)
	}
	if c.QueueLength < 1 || c.QueueLength > 1_000_000 {
		add("queue_length %d: must be 1..1000000", c.QueueLength)
	}
	if c.MaxPayloadBytes < 4<<10 || c.MaxPayloadBytes > 16<<20 {
		add("max_payload_bytes %d: must be 4 KiB..16 MiB", c.MaxPayloadBytes)
	}
	if c.Timeout <= 0 || c.Timeout > 5*time.Minute {
		add("timeout %v: must be in (0, 5m]", c.Timeout)
	}
	if c.Attempts < 1 || c.Attempts > 100 {
		add("attempts %d: must be 1..100", c.Attempts)
	}
	if c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin || c.BackoffMax > 24*time.Hour {
		add("backoff_min %v, backoff_max %v: want 0 < min <= max <= 24h", c.BackoffMin, c.BackoffMax)
	}
	if c.ResendInterval < time.Second || c.ResendInterval > time.Hour {
		add("resend_interval %v: must be in [1s, 1h]", c.ResendInterval)
	}
	if c.MaxActive < 1 || c.MaxActive > 1_000_000 {
		add("max_active %d: must be 1..1000000", c.MaxActive)
	}
	if c.ShutdownTimeout < 0 || c.ShutdownTimeout > 5*time.Minute {
		add("shutdown_timeout %v: must be in [0, 5m]", c.ShutdownTimeout)
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	if len(s) > maxURL {
		return fmt.Errorf("url longer than %d bytes", maxURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url %q: want http or https", s)
	}
	if u.Host == "" {
		return fmt.Errorf("url %q: no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("url: user information is not allowed (use a secret or a bearer token)")
	}
	return nil
}

// Package config is the tally-agent configuration file: one YAML document,
// decoded strictly, with ${ENV} expansion. DefaultConfig documents every
// default; Validate explains every rejection.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tally-edge/tally/agent/botfilter"
	"github.com/tally-edge/tally/agent/browser"
	"github.com/tally-edge/tally/agent/imports"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/tail"
	"github.com/tally-edge/tally/internal/reload"
	"github.com/tally-edge/tally/internal/yamlconf"
)

// Config is the whole agent configuration.
type Config struct {
	// Name identifies this agent to aggregators. It must be unique in the
	// deployment and stable across restarts: contributions are keyed by it.
	// When mutual TLS is used it must equal the CN of the agent certificate.
	Name string `yaml:"name"`
	// Region labels every series this agent produces (e.g. "eu-west").
	Region string `yaml:"region"`
	// StateDir holds the journal, the spool and the restart epoch. It must
	// survive restarts and belong to one agent only.
	StateDir string `yaml:"state_dir"`

	HTTP       HTTP       `yaml:"http"`
	Aggregator Aggregator `yaml:"aggregator"`
	Privacy    Privacy    `yaml:"privacy"`
	Rollup     Rollup     `yaml:"rollup"`
	// Live sends live counters between flushes.
	Live    Live    `yaml:"live"`
	Journal Journal `yaml:"journal"`
	Spool   Spool   `yaml:"spool"`
	// Bots configures the layered bot filter (see agent/botfilter/README.md).
	Bots botfilter.Config `yaml:"bots"`
	// Cardinality bounds distinct values per dimension and minute.
	Cardinality Cardinality `yaml:"cardinality"`
	// Sources are inputs besides POST /v1/events.
	Sources Sources `yaml:"sources"`
	// DeadLetters bounds the batches kept because aggregators refused
	// them for good.
	DeadLetters DeadLetters `yaml:"dead_letters"`
	// MemoryLimit is a soft limit on the Go heap: the runtime collects
	// garbage harder as the heap nears it, instead of letting it grow to
	// twice the live data. 0 (default) leaves the runtime's default; the
	// GOMEMLIMIT environment variable, when set, wins.
	MemoryLimit yamlconf.ByteSize `yaml:"memory_limit"`
	// Geo looks up the country of events that carry none.
	Geo Geo `yaml:"geo"`
	// Browser configures GET /v1/t.js, GET /v1/pixel.gif and CORS on
	// /v1/events (see agent/browser/README.md).
	Browser browser.Config `yaml:"browser"`
	// Imports configures POST /v1/import/cost and POST /v1/webhooks/email
	// (see agent/imports/README.md).
	Imports imports.Config `yaml:"imports"`

	// LogLevel is debug, info, warn or error; a reload (SIGHUP) changes
	// it. Empty (default): info. The -log-level flag, when given, wins.
	LogLevel string `yaml:"log_level"`
	// CertCheckInterval is how often aggregator.cert and aggregator.key
	// are read again: a renewed pair is used for new connections without
	// a restart. 0: only at a reload (SIGHUP). Default 30s.
	CertCheckInterval time.Duration `yaml:"cert_check_interval"`
}

// Geo configures the IP-to-country lookup (agent/geo/README.md).
type Geo struct {
	// Database is a MaxMind-format .mmdb (GeoLite2/GeoIP2 Country or
	// City, DB-IP lite) that the operator downloads; it is read once at
	// start. Empty (default): no lookup, country ZZ unless events say.
	Database string `yaml:"database"`
}

// Sources are the agent's inputs besides its HTTP endpoint.
type Sources struct {
	// Logs are access logs to tail (see agent/tail and agent/logparse).
	Logs []LogSource `yaml:"logs"`
	// ForgetPositions drops the saved read position of a file (tailed or
	// imported) once the file is gone (or another file has its name) and
	// no line of it has been read for this long, so positions do not pile
	// up in every flush. Default 720h (30 days).
	ForgetPositions time.Duration `yaml:"forget_positions"`
}

// DeadLetters bounds the dead-letter directory (<state_dir>/dead-letter):
// batches an aggregator refused as malformed, kept for inspection and
// replay (tally-agent dead-letters list|replay). When either bound is
// reached, a refused batch stays in the spool, shipping pauses and
// /readyz fails until the operator replays or removes dead letters.
type DeadLetters struct {
	// MaxBatches bounds the number of files. Default 1000.
	MaxBatches int `yaml:"max_batches"`
	// MaxBytes bounds their total size. Default 256MiB.
	MaxBytes yamlconf.ByteSize `yaml:"max_bytes"`
}

// LogSource is one set of access logs in one format: the files to follow
// and how to read their lines. The parsing keys (format, nginx_format,
// json_fields, site, scheme, trusted_proxies, rules, default_rule) are
// those of agent/logparse/README.md.
type LogSource struct {
	// Paths are files or globs to follow, e.g. /var/log/nginx/*.access.log.
	Paths []string `yaml:"paths"`
	// PollInterval is how often globs are expanded and idle files checked.
	// Default 1s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// MaxLineBytes skips (and counts) longer lines. Default 64KiB.
	MaxLineBytes yamlconf.ByteSize `yaml:"max_line_bytes"`
	// RotateWait keeps reading a rotated-away file this long after its
	// last growth (a server may write to it until it reopens). Default 10s.
	RotateWait time.Duration `yaml:"rotate_wait"`
	// IdleFlush takes a last line without a newline as complete after this
	// long. Default 5m.
	IdleFlush time.Duration `yaml:"idle_flush"`
	// RotatedSuffixes are where rotated files go, as suffixes of the path
	// (glob syntax). Default [".[0-9]*", "-[0-9]*"].
	RotatedSuffixes []string `yaml:"rotated_suffixes"`

	logparse.Spec `yaml:",inline"`
}

// TailConfig returns the tailer configuration of the source.
func (l *LogSource) TailConfig() tail.Config {
	c := tail.DefaultConfig()
	c.Paths = l.Paths
	if l.PollInterval > 0 {
		c.PollInterval = l.PollInterval
	}
	if l.MaxLineBytes > 0 {
		c.MaxLineBytes = int(l.MaxLineBytes)
	}
	if l.RotateWait > 0 {
		c.RotateWait = l.RotateWait
	}
	if l.IdleFlush > 0 {
		c.IdleFlush = l.IdleFlush
	}
	if l.RotatedSuffixes != nil {
		c.RotatedSuffixes = l.RotatedSuffixes
	}
	return c
}

// Cardinality bounds the distinct campaign, source and medium values, and
// (poll, answer) pairs of votes, per minute. Beyond a limit, values fold
// into "(other)": their events still count exactly, only the label is
// lost; tally_agent_cardinality_folded_total says how often. 0 means the
// default (1000); -1 means unlimited.
type Cardinality struct {
	MaxCampaigns int `yaml:"max_campaigns"`
	MaxSources   int `yaml:"max_sources"`
	MaxMediums   int `yaml:"max_mediums"`
	MaxAnswers   int `yaml:"max_answers"`
	// MaxSeries is the per-minute series budget: beyond this many
	// distinct series in a minute, the events of a new series count in
	// the series of their type and device with campaign, source and
	// medium "(other)" and country ZZ. 0 means the default (100000); -1
	// means unlimited.
	MaxSeries int `yaml:"max_series"`
}

// HTTP is the agent's HTTP listeners: the public one (browsers, and
// server senders unless they have their own) and, optionally, one for
// server senders only.
type HTTP struct {
	// Listen is the address of GET /v1/t.js, GET /v1/pixel.gif,
	// POST /v1/events, /healthz and /readyz, and, without ServerListen,
	// of the import routes and /metrics too. Default 127.0.0.1:8081.
	Listen string `yaml:"listen"`
	// ServerListen, when set, is a second listener for server senders
	// only: POST /v1/events (token required), the import routes and
	// webhooks, /metrics, /healthz and /readyz. Those routes then leave
	// the public listener (except /v1/events, which browsers need), so
	// the public one can face the internet and this one a private
	// network. Default "" (none).
	ServerListen string `yaml:"server_listen"`
	// ServerTokens authenticate server senders ("Authorization: Bearer
	// TOKEN"): backends posting events, and every import and webhook. A
	// request with one of them is never judged by its own address and
	// User-Agent, and its events' ip and ua are believed. At least 16
	// characters each; keep them out of the file with ${VAR}. Default
	// none: imports are off and every event sender is a browser.
	ServerTokens []string `yaml:"server_tokens"`
	// MaxBytesInFlight bounds the request body bytes all requests hold
	// in memory together; a body beyond it gets 503 with Retry-After.
	// Default 64MiB.
	MaxBytesInFlight yamlconf.ByteSize `yaml:"max_bytes_in_flight"`
	// MaxBodyBytes caps one request body (413 above). Default 8MiB.
	MaxBodyBytes yamlconf.ByteSize `yaml:"max_body_bytes"`
	// MaxEventsPerRequest caps the events in one body (413 above). Default 20000.
	MaxEventsPerRequest int `yaml:"max_events_per_request"`
	// MaxEventAge rejects events older than this. Default 168h (7 days).
	MaxEventAge time.Duration `yaml:"max_event_age"`
	// MaxClockSkew rejects events further in the future. Default 5m.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// TrustedProxies are CIDRs of proxies in front of the agent: their
	// X-Forwarded-For is believed for the client address, and the ip and
	// ua fields of events they forward are believed too.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Aggregator says where and how to ship.
type Aggregator struct {
	// Addrs are aggregator QUIC addresses (host:port); the agent uses the
	// first that answers and fails over to the next.
	Addrs []string `yaml:"addrs"`
	// ServerName is the name expected in the aggregator certificate.
	// Default: the host part of the address.
	ServerName string `yaml:"server_name"`
	// CA, Cert and Key are PEM files: the cluster CA and this agent's
	// client certificate (see `tally-aggregator certs`).
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// InFlight is how many batches may await an ack at once. Default 8.
	InFlight int `yaml:"in_flight"`
	// Compress zstd-compresses batches. Default true.
	Compress *bool `yaml:"compress"`
	// BackoffMin and BackoffMax bound the reconnect and retry backoff
	// (exponential with full jitter). Defaults 200ms and 30s.
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
	// SendTimeout is the deadline of a batch round trip until the
	// connection has measured its goodput; after that each batch's
	// deadline follows its size and the goodput shown (see
	// MaxSendTimeout). A batch that misses its deadline is split in two
	// and the halves sent, never resent whole. Default 30s.
	SendTimeout time.Duration `yaml:"send_timeout"`
	// MaxSendTimeout caps the deadline measured goodput can give a batch
	// on a slow link (never below SendTimeout). Default 5m.
	MaxSendTimeout time.Duration `yaml:"max_send_timeout"`
	// MaxBatchContributions splits a flush into batches of at most this
	// many series-minutes. Default 2000.
	MaxBatchContributions int `yaml:"max_batch_contributions"`
	// MaxBatchBytes also seals a batch once its payload (msgpack, before
	// compression) reaches this size, so one batch never needs minutes
	// of a slow link. Default 64KiB.
	MaxBatchBytes yamlconf.ByteSize `yaml:"max_batch_bytes"`
	// RouteToOwner sends each batch straight to the cluster node that owns
	// its campaigns (learned from acks; flushes are grouped by owner).
	// Default true. Set false when agents reach the cluster only through
	// addresses the nodes do not advertise (a UDP load balancer, NAT, a
	// relay): the node they reach forwards to the owners.
	RouteToOwner *bool `yaml:"route_to_owner"`
	// MaxBatchesPerSecond caps how fast the spool drains (0: no cap), so
	// the backlog after a long outage reaches a recovering cluster at a
	// bounded rate. At the default 15s flush an agent makes a few batches
	// a minute; a cap of 20 drains an hour of backlog in seconds.
	MaxBatchesPerSecond float64 `yaml:"max_batches_per_second"`
}

// Privacy configures visitor hashing (ARCHITECTURE invariant 7).
type Privacy struct {
	// Secret derives the salt. Every agent of a deployment must share it so
	// one visitor is one unique across regions. At least 16 bytes; keep it
	// out of the file with ${TALLY_SALT_SECRET}.
	Secret string `yaml:"secret"`
	// SaltPeriod is day, week, month or never: how long one salt (and so
	// one visitor hash) lives, in UTC periods of the event's time. A
	// returning visitor counts once per period in uniques that span
	// several; never keeps one salt for the deployment's life, so a
	// visitor's hash is linkable for as long as the secret lasts.
	// Default day.
	SaltPeriod privacy.Period `yaml:"salt_period"`
}

// Live is the second speed on the wire: about once a second, the counts,
// money and bots of every campaign-minute that changed, sent to each
// campaign's owner for the live view only (never stored; the next flush
// supersedes them), so the dashboard is live within a second whatever
// flush_interval is. Uniques, quantiles and breakdowns stay at flush
// cadence.
type Live struct {
	// Enabled turns live counters on. Default true. An aggregator that
	// takes none (older, or live.enabled false there) grants no live
	// stream, and the agent then sends nothing.
	Enabled *bool `yaml:"enabled"`
	// Interval is how often changed counters are sent. Default 1s.
	Interval time.Duration `yaml:"interval"`
}

// On reports whether live counters are sent.
func (l Live) On() bool { return l.Enabled == nil || *l.Enabled }

// Rollup tunes per-minute aggregation.
type Rollup struct {
	// FlushInterval is how often changed minutes are cut into a batch.
	// Flushes align to multiples of it. Shorter means fresher dashboards,
	// longer means fewer bytes on the wire (see the README's table).
	// Default 15s.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// MaxFlushDelay is how long past its time a flush may wait while the
	// link is behind (a batch committed a flush interval ago not yet
	// acknowledged): the events of the wait fold into the versions of the
	// series-minutes still open, so fewer versions cross a thin link;
	// live counters keep the dashboard current meanwhile. 0 never waits.
	// Default 45s.
	MaxFlushDelay time.Duration `yaml:"max_flush_delay"`
	// Lateness is how long an idle minute stays open in memory. Later
	// events still count exactly: they open a new contribution, which
	// costs a few bytes on the wire. Memory grows with active series ×
	// minutes kept open, so keep this short. Default 2m.
	Lateness time.Duration `yaml:"lateness"`
	// MaxOpen bounds open series-minutes; beyond it ingest answers 503
	// until a flush closes idle ones. Default 1000000.
	MaxOpen int `yaml:"max_open"`
	// Uniques is "series" (default): distinct visitors can be asked for any
	// filter; or "campaign", the low-bandwidth setting: visitors are shipped
	// once per campaign, region and minute, so uniques can be asked per
	// campaign and region only, for a fraction of the bytes.
	Uniques string `yaml:"uniques"`
}

// Journal is the local log of accepted events not yet in the spool.
type Journal struct {
	// MaxBytes bounds it; when full, ingest answers 503. Default 256MiB.
	MaxBytes yamlconf.ByteSize `yaml:"max_bytes"`
	// Fsync makes every accepted request survive power loss, not only a
	// process crash, at the cost of one fsync per request. Default false
	// (the journal is fsynced at every flush).
	Fsync bool `yaml:"fsync"`
}

// Spool is the on-disk queue of batches awaiting acks.
type Spool struct {
	// MaxBytes bounds it; when full, flushes wait and ingest answers 503.
	// Default 1GiB.
	MaxBytes yamlconf.ByteSize `yaml:"max_bytes"`
}

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() Config {
	yes := true
	return Config{
		Region:            "default",
		StateDir:          "/var/lib/tally-agent",
		CertCheckInterval: 30 * time.Second,
		HTTP: HTTP{Listen: "127.0.0.1:8081", MaxBodyBytes: 8 << 20, MaxEventsPerRequest: 20_000,
			MaxEventAge: 7 * 24 * time.Hour, MaxClockSkew: 5 * time.Minute, MaxBytesInFlight: 64 << 20},
		Aggregator: Aggregator{InFlight: 8, Compress: &yes, BackoffMin: 200 * time.Millisecond,
			BackoffMax: 30 * time.Second, SendTimeout: 30 * time.Second, MaxSendTimeout: 5 * time.Minute,
			MaxBatchContributions: 2000, MaxBatchBytes: 64 << 10},
		Privacy:     Privacy{SaltPeriod: privacy.Day},
		Rollup:      Rollup{FlushInterval: 15 * time.Second, MaxFlushDelay: 45 * time.Second, Lateness: 2 * time.Minute, MaxOpen: 1_000_000},
		Live:        Live{Interval: time.Second},
		Journal:     Journal{MaxBytes: 256 << 20},
		Spool:       Spool{MaxBytes: 1 << 30},
		Bots:        botfilter.DefaultConfig(),
		Browser:     browser.DefaultConfig(),
		Imports:     imports.DefaultConfig(),
		Sources:     Sources{ForgetPositions: 30 * 24 * time.Hour},
		DeadLetters: DeadLetters{MaxBatches: 1000, MaxBytes: 256 << 20},
	}
}

// Load reads a config file over the defaults and validates it.
func Load(path string) (Config, error) { return yamlconf.Checked(path, DefaultConfig()) }

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := yamlconf.CheckName("name", c.Name); err != nil {
		errs = append(errs, err)
	}
	if err := yamlconf.CheckName("region", c.Region); err != nil {
		errs = append(errs, err)
	}
	if c.StateDir == "" {
		bad("state_dir: required")
	}
	if _, err := reload.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.CertCheckInterval < 0 || (c.CertCheckInterval > 0 && c.CertCheckInterval < 100*time.Millisecond) {
		bad("cert_check_interval %s: 0 (only at a reload) or at least 100ms", c.CertCheckInterval)
	}
	if _, err := netip.ParseAddrPort(c.HTTP.Listen); err != nil && !strings.HasPrefix(c.HTTP.Listen, ":") {
		bad("http.listen %q: want host:port", c.HTTP.Listen)
	}
	if c.HTTP.ServerListen != "" {
		if _, err := netip.ParseAddrPort(c.HTTP.ServerListen); err != nil && !strings.HasPrefix(c.HTTP.ServerListen, ":") {
			bad("http.server_listen %q: want host:port", c.HTTP.ServerListen)
		}
		if c.HTTP.ServerListen == c.HTTP.Listen && !strings.HasSuffix(c.HTTP.Listen, ":0") {
			bad("http.server_listen: must differ from http.listen")
		}
		if len(c.HTTP.ServerTokens) == 0 {
			bad("http.server_listen: needs http.server_tokens (every request there must carry one)")
		}
	}
	for i, tok := range c.HTTP.ServerTokens {
		if len(tok) < 16 {
			bad("http.server_tokens[%d]: at least 16 characters (set it with ${TALLY_SERVER_TOKEN})", i)
		}
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		bad("http.max_body_bytes: at least 1KiB")
	}
	if c.HTTP.MaxBytesInFlight < c.HTTP.MaxBodyBytes || c.HTTP.MaxBytesInFlight < c.Imports.MaxBodyBytes {
		bad("http.max_bytes_in_flight %s: at least http.max_body_bytes and imports.max_body_bytes, or no body that size could ever be read", c.HTTP.MaxBytesInFlight)
	}
	for _, p := range c.HTTP.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad("http.trusted_proxies: %q is not a CIDR", p)
		}
	}
	if len(c.Aggregator.Addrs) == 0 {
		bad("aggregator.addrs: at least one address")
	}
	if c.Aggregator.CA == "" || c.Aggregator.Cert == "" || c.Aggregator.Key == "" {
		bad("aggregator.ca, aggregator.cert and aggregator.key: required (mutual TLS)")
	}
	if c.Aggregator.InFlight < 1 || c.Aggregator.InFlight > 256 {
		bad("aggregator.in_flight %d: want 1-256", c.Aggregator.InFlight)
	}
	if c.Aggregator.BackoffMin <= 0 || c.Aggregator.BackoffMax < c.Aggregator.BackoffMin {
		bad("aggregator.backoff_min/backoff_max: want 0 < min <= max")
	}
	if c.Aggregator.MaxBatchContributions < 1 {
		bad("aggregator.max_batch_contributions: at least 1")
	}
	if c.Aggregator.MaxBatchBytes < 1<<10 || c.Aggregator.MaxBatchBytes > 16<<20 {
		bad("aggregator.max_batch_bytes: between 1KiB and 16MiB")
	}
	if c.Aggregator.MaxSendTimeout < 0 {
		bad("aggregator.max_send_timeout: not negative")
	}
	if len(c.Privacy.Secret) < 16 {
		bad("privacy.secret: at least 16 bytes (set it with ${TALLY_SALT_SECRET})")
	}
	if err := c.Privacy.SaltPeriod.Validate(); err != nil {
		bad("privacy.%v", err)
	}
	if c.Rollup.FlushInterval < 100*time.Millisecond || c.Rollup.FlushInterval > 10*time.Minute {
		bad("rollup.flush_interval %s: want 100ms to 10m", c.Rollup.FlushInterval)
	}
	if c.Rollup.MaxFlushDelay < 0 || c.Rollup.MaxFlushDelay > 10*time.Minute {
		bad("rollup.max_flush_delay %s: want 0 (never wait) to 10m", c.Rollup.MaxFlushDelay)
	}
	if c.Live.Interval < 100*time.Millisecond || c.Live.Interval > time.Minute {
		bad("live.interval %s: want 100ms to 1m", c.Live.Interval)
	}
	if c.Rollup.Uniques != "" && c.Rollup.Uniques != "series" && c.Rollup.Uniques != "campaign" {
		bad("rollup.uniques %q: want series or campaign", c.Rollup.Uniques)
	}
	if c.Rollup.Lateness < c.Rollup.FlushInterval {
		bad("rollup.lateness %s: must be at least flush_interval", c.Rollup.Lateness)
	}
	if err := c.Bots.Validate(); err != nil {
		bad("bots: %v", err)
	}
	if err := c.Browser.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Imports.Validate(); err != nil {
		errs = append(errs, err)
	}
	for i := range c.Sources.Logs {
		l := &c.Sources.Logs[i]
		if err := l.TailConfig().Validate(); err != nil {
			bad("sources.logs[%d]: %v", i, err)
		}
		if err := l.Spec.Validate(); err != nil {
			bad("sources.logs[%d]: %v", i, err)
		}
	}
	if c.Journal.MaxBytes < 1<<20 || c.Spool.MaxBytes < 1<<20 {
		bad("journal.max_bytes and spool.max_bytes: at least 1MiB")
	}
	if c.Sources.ForgetPositions < time.Hour {
		bad("sources.forget_positions %s: at least 1h", c.Sources.ForgetPositions)
	}
	if c.DeadLetters.MaxBatches < 1 || c.DeadLetters.MaxBytes < 1<<20 {
		bad("dead_letters.max_batches (at least 1) and dead_letters.max_bytes (at least 1MiB)")
	}
	return errors.Join(errs...)
}

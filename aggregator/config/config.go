// Package config is the tally-aggregator configuration file: one YAML
// document, decoded strictly, with ${ENV} expansion.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/tally-edge/tally/aggregator/alerting"
	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/archive"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/cluster"
	"github.com/tally-edge/tally/aggregator/graphql"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/internal/reload"
	"github.com/tally-edge/tally/internal/yamlconf"
)

// Config is the whole aggregator configuration.
type Config struct {
	// Name identifies this node; it must be unique in the cluster.
	Name string `yaml:"name"`
	// DataDir holds the write-ahead log. It must survive restarts.
	DataDir string `yaml:"data_dir"`

	QUIC   QUIC   `yaml:"quic"`
	HTTP   HTTP   `yaml:"http"`
	Influx Influx `yaml:"influx"`
	Merge  Merge  `yaml:"merge"`
	// Cluster makes this node one of several; without cluster.bind it
	// runs alone and owns every campaign.
	Cluster Cluster `yaml:"cluster"`
	Auth    Auth    `yaml:"auth"`
	// Live takes agents' live counters into the live view.
	Live Live `yaml:"live"`
	// Archive exports settled days to Parquet in object storage
	// (docs/archive.md); off without archive.target.
	Archive archive.Config `yaml:"archive"`

	// LogLevel is debug, info, warn or error; a reload (SIGHUP) changes
	// it. Empty (default): info. The -log-level flag, when given, wins.
	LogLevel string `yaml:"log_level"`
	// CertCheckInterval is how often the certificate files (quic.cert and
	// quic.key, http.tls_cert and http.tls_key) are read again: a renewed
	// pair is put in force for new connections without a restart. 0: only
	// at a reload (SIGHUP). Default 30s.
	CertCheckInterval time.Duration `yaml:"cert_check_interval"`
	// Alerts are the anomaly detectors, rules, budgets, silences and
	// notification targets (docs/alerts.md).
	Alerts alerting.Config `yaml:"alerts"`
}

// Live is how the node takes agents' live counters (aggregator/liveview):
// the counts of campaign-minutes that changed, sent about once a second
// between flushes, laid over the durable view of the campaigns this node
// owns and marked provisional until the flush lands. They never reach the
// write-ahead log or InfluxDB.
type Live struct {
	// Enabled grants agents live streams. Default true; it needs
	// quic.require_agent_cn (live counters are matched to the durable
	// contributions by agent name).
	Enabled *bool `yaml:"enabled"`
	// Window is how far back minutes take live counters. Default 5m.
	Window time.Duration `yaml:"window"`
	// MaxRecords bounds the (agent restart × campaign-minute) live
	// records held; beyond it new campaign-minutes wait for the flush.
	// Default 100000.
	MaxRecords int `yaml:"max_records"`
}

// On reports whether live counters are taken.
func (l Live) On() bool { return l.Enabled == nil || *l.Enabled }

// QUIC is the listener agents ship to.
type QUIC struct {
	// Listen is the UDP address for agents. Default 127.0.0.1:7400.
	Listen string `yaml:"listen"`
	// CA, Cert and Key are PEM files: the cluster CA (agents' client
	// certificates must chain to it) and this node's server certificate.
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// RequireAgentCN rejects batches whose agent name differs from the
	// client certificate's CN. Default true.
	RequireAgentCN *bool `yaml:"require_agent_cn"`
	// MaxFrameBytes caps one batch frame. Default 16MiB.
	MaxFrameBytes yamlconf.ByteSize `yaml:"max_frame_bytes"`
	// Advertise is the host:port agents and other nodes reach this node's
	// QUIC listener at (told to them in acks and gossip). Default: the
	// listen address; required in a cluster when that is 0.0.0.0 or [::].
	Advertise string `yaml:"advertise"`
	// MaxConns bounds the connections open at once. Default 10000.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerPeer bounds the connections one certificate identity
	// keeps; a new one beyond it closes that peer's oldest. Default 8.
	MaxConnsPerPeer int `yaml:"max_conns_per_peer"`
	// MaxStreamsPerPeer bounds the batches one identity has in progress
	// over all its connections; more wait. Default 256.
	MaxStreamsPerPeer int `yaml:"max_streams_per_peer"`
	// MaxDecodeBytesPerPeer bounds the memory one identity's batches take
	// while being read and decompressed; at least twice max_frame_bytes.
	// Default 64MiB.
	MaxDecodeBytesPerPeer yamlconf.ByteSize `yaml:"max_decode_bytes_per_peer"`
	// MaxDecodeBytes is that bound over every peer together. Default
	// 512MiB.
	MaxDecodeBytes yamlconf.ByteSize `yaml:"max_decode_bytes"`
}

// HTTP is the API, dashboard, health and metrics listener.
type HTTP struct {
	// Listen is the HTTP address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// MaxWindow is the longest query window. Default 8784h (366 days).
	MaxWindow time.Duration `yaml:"max_window"`
	// TLSCert and TLSKey (PEM files, both or neither) serve HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// AuditLog is a file that gets one JSON line per API request (who
	// read or exported what). Empty: no audit log.
	AuditLog string `yaml:"audit_log"`
	// AuditMaxBytes rotates the audit log by size (file → file.1 …).
	// Default 64MiB, at least 64KiB.
	AuditMaxBytes yamlconf.ByteSize `yaml:"audit_max_bytes"`
	// AuditMaxFiles is how many rotated audit files are kept. Default 5.
	AuditMaxFiles int `yaml:"audit_max_files"`
	// AuditRefusedPerSecond is how many refused requests (401, 429) per
	// second get an audit line each; the rest are counted in summary
	// lines. Default 10; -1: none one by one.
	AuditRefusedPerSecond int `yaml:"audit_refused_per_second"`
	// MetricsToken, when set, is the bearer token /metrics requires
	// (an admin's API token also works); without it /metrics is public
	// but leaves out every series labelled with a campaign.
	MetricsToken string `yaml:"metrics_token"`
	// MetricsListen serves /metrics on its own address instead of
	// Listen (the API listener then has no /metrics). Empty: on Listen.
	MetricsListen string `yaml:"metrics_listen"`
	// QueryTimeout bounds one storage query of the API. Default 30s.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// MaxPoints bounds the points of one answer (steps × groups).
	// Default 100800.
	MaxPoints int `yaml:"max_points"`
	// MaxConcurrentQueries bounds the storage queries of the API running
	// at once on this node. Default 16.
	MaxConcurrentQueries int `yaml:"max_concurrent_queries"`
	// MaxQueriesPerSubject bounds one subject's data requests admitted at
	// once (429 beyond). Default 8.
	MaxQueriesPerSubject int `yaml:"max_queries_per_subject"`
	// QueryWait is how long a data request waits for a query slot before
	// 503. Default 5s.
	QueryWait time.Duration `yaml:"query_wait"`
	// WriteTimeout bounds writing one answer (one day of an export) to a
	// client. Default 30s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// Stream tunes GET /api/v1/stream.
	Stream Stream `yaml:"stream"`
	// GraphQL tunes POST /api/v1/graphql.
	GraphQL GraphQL `yaml:"graphql"`
}

// GraphQL tunes the GraphQL endpoint; its other bounds (depth 20, body
// 16 KiB) follow from the schema and are fixed.
type GraphQL struct {
	// Playground serves the GraphiQL page at GET /api/v1/graphql (it
	// loads GraphiQL's scripts from a public CDN). Default false.
	Playground bool `yaml:"playground"`
	// MaxComplexity bounds one query's cost: 1 per field and 100 more per
	// field that reads storage. Default 1000: at most 9 storage fields;
	// 150 to 10000.
	MaxComplexity int `yaml:"max_complexity"`
}

// Stream tunes the live stream.
type Stream struct {
	// Heartbeat is the interval of ": ping" comments. Default 15s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Buffer bounds the changed campaign-minutes waiting for one client;
	// beyond it the client is dropped. Default 10000.
	Buffer int `yaml:"buffer"`
	// WriteTimeout drops a client that takes longer to accept one
	// message. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxStreams bounds the open streams of this node (503 beyond).
	// Default 1000.
	MaxStreams int `yaml:"max_streams"`
	// MaxPerSubject bounds the open streams of one subject (429 beyond).
	// Default 16.
	MaxPerSubject int `yaml:"max_per_subject"`
}

// Influx is the storage.
type Influx struct {
	// URL of InfluxDB's HTTP API, e.g. http://127.0.0.1:8086.
	URL string `yaml:"url"`
	// Token: "user:password" for InfluxDB 1.8, an API token for 2.x.
	Token string `yaml:"token"`
	// Org is empty for 1.8.
	Org string `yaml:"org"`
	// Bucket is "db/rp" for 1.8.
	Bucket string `yaml:"bucket"`
	// Timeout bounds one HTTP request. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Gzip compresses writes and asks for compressed answers. Default
	// false: on loopback or a LAN the CPU costs more than the bytes save
	// (sketches compress little); turn it on across a WAN.
	Gzip bool `yaml:"gzip"`
	// QueryLanguage is how the node reads InfluxDB: auto (default:
	// InfluxQL when the server answers it, else Flux), influxql or flux.
	QueryLanguage string `yaml:"query_language"`
	// CreateBucket lets the node create the database and retention
	// policy named by Bucket at start when they are missing (InfluxDB
	// 1.x). Default true; false makes a missing bucket an error.
	CreateBucket bool `yaml:"create_bucket"`
	// ContributionsBucket, HoursBucket and DaysBucket hold contribution
	// points and hourly and daily rollups. Empty: "<db>/contributions",
	// "<db>/hours", "<db>/days" in Bucket's database.
	ContributionsBucket string `yaml:"contributions_bucket"`
	HoursBucket         string `yaml:"hours_bucket"`
	DaysBucket          string `yaml:"days_bucket"`
	// Retention is how long each resolution is kept; the node creates
	// and alters the retention policies to match (InfluxDB 1.x, with
	// CreateBucket).
	Retention Retention `yaml:"retention"`
}

// Retention is how long InfluxDB keeps each kind of point; 0 keeps it
// forever.
type Retention struct {
	// Minutes: merged minutes. Default 336h (14 days).
	Minutes time.Duration `yaml:"minutes"`
	// Contributions: per-agent contribution points, needed only while a
	// minute may still be rebuilt. Default 3h; at least 1h10m.
	Contributions time.Duration `yaml:"contributions"`
	// Hours: hourly rollups. Default 9600h (400 days).
	Hours time.Duration `yaml:"hours"`
	// Days: daily rollups. Default 0 (forever).
	Days time.Duration `yaml:"days"`
}

// Merge tunes the merge pipeline.
type Merge struct {
	// Lateness is how long a minute stays open in memory; later data is
	// merged with what InfluxDB holds. Default 1h.
	Lateness time.Duration `yaml:"lateness"`
	// WriteInterval is how often changed minutes are written. Default 1s.
	WriteInterval time.Duration `yaml:"write_interval"`
	// WALMaxBytes bounds the write-ahead log; when InfluxDB has been down
	// long enough to fill it, agents are told to wait (they spool).
	// Default 1GiB.
	WALMaxBytes yamlconf.ByteSize `yaml:"wal_max_bytes"`
	// ShutdownTimeout bounds the final write on shutdown. Default 20s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// QuarantineMaxBytes bounds data_dir/quarantine, where series-minutes
	// InfluxDB refuses for good wait for a replay. Beyond it they stay in
	// the write-ahead log. Default 256MiB.
	QuarantineMaxBytes yamlconf.ByteSize `yaml:"quarantine_max_bytes"`
	// MaxPendingLoads bounds the campaign-minutes of late data waiting to
	// be loaded from InfluxDB; beyond it batches are answered busy.
	// Default 100000.
	MaxPendingLoads int `yaml:"max_pending_loads"`
}

// Cluster is membership (hashicorp/memberlist gossip) and ownership.
type Cluster struct {
	// Bind is the gossip address, host:port, UDP and TCP. Empty: no
	// cluster. Example 127.0.0.1:7946.
	Bind string `yaml:"bind"`
	// Advertise is the address other nodes reach this one at, if not
	// Bind.
	Advertise string `yaml:"advertise"`
	// Seeds are gossip addresses (host:port) of nodes to join; a DNS name
	// that resolves to several addresses stands for all of them. This
	// node's own address may be listed (it is skipped), so every node can
	// share one list.
	Seeds []string `yaml:"seeds"`
	// SecretKey is the base64 gossip encryption key (16, 24 or 32 bytes
	// decoded), the same on every node; use ${ENV} or SecretKeyFile to
	// keep it out of the file. Empty: gossip in the clear.
	SecretKey string `yaml:"secret_key"`
	// SecretKeyFile is a file holding the base64 key.
	SecretKeyFile string `yaml:"secret_key_file"`
	// Profile is the failure-detection preset: lan (default: a dead node
	// is noticed in about 5 s), wan (about 30 s, tolerant of slow links)
	// or local (one machine).
	Profile string `yaml:"profile"`
	// ProbeInterval, ProbeTimeout, SuspicionMult and GossipInterval
	// override the preset's failure detection: every ProbeInterval a node
	// probes one random peer and waits ProbeTimeout for the answer; a
	// peer that fails is suspect and declared dead after about
	// SuspicionMult × log10(members+1) × ProbeInterval unless it refutes.
	ProbeInterval  time.Duration `yaml:"probe_interval"`
	ProbeTimeout   time.Duration `yaml:"probe_timeout"`
	SuspicionMult  int           `yaml:"suspicion_mult"`
	GossipInterval time.Duration `yaml:"gossip_interval"`
	// DeadNodeReclaim is how soon a dead node's name may come back from
	// another address. Default 10s.
	DeadNodeReclaim time.Duration `yaml:"dead_node_reclaim"`
	// JoinTimeout is how long a starting node waits to see the seeds
	// before it serves alone (a whole cluster starting at once finds
	// itself within it). Default 10s.
	JoinTimeout time.Duration `yaml:"join_timeout"`
	// HandoffSettle is how long after a membership change a node waits
	// before it rebuilds the campaigns it gained from InfluxDB, so the
	// previous owner's last writes land first. Default 2s.
	HandoffSettle time.Duration `yaml:"handoff_settle"`
}

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() Config {
	yes := true
	return Config{
		DataDir:           "/var/lib/tally-aggregator",
		CertCheckInterval: 30 * time.Second,
		QUIC: QUIC{Listen: "127.0.0.1:7400", RequireAgentCN: &yes, MaxFrameBytes: 16 << 20, MaxConns: 10000, MaxConnsPerPeer: 8,
			MaxStreamsPerPeer: 256, MaxDecodeBytesPerPeer: 64 << 20, MaxDecodeBytes: 512 << 20},
		Cluster: Cluster{Profile: "lan", DeadNodeReclaim: 10 * time.Second, JoinTimeout: 10 * time.Second, HandoffSettle: 2 * time.Second},
		HTTP: HTTP{Listen: "127.0.0.1:8080", MaxWindow: api.DefaultMaxWindow, QueryTimeout: 30 * time.Second, MaxPoints: 100800,
			AuditMaxBytes: auth.DefaultAuditMaxBytes, AuditMaxFiles: auth.DefaultAuditMaxFiles, AuditRefusedPerSecond: auth.DefaultAuditRefusedPerSecond,
			MaxConcurrentQueries: 16, MaxQueriesPerSubject: 8, QueryWait: 5 * time.Second, WriteTimeout: 30 * time.Second,
			Stream:  Stream{Heartbeat: 15 * time.Second, Buffer: 10000, WriteTimeout: 10 * time.Second, MaxStreams: 1000, MaxPerSubject: 16},
			GraphQL: GraphQL{MaxComplexity: graphql.DefaultConfig().MaxComplexity}},
		Auth: Auth{Links: Links{LinkTTL: auth.DefaultLinkTTL, SessionTTL: auth.DefaultSessionTTL, MaxUsedLinks: auth.DefaultMaxUsedLinks}},
		Influx: Influx{URL: "http://127.0.0.1:8086", Token: "user:password", Bucket: "db/rp", Timeout: 10 * time.Second,
			QueryLanguage: "auto", CreateBucket: true, Retention: Retention{Minutes: influx.DefaultRetentionMinutes,
				Contributions: influx.DefaultRetentionContributions, Hours: influx.DefaultRetentionHours}},
		Merge: Merge{Lateness: time.Hour, WriteInterval: time.Second, WALMaxBytes: 1 << 30, ShutdownTimeout: 20 * time.Second,
			QuarantineMaxBytes: 256 << 20, MaxPendingLoads: 100_000},
		Live:    Live{Enabled: &yes, Window: 5 * time.Minute, MaxRecords: 100_000},
		Archive: archive.DefaultConfig(),
		Alerts:  alerting.DefaultConfig(),
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
	if c.DataDir == "" {
		bad("data_dir: required")
	}
	if _, err := reload.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.CertCheckInterval < 0 || (c.CertCheckInterval > 0 && c.CertCheckInterval < 100*time.Millisecond) {
		bad("cert_check_interval %s: 0 (only at a reload) or at least 100ms", c.CertCheckInterval)
	}
	addrs := map[string]string{"quic.listen": c.QUIC.Listen, "http.listen": c.HTTP.Listen}
	if c.HTTP.MetricsListen != "" {
		addrs["http.metrics_listen"] = c.HTTP.MetricsListen
		if c.HTTP.MetricsListen == c.HTTP.Listen {
			bad("http.metrics_listen: must differ from http.listen (leave it empty to serve /metrics there)")
		}
	}
	for key, addr := range addrs {
		if _, err := netip.ParseAddrPort(addr); err != nil && !strings.HasPrefix(addr, ":") {
			bad("%s %q: want ip:port", key, addr)
		}
	}
	if c.QUIC.CA == "" || c.QUIC.Cert == "" || c.QUIC.Key == "" {
		bad("quic.ca, quic.cert and quic.key: required (mutual TLS; `tally-aggregator certs` makes a dev set)")
	}
	if c.QUIC.MaxFrameBytes < 64<<10 {
		bad("quic.max_frame_bytes: at least 64KiB")
	}
	if c.QUIC.MaxConns < 1 || c.QUIC.MaxConnsPerPeer < 1 || c.QUIC.MaxStreamsPerPeer < 1 {
		bad("quic.max_conns, max_conns_per_peer and max_streams_per_peer: at least 1")
	}
	if c.QUIC.MaxDecodeBytesPerPeer < 2*c.QUIC.MaxFrameBytes {
		bad("quic.max_decode_bytes_per_peer (%d): at least twice quic.max_frame_bytes (%d), or one batch could never be read", c.QUIC.MaxDecodeBytesPerPeer, 2*c.QUIC.MaxFrameBytes)
	}
	if c.QUIC.MaxDecodeBytes < c.QUIC.MaxDecodeBytesPerPeer {
		bad("quic.max_decode_bytes: at least quic.max_decode_bytes_per_peer")
	}
	if c.Merge.QuarantineMaxBytes < 1<<20 {
		bad("merge.quarantine_max_bytes: at least 1MiB")
	}
	if c.Merge.MaxPendingLoads < 100 {
		bad("merge.max_pending_loads: at least 100")
	}
	if !strings.HasPrefix(c.Influx.URL, "http://") && !strings.HasPrefix(c.Influx.URL, "https://") {
		bad("influx.url %q: want http:// or https://", c.Influx.URL)
	}
	if c.Influx.Bucket == "" {
		bad("influx.bucket: required (\"db/rp\" for InfluxDB 1.8)")
	}
	switch c.Influx.QueryLanguage {
	case "auto", "influxql", "flux":
	default:
		bad("influx.query_language %q: want auto, influxql or flux", c.Influx.QueryLanguage)
	}
	if err := c.Influx.Storage().Validate(); err != nil {
		bad("influx: %v", err)
	}
	if r := c.Influx.Retention.Contributions; r != 0 && r < c.Merge.Lateness+time.Hour {
		bad("influx.retention.contributions %s: at least merge.lateness (%s) plus 1h, so that rebuilds find the contributions of every open minute",
			r, c.Merge.Lateness)
	}
	if c.Merge.Lateness < time.Minute {
		bad("merge.lateness %s: at least 1m", c.Merge.Lateness)
	}
	if c.Merge.WriteInterval < 10*time.Millisecond || c.Merge.WriteInterval > time.Minute {
		bad("merge.write_interval %s: want 10ms to 1m", c.Merge.WriteInterval)
	}
	if c.Live.Window < time.Minute || c.Live.Window > time.Hour {
		bad("live.window %s: want 1m to 1h", c.Live.Window)
	}
	if c.Live.MaxRecords < 1 {
		bad("live.max_records: at least 1")
	}
	if c.Merge.WALMaxBytes < 1<<20 {
		bad("merge.wal_max_bytes: at least 1MiB")
	}
	errs = append(errs, c.Cluster.validate(), c.HTTP.validate(), c.Auth.validate(), c.Archive.Validate(c.Merge.Lateness))
	if err := c.Alerts.Validate(); err != nil {
		bad("alerts: %w", err)
	}
	if c.QUIC.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.QUIC.Advertise); err != nil {
			bad("quic.advertise %q: want host:port", c.QUIC.Advertise)
		}
	} else if c.Cluster.Bind != "" {
		if ap, err := netip.ParseAddrPort(c.QUIC.Listen); (err == nil && ap.Addr().IsUnspecified()) || strings.HasPrefix(c.QUIC.Listen, ":") {
			bad("quic.advertise: required in a cluster when quic.listen (%q) does not name one address", c.QUIC.Listen)
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Bind != "" {
		if _, _, err := net.SplitHostPort(c.Bind); err != nil {
			bad("cluster.bind %q: want host:port", c.Bind)
		}
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			bad("cluster.advertise %q: want host:port", c.Advertise)
		}
	}
	for _, s := range c.Seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			bad("cluster.seeds: %q: want host:port", s)
		}
	}
	if len(c.Seeds) > 0 && c.Bind == "" {
		bad("cluster.seeds: set cluster.bind too (the gossip address of this node)")
	}
	switch c.Profile {
	case "lan", "wan", "local":
	default:
		bad("cluster.profile %q: want lan, wan or local", c.Profile)
	}
	if c.SecretKey != "" && c.SecretKeyFile != "" {
		bad("cluster.secret_key and cluster.secret_key_file: set one")
	}
	if c.SecretKey != "" {
		if _, err := DecodeKey(c.SecretKey); err != nil {
			bad("cluster.secret_key: %v", err)
		}
	}
	if c.Bind != "" && c.SecretKey == "" && c.SecretKeyFile == "" {
		// Placeholder key: only whether one is configured matters here.
		if err := cluster.CheckGossipKey(c.Bind, c.Advertise, nil); err != nil {
			bad("%v", err)
		}
	}
	if c.ProbeInterval < 0 || c.ProbeTimeout < 0 || c.GossipInterval < 0 || c.SuspicionMult < 0 {
		bad("cluster: failure detection settings must not be negative")
	}
	if c.HandoffSettle < 0 || c.JoinTimeout < 0 {
		bad("cluster: handoff_settle and join_timeout must not be negative")
	}
	return errors.Join(errs...)
}

func (h *HTTP) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if (h.TLSCert == "") != (h.TLSKey == "") {
		bad("http.tls_cert and http.tls_key: both or neither")
	}
	if h.MaxWindow < time.Hour {
		bad("http.max_window %s: at least 1h", h.MaxWindow)
	}
	if h.QueryTimeout < time.Second {
		bad("http.query_timeout %s: at least 1s", h.QueryTimeout)
	}
	if h.MaxPoints < 10080 {
		bad("http.max_points %d: at least 10080 (a week of minutes)", h.MaxPoints)
	}
	if h.Stream.Heartbeat < time.Second || h.Stream.Heartbeat > 5*time.Minute {
		bad("http.stream.heartbeat %s: want 1s to 5m", h.Stream.Heartbeat)
	}
	if h.Stream.Buffer < 100 {
		bad("http.stream.buffer %d: at least 100", h.Stream.Buffer)
	}
	if h.Stream.WriteTimeout < time.Second {
		bad("http.stream.write_timeout %s: at least 1s", h.Stream.WriteTimeout)
	}
	if h.MetricsToken != "" && len(h.MetricsToken) < 16 {
		bad("http.metrics_token: at least 16 characters")
	}
	if h.AuditMaxBytes < 64<<10 {
		bad("http.audit_max_bytes: at least 64KiB")
	}
	if h.AuditMaxFiles < 1 || h.AuditMaxFiles > 1000 {
		bad("http.audit_max_files %d: want 1 to 1000", h.AuditMaxFiles)
	}
	if h.AuditRefusedPerSecond < -1 || h.AuditRefusedPerSecond == 0 {
		bad("http.audit_refused_per_second %d: want -1 (none) or at least 1", h.AuditRefusedPerSecond)
	}
	if h.MaxConcurrentQueries < 1 || h.MaxQueriesPerSubject < 1 || h.MaxQueriesPerSubject > h.MaxConcurrentQueries {
		bad("http.max_concurrent_queries %d, http.max_queries_per_subject %d: want 1 ≤ per subject ≤ concurrent",
			h.MaxConcurrentQueries, h.MaxQueriesPerSubject)
	}
	if h.QueryWait < 0 || h.QueryWait > time.Minute {
		bad("http.query_wait %s: want 0 to 1m", h.QueryWait)
	}
	if h.WriteTimeout < time.Second {
		bad("http.write_timeout %s: at least 1s", h.WriteTimeout)
	}
	if h.Stream.MaxStreams < 1 || h.Stream.MaxPerSubject < 1 || h.Stream.MaxPerSubject > h.Stream.MaxStreams {
		bad("http.stream.max_streams %d, http.stream.max_per_subject %d: want 1 ≤ per subject ≤ max_streams",
			h.Stream.MaxStreams, h.Stream.MaxPerSubject)
	}
	if err := h.GraphQLConfig().Validate(); err != nil {
		bad("http.graphql: %v", err)
	}
	return errors.Join(errs...)
}

// GraphQLConfig is the GraphQL endpoint's configuration: the defaults,
// the keys of http.graphql, and http.query_timeout for a request's time.
func (h *HTTP) GraphQLConfig() graphql.Config {
	c := graphql.DefaultConfig()
	c.Playground, c.MaxComplexity, c.Timeout = h.GraphQL.Playground, h.GraphQL.MaxComplexity, h.QueryTimeout
	return c
}

// DecodeKey decodes a base64 gossip key and checks its length.
func DecodeKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("%d bytes decoded, want 16, 24 or 32 (AES-128, -192 or -256)", len(k))
}

// GossipKey returns the decoded gossip key, reading SecretKeyFile if set.
func (c *Cluster) GossipKey() ([]byte, error) {
	s := c.SecretKey
	if c.SecretKeyFile != "" {
		b, err := os.ReadFile(c.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.secret_key_file: %w", err)
		}
		s = string(b)
	}
	if s == "" {
		return nil, nil
	}
	k, err := DecodeKey(s)
	if err != nil {
		return nil, fmt.Errorf("cluster secret key: %w", err)
	}
	return k, nil
}

// Auth lists who may use the API: static bearer tokens, a JWT verifier
// and sign-in links. At least one of tokens, jwt and links.secret is
// required.
type Auth struct {
	Tokens []Token `yaml:"tokens"`
	JWT    *JWT    `yaml:"jwt"`
	Links  Links   `yaml:"links"`
}

// Links configures the dashboard's sign-in links (`tally-aggregator
// link`, POST /api/v1/links) and the sessions they open.
type Links struct {
	// Secret keys links and sessions (at least 32 bytes, the same on
	// every node; use ${VAR} or SecretFile). Empty: a random key per
	// process, so links minted with the admin API open sessions on that
	// node only, and `tally-aggregator link` cannot mint any.
	Secret string `yaml:"secret"`
	// SecretFile is a file holding the secret.
	SecretFile string `yaml:"secret_file"`
	// LinkTTL is a link's default lifetime. Default 15m, at most 24h.
	LinkTTL time.Duration `yaml:"link_ttl"`
	// SessionTTL is a session's lifetime. Default 12h, at most 168h.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// MaxUsedLinks bounds the exchanged links a node remembers until
	// they expire (so each opens one session). Default 100000.
	MaxUsedLinks int `yaml:"max_used_links"`
}

// LinkSecret returns the links secret, reading SecretFile if set.
func (l Links) LinkSecret() ([]byte, error) {
	if l.Secret != "" && l.SecretFile != "" {
		return nil, errors.New("auth.links.secret and auth.links.secret_file: set one")
	}
	if l.SecretFile != "" {
		b, err := os.ReadFile(l.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("auth.links.secret_file: %w", err)
		}
		return []byte(strings.TrimSpace(string(b))), nil
	}
	return []byte(l.Secret), nil
}

// Token is one static bearer token with its subject and role.
type Token struct {
	// Token is the secret itself (keep it out of the file with ${VAR}),
	// or TokenSHA256 its hex SHA-256 (`printf %s "$TOKEN" | sha256sum`).
	Token       string `yaml:"token"`
	TokenSHA256 string `yaml:"token_sha256"`
	Subject     string `yaml:"subject"`
	// Role is admin, analyst or viewer.
	Role string `yaml:"role"`
	// Campaigns is a viewer's scope.
	Campaigns []string `yaml:"campaigns"`
}

// JWT verifies signed tokens: HS256 with a shared secret and/or RS256 or
// ES256 with a public key. Tokens carry sub, role, campaigns (viewers),
// exp, and the configured iss and aud (both required).
type JWT struct {
	HS256Secret   string        `yaml:"hs256_secret"`
	PublicKeyFile string        `yaml:"public_key_file"`
	Issuer        string        `yaml:"issuer"`
	Audience      string        `yaml:"audience"`
	Leeway        time.Duration `yaml:"leeway"`
}

// AuthConfig reads the key files and returns the authenticator's
// configuration.
func (a Auth) AuthConfig() (auth.Config, error) {
	var out auth.Config
	for _, t := range a.Tokens {
		out.Tokens = append(out.Tokens, auth.StaticToken{Token: t.Token, TokenSHA256: t.TokenSHA256,
			Subject: t.Subject, Role: auth.Role(t.Role), Campaigns: t.Campaigns})
	}
	if a.JWT != nil {
		j := &auth.JWTConfig{HS256Secret: []byte(a.JWT.HS256Secret), Issuer: a.JWT.Issuer, Audience: a.JWT.Audience, Leeway: a.JWT.Leeway}
		if a.JWT.PublicKeyFile != "" {
			b, err := os.ReadFile(a.JWT.PublicKeyFile)
			if err != nil {
				return out, fmt.Errorf("auth.jwt.public_key_file: %w", err)
			}
			j.PublicKeyPEM = b
		}
		out.JWT = j
	}
	secret, err := a.Links.LinkSecret()
	if err != nil {
		return out, err
	}
	out.Links = auth.LinkConfig{Secret: secret, LinkTTL: a.Links.LinkTTL, SessionTTL: a.Links.SessionTTL, MaxUsedLinks: a.Links.MaxUsedLinks}
	return out, nil
}

func (a Auth) validate() error {
	cfg, keyErr := a.AuthConfig()
	if keyErr != nil && len(cfg.Tokens) == 0 {
		return keyErr
	}
	if _, err := auth.New(cfg); err != nil {
		return errors.Join(keyErr, fmt.Errorf("auth: %w", err))
	}
	return keyErr
}

// Storage returns the influx.Config of these settings (over
// influx.DefaultConfig).
func (i Influx) Storage() influx.Config {
	c := influx.DefaultConfig()
	c.URL, c.Token, c.Org, c.Bucket, c.Timeout = i.URL, i.Token, i.Org, i.Bucket, i.Timeout
	c.QueryLanguage, c.Gzip = i.QueryLanguage, i.Gzip
	c.ContribBucket, c.HoursBucket, c.DaysBucket = i.ContributionsBucket, i.HoursBucket, i.DaysBucket
	c.Retention = influx.Retention{Minutes: i.Retention.Minutes, Contributions: i.Retention.Contributions,
		Hours: i.Retention.Hours, Days: i.Retention.Days}
	return c
}

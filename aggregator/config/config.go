// Package config is the tally-aggregator configuration file: one YAML
// document, decoded strictly, with ${ENV} expansion.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

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
}

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
}

// HTTP is the API, dashboard, health and metrics listener.
type HTTP struct {
	// Listen is the HTTP address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// MaxWindow is the longest query window. Default 744h (31 days).
	MaxWindow time.Duration `yaml:"max_window"`
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
}

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() Config {
	yes := true
	return Config{
		DataDir: "/var/lib/tally-aggregator",
		QUIC:    QUIC{Listen: "127.0.0.1:7400", RequireAgentCN: &yes, MaxFrameBytes: 16 << 20},
		HTTP:    HTTP{Listen: "127.0.0.1:8080", MaxWindow: 31 * 24 * time.Hour},
		Influx:  Influx{URL: "http://127.0.0.1:8086", Token: "user:password", Bucket: "db/rp", Timeout: 10 * time.Second},
		Merge:   Merge{Lateness: time.Hour, WriteInterval: time.Second, WALMaxBytes: 1 << 30, ShutdownTimeout: 20 * time.Second},
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
	for key, addr := range map[string]string{"quic.listen": c.QUIC.Listen, "http.listen": c.HTTP.Listen} {
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
	if !strings.HasPrefix(c.Influx.URL, "http://") && !strings.HasPrefix(c.Influx.URL, "https://") {
		bad("influx.url %q: want http:// or https://", c.Influx.URL)
	}
	if c.Influx.Bucket == "" {
		bad("influx.bucket: required (\"db/rp\" for InfluxDB 1.8)")
	}
	if c.Merge.Lateness < time.Minute {
		bad("merge.lateness %s: at least 1m", c.Merge.Lateness)
	}
	if c.Merge.WriteInterval < 10*time.Millisecond || c.Merge.WriteInterval > time.Minute {
		bad("merge.write_interval %s: want 10ms to 1m", c.Merge.WriteInterval)
	}
	if c.Merge.WALMaxBytes < 1<<20 {
		bad("merge.wal_max_bytes: at least 1MiB")
	}
	return errors.Join(errs...)
}

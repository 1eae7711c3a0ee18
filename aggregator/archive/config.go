package archive

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Config is the archive: where it lives and how the cluster exports to
// it. It is the `archive` section of the aggregator's configuration.
type Config struct {
	// Target is where the archive lives: "s3://bucket/prefix" (any
	// S3-compatible service, configured in S3) or a local directory
	// ("/path" or "file:///path"). Empty: no archive.
	Target string `yaml:"target"`
	// S3 is the S3 endpoint and credentials of an s3:// target.
	S3 S3 `yaml:"s3"`
	// Schedule makes the cluster export settled days by itself: each
	// day is exported by one node, the owner of the day's key.
	// Default false (export with `tally-aggregator archive export`).
	Schedule bool `yaml:"schedule"`
	// Interval is how often a node looks for days to export. Default 1h.
	Interval time.Duration `yaml:"interval"`
	// SettleAfter is how long after a day ends it is exported: at least
	// merge.lateness, so the day's minutes have been written. Default 2h.
	SettleAfter time.Duration `yaml:"settle_after"`
	// DaysBack is how many settled days the schedule looks at: a day in
	// that window that is not archived is exported, one whose counters
	// changed since its export (late data) is exported again. Default 8,
	// a day more than the agents' default http.max_event_age.
	DaysBack int `yaml:"days_back"`
	// TempDir holds Parquet parts while they are written and read back.
	// Default: the system's temporary directory.
	TempDir string `yaml:"temp_dir"`
}

// S3 is an S3-compatible endpoint.
type S3 struct {
	// Endpoint is host[:port] of the S3 API. Default s3.amazonaws.com.
	Endpoint string `yaml:"endpoint"`
	// Region of the bucket. Default: asked from the service.
	Region string `yaml:"region"`
	// AccessKey and SecretKey (or SecretKeyFile) are static credentials.
	// Without AccessKey, credentials come from AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY (or MINIO_*), then an instance role.
	AccessKey     string `yaml:"access_key"`
	SecretKey     string `yaml:"secret_key"`
	SecretKeyFile string `yaml:"secret_key_file"`
	// Insecure talks plain HTTP (a local test server). Default false.
	Insecure bool `yaml:"insecure"`
	// BucketLookup is auto (default), path (bucket in the path, what
	// most self-hosted services need) or dns (bucket in the host name).
	BucketLookup string `yaml:"bucket_lookup"`
}

// DefaultConfig returns the archive defaults (no target: off).
func DefaultConfig() Config {
	return Config{Interval: time.Hour, SettleAfter: 2 * time.Hour, DaysBack: 8,
		S3: S3{Endpoint: "s3.amazonaws.com", BucketLookup: "auto"}}
}

// Validate reports every problem at once. lateness is the aggregator's
// merge.lateness, which SettleAfter must cover.
func (c *Config) Validate(lateness time.Duration) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Target == "" {
		if c.Schedule {
			bad("archive.schedule: needs archive.target")
		}
		return errors.Join(errs...)
	}
	u, err := url.Parse(c.Target)
	switch {
	case err != nil:
		bad("archive.target %q: %v", c.Target, err)
	case u.Scheme == "s3":
		if u.Host == "" {
			bad("archive.target %q: want s3://bucket/prefix", c.Target)
		}
		if strings.Contains(u.Path, "//") || strings.Contains(u.Path, "..") {
			bad("archive.target %q: bad prefix", c.Target)
		}
		if c.S3.Endpoint == "" || strings.ContainsAny(c.S3.Endpoint, "/ ") {
			bad("archive.s3.endpoint %q: want host or host:port", c.S3.Endpoint)
		}
		if c.S3.SecretKey != "" && c.S3.SecretKeyFile != "" {
			bad("archive.s3.secret_key and archive.s3.secret_key_file: set one")
		}
		if c.S3.AccessKey != "" && c.S3.SecretKey == "" && c.S3.SecretKeyFile == "" {
			bad("archive.s3.access_key: needs secret_key or secret_key_file")
		}
		switch c.S3.BucketLookup {
		case "auto", "path", "dns":
		default:
			bad("archive.s3.bucket_lookup %q: want auto, path or dns", c.S3.BucketLookup)
		}
	case u.Scheme == "file" || u.Scheme == "":
		if u.Scheme == "file" && u.Path == "" {
			bad("archive.target %q: want file:///path", c.Target)
		}
	default:
		bad("archive.target %q: want s3://bucket/prefix, file:///path or a directory", c.Target)
	}
	if c.Interval < time.Minute {
		bad("archive.interval %s: at least 1m", c.Interval)
	}
	if c.SettleAfter < lateness {
		bad("archive.settle_after %s: at least merge.lateness (%s), or a day is exported before its minutes are written", c.SettleAfter, lateness)
	}
	if c.DaysBack < 1 || c.DaysBack > 400 {
		bad("archive.days_back %d: want 1 to 400", c.DaysBack)
	}
	return errors.Join(errs...)
}

func (s S3) secret() (string, error) {
	if s.SecretKeyFile == "" {
		return s.SecretKey, nil
	}
	b, err := os.ReadFile(s.SecretKeyFile)
	if err != nil {
		return "", fmt.Errorf("archive.s3.secret_key_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

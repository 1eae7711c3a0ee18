package influx

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Config configures a Writer or a Reader. A zero field takes the default
// documented on it (the value in DefaultConfig); Validate rejects values
// that cannot work.
type Config struct {
	// URL is the server's base URL, e.g. "http://127.0.0.1:8086". Required.
	URL string
	// Token is the API token. InfluxDB 1.8 takes "username:password" (any
	// value when authentication is disabled).
	Token string
	// Org is the organisation; InfluxDB 1.8 ignores it (use "").
	Org string
	// Bucket is where merged minutes go and come from;
	// "database/retention-policy" on InfluxDB 1.8. Required.
	Bucket string
	// ContribBucket, HoursBucket and DaysBucket hold the other points:
	// contribution points, hourly and daily rollups (and their markers).
	// Empty derives them from Bucket's database: "<db>/contributions",
	// "<db>/hours", "<db>/days". Each must differ from the others.
	ContribBucket, HoursBucket, DaysBucket string
	// Retention is how long each bucket keeps its points; Setup creates
	// (InfluxDB 1.x) or alters each retention policy to match.
	Retention Retention

	// Timeout bounds one HTTP write request (one attempt). Default 30 s.
	// A timed-out attempt is retried; keep it well above the time the server
	// needs for a request of MaxRequestBytes.
	Timeout time.Duration
	// QueryTimeout bounds one query, including reading its answer.
	// Default 2 min: loading an hour of contributions is a large answer.
	QueryTimeout time.Duration
	// MaxElapsed bounds the retries of one request: when a retryable error
	// persists for this long, Write gives up and returns it. Zero (the
	// default) retries until the caller's context ends, which is what the
	// aggregator wants: it acknowledges nothing before the write is durable,
	// so giving up early buys nothing.
	MaxElapsed time.Duration
	// RetryInitial is the first backoff delay (default 250 ms); each retry
	// doubles it up to RetryMax (default 15 s). Each delay is jittered
	// (uniform in [d/2, d]) so aggregator nodes do not retry in step. A
	// server's Retry-After replaces the computed delay.
	RetryInitial time.Duration
	RetryMax     time.Duration

	// BatchSize is the most points sent in one HTTP request (default 5000).
	// Bigger requests cost the server fewer round trips but hold more
	// memory on both sides and redo more work when a request fails.
	BatchSize int
	// MaxRequestBytes caps the line-protocol body of one request (default
	// 8 MiB). A merged point with a dense HLL is about 23 KB, so 5000 such
	// points (115 MB) would exceed InfluxDB 1.8's default http
	// max-body-size of 25 MB and fail with 413; requests are cut at
	// whichever of BatchSize and MaxRequestBytes comes first.
	MaxRequestBytes int
	// Gzip compresses request bodies and asks for compressed InfluxQL
	// answers. Off by default: on loopback or a LAN the CPU costs more
	// than the bytes; turn it on across a WAN.
	Gzip bool

	// QueryLanguage is how a Reader reads: QueryInfluxQL (the v1 /query
	// API: InfluxDB 1.x in its default configuration, 2.x through its
	// v1 compatibility, 3.x), QueryFlux (/api/v2/query: 1.8 with
	// flux-enabled, 2.x), or QueryAuto ("" means the same): InfluxQL when
	// the server answers it, else Flux, decided by Reader.Setup or, without
	// it, on the Reader's first query.
	QueryLanguage string
}

// Retention is how long each resolution is kept; 0 keeps it forever (the
// zero Retention keeps everything; DefaultConfig has the defaults).
// InfluxDB drops a shard group once all of it is older than its policy's
// duration, so points live between the duration and the duration plus
// the shard group's length (1 h for policies under 2 days, 1 day up to 6
// months, 7 days beyond).
type Retention struct {
	// Minutes keeps merged minutes (default 14 days). Late data for an
	// older minute cannot be merged any more (InfluxDB refuses the point;
	// the writer quarantines it), and answers about older time come from
	// the rollups. Setup shortens an existing policy only once the
	// rollups cover what it would drop.
	Minutes time.Duration
	// Contributions keeps contribution points (default 3 h, at least 1 h):
	// they matter while a minute may still be rebuilt by another node
	// (the lateness window, takeovers); later data is merged with the
	// ledger each merged minute carries. Points for minutes older than
	// this less ContribMargin are not written at all.
	Contributions time.Duration
	// Hours keeps hourly rollups (default 400 days), Days daily ones
	// (default 0: forever).
	Hours, Days time.Duration
}

// Default retentions.
const (
	DefaultRetentionMinutes       = 14 * 24 * time.Hour
	DefaultRetentionContributions = 3 * time.Hour
	DefaultRetentionHours         = 400 * 24 * time.Hour
)

// ContribMargin is how much younger than Retention.Contributions a
// minute must be for its contribution point to be written: a write
// round's time, with room to spare, so no point is refused as beyond the
// retention policy.
const ContribMargin = 10 * time.Minute

// DefaultRetention returns the default retentions.
func DefaultRetention() Retention {
	return Retention{Minutes: DefaultRetentionMinutes, Contributions: DefaultRetentionContributions, Hours: DefaultRetentionHours}
}

// Query languages of Config.QueryLanguage.
const (
	QueryAuto     = "auto"
	QueryInfluxQL = "influxql"
	QueryFlux     = "flux"
)

// Defaults of Config.
const (
	DefaultTimeout         = 30 * time.Second
	DefaultQueryTimeout    = 2 * time.Minute
	DefaultRetryInitial    = 250 * time.Millisecond
	DefaultRetryMax        = 15 * time.Second
	DefaultBatchSize       = 5000
	DefaultMaxRequestBytes = 8 << 20
)

// DefaultConfig returns a Config with every default filled in; the caller
// sets URL, Token, Org and Bucket.
func DefaultConfig() Config {
	return Config{
		Timeout:         DefaultTimeout,
		QueryTimeout:    DefaultQueryTimeout,
		RetryInitial:    DefaultRetryInitial,
		RetryMax:        DefaultRetryMax,
		BatchSize:       DefaultBatchSize,
		MaxRequestBytes: DefaultMaxRequestBytes,
		Retention:       DefaultRetention(),
	}
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.QueryTimeout == 0 {
		c.QueryTimeout = d.QueryTimeout
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = d.RetryInitial
	}
	if c.RetryMax == 0 {
		c.RetryMax = d.RetryMax
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	db, _ := splitBucket(c.Bucket)
	if c.ContribBucket == "" {
		c.ContribBucket = db + "/contributions"
	}
	if c.HoursBucket == "" {
		c.HoursBucket = db + "/hours"
	}
	if c.DaysBucket == "" {
		c.DaysBucket = db + "/days"
	}
	return c
}

// Buckets returns the bucket of each kind of point.
func (c Config) Buckets() (minutes, contributions, hours, days string) {
	c = c.withDefaults()
	return c.Bucket, c.ContribBucket, c.HoursBucket, c.DaysBucket
}

// minRequestBytes keeps MaxRequestBytes above the largest single point
// (two string fields at the cap plus tags and numbers).
const minRequestBytes = 256 << 10

// Validate reports the first problem with c, after applying defaults to
// zero fields.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("url is required"))
	} else if u, err := url.Parse(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("url %q: %w", c.URL, err))
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("url %q: want http(s)://host:port", c.URL))
	}
	if c.Bucket == "" {
		errs = append(errs, errors.New("bucket is required (\"db/rp\" on InfluxDB 1.8)"))
	}
	if c.Timeout < 0 || c.QueryTimeout < 0 || c.MaxElapsed < 0 || c.RetryInitial < 0 || c.RetryMax < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if c.RetryMax < c.RetryInitial {
		errs = append(errs, fmt.Errorf("retry max %s is below retry initial %s", c.RetryMax, c.RetryInitial))
	}
	switch c.QueryLanguage {
	case "", QueryAuto, QueryInfluxQL, QueryFlux:
	default:
		errs = append(errs, fmt.Errorf("query language %q: want %s, %s or %s", c.QueryLanguage, QueryAuto, QueryInfluxQL, QueryFlux))
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("batch size %d must be positive", c.BatchSize))
	}
	if c.Bucket != "" {
		seen := map[string]string{}
		for _, b := range []struct{ name, bucket string }{{"bucket", c.Bucket}, {"contributions bucket", c.ContribBucket},
			{"hours bucket", c.HoursBucket}, {"days bucket", c.DaysBucket}} {
			if other, dup := seen[b.bucket]; dup {
				errs = append(errs, fmt.Errorf("the %s and the %s are both %q", other, b.name, b.bucket))
			}
			seen[b.bucket] = b.name
		}
	}
	r := c.Retention
	if r.Minutes < 0 || r.Contributions < 0 || r.Hours < 0 || r.Days < 0 {
		errs = append(errs, errors.New("retention durations must not be negative"))
	}
	if r.Contributions != 0 && r.Contributions < time.Hour+ContribMargin {
		errs = append(errs, fmt.Errorf("retention of contributions %s: at least %s (InfluxDB's shortest policy is 1h)", r.Contributions, time.Hour+ContribMargin))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"minutes", r.Minutes}, {"hours", r.Hours}, {"days", r.Days}} {
		if d.v != 0 && d.v < 24*time.Hour {
			errs = append(errs, fmt.Errorf("retention of %s %s: at least 24h, or 0 to keep them", d.name, d.v))
		}
	}
	// A coarser resolution outlives the finer one: answers about time the
	// finer points no longer cover come from it.
	longer := func(a, b time.Duration) bool { return a == 0 || (b != 0 && a >= b) }
	if !longer(r.Hours, r.Minutes) || !longer(r.Days, r.Hours) {
		errs = append(errs, fmt.Errorf("retention of minutes %s, hours %s, days %s: each must keep at least as long as the finer one (0: forever)",
			r.Minutes, r.Hours, r.Days))
	}
	if c.MaxRequestBytes < minRequestBytes {
		errs = append(errs, fmt.Errorf("max request bytes %d is below %d (one point can be that large)", c.MaxRequestBytes, minRequestBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("influx config: %w", err)
	}
	return nil
}

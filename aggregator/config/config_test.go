package config

import (
	"strings"
	"testing"
	"time"
)

func TestGood(t *testing.T) {
	c, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "agg-1" || c.Merge.WALMaxBytes != 256<<20 || c.Merge.WriteInterval != 500*time.Millisecond ||
		c.Influx.URL != "http://127.0.0.1:8086" || c.Influx.Bucket != "db/rp" || !*c.QUIC.RequireAgentCN ||
		c.Influx.QueryLanguage != "influxql" || !c.Influx.Gzip || !c.Influx.Storage().Gzip || c.Influx.CreateBucket || c.Influx.HoursBucket != "db/hourly" ||
		c.Influx.Retention != (Retention{Minutes: 720 * time.Hour, Contributions: 4 * time.Hour, Hours: 9600 * time.Hour}) {
		t.Fatalf("decoded %+v", c)
	}
	if k, err := c.Cluster.GossipKey(); err != nil || string(k) != "0123456789abcdef" || c.Cluster.Profile != "local" ||
		len(c.Cluster.Seeds) != 2 || c.Cluster.HandoffSettle != 2*time.Second {
		t.Fatalf("cluster %+v key %q %v", c.Cluster, k, err)
	}
	if c.HTTP.AuditLog == "" || c.HTTP.Stream.Heartbeat != 20*time.Second || c.HTTP.Stream.Buffer != 10000 ||
		len(c.Auth.Tokens) != 2 || c.Auth.Tokens[1].Campaigns[0] != "spring_sale" || c.Auth.JWT.Audience != "tally" {
		t.Fatalf("decoded http %+v auth %+v", c.HTTP, c.Auth)
	}
	if c.HTTP.AuditMaxBytes != 16<<20 || c.HTTP.AuditMaxFiles != 5 || c.HTTP.MetricsListen != "127.0.0.1:9090" ||
		c.HTTP.MaxQueriesPerSubject != 4 || c.HTTP.MaxConcurrentQueries != 16 || c.HTTP.Stream.MaxPerSubject != 16 ||
		c.Auth.Links.LinkTTL != 5*time.Minute || c.Auth.Links.SessionTTL != 12*time.Hour {
		t.Fatalf("decoded limits %+v links %+v", c.HTTP, c.Auth.Links)
	}
	if g := c.HTTP.GraphQLConfig(); !g.Playground || g.MaxComplexity != 1000 || g.MaxDepth != 20 || g.Timeout != 30*time.Second {
		t.Fatalf("graphql %+v", g)
	}
	if ar := c.Archive; ar.Target != "s3://tally-archive/prod" || ar.S3.Endpoint != "127.0.0.1:8333" || !ar.S3.Insecure ||
		ar.S3.BucketLookup != "path" || !ar.Schedule || ar.Interval != 30*time.Minute || ar.SettleAfter != 3*time.Hour || ar.DaysBack != 10 {
		t.Fatalf("decoded archive %+v", ar)
	}
	a, err := c.Auth.AuthConfig()
	if err != nil || string(a.Links.Secret) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("links secret %q %v", a.Links.Secret, err)
	}
	al := c.Alerts
	if al.Settle != 15*time.Second || al.JudgeLag != 15*time.Minute || al.Monitor.Detector.Threshold != 9 ||
		al.Monitor.Detector.Persistence != 2 || al.Monitor.MaxShares != 4 || len(al.Monitor.Metrics) != 12 ||
		al.Forecast.TimeZone != "Europe/Berlin" || al.Forecast.HistoryDays != 28 {
		t.Fatalf("decoded alerts %+v", al)
	}
	if len(al.Rules) != 1 || al.Rules[0].Window != time.Hour || len(al.Budgets) != 1 || al.Budgets[0].Daily != 500 ||
		len(al.Silences) != 1 || len(al.Notify.Webhooks) != 2 || al.Notify.Webhooks[0].Secret != "0123456789abcdef-hook" ||
		al.Notify.Webhooks[1].Format != "slack" || al.Notify.Alertmanagers[0].URL != "http://127.0.0.1:9093" ||
		al.Notify.Attempts != 8 || al.Notify.QueueLength != 10000 {
		t.Fatalf("decoded alert objects and targets %+v", al)
	}
}

func TestBad(t *testing.T) {
	for file, wants := range map[string][]string{
		"testdata/unknown_key.bad.yaml": {"field influxdb not found"},
		"testdata/invalid.bad.yaml": {"name \"\"", "quic.listen \"nowhere\"", "quic.ca", "influx.url", "merge.lateness",
			"cluster.seeds: \"nowhere\"", "set cluster.bind", "cluster.profile \"moon\"", "cluster.secret_key: 5 bytes",
			"influx.query_language \"sql\""},
		"testdata/auth.bad.yaml": {"http.tls_cert and http.tls_key", "http.stream.buffer 5", "auth.jwt.public_key_file",
			"tokens[0] (ops): token shorter than 16", "tokens[1]: subject bob: unknown role \"owner\"", "tokens[2]: subject carol: a viewer needs"},
		"testdata/archive.bad.yaml": {"archive.target \"ftp://somewhere/else\"", "archive.interval 5s",
			"archive.settle_after 10m0s: at least merge.lateness", "archive.days_back 0"},
		"testdata/noauth.bad.yaml":         {"auth: no tokens, no jwt key and no links secret"},
		"testdata/jwt_noaudience.bad.yaml": {"jwt: issuer and audience required"},
		"testdata/apilimits.bad.yaml": {"http.metrics_listen: must differ", "http.audit_max_bytes", "http.audit_max_files 0",
			"http.audit_refused_per_second 0", "max_queries_per_subject 8", "http.write_timeout", "http.stream.max_streams 10",
			"links: link_ttl 48h", "secret shorter than 32 bytes", "http.graphql: max complexity 99"},
		"testdata/alerts.bad.yaml": {"alerts: settle 0s", "judge_lag 1m", "resolve_threshold 3", "sensitivity \"extreme\"",
			"name \"twice\" used twice", "op \"==\"", "ends: required", "url \"ftp://hooks.example.com/tally\""},
		"testdata/alerts_unknown.bad.yaml": {"field dayly not found"},
		"testdata/gossip.bad.yaml": {"gossip on \"10.0.0.5:7946\" without cluster.secret_key", "max_conns_per_peer",
			"quic.max_decode_bytes_per_peer", "merge.quarantine_max_bytes"},
	} {
		_, err := Load(file)
		if err == nil {
			t.Fatalf("%s: no error", file)
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: error %q lacks %q", file, err, w)
			}
		}
	}
}

// TestInfluxDefaults: reads pick their language by themselves and a
// missing bucket is created, unless the file says otherwise.
func TestInfluxDefaults(t *testing.T) {
	d := DefaultConfig()
	if d.Influx.QueryLanguage != "auto" || d.Influx.Gzip || !d.Influx.CreateBucket {
		t.Fatalf("influx defaults %+v: want query_language auto, create_bucket true", d.Influx)
	}
}

// TestRetentionRejections: retention durations that would lose answers
// or contributions a rebuild needs are refused, each with its key.
func TestRetentionRejections(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Config)
		says string
	}{
		{func(c *Config) { c.Influx.Retention.Contributions = 90 * time.Minute }, "influx.retention.contributions"},
		{func(c *Config) { c.Influx.Retention.Hours = 24 * time.Hour }, "each must keep at least as long as the finer one"},
		{func(c *Config) { c.Influx.Retention.Days = 48 * time.Hour }, "each must keep at least as long as the finer one"},
		{func(c *Config) { c.Influx.Retention.Minutes = time.Hour }, "at least 24h"},
		{func(c *Config) { c.Influx.HoursBucket = "db/rp" }, "are both"},
	} {
		c, err := Load("testdata/good.yaml")
		if err != nil {
			t.Fatal(err)
		}
		tc.set(&c)
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Validate = %v, want an error saying %q", err, tc.says)
		}
	}
	c, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.Influx.Retention = DefaultConfig().Influx.Retention
	if err := c.Validate(); err != nil {
		t.Fatalf("default retention: %v", err)
	}
}

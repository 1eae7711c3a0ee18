package geo

import "github.com/prometheus/client_golang/prometheus"

// DB implements prometheus.Collector with its Stats and Info; register it
// on the agent's registry.
var _ prometheus.Collector = (*DB)(nil)

var (
	descLookups = prometheus.NewDesc("tally_agent_geo_lookups_total",
		"Country lookups of global addresses, by cache result (hit or miss); hits are sampled.",
		[]string{"result"}, nil)
	descErrors = prometheus.NewDesc("tally_agent_geo_lookup_errors_total",
		"Country lookups that failed on a damaged database record and returned no country.", nil, nil)
	descBuilt = prometheus.NewDesc("tally_agent_geo_database_build_timestamp_seconds",
		"When the vendor built the loaded geo database, by database type.", []string{"type"}, nil)
)

// Describe implements prometheus.Collector.
func (d *DB) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLookups
	ch <- descErrors
	ch <- descBuilt
}

// Collect implements prometheus.Collector.
func (d *DB) Collect(ch chan<- prometheus.Metric) {
	s := d.Stats()
	ch <- prometheus.MustNewConstMetric(descLookups, prometheus.CounterValue, float64(s.CacheHits), "hit")
	ch <- prometheus.MustNewConstMetric(descLookups, prometheus.CounterValue, float64(s.CacheMisses), "miss")
	ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(s.Errors))
	ch <- prometheus.MustNewConstMetric(descBuilt, prometheus.GaugeValue, float64(d.info.Built.Unix()), d.info.Type)
}

package botfilter

import "github.com/prometheus/client_golang/prometheus"

// Filter implements prometheus.Collector with its Stats; register it on
// the agent's registry. Events filtered by reason are counted where events
// are accepted (tally_agent_bots_filtered_total), not here.
var _ prometheus.Collector = (*Filter)(nil)

var (
	descCacheLookups = prometheus.NewDesc("tally_agent_bots_cache_lookups_total",
		"User-agent verdict cache lookups, by result (hit or miss).", []string{"result"}, nil)
	descUnparsedIPs = prometheus.NewDesc("tally_agent_bots_unparsed_ips_total",
		"Events whose IP was not an address, skipped by the address layers.", nil, nil)
	descDatacenterRanges = prometheus.NewDesc("tally_agent_bots_datacenter_ranges",
		"Merged datacenter address ranges loaded.", nil, nil)
	descRateEvictions = prometheus.NewDesc("tally_agent_bots_rate_evictions_total",
		"Active keys forgotten because a rate table was full, by limiter (ip or visitor).", []string{"limiter"}, nil)
	descRateLate = prometheus.NewDesc("tally_agent_bots_rate_late_events_total",
		"Events too late for their key's rate windows, not rate-limited, by limiter.", []string{"limiter"}, nil)
	descDatacenterDate = prometheus.NewDesc("tally_agent_bots_datacenter_data_timestamp_seconds",
		"When the oldest datacenter list loaded was published (its data-date comment), in unix seconds; absent when no list says.", nil, nil)
	descCacheBytes = prometheus.NewDesc("tally_agent_bots_cache_bytes",
		"Bytes held by the user-agent verdict cache, as charged against cache_bytes.", nil, nil)
	descBehaviourClients = prometheus.NewDesc("tally_agent_bots_behaviour_clients",
		"Clients the behavioural signals remember now, each for less than a minute.", nil, nil)
	descBehaviourOverflows = prometheus.NewDesc("tally_agent_bots_behaviour_overflows_total",
		"Clients the behavioural signals could not remember because behaviour.slots was reached.", nil, nil)
)

// Describe implements prometheus.Collector.
func (f *Filter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheLookups, descUnparsedIPs, descDatacenterRanges, descRateEvictions, descRateLate,
		descDatacenterDate, descCacheBytes, descBehaviourClients, descBehaviourOverflows} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (f *Filter) Collect(ch chan<- prometheus.Metric) {
	s := f.Stats()
	ch <- prometheus.MustNewConstMetric(descCacheLookups, prometheus.CounterValue, float64(s.CacheHits), "hit")
	ch <- prometheus.MustNewConstMetric(descCacheLookups, prometheus.CounterValue, float64(s.CacheMisses), "miss")
	ch <- prometheus.MustNewConstMetric(descUnparsedIPs, prometheus.CounterValue, float64(s.UnparsedIPs))
	ch <- prometheus.MustNewConstMetric(descDatacenterRanges, prometheus.GaugeValue, float64(s.DatacenterRanges))
	if !s.DatacenterDate.IsZero() {
		ch <- prometheus.MustNewConstMetric(descDatacenterDate, prometheus.GaugeValue, float64(s.DatacenterDate.Unix()))
	}
	ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(s.CacheBytes))
	if f.behaviour.scripts != nil || f.behaviour.visits != nil {
		ch <- prometheus.MustNewConstMetric(descBehaviourClients, prometheus.GaugeValue, float64(s.BehaviourClients))
		ch <- prometheus.MustNewConstMetric(descBehaviourOverflows, prometheus.CounterValue, float64(s.BehaviourOverflows))
	}
	if f.rateIP != nil {
		ch <- prometheus.MustNewConstMetric(descRateEvictions, prometheus.CounterValue, float64(s.RateIPEvictions), "ip")
		ch <- prometheus.MustNewConstMetric(descRateLate, prometheus.CounterValue, float64(s.RateIPLate), "ip")
	}
	if f.rateVisitor != nil {
		ch <- prometheus.MustNewConstMetric(descRateEvictions, prometheus.CounterValue, float64(s.RateVisitorEvictions), "visitor")
		ch <- prometheus.MustNewConstMetric(descRateLate, prometheus.CounterValue, float64(s.RateVisitorLate), "visitor")
	}
}

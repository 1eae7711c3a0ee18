// Package grafana generates Tally's Grafana dashboards from code with
// Grafana's foundation SDK (types generated from Grafana's own dashboard
// schema), so the JSON in deploy/grafana/dashboards is valid by
// construction and reviewed as a diff. Regenerate with
//
//	cd deploy/tools && go run ./cmd/gen-dashboards -out ../grafana/dashboards
//
// (make dashboards-json does the same); the tests fail when the committed
// JSON and this code disagree.
//
// Two dashboards:
//   - operations: from Prometheus (the metrics the binaries expose);
//   - campaigns: KPIs from the `tally` measurement in InfluxDB, through the
//     InfluxQL and Flux datasources of deploy/grafana/provisioning.
//
// The campaign panels' queries are run against a real InfluxDB and
// compared with the API's answers in tests/ops; every panel of that
// dashboard must have a check there.
package grafana

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Datasource UIDs, fixed by deploy/grafana/provisioning/datasources.
const (
	PrometheusUID = "tally-prometheus"
	InfluxQLUID   = "tally-influxql"
	FluxUID       = "tally-flux"
)

// Bucket is the Flux bucket of the provisioned datasource ("database/rp"
// on InfluxDB 1.8; a bucket name on 2.x).
const Bucket = "db/rp"

func ref(typ, uid string) common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr(typ), Uid: cog.ToPtr(uid)}
}

var (
	promDS     = ref("prometheus", PrometheusUID)
	influxQLDS = ref(InfluxDBType, InfluxQLUID)
	fluxDS     = ref(InfluxDBType, FluxUID)
)

func promQuery(refID, expr, legend string) cog.Builder[variants.Dataquery] {
	return prometheus.NewDataqueryBuilder().RefId(refID).Expr(expr).LegendFormat(legend).Datasource(promDS)
}

func influxQL(refID, query, format string) cog.Builder[variants.Dataquery] {
	ds := influxQLDS
	return influxTarget{InfluxQuery{RefID: refID, Datasource: &ds, Query: query, RawQuery: true, ResultFormat: format}}
}

func flux(refID, query string) cog.Builder[variants.Dataquery] {
	ds := fluxDS
	return influxTarget{InfluxQuery{RefID: refID, Datasource: &ds, Query: query}}
}

func promSeries(title, unit, desc string, targets ...cog.Builder[variants.Dataquery]) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().Title(title).Description(desc).Unit(unit).Datasource(promDS).
		Targets(targets).Height(8).Span(12).FillOpacity(10)
}

// Operations is the operations dashboard: throughput, backpressure,
// spool, WAL, InfluxDB writes, members and owners, from Prometheus.
func Operations() (dashboard.Dashboard, error) {
	b := dashboard.NewDashboardBuilder("Tally operations").
		Uid("tally-operations").
		Description("Agents and aggregator nodes: throughput, backpressure, spool, WAL, InfluxDB writes, cluster members and owners. Alerts and runbook: docs/operations.md.").
		Tags([]string{"tally"}).
		Refresh("30s").
		Time("now-3h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithRow(dashboard.NewRowBuilder("Agents")).
		WithPanel(promSeries("Events accepted per second", "reqps", "Events each agent accepted (journaled), bots included.",
			promQuery("A", `sum by (instance) (rate(tally_agent_events_accepted_total[$__rate_interval]))`, "{{instance}}"))).
		WithPanel(promSeries("Events rejected per second", "reqps", "Events refused one by one (malformed, unknown type, too old…).",
			promQuery("A", `sum by (reason) (rate(tally_agent_events_rejected_total[$__rate_interval]))`, "{{reason}}"))).
		WithPanel(promSeries("Bot share", "percentunit", "Share of accepted events the bot filter caught (15 m and 1 d).",
			promQuery("A", `instance:tally_agent_bot_share:ratio_rate15m`, "{{instance}} 15m"),
			promQuery("B", `instance:tally_agent_bot_share:ratio_rate1d`, "{{instance}} 1d"))).
		WithPanel(promSeries("Answered 503 per second", "reqps", "Requests refused for backpressure, by cause (spool, journal, open minutes full).",
			promQuery("A", `sum by (instance, cause) (rate(tally_agent_backpressure_total[$__rate_interval]))`, "{{instance}} {{cause}}"))).
		WithPanel(promSeries("Spool backlog", "decbytes", "Batches waiting for an acknowledgement, per agent.",
			promQuery("A", `tally_agent_spool_pending_bytes`, "{{instance}}"))).
		WithPanel(promSeries("Batches sent per second", "reqps", "Batches shipped, by outcome.",
			promQuery("A", `sum by (outcome) (rate(tally_agent_batches_sent_total[$__rate_interval]))`, "{{outcome}}"))).
		WithPanel(promSeries("Agents connected", "short", "1 while an agent is connected to an aggregator.",
			promQuery("A", `tally_agent_connected`, "{{instance}}"))).
		WithPanel(promSeries("Wire bytes per second", "Bps", "Bytes shipped over QUIC, per agent.",
			promQuery("A", `rate(tally_agent_wire_bytes_sent_total[$__rate_interval])`, "{{instance}}"))).
		WithRow(dashboard.NewRowBuilder("Aggregator nodes")).
		WithPanel(promSeries("Batches acknowledged per second", "reqps", "Acks by status, per node.",
			promQuery("A", `sum by (instance, status) (rate(tally_aggregator_batches_total[$__rate_interval]))`, "{{instance}} {{status}}"))).
		WithPanel(promSeries("WAL", "decbytes", "What each node holds durably but has not yet written to InfluxDB.",
			promQuery("A", `tally_aggregator_wal_bytes`, "{{instance}}"))).
		WithPanel(promSeries("InfluxDB write rounds per second", "reqps", "Writer rounds by result, per node.",
			promQuery("A", `sum by (instance, result) (rate(tally_aggregator_influx_writes_total[$__rate_interval]))`, "{{instance}} {{result}}"))).
		WithPanel(promSeries("InfluxDB write latency", "s", "Duration of one successful writer round (p50 and p99).",
			promQuery("A", `histogram_quantile(0.5, sum by (le) (rate(tally_aggregator_influx_write_duration_seconds_bucket[$__rate_interval])))`, "p50"),
			promQuery("B", `histogram_quantile(0.99, sum by (le) (rate(tally_aggregator_influx_write_duration_seconds_bucket[$__rate_interval])))`, "p99"))).
		WithPanel(promSeries("Minutes written per second", "short", "Merged series-minutes written to InfluxDB.",
			promQuery("A", `sum by (instance) (rate(tally_aggregator_minutes_written_total[$__rate_interval]))`, "{{instance}}"))).
		WithPanel(promSeries("Dirty minutes", "short", "Minutes merged but not yet written, per node.",
			promQuery("A", `tally_aggregator_dirty_minutes`, "{{instance}}"))).
		WithRow(dashboard.NewRowBuilder("Cluster")).
		WithPanel(promSeries("Alive members seen by each node", "short", "Every node should see every node; compare with the number of nodes.",
			promQuery("A", `count by (instance) (tally_aggregator_cluster_member{state="alive"})`, "{{instance}}"))).
		WithPanel(promSeries("Membership epochs", "short", "Distinct membership epochs among the nodes: 1 when they agree.",
			promQuery("A", `count(count_values("epoch", tally_aggregator_cluster_epoch))`, "epochs"))).
		WithPanel(promSeries("Active campaigns by owner", "short", "Campaigns active in the last hour, by the node that owns them (as node 1 sees it).",
			promQuery("A", `count by (member) (tally_aggregator_campaign_owner)`, "{{member}}"))).
		WithPanel(promSeries("Contributions forwarded per second", "short", "Batches nodes handed to campaign owners, by outcome.",
			promQuery("A", `sum by (outcome) (rate(tally_aggregator_forwarded_batches_total[$__rate_interval]))`, "{{outcome}}"))).
		WithRow(dashboard.NewRowBuilder("API")).
		WithPanel(promSeries("API requests per second", "reqps", "By route and status code.",
			promQuery("A", `sum by (route, code) (rate(tally_aggregator_api_requests_total[$__rate_interval]))`, "{{route}} {{code}}"))).
		WithPanel(promSeries("Stream subscribers", "short", "Open live-stream connections per node.",
			promQuery("A", `tally_aggregator_stream_subscribers`, "{{instance}}"))).
		WithRow(dashboard.NewRowBuilder("Versions and configuration")).
		WithPanel(promSeries("Processes by version", "short", "Processes running each build (build_info): during a rolling upgrade the new version rises as the old one falls.",
			promQuery("A", `count by (job, version) (tally_aggregator_build_info or tally_agent_build_info)`, "{{job}} {{version}}"))).
		WithPanel(promSeries("Configuration not in force", "short", "Per process: 1 when the last reload failed (the file on disk is not in force), or when changed keys wait for a restart.",
			promQuery("A", `1 - (tally_aggregator_config_last_reload_successful or tally_agent_config_last_reload_successful)`, "{{instance}} reload failed"),
			promQuery("B", `tally_aggregator_config_restart_pending or tally_agent_config_restart_pending`, "{{instance}} restart pending"))).
		WithPanel(promSeries("Time until certificates expire", "s", "Per process and certificate in force; renewed files are picked up without a restart.",
			promQuery("A", `(tally_aggregator_tls_certificate_expiry_timestamp_seconds or tally_agent_tls_certificate_expiry_timestamp_seconds) - time()`, "{{instance}} {{cert}}")))
	return b.Build()
}

// The campaign panels' queries. $campaign is the dashboard variable;
// $timeFilter, $__interval, v.timeRangeStart, v.timeRangeStop and
// v.windowPeriod are Grafana's macros. Counters are summed (they are exact
// and additive); uniques are not shown here because HyperLogLog estimates
// cannot be summed — the Tally dashboard and API merge the sketches.
const (
	campaignVariableQuery = `SHOW TAG VALUES FROM "tally" WITH KEY = "campaign"`

	countOfType = `SELECT sum("count") FROM "tally" WHERE "campaign" = '$campaign' AND "type" = '%s' AND $timeFilter`

	revenueQuery = `SELECT sum("value_micros") / 1000000 FROM "tally" WHERE "campaign" = '$campaign' AND $timeFilter`
	costQuery    = `SELECT sum("cost_micros") / 1000000 FROM "tally" WHERE "campaign" = '$campaign' AND $timeFilter`
	botsQuery    = `SELECT sum("bots") FROM "tally" WHERE "campaign" = '$campaign' AND $timeFilter`

	moneyOverTime = `SELECT sum("value_micros") / 1000000 AS "revenue", sum("cost_micros") / 1000000 AS "cost" FROM "tally" WHERE "campaign" = '$campaign' AND $timeFilter GROUP BY time($__interval) fill(none)`

	botsOverTime = `SELECT sum("bots") AS "bots filtered" FROM "tally" WHERE "campaign" = '$campaign' AND $timeFilter GROUP BY time($__interval) fill(none)`

	clicksBySource = `SELECT sum("count") AS "clicks" FROM "tally" WHERE "campaign" = '$campaign' AND "type" = 'click' AND $timeFilter GROUP BY "source"`

	// Ratios in Flux: one row with every sum, then the KPI formulas of the
	// API (a ratio with a zero denominator is 0). The sums start from 0 in
	// reduce rather than from a pivot, so that a campaign without a field
	// (no conversion, or no spend: points leave out the money fields their
	// series never had) sums it as 0; InfluxDB 1.8's Flux cannot test a
	// pivoted column that is missing.
	ratiosFlux = `from(bucket: "` + Bucket + `")
  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
  |> filter(fn: (r) => r._measurement == "tally" and r.campaign == "${campaign}")
  |> filter(fn: (r) => (r._field == "count" and (r.type == "impression" or r.type == "click" or r.type == "conversion")) or r._field == "value_micros" or r._field == "cost_micros")
  |> map(fn: (r) => ({_time: r._time, k: if r._field == "count" then r.type else r._field, _value: float(v: r._value)}))
  |> group()
  |> reduce(identity: {impression: 0.0, click: 0.0, conversion: 0.0, value_micros: 0.0, cost_micros: 0.0}, fn: (r, accumulator) => ({
      impression: accumulator.impression + (if r.k == "impression" then r._value else 0.0),
      click: accumulator.click + (if r.k == "click" then r._value else 0.0),
      conversion: accumulator.conversion + (if r.k == "conversion" then r._value else 0.0),
      value_micros: accumulator.value_micros + (if r.k == "value_micros" then r._value else 0.0),
      cost_micros: accumulator.cost_micros + (if r.k == "cost_micros" then r._value else 0.0)}))
  |> map(fn: (r) => ({
      ctr: if r.impression > 0.0 then r.click / r.impression else 0.0,
      cvr: if r.click > 0.0 then r.conversion / r.click else 0.0,
      cpa: if r.conversion > 0.0 then r.cost_micros / 1000000.0 / r.conversion else 0.0,
      roas: if r.cost_micros > 0.0 then r.value_micros / r.cost_micros else 0.0}))`

	// Traffic per window in Flux.
	trafficFlux = `from(bucket: "` + Bucket + `")
  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
  |> filter(fn: (r) => r._measurement == "tally" and r.campaign == "${campaign}" and r._field == "count")
  |> filter(fn: (r) => r.type == "impression" or r.type == "click" or r.type == "conversion")
  |> group(columns: ["type"])
  |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)`
)

func influxStat(title, unit, desc, query string) *stat.PanelBuilder {
	return stat.NewPanelBuilder().Title(title).Description(desc).Unit(unit).Datasource(influxQLDS).
		WithTarget(influxQL("A", query, "time_series")).Height(4).Span(4).
		GraphMode(common.BigValueGraphModeNone).NoValue("0").
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
}

func sprintf(format, typ string) string {
	out := []byte{}
	for i := 0; i < len(format); i++ {
		if format[i] == '%' && i+1 < len(format) && format[i+1] == 's' {
			out = append(out, typ...)
			i++
			continue
		}
		out = append(out, format[i])
	}
	return string(out)
}

// Campaigns is the campaigns dashboard: KPIs of one campaign from the
// `tally` measurement.
func Campaigns() (dashboard.Dashboard, error) {
	b := dashboard.NewDashboardBuilder("Tally campaigns").
		Uid("tally-campaigns").
		Description("Campaign KPIs from the tally measurement in InfluxDB (exact counters). Unique visitors need sketch merges: use the Tally dashboard or API for them.").
		Tags([]string{"tally"}).
		Refresh("1m").
		Time("now-24h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(dashboard.NewQueryVariableBuilder("campaign").Label("Campaign").
			Datasource(influxQLDS).
			Query(dashboard.StringOrMap{String: cog.ToPtr(campaignVariableQuery)}).
			Definition(campaignVariableQuery).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc)).
		WithRow(dashboard.NewRowBuilder("Totals over the time range")).
		WithPanel(influxStat("Impressions", "short", "Non-bot impressions.", sprintf(countOfType, "impression"))).
		WithPanel(influxStat("Clicks", "short", "Non-bot clicks.", sprintf(countOfType, "click"))).
		WithPanel(influxStat("Conversions", "short", "Non-bot conversions.", sprintf(countOfType, "conversion"))).
		WithPanel(influxStat("Page views", "short", "Non-bot page views.", sprintf(countOfType, "pageview"))).
		WithPanel(influxStat("Revenue", "none", "Sum of conversion values (exact micro-units / 1e6).", revenueQuery)).
		WithPanel(influxStat("Cost", "none", "Sum of spend (exact micro-units / 1e6).", costQuery)).
		WithPanel(influxStat("Bots filtered", "short", "Events the agents' bot filter caught.", botsQuery)).
		WithPanel(stat.NewPanelBuilder().Title("Ratios").
			Description("CTR = clicks/impressions, CVR = conversions/clicks, CPA = cost/conversions, ROAS = revenue/cost (Flux).").
			Datasource(fluxDS).WithTarget(flux("A", ratiosFlux)).Height(4).Span(16).Decimals(4).
			GraphMode(common.BigValueGraphModeNone).NoValue("0").
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields("/.*/"))).
		WithRow(dashboard.NewRowBuilder("Over time")).
		WithPanel(timeseries.NewPanelBuilder().Title("Traffic").
			Description("Impressions, clicks and conversions per interval (Flux).").
			Datasource(fluxDS).WithTarget(flux("A", trafficFlux)).Height(8).Span(12).Unit("short")).
		WithPanel(timeseries.NewPanelBuilder().Title("Revenue and cost").
			Description("Per interval (InfluxQL).").
			Datasource(influxQLDS).WithTarget(influxQL("A", moneyOverTime, "time_series")).Height(8).Span(12)).
		WithPanel(timeseries.NewPanelBuilder().Title("Bots filtered over time").
			Description("Per interval (InfluxQL).").
			Datasource(influxQLDS).WithTarget(influxQL("A", botsOverTime, "time_series")).Height(8).Span(12).Unit("short")).
		WithPanel(table.NewPanelBuilder().Title("Clicks by source").
			Description("Non-bot clicks per source over the time range.").
			Datasource(influxQLDS).WithTarget(influxQL("A", clicksBySource, "table")).Height(8).Span(12).
			Footer(common.NewTableFooterOptionsBuilder().Show(true).Reducer([]string{"sum"})))
	return b.Build()
}

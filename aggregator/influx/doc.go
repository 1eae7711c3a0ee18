// Package influx is the aggregator's storage client: it writes merged
// series-minutes and per-agent contributions to InfluxDB through the v2
// write API, and reads them back with InfluxQL through the v1 query API
// or with Flux, whichever the server answers (Config.QueryLanguage).
//
// # Schema
//
// Measurement "tally" holds one point per (series, minute) with the
// complete merged value. Tags: campaign, source, medium, type, country,
// device, region (an empty value is stored as "(none)", see TagValue).
// Time: the start of the minute. Fields: count, value_micros, cost_micros,
// bots and bots_<reason> (integers); revenue and cost (floats, the micro
// sums / 1e6); uniques (integer, the HLL estimate); value_p50, value_p90,
// value_p99 (floats, only when the minute has values); hll and quantiles
// (strings, base64 of the sketches' binary encodings, so the minute can be
// merged again).
//
// Measurement "tally_contrib" holds one point per (agent, series, minute,
// node): the series tags plus agent, node and format (ContribFormat);
// field contribs (string, base64 of the msgpack of that agent's
// []wire.Contribution, one per CID, each with its version and cumulative
// state) and count (their sum, for humans). Contributions that do not fit
// one string field are split into parts (tag part). Any aggregator node
// rebuilds exact per-contribution state from it after a crash or an
// ownership move.
//
// Every write is a complete point: InfluxDB keeps the last value written
// per field for the same measurement, tags and time, so rewriting a minute
// is an idempotent upsert. README.md beside this file has the details and
// the caveats of InfluxDB 1.8's Flux.
//
// # Writing and reading
//
// Writer.Write blocks until the server has acknowledged every point,
// retrying network errors, 408, 429 (with Retry-After) and 5xx with
// jittered exponential backoff; refusals that cannot pass (400, 401, 403,
// 404, 413, oversized or invalid points) return a *PermanentError at once.
// Writer.WriteIsolating instead writes every point it can and returns the
// ones refused for good as Refusals, found by splitting refused requests.
// Reader.Setup checks the server at start (reachable, version, query
// language, bucket), creates a missing database and retention policy on
// InfluxDB 1.x when allowed, and otherwise says which setting to change
// (*SetupError). Reader.LoadContributions rebuilds open minutes at start;
// Reader.QueryMinutes feeds the KPI endpoint.
package influx

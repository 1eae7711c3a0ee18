// Package alerting runs the anomaly detectors, threshold rules, budgets
// and pacing of every campaign on the node that owns it, stores what they
// decide in InfluxDB and delivers it: the live stream of every node,
// webhooks, Slack and Alertmanager (aggregator/notify). It also answers
// the API's questions about alerts, alerting objects and forecasts
// (service.go), from storage, on any node.
//
// # When a minute is judged
//
// A minute is judged for good once it has settled: Settle after it ended,
// when every agent's flush and every forward of it has reached the owner's
// merge store. That is what every node that rebuilds the campaign would
// read, so they judge alike. Waiting for it costs a minute and Settle,
// and the detectors want two anomalous minutes in a row (persistence), so
// a settled judgement alone alerts two minutes and Settle after an
// anomaly starts. So the minute in progress is also judged, every
// PeekInterval, by what it holds so far against the share of the minute
// elapsed (anomaly.Detector.Peek): an anomaly whose first minute is
// settled and pending usually shows in the second minute's first seconds.
// A peek changes nothing in the detectors; when it fires, the alert is
// stored and delivered at once, with the identity the settled judgement
// of the same minute gives the same episode, and the settled judgement
// then keeps it firing even if the whole minute turned out milder (a
// judgement, once stored, stands).
//
// Minutes older than JudgeLag when the owner first holds them (a backfill,
// history reloaded after a takeover) are history: the detectors learn from
// them (Warm) and never alert on them.
//
// # Exactly one alert per anomaly, whatever node dies
//
// The argument, step by step:
//
//  1. Only the owner judges a campaign, from the handoff pass that gave it
//     the campaign (TakeOver, then DropForeign) until the pass that takes
//     it away. Between a membership change and those passes two nodes may
//     both judge a campaign for a few seconds; what follows makes that
//     harmless.
//  2. An alert's identity is its campaign, metric, rule and start minute
//     (alert.ID), and the detectors are deterministic: two nodes that
//     judge the same minutes from the same stored history fire the same
//     alert, with the same identity, at the same minute
//     (anomaly.TestRebuild, TestMonitorRestoredMidEpisode).
//  3. Storage before delivery. A transition is written to InfluxDB
//     (tally_alert, keyed by identity and state, delivered=false) in the
//     same request as the campaign's detector state after the minute that
//     produced it (tally_alert_state). Only after InfluxDB took both is the
//     transition published to the stream and handed to the notifier; when
//     every target is done with it, it is written again with
//     delivered=true. Writing a transition again, from any node, replaces
//     the same point: storage holds one record per transition.
//  4. A node that takes a campaign over (or starts) rebuilds its
//     detectors from InfluxDB: two weeks and more of history (Warm), the
//     latest stored state, then the stored alerts on top (an alert stored
//     firing and not resolved is firing, whatever the state says — a peek
//     may have fired it after the state was written). It judges the
//     minutes after the stored state again (those within JudgeLag), and
//     delivers again every transition stored with delivered=false.
//
// Hence, for an owner killed at any point of an anomaly:
//
//   - before storing the alert: nothing was delivered (3); the new owner
//     judges the same minutes (4) and fires the alert, once;
//   - after storing, before or while delivering: the new owner restores
//     it as firing (4), so it neither fires it again nor forgets to
//     resolve it, and delivers it again: a receiver that got it already
//     sees the same Idempotency-Key (webhooks), labels (Alertmanager) or
//     key (the stream, which sends a key to a subscriber once);
//   - after delivering: as above, with nothing to deliver again.
//
// Storage and the stream therefore hold exactly one alert per anomaly,
// and each receiver gets it once, or again with the same idempotency key.
// Late data merged after a minute was judged corrects the history the
// detectors read later, but the minute is not judged again.
package alerting

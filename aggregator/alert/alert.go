// Package alert is the alert model shared by detection and delivery, and
// the rules that produce alerts besides the anomaly detector: static
// thresholds, daily and total budgets with pacing, target CPA and ROAS, and
// silences with an expiry. Types, validation and evaluation only; the admin
// API that edits them comes later.
//
// An alert's identity is its campaign, metric, rule and start minute: every
// node that evaluates the same data derives the same ID, so storage and
// receivers can drop a repeat (see docs/alerts.md).
package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/tally-edge/tally/aggregator/anomaly"
)

// Kinds of alert.
const (
	KindAnomaly   = "anomaly"
	KindThreshold = "threshold"
	KindBudget    = "budget"
	KindTarget    = "target"
)

// Severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// States of an alert.
const (
	StateFiring   = "firing"
	StateResolved = "resolved"
)

// Alert is one alert at one transition.
type Alert struct {
	// ID is the alert's identity (see ID); the same for its firing and
	// resolved transitions.
	ID       string `json:"id"`
	Campaign string `json:"campaign"`
	Metric   string `json:"metric"`
	// Rule names what fired: "anomaly", a threshold rule's name, or a
	// budget or target check ("budget_daily_runs_out", "cpa_above_target").
	Rule     string `json:"rule"`
	Kind     string `json:"kind"`
	Severity string `json:"severity"`
	State    string `json:"state"`
	// Direction is spike or drop (anomaly), above or below (thresholds and
	// targets), or empty.
	Direction string `json:"direction,omitempty"`
	// Start is the minute the alert began (its identity); At the time of
	// this transition; End the time it resolved.
	Start time.Time  `json:"start"`
	At    time.Time  `json:"at"`
	End   *time.Time `json:"end,omitempty"`
	// Value is the observed value, Expected what was expected or allowed
	// (baseline, threshold, budget, target); Score the anomaly score.
	Value    float64 `json:"value"`
	Expected float64 `json:"expected"`
	Score    float64 `json:"score,omitempty"`
	// Summary is one human sentence ("spend: at this pace the daily budget
	// runs out at 15:40").
	Summary string `json:"summary"`
	// Silenced is set when an active silence matches: the alert is stored
	// and counted but not delivered.
	Silenced bool `json:"silenced,omitempty"`
}

// ID is an alert's identity: a hash of campaign, metric, rule and the
// start minute, hex, 32 characters.
func ID(campaign, metric, rule string, start time.Time) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d", campaign, metric, rule, start.Truncate(time.Minute).Unix())
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// FromAnomaly turns a detector transition of one campaign's metric into an
// alert. Anomalies are warnings; a firing spike or drop at twice the
// threshold's score is critical.
func FromAnomaly(campaign string, ev anomaly.Event, threshold float64) Alert {
	a := Alert{
		Campaign: campaign, Metric: string(ev.Metric), Rule: KindAnomaly, Kind: KindAnomaly,
		Severity: SeverityWarning, Direction: ev.Direction.String(),
		Start: ev.Start.Truncate(time.Minute), At: ev.At, Value: ev.Observed, Expected: ev.Expected, Score: ev.Score,
	}
	a.ID = ID(a.Campaign, a.Metric, a.Rule, a.Start)
	if abs(ev.Score) >= 2*threshold {
		a.Severity = SeverityCritical
	}
	a.State = StateFiring
	verb := "is far above"
	if ev.Direction == anomaly.Drop {
		verb = "is far below"
	}
	a.Summary = fmt.Sprintf("%s: %s %s its usual level (%s observed over %s, %s expected; score %.1f)",
		campaign, ev.Metric, verb, num(ev.Observed), ev.Window, num(ev.Expected), ev.Score)
	if ev.State == anomaly.Resolved {
		a.State = StateResolved
		end := ev.At
		a.End = &end
		a.Summary = fmt.Sprintf("%s: %s is back to its usual level (peak score %.1f)", campaign, ev.Metric, ev.Score)
	}
	return a
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// num formats a number for a sentence: integers without decimals, others
// with two.
func num(x float64) string {
	if x == float64(int64(x)) && abs(x) < 1e15 {
		return fmt.Sprintf("%d", int64(x))
	}
	return fmt.Sprintf("%.2f", x)
}

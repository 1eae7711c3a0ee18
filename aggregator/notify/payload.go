package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
)

// Headers of a webhook request.
const (
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256 of
	// "<unix seconds>.<body>" under the webhook's secret>".
	HeaderSignature = "X-Tally-Signature"
	// HeaderIdempotencyKey is "<alert id>:<state>": the same for every
	// retry, and for the same transition sent by any node.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderEvent is "alert".
	HeaderEvent = "X-Tally-Event"
)

// Payload is the body of a json webhook.
type Payload struct {
	// Version of this payload format: "1".
	Version        string      `json:"version"`
	Event          string      `json:"event"`
	IdempotencyKey string      `json:"idempotency_key"`
	Alert          alert.Alert `json:"alert"`
	// URL opens the dashboard on the alert's campaign and time range.
	URL string `json:"url,omitempty"`
}

// IdempotencyKey names one transition of one alert.
func IdempotencyKey(a alert.Alert) string { return a.ID + ":" + a.State }

// Sign returns the signature header value of body at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Errors of Verify.
var (
	ErrBadSignature = errors.New("notify: signature does not match")
	ErrStale        = errors.New("notify: signature too old or from the future")
)

// Verify checks a signature header against body, refusing one whose time
// is further than tolerance from now (a replayed request): what a receiver
// does with X-Tally-Signature.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := Sign(secret, time.Unix(sec, 0), body)
	if !hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig)) {
		return ErrBadSignature
	}
	return nil
}

// dashboardLink opens the dashboard on the alert's campaign, from an hour
// before it started to an hour after it ended (or after this transition,
// while it fires): the dashboard's own address for a custom range
// (dashboard/src/view.js: whole minutes in UTC, at most 31 days), and the
// alert to highlight.
func dashboardLink(base string, a alert.Alert) string {
	if base == "" {
		return ""
	}
	end := a.At
	if a.End != nil {
		end = *a.End
	}
	from := a.Start.Add(-time.Hour).UTC().Truncate(time.Minute)
	to := end.Add(time.Hour + time.Minute - time.Nanosecond).UTC().Truncate(time.Minute)
	if to.Sub(from) > 31*24*time.Hour {
		to = from.Add(31 * 24 * time.Hour)
	}
	q := url.Values{}
	q.Set("campaign", a.Campaign)
	q.Set("range", "custom")
	q.Set("from", from.Format(time.RFC3339))
	q.Set("to", to.Format(time.RFC3339))
	q.Set("alert", a.ID)
	return strings.TrimRight(base, "/") + "/?" + q.Encode()
}

// clip shortens s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// jsonBody is the json webhook body, within max bytes (the summary is cut
// to fit; an alert that still does not fit is an error).
func jsonBody(a alert.Alert, link string, max int) ([]byte, error) {
	p := Payload{Version: "1", Event: "alert", IdempotencyKey: IdempotencyKey(a), Alert: a, URL: link}
	for range 2 {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		if len(b) <= max {
			return b, nil
		}
		p.Alert.Summary = clip(p.Alert.Summary, max/4)
		p.Alert.Campaign = clip(p.Alert.Campaign, max/8)
	}
	return nil, fmt.Errorf("payload over %d bytes", max)
}

// slackBody is a Slack incoming-webhook message: a text fallback and blocks.
func slackBody(a alert.Alert, link string, max int) ([]byte, error) {
	icon := map[string]string{alert.SeverityCritical: ":red_circle:", alert.SeverityWarning: ":large_orange_circle:", alert.SeverityInfo: ":large_blue_circle:"}[a.Severity]
	if a.State == alert.StateResolved {
		icon = ":white_check_mark:"
	}
	title := fmt.Sprintf("%s [%s] %s %s", icon, strings.ToUpper(a.State), a.Campaign, a.Metric)
	text := clip(a.Summary, max/4)
	if link != "" {
		text += fmt.Sprintf(" <%s|Open in Tally>", link)
	}
	msg := map[string]any{
		"text": clip(title+": "+a.Summary, max/4),
		"blocks": []any{
			map[string]any{"type": "header", "text": map[string]any{"type": "plain_text", "text": clip(title, 150)}},
			map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": text}},
			map[string]any{"type": "context", "elements": []any{map[string]any{"type": "mrkdwn",
				"text": fmt.Sprintf("rule `%s` · severity %s · since %s · id %s", a.Rule, a.Severity, a.Start.UTC().Format("2006-01-02 15:04 UTC"), a.ID)}}},
		},
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("slack payload over %d bytes", max)
	}
	return b, nil
}

// amAlert is Alertmanager's v2 postableAlert.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// toAlertmanager maps an alert to Alertmanager's labels: alertname is
// "tally_<kind>", and alert_id keeps each alert its own (two anomalies of
// the same metric at different times are two alerts). A firing alert ends
// at endsAt unless refreshed.
func toAlertmanager(a alert.Alert, link string, endsAt time.Time) amAlert {
	labels := map[string]string{
		"alertname": "tally_" + a.Kind, "campaign": clip(a.Campaign, 256), "metric": a.Metric, "rule": a.Rule,
		"severity": a.Severity, "alert_id": a.ID,
	}
	if a.Direction != "" {
		labels["direction"] = a.Direction
	}
	out := amAlert{Labels: labels, StartsAt: a.Start, EndsAt: endsAt, GeneratorURL: link,
		Annotations: map[string]string{"summary": clip(a.Summary, 4096),
			"value": strconv.FormatFloat(a.Value, 'g', 8, 64), "expected": strconv.FormatFloat(a.Expected, 'g', 8, 64)}}
	if a.State == alert.StateResolved {
		out.EndsAt = a.At
		if a.End != nil {
			out.EndsAt = *a.End
		}
	}
	return out
}

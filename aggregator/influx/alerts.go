package influx

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/query"
)

// What alerting stores beside the minutes (see README.md):
//
//	tally_alert,campaign=C,metric=M,rule=R,state=S doc="<alert JSON>",delivered=<bool> <start>
//	tally_alert_state,campaign=C doc="<detector states JSON>" <minute judged>
//	tally_alert_config,kind=K,name=N doc="<object JSON>" <written>
//
// An alert's transition is keyed by its identity (campaign, metric, rule,
// start) and its state, so storing it again, from this node or another
// that judged the same minutes, overwrites the same point. The alert id
// (a hash of the same four) is in the document, not a tag: one tag value
// per alert would run into InfluxDB's max-values-per-tag (100,000 by
// default) after as many alerts.
const (
	MeasurementAlert       = "tally_alert"
	MeasurementAlertState  = "tally_alert_state"
	MeasurementAlertConfig = "tally_alert_config"

	TagMetric = "metric"
	TagRule   = "rule"
	TagState  = "state"
	TagKind   = "kind"
	TagName   = "name"

	FieldDoc       = "doc"
	FieldDelivered = "delivered"
)

// StoredAlert is one transition of one alert.
type StoredAlert struct {
	Campaign, Metric, Rule, State string
	// Start is the alert's start minute, the point's time.
	Start time.Time
	// Doc is the alert as JSON (at most MaxStringField bytes).
	Doc []byte
	// Delivered is set once every notification target took the
	// transition or gave up on it (dead letter).
	Delivered bool
}

// StoredState is a campaign's detector state after judging a minute.
type StoredState struct {
	Campaign string
	Minute   time.Time
	Doc      []byte
}

// ConfigDoc is one version of one alerting object (a rule, budget or
// silence) edited through the API.
type ConfigDoc struct {
	Kind, Name string
	// Written is the point's time (whole seconds: a second version of an
	// object within the same second replaces the first).
	Written time.Time
	Doc     []byte
}

// appendString appends a line-protocol string field value: quotes and
// backslashes escaped.
func appendString(b []byte, s []byte) []byte {
	b = append(b, '"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return append(b, '"')
}

func appendDocLine(b []byte, measurement string, tags [][2]string, doc []byte, extra func(*fieldWriter), t time.Time) ([]byte, error) {
	if len(doc) > MaxStringField {
		return b, fmt.Errorf("%w: %s document of %d bytes (at most %d)", errInvalidPoint, measurement, len(doc), MaxStringField)
	}
	start := len(b)
	b = append(b, measurement...)
	for _, kv := range tags {
		b = appendTag(b, kv[0], kv[1])
	}
	if n := len(b) - start; n > MaxSeriesKey {
		return b[:start], fmt.Errorf("%w: %s series key of %d bytes", errInvalidPoint, measurement, n)
	}
	b = append(b, ' ')
	f := fieldWriter{b: b, first: true}
	f.key(FieldDoc)
	f.b = appendString(f.b, doc)
	if extra != nil {
		extra(&f)
	}
	b = append(f.b, ' ')
	b = strconv.AppendInt(b, t.Unix(), 10) // the writer's precision is seconds
	return append(b, '\n'), nil
}

// WriteAlerts stores alert transitions and detector states in one call
// (retried like Write); nil only when the server took all of them. The
// states are written first: a node that reads an alert back finds the
// state that goes with it.
func (w *Writer) WriteAlerts(ctx context.Context, alerts []StoredAlert, states []StoredState) error {
	var (
		b   []byte
		err error
	)
	for _, s := range states {
		if b, err = appendDocLine(b, MeasurementAlertState, [][2]string{{TagCampaign, s.Campaign}}, s.Doc, nil, s.Minute); err != nil {
			return &PermanentError{Err: err}
		}
	}
	for _, a := range alerts {
		tags := [][2]string{{TagCampaign, a.Campaign}, {TagMetric, a.Metric}, {TagRule, a.Rule}, {TagState, a.State}}
		delivered := a.Delivered
		if b, err = appendDocLine(b, MeasurementAlert, tags, a.Doc, func(f *fieldWriter) {
			f.key(FieldDelivered)
			f.b = strconv.AppendBool(f.b, delivered)
		}, a.Start); err != nil {
			return &PermanentError{Err: err}
		}
	}
	if len(b) == 0 {
		return nil
	}
	return w.send(ctx, request{body: string(b), points: len(alerts) + len(states)})
}

// WriteConfigDocs stores versions of alerting objects.
func (w *Writer) WriteConfigDocs(ctx context.Context, docs []ConfigDoc) error {
	var (
		b   []byte
		err error
	)
	for _, d := range docs {
		if b, err = appendDocLine(b, MeasurementAlertConfig, [][2]string{{TagKind, d.Kind}, {TagName, d.Name}}, d.Doc, nil, d.Written); err != nil {
			return &PermanentError{Err: err}
		}
	}
	if len(b) == 0 {
		return nil
	}
	return w.send(ctx, request{body: string(b), points: len(docs)})
}

// AlertQuery selects stored alert transitions by start time.
type AlertQuery struct {
	// Campaigns limits the answer to these campaigns; nil for every
	// campaign (AllCampaigns must then be set, as in MinuteQuery).
	Campaigns    []string
	AllCampaigns bool
	// From and To bound the alerts' start minutes: From <= start < To.
	From, To time.Time
	// Undelivered selects only transitions not marked delivered.
	Undelivered bool
}

// LoadAlerts returns the stored transitions q selects, oldest start first.
func (r *Reader) LoadAlerts(ctx context.Context, q AlertQuery) ([]StoredAlert, error) {
	if len(q.Campaigns) == 0 && !q.AllCampaigns {
		return nil, errors.New("alert query: no campaigns (set AllCampaigns for every campaign)")
	}
	pred := `r._measurement == "` + MeasurementAlert + `"`
	if len(q.Campaigns) > 0 {
		pred += " and " + campaignsIn(q.Campaigns)
	}
	type key struct {
		campaign, metric, rule, state string
		t                             int64
	}
	byKey := map[key]*StoredAlert{}
	var order []key
	err := r.run(ctx, fluxFrom(r.cfg.Bucket, q.From, q.To, pred), func(rec *query.FluxRecord) {
		k := key{stringValue(rec, TagCampaign), stringValue(rec, TagMetric), stringValue(rec, TagRule), stringValue(rec, TagState), rec.Time().UnixNano()}
		a := byKey[k]
		if a == nil {
			a = &StoredAlert{Campaign: valueFromTag(k.campaign), Metric: valueFromTag(k.metric), Rule: valueFromTag(k.rule),
				State: valueFromTag(k.state), Start: rec.Time().UTC()}
			byKey[k] = a
			order = append(order, k)
		}
		switch rec.Field() {
		case FieldDoc:
			s, _ := rec.Value().(string)
			a.Doc = []byte(s)
		case FieldDelivered:
			a.Delivered, _ = rec.Value().(bool)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("load alerts: %w", err)
	}
	out := make([]StoredAlert, 0, len(order))
	for _, k := range order {
		a := byKey[k]
		if len(a.Doc) == 0 || (q.Undelivered && a.Delivered) {
			continue
		}
		out = append(out, *a)
	}
	slices.SortStableFunc(out, func(a, b StoredAlert) int { return a.Start.Compare(b.Start) })
	return out, nil
}

// LoadAlertStates returns the latest detector state of each campaign
// stored in [from, to).
func (r *Reader) LoadAlertStates(ctx context.Context, campaigns []string, from, to time.Time) ([]StoredState, error) {
	if len(campaigns) == 0 {
		return nil, nil
	}
	pred := `r._measurement == "` + MeasurementAlertState + `" and r._field == "` + FieldDoc + `" and ` + campaignsIn(campaigns)
	q := fluxFrom(r.cfg.Bucket, from, to, pred) + "\n  |> group(columns: [\"campaign\"])\n  |> last()"
	var out []StoredState
	err := r.run(ctx, q, func(rec *query.FluxRecord) {
		s, _ := rec.Value().(string)
		out = append(out, StoredState{Campaign: valueFromTag(stringValue(rec, TagCampaign)), Minute: rec.Time().UTC(), Doc: []byte(s)})
	})
	if err != nil {
		return nil, fmt.Errorf("load alert states: %w", err)
	}
	return out, nil
}

// LoadConfigDocs returns every stored version of alerting objects written
// in [from, to).
func (r *Reader) LoadConfigDocs(ctx context.Context, from, to time.Time) ([]ConfigDoc, error) {
	pred := `r._measurement == "` + MeasurementAlertConfig + `" and r._field == "` + FieldDoc + `"`
	var out []ConfigDoc
	err := r.run(ctx, fluxFrom(r.cfg.Bucket, from, to, pred), func(rec *query.FluxRecord) {
		s, _ := rec.Value().(string)
		out = append(out, ConfigDoc{Kind: valueFromTag(stringValue(rec, TagKind)), Name: valueFromTag(stringValue(rec, TagName)),
			Written: rec.Time().UTC(), Doc: []byte(s)})
	})
	if err != nil {
		return nil, fmt.Errorf("load alert configuration: %w", err)
	}
	return out, nil
}

// StepTotals are one campaign's sums over one step: what the detectors and
// forecasts of alerting read back as history.
type StepTotals struct {
	Campaign string
	// Start is the step's start.
	Start time.Time
	// Count is the events by type, Bots the bot events filtered, Uniques
	// the sum of each series' distinct visitors (cost series left out: a
	// visitor seen in two series counts twice).
	Count   map[string]int64
	Bots    int64
	Uniques int64
	// Revenue is the conversions' value, Cost the spend.
	Revenue, Cost float64
	// ClicksBySource are the clicks of each source.
	ClicksBySource map[string]int64
}

// CampaignSteps sums the merged minutes of campaigns in [from, to) by
// steps of every (which must divide an hour or a day, as InfluxDB's
// windows start at the epoch), oldest first for each campaign. Steps
// without any point are left out.
func (r *Reader) CampaignSteps(ctx context.Context, campaigns []string, from, to time.Time, every time.Duration) ([]StepTotals, error) {
	if len(campaigns) == 0 || !to.After(from) {
		return nil, nil
	}
	if every < time.Minute || every%time.Minute != 0 {
		return nil, fmt.Errorf("campaign steps: step %v: whole minutes", every)
	}
	window := "\n  |> aggregateWindow(every: " + strconv.FormatInt(int64(every/time.Minute), 10) + "m, fn: sum, timeSrc: \"_start\", createEmpty: false)"
	type key struct {
		campaign string
		t        int64
	}
	byKey := map[key]*StepTotals{}
	step := func(rec *query.FluxRecord) *StepTotals {
		k := key{valueFromTag(stringValue(rec, TagCampaign)), rec.Time().UnixNano()}
		s := byKey[k]
		if s == nil {
			s = &StepTotals{Campaign: k.campaign, Start: rec.Time().UTC(), Count: map[string]int64{}, ClicksBySource: map[string]int64{}}
			byKey[k] = s
		}
		return s
	}
	var bad error
	pred := `r._measurement == "` + MeasurementMinute + `" and ` + campaignsIn(campaigns) +
		` and (r._field == "` + FieldCount + `" or r._field == "` + FieldBots + `" or r._field == "` + FieldUniques +
		`" or r._field == "` + FieldRevenue + `" or r._field == "` + FieldCost + `")`
	q := fluxFrom(r.cfg.Bucket, from, to, pred) + "\n  |> group(columns: [\"campaign\", \"type\", \"_field\"])" + window
	err := r.run(ctx, q, func(rec *query.FluxRecord) {
		s := step(rec)
		typ := valueFromTag(stringValue(rec, TagType))
		switch rec.Field() {
		case FieldCount:
			n, err := intValue(rec.Value())
			bad = errors.Join(bad, err)
			s.Count[typ] += n
		case FieldBots:
			n, err := intValue(rec.Value())
			bad = errors.Join(bad, err)
			s.Bots += n
		case FieldUniques:
			if typ != "cost" {
				n, err := intValue(rec.Value())
				bad = errors.Join(bad, err)
				s.Uniques += n
			}
		case FieldRevenue:
			s.Revenue += floatValue(rec.Value())
		case FieldCost:
			s.Cost += floatValue(rec.Value())
		}
	})
	if err == nil {
		pred = `r._measurement == "` + MeasurementMinute + `" and ` + campaignsIn(campaigns) + ` and ` + tagEquals(TagType, "click") +
			` and r._field == "` + FieldCount + `"`
		q = fluxFrom(r.cfg.Bucket, from, to, pred) + "\n  |> group(columns: [\"campaign\", \"source\"])" + window
		err = r.run(ctx, q, func(rec *query.FluxRecord) {
			n, err := intValue(rec.Value())
			bad = errors.Join(bad, err)
			step(rec).ClicksBySource[valueFromTag(stringValue(rec, TagSource))] += n
		})
	}
	if err = errors.Join(err, bad); err != nil {
		return nil, fmt.Errorf("campaign steps: %w", err)
	}
	out := make([]StepTotals, 0, len(byKey))
	for _, s := range byKey {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b StepTotals) int {
		if c := strings.Compare(a.Campaign, b.Campaign); c != 0 {
			return c
		}
		return a.Start.Compare(b.Start)
	})
	return out, nil
}

func floatValue(v any) float64 {
	switch n := v.(type) {
	case float64:
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return 0
		}
		return n
	case int64:
		return float64(n)
	}
	return 0
}

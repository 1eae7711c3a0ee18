package influx

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
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
	return w.send(ctx, request{bucket: w.cfg.Bucket, body: string(b), points: len(alerts) + len(states)})
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
	return w.send(ctx, request{bucket: w.cfg.Bucket, body: string(b), points: len(docs)})
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
	type key struct {
		campaign, metric, rule, state string
		t                             int64
	}
	byKey := map[key]*StoredAlert{}
	var order []key
	entry := func(vals map[string]any, t time.Time) *StoredAlert {
		k := key{stringValue(vals, TagCampaign), stringValue(vals, TagMetric), stringValue(vals, TagRule), stringValue(vals, TagState), t.UnixNano()}
		a := byKey[k]
		if a == nil {
			a = &StoredAlert{Campaign: valueFromTag(k.campaign), Metric: valueFromTag(k.metric), Rule: valueFromTag(k.rule),
				State: valueFromTag(k.state), Start: t.UTC()}
			byKey[k] = a
			order = append(order, k)
		}
		return a
	}
	lang, err := r.language(ctx)
	switch {
	case err != nil:
	case lang == QueryFlux:
		pred := `r._measurement == "` + MeasurementAlert + `"`
		if len(q.Campaigns) > 0 {
			pred += " and " + campaignsIn(q.Campaigns)
		}
		err = r.runFlux(ctx, fluxFrom(r.cfg.Bucket, q.From, q.To, pred), func(rec *query.FluxRecord) {
			a := entry(rec.Values(), rec.Time())
			switch rec.Field() {
			case FieldDoc:
				s, _ := rec.Value().(string)
				a.Doc = []byte(s)
			case FieldDelivered:
				a.Delivered, _ = rec.Value().(bool)
			}
		})
	default:
		var conds []string
		if len(q.Campaigns) > 0 {
			conds = append(conds, influxQLCampaignsIn(q.Campaigns))
		}
		db, rp := splitBucket(r.cfg.Bucket)
		stmt := influxQLSelect(influxQLIdent(FieldDoc)+", "+influxQLIdent(FieldDelivered), MeasurementAlert, conds, q.From, q.To)
		err = r.influxQL(ctx, http.MethodPost, stmt, db, rp, alertChunkRows, func(_ *v1Series, t int64, vals map[string]any) error {
			a := entry(vals, time.Unix(t, 0))
			if s, ok := vals[FieldDoc].(string); ok {
				a.Doc = []byte(s)
			}
			if d, ok := vals[FieldDelivered].(bool); ok {
				a.Delivered = d
			}
			return nil
		})
	}
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

// alertChunkRows is the rows per streamed document of the alerting
// reads: a row is a document of at most MaxStringField.
const alertChunkRows = 250

// LoadAlertStates returns the latest detector state of each campaign
// stored in [from, to).
func (r *Reader) LoadAlertStates(ctx context.Context, campaigns []string, from, to time.Time) ([]StoredState, error) {
	if len(campaigns) == 0 {
		return nil, nil
	}
	var out []StoredState
	lang, err := r.language(ctx)
	switch {
	case err != nil:
	case lang == QueryFlux:
		pred := `r._measurement == "` + MeasurementAlertState + `" and r._field == "` + FieldDoc + `" and ` + campaignsIn(campaigns)
		q := fluxFrom(r.cfg.Bucket, from, to, pred) + "\n  |> group(columns: [\"campaign\"])\n  |> last()"
		err = r.runFlux(ctx, q, func(rec *query.FluxRecord) {
			s, _ := rec.Value().(string)
			out = append(out, StoredState{Campaign: valueFromTag(stringValue(rec.Values(), TagCampaign)), Minute: rec.Time().UTC(), Doc: []byte(s)})
		})
	default:
		// last() is a selector: its row carries the time of the point it
		// selected, and GROUP BY * (the campaign tag) one row per campaign.
		db, rp := splitBucket(r.cfg.Bucket)
		stmt := influxQLSelect("last("+influxQLIdent(FieldDoc)+") AS "+influxQLIdent(FieldDoc), MeasurementAlertState,
			[]string{influxQLCampaignsIn(campaigns)}, from, to)
		err = r.influxQL(ctx, http.MethodPost, stmt, db, rp, alertChunkRows, func(_ *v1Series, t int64, vals map[string]any) error {
			s, _ := vals[FieldDoc].(string)
			out = append(out, StoredState{Campaign: valueFromTag(stringValue(vals, TagCampaign)), Minute: time.Unix(t, 0).UTC(), Doc: []byte(s)})
			return nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("load alert states: %w", err)
	}
	return out, nil
}

// LoadConfigDocs returns every stored version of alerting objects written
// in [from, to).
func (r *Reader) LoadConfigDocs(ctx context.Context, from, to time.Time) ([]ConfigDoc, error) {
	var out []ConfigDoc
	add := func(vals map[string]any, t time.Time, doc string) {
		out = append(out, ConfigDoc{Kind: valueFromTag(stringValue(vals, TagKind)), Name: valueFromTag(stringValue(vals, TagName)),
			Written: t.UTC(), Doc: []byte(doc)})
	}
	lang, err := r.language(ctx)
	switch {
	case err != nil:
	case lang == QueryFlux:
		pred := `r._measurement == "` + MeasurementAlertConfig + `" and r._field == "` + FieldDoc + `"`
		err = r.runFlux(ctx, fluxFrom(r.cfg.Bucket, from, to, pred), func(rec *query.FluxRecord) {
			s, _ := rec.Value().(string)
			add(rec.Values(), rec.Time(), s)
		})
	default:
		db, rp := splitBucket(r.cfg.Bucket)
		stmt := influxQLSelect(influxQLIdent(FieldDoc), MeasurementAlertConfig, nil, from, to)
		err = r.influxQL(ctx, http.MethodPost, stmt, db, rp, alertChunkRows, func(_ *v1Series, t int64, vals map[string]any) error {
			s, _ := vals[FieldDoc].(string)
			add(vals, time.Unix(t, 0), s)
			return nil
		})
	}
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
	type key struct {
		campaign string
		t        int64
	}
	byKey := map[key]*StepTotals{}
	step := func(campaign string, t time.Time) *StepTotals {
		k := key{valueFromTag(campaign), t.UnixNano()}
		s := byKey[k]
		if s == nil {
			s = &StepTotals{Campaign: k.campaign, Start: t.UTC(), Count: map[string]int64{}, ClicksBySource: map[string]int64{}}
			byKey[k] = s
		}
		return s
	}
	var bad error
	// add sums one field of one step; a missing field (nil, InfluxQL's
	// sum over no value) adds nothing.
	add := func(s *StepTotals, typ, field string, v any) {
		if v == nil {
			return
		}
		switch field {
		case FieldCount:
			n, err := intValue(v)
			bad = errors.Join(bad, err)
			s.Count[typ] += n
		case FieldBots:
			n, err := intValue(v)
			bad = errors.Join(bad, err)
			s.Bots += n
		case FieldUniques:
			if typ != costType {
				n, err := intValue(v)
				bad = errors.Join(bad, err)
				s.Uniques += n
			}
		case FieldRevenue:
			s.Revenue += floatValue(v)
		case FieldCost:
			s.Cost += floatValue(v)
		}
	}
	addClicks := func(s *StepTotals, source string, v any) {
		if v == nil {
			return
		}
		n, err := intValue(v)
		bad = errors.Join(bad, err)
		s.ClicksBySource[valueFromTag(source)] += n
	}
	fields := []string{FieldCount, FieldBots, FieldUniques, FieldRevenue, FieldCost}
	lang, err := r.language(ctx)
	switch {
	case err != nil:
	case lang == QueryFlux:
		window := "\n  |> aggregateWindow(every: " + strconv.FormatInt(int64(every/time.Minute), 10) + "m, fn: sum, timeSrc: \"_start\", createEmpty: false)"
		var ors []string
		for _, f := range fields {
			ors = append(ors, `r._field == "`+f+`"`)
		}
		pred := `r._measurement == "` + MeasurementMinute + `" and ` + campaignsIn(campaigns) + ` and (` + strings.Join(ors, " or ") + `)`
		q := fluxFrom(r.cfg.Bucket, from, to, pred) + "\n  |> group(columns: [\"campaign\", \"type\", \"_field\"])" + window
		err = r.runFlux(ctx, q, func(rec *query.FluxRecord) {
			vals := rec.Values()
			add(step(stringValue(vals, TagCampaign), rec.Time()), valueFromTag(stringValue(vals, TagType)), rec.Field(), rec.Value())
		})
		if err == nil {
			pred = `r._measurement == "` + MeasurementMinute + `" and ` + campaignsIn(campaigns) + ` and ` + tagEquals(TagType, "click") +
				` and r._field == "` + FieldCount + `"`
			q = fluxFrom(r.cfg.Bucket, from, to, pred) + "\n  |> group(columns: [\"campaign\", \"source\"])" + window
			err = r.runFlux(ctx, q, func(rec *query.FluxRecord) {
				vals := rec.Values()
				addClicks(step(stringValue(vals, TagCampaign), rec.Time()), stringValue(vals, TagSource), rec.Value())
			})
		}
	default:
		// GROUP BY time(every) starts its windows at the epoch, as
		// aggregateWindow does; fill(none) leaves out empty steps.
		db, rp := splitBucket(r.cfg.Bucket)
		sums := make([]string, len(fields))
		for i, f := range fields {
			sums[i] = "sum(" + influxQLIdent(f) + ") AS " + influxQLIdent(f)
		}
		group := func(stmt string, tags ...string) string {
			stmt = strings.TrimSuffix(stmt, " GROUP BY *") + " GROUP BY time(" + strconv.FormatInt(int64(every/time.Minute), 10) + "m)"
			for _, t := range tags {
				stmt += ", " + influxQLIdent(t)
			}
			return stmt + " fill(none)"
		}
		stmt := group(influxQLSelect(strings.Join(sums, ", "), MeasurementMinute, []string{influxQLCampaignsIn(campaigns)}, from, to),
			TagCampaign, TagType)
		err = r.influxQL(ctx, http.MethodPost, stmt, db, rp, minutesChunkRows, func(_ *v1Series, t int64, vals map[string]any) error {
			s := step(stringValue(vals, TagCampaign), time.Unix(t, 0))
			typ := valueFromTag(stringValue(vals, TagType))
			for _, f := range fields {
				add(s, typ, f, vals[f])
			}
			return nil
		})
		if err == nil {
			stmt = group(influxQLSelect("sum("+influxQLIdent(FieldCount)+") AS "+influxQLIdent(FieldCount), MeasurementMinute,
				[]string{influxQLCampaignsIn(campaigns), influxQLTagEquals(TagType, "click")}, from, to), TagCampaign, TagSource)
			err = r.influxQL(ctx, http.MethodPost, stmt, db, rp, minutesChunkRows, func(_ *v1Series, t int64, vals map[string]any) error {
				addClicks(step(stringValue(vals, TagCampaign), time.Unix(t, 0)), stringValue(vals, TagSource), vals[FieldCount])
				return nil
			})
		}
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

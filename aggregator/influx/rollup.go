package influx

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/query"

	"github.com/tally-edge/tally/sketch"
)

// Rollups: hourly and daily points (measurement "tally" in the hours and
// days buckets, with the fields of a merged minute and no ledger), and
// their markers (MeasurementRollup in the same buckets). Package rollup
// decides what to write and when; this file only stores and reads.

// bucketOf returns the bucket holding points of resolution res.
func (c Config) bucketOf(res Resolution) string {
	switch res {
	case Hours:
		return c.HoursBucket
	case Days:
		return c.DaysBucket
	}
	return c.Bucket
}

// Marker is the rollup state of one campaign's hour (in the hours bucket)
// or day (in the days bucket).
type Marker struct {
	Campaign string
	// Start is the period's start, unix seconds.
	Start int64
	// Changed is the last time (a node's unix milliseconds, used only as
	// a token) minutes of the period were written; Rolled the Changed its
	// rollups were computed from. 0 when absent.
	Changed, Rolled int64
}

// Clean reports whether the period's rollups are computed from its
// minutes as they are (no minute written since).
func (m Marker) Clean() bool { return m.Changed == m.Rolled }

// WriteMarkers writes one field (FieldChanged or FieldRolled) of each
// marker, leaving the other as it is (InfluxDB merges the fields of
// points with the same series and time). Retries like Write; markers
// refused for good are logged and dropped, so that they never hold up a
// write round.
func (w *Writer) WriteMarkers(ctx context.Context, res Resolution, field string, marks []Marker) error {
	if res != Hours && res != Days {
		return fmt.Errorf("influx write markers: resolution %q has none", res)
	}
	if field != FieldChanged && field != FieldRolled {
		return fmt.Errorf("influx write markers: unknown field %q", field)
	}
	lines := make([]line, 0, len(marks))
	for _, m := range marks {
		v := m.Changed
		if field == FieldRolled {
			v = m.Rolled
		}
		lines = append(lines, line{bucket: w.cfg.bucketOf(res), b: appendMarker(nil, m.Campaign, m.Start, field, v), measurement: MeasurementRollup,
			series: sketch.Series{Campaign: m.Campaign}, minute: m.Start})
	}
	refused, err := w.writeLines(ctx, lines, nil)
	if err == nil && len(refused) > 0 {
		// Refused for good: a period older than its bucket keeps (its
		// minutes are older than theirs too, so no rollup can be
		// wanted) or a campaign InfluxDB cannot take. Dropping the
		// marker stalls nothing; the minutes' own write isolates theirs.
		w.log.Warn("InfluxDB refused rollup markers for good; dropped", "reason", refused[0].Reason, "markers", len(refused),
			"resolution", string(res), "first", refused[0].Err)
	}
	return err
}

// WriteRollups writes hourly (res Hours) or daily (res Days) points, each
// the merge of its period's minutes, whose Minute is the period's start.
// Points the server refuses for good (older than the bucket's retention)
// are returned as Refusals; the others are written.
func (w *Writer) WriteRollups(ctx context.Context, res Resolution, points []sketch.Minute) ([]Refusal, error) {
	if res != Hours && res != Days {
		return nil, fmt.Errorf("influx write rollups: resolution %q is not a rollup", res)
	}
	var (
		lines    []line
		refusals []Refusal
	)
	for i := range points {
		p := points[i]
		p.Ledger = nil
		b, err := appendMinute(nil, &p)
		if err != nil {
			refusals = append(refusals, line{measurement: MeasurementMinute, series: p.Series, minute: p.Minute}.refusal(err))
			continue
		}
		lines = append(lines, line{bucket: w.cfg.bucketOf(res), b: b, measurement: MeasurementMinute, series: p.Series, minute: p.Minute})
	}
	return w.writeLines(ctx, lines, refusals)
}

// LoadMarkers returns the markers of resolution res (Hours or Days) whose
// period starts in [from, to), of the given campaigns (nil: all).
func (r *Reader) LoadMarkers(ctx context.Context, res Resolution, from, to time.Time, campaigns []string) ([]Marker, error) {
	if res != Hours && res != Days {
		return nil, fmt.Errorf("influx load markers: resolution %q has none", res)
	}
	if !from.Before(to) {
		return nil, nil
	}
	type key struct {
		campaign string
		start    int64
	}
	byKey := map[key]*Marker{}
	var order []key
	set := func(campaign string, start int64, field string, v any) {
		n, err := intValue(v)
		if err != nil {
			return
		}
		k := key{valueFromTag(campaign), start}
		m := byKey[k]
		if m == nil {
			m = &Marker{Campaign: k.campaign, Start: start}
			byKey[k] = m
			order = append(order, k)
		}
		switch field {
		case FieldChanged:
			m.Changed = n
		case FieldRolled:
			m.Rolled = n
		}
	}
	lang, err := r.language(ctx)
	if err != nil {
		return nil, fmt.Errorf("influx load markers: %w", err)
	}
	bucket := r.cfg.bucketOf(res)
	if lang == QueryFlux {
		pred := `r._measurement == "` + MeasurementRollup + `" and (r._field == "` + FieldChanged + `" or r._field == "` + FieldRolled + `")`
		if len(campaigns) > 0 {
			pred += " and " + campaignsIn(campaigns)
		}
		// Unpivoted: InfluxDB 1.8's pivot may return a point's two fields
		// as two rows; the fields are joined here instead.
		err = r.runFlux(ctx, fluxFrom(bucket, from, to, pred), func(rec *query.FluxRecord) {
			c, _ := rec.ValueByKey(TagCampaign).(string)
			set(c, rec.Time().Unix(), rec.Field(), rec.Value())
		})
	} else {
		var conds []string
		if len(campaigns) > 0 {
			conds = append(conds, influxQLCampaignsIn(campaigns))
		}
		stmt := influxQLSelect(`/^(`+FieldChanged+`|`+FieldRolled+`)$/`, MeasurementRollup, conds, from, to)
		db, rp := splitBucket(bucket)
		err = r.influxQL(ctx, http.MethodPost, stmt, db, rp, minutesChunkRows, func(_ *v1Series, t int64, vals map[string]any) error {
			c, _ := vals[TagCampaign].(string)
			for _, f := range []string{FieldChanged, FieldRolled} {
				if v, ok := vals[f]; ok && v != nil {
					set(c, t, f, v)
				}
			}
			return nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("influx load %s markers [%s, %s): %w", res, fluxTime(from), fluxTime(to), err)
	}
	out := make([]Marker, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out, nil
}

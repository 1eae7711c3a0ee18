package influx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tally-edge/tally/sketch"
)

// Refusal is one point that can never be written as it is: the server
// refused it for good, or it failed the checks made before sending.
type Refusal struct {
	// Measurement, Series and Minute name the point; Agent is set for
	// tally_contrib points.
	Measurement string
	Series      sketch.Series
	Minute      int64
	Agent       string
	// Reason is a short code for metrics and the quarantine (see
	// RefusalReason).
	Reason string
	// Err is the refusal as the server or the check gave it.
	Err error
}

// Key returns the series-minute the refused point belongs to.
func (r Refusal) Key() sketch.Key { return sketch.Key{Series: r.Series, Minute: r.Minute} }

// Reasons of refusals (Refusal.Reason).
const (
	ReasonTooLarge        = "too_large"          // over a size limit of a field, series key or request
	ReasonInvalid         = "invalid_point"      // a point the caller built wrongly
	ReasonRetention       = "beyond_retention"   // older than the retention policy keeps
	ReasonValuesPerTag    = "max_values_per_tag" // a tag with too many distinct values
	ReasonSeriesLimit     = "max_series"         // the database holds as many series as it may
	ReasonFieldConflict   = "field_type_conflict"
	ReasonBadLine         = "bad_line" // line protocol the server cannot parse
	ReasonOtherRefusalFmt = "http_%d"  // any other refusal of a point, by status
)

// RefusalReason names what made the server (or the pre-send checks)
// refuse a point. The decision to set a point aside is made on the error's
// type and status code; the reason only labels it, from the server's
// explanation where the status code does not say more.
func RefusalReason(err error) string {
	var tl *PointTooLargeError
	if errors.As(err, &tl) {
		return ReasonTooLarge
	}
	if errors.Is(err, errInvalidPoint) {
		return ReasonInvalid
	}
	var pe *PermanentError
	if !errors.As(err, &pe) {
		return "unknown"
	}
	msg := strings.ToLower(pe.Message + " " + fmt.Sprint(pe.Err))
	switch {
	case pe.StatusCode == http.StatusRequestEntityTooLarge:
		return ReasonTooLarge
	case strings.Contains(msg, "beyond retention"):
		return ReasonRetention
	case strings.Contains(msg, "max-values-per-tag"):
		return ReasonValuesPerTag
	case strings.Contains(msg, "max-series-per-database"):
		return ReasonSeriesLimit
	case strings.Contains(msg, "field type conflict"):
		return ReasonFieldConflict
	case strings.Contains(msg, "unable to parse"), strings.Contains(msg, "bad timestamp"), strings.Contains(msg, "invalid field"):
		return ReasonBadLine
	case pe.StatusCode == http.StatusUnprocessableEntity:
		// InfluxDB 2.x answers 422 for points outside the bucket's retention.
		return ReasonRetention
	}
	return fmt.Sprintf(ReasonOtherRefusalFmt, pe.StatusCode)
}

// pointRefusal reports whether a server answer refuses points of the
// request (so that sending the others alone succeeds) rather than the
// request as a whole. 400 (parse errors, partial writes: beyond
// retention, max-values-per-tag, field type conflicts), 413 (too large)
// and 422 (2.x: outside retention) do; 401, 403 and 404 (credentials, a
// missing bucket) refuse everything alike and are configuration errors.
func pointRefusal(err error) bool {
	var pe *PermanentError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// line is one encoded point and who it is.
type line struct {
	bucket      string
	b           []byte
	measurement string
	series      sketch.Series
	minute      int64
	agent       string
}

func (l line) refusal(err error) Refusal {
	return Refusal{Measurement: l.measurement, Series: l.series, Minute: l.minute, Agent: l.agent, Reason: RefusalReason(err), Err: err}
}

// WriteIsolating writes like Write, but a point that can never be written
// does not fail the call: it is left out and returned as a Refusal, and
// every other point is written. Points that fail the checks before
// sending (too large, invalid) are refused without a request. When the
// server refuses points of a request (400, 413, 422; see pointRefusal),
// the request is split in halves and each half sent again, down to single
// points, so the refused points are found with about log2(n) extra
// requests each; the points the server had accepted are written again,
// which is an idempotent upsert.
//
// The error is non-nil only when the whole call must be tried again: a
// retryable failure that outlasted ctx or MaxElapsed, or a refusal that is
// not about points (401, 403, 404: credentials or a missing bucket).
// Refusals found before it are returned with it.
func (w *Writer) WriteIsolating(ctx context.Context, minutes []sketch.Minute, contribs []ContribPoint) ([]Refusal, error) {
	var (
		lines    []line
		refusals []Refusal
	)
	horizon := w.contribHorizon()
	for i := range contribs {
		p := &contribs[i]
		if p.Minute < horizon {
			w.contribsSkipped.Add(1)
			continue
		}
		b, err := appendContrib(nil, p)
		if err != nil {
			w.permanent.Add(1)
			w.noteError(err)
			refusals = append(refusals, line{measurement: MeasurementContrib, series: p.Series, minute: p.Minute, agent: p.Agent}.refusal(err))
			continue
		}
		// One line per part: each part stands or falls alone.
		for len(b) > 0 {
			n := bytes.IndexByte(b, '\n') + 1
			lines = append(lines, line{bucket: w.cfg.ContribBucket, b: b[:n], measurement: MeasurementContrib, series: p.Series, minute: p.Minute, agent: p.Agent})
			b = b[n:]
		}
	}
	for i := range minutes {
		m := &minutes[i]
		b, err := appendMinute(nil, m)
		if err != nil {
			w.permanent.Add(1)
			w.noteError(err)
			refusals = append(refusals, line{measurement: MeasurementMinute, series: m.Series, minute: m.Minute}.refusal(err))
			continue
		}
		lines = append(lines, line{bucket: w.cfg.Bucket, b: b, measurement: MeasurementMinute, series: m.Series, minute: m.Minute})
	}
	return w.writeLines(ctx, lines, refusals)
}

// writeLines sends lines in requests cut like Write's (and by bucket),
// each isolated on its own.
func (w *Writer) writeLines(ctx context.Context, lines []line, refusals []Refusal) ([]Refusal, error) {
	for len(lines) > 0 {
		n, size := 0, 0
		for n < len(lines) && n < w.cfg.BatchSize && lines[n].bucket == lines[0].bucket &&
			(n == 0 || size+len(lines[n].b) <= w.cfg.MaxRequestBytes) {
			size += len(lines[n].b)
			n++
		}
		var err error
		if refusals, err = w.isolate(ctx, lines[:n], refusals); err != nil {
			return refusals, err
		}
		lines = lines[n:]
	}
	return refusals, nil
}

// isolate sends lines as one request and, if the server refuses points
// of it, each half again.
func (w *Writer) isolate(ctx context.Context, lines []line, refusals []Refusal) ([]Refusal, error) {
	var body strings.Builder
	for _, l := range lines {
		body.Write(l.b)
	}
	err := w.send(ctx, request{bucket: lines[0].bucket, body: body.String(), points: len(lines)})
	switch {
	case err == nil:
		return refusals, nil
	case !pointRefusal(err):
		return refusals, fmt.Errorf("influx write: %w", err)
	case len(lines) == 1:
		w.permanent.Add(1)
		return append(refusals, lines[0].refusal(err)), nil
	}
	half := len(lines) / 2
	if refusals, err = w.isolate(ctx, lines[:half], refusals); err != nil {
		return refusals, err
	}
	return w.isolate(ctx, lines[half:], refusals)
}

package archive

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// VerifyResult describes the check of one archived day.
type VerifyResult struct {
	Day       string
	Rows      int64
	Campaigns int
	// Problems lists what differs (at most maxProblems, then a count);
	// empty means the archive holds the day exactly as InfluxDB does.
	Problems []string
	Duration time.Duration
}

// OK reports whether the day verified without a problem.
func (r VerifyResult) OK() bool { return len(r.Problems) == 0 }

const maxProblems = 20

// ErrNotArchived reports a day without a manifest.
var ErrNotArchived = errors.New("archive: day not archived")

// Verify compares an archived day with InfluxDB: the objects against the
// manifest (names, sizes, checksums, rows, nothing extra), then every row
// against the minute InfluxDB holds — counters exactly, sketches by their
// registers and bins (not their bytes) — and the day's counters as a
// whole, so a minute in InfluxDB that the archive lacks is found too.
// Differences are returned in the result; the error is for what stopped
// the check.
func (a *Archiver) Verify(ctx context.Context, day time.Time) (VerifyResult, error) {
	start := time.Now()
	ds := dayString(day)
	res := VerifyResult{Day: ds}
	problem := func(format string, args ...any) {
		if len(res.Problems) < maxProblems {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		} else if len(res.Problems) == maxProblems {
			res.Problems = append(res.Problems, "… and more")
		}
	}
	m, err := a.Manifest(ctx, ds)
	if errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("%w: %s", ErrNotArchived, ds)
	}
	if err != nil {
		return res, err
	}
	res.Rows, res.Campaigns = m.Counters.Rows, m.Campaigns
	keys, err := a.o.Store.List(ctx, dayPrefix(ds))
	if err != nil {
		return res, err
	}
	want := map[string]bool{manifestKey(ds): true}
	for _, p := range m.Parts {
		want[dayPrefix(ds)+p.Name] = true
	}
	for _, k := range keys {
		if !want[k] {
			problem("object %s is not in the manifest (queries over the day would read it)", k)
		}
		delete(want, k)
	}
	for k := range want {
		problem("object %s is missing", k)
	}

	from, to := day.UTC(), day.UTC().Add(24*time.Hour)
	now, err := a.scan(ctx, from, to)
	if err != nil {
		return res, err
	}
	if now.fp != m.Counters {
		problem("InfluxDB's counters of the day differ from the archive's: %+v, archive %+v", now.fp, m.Counters)
	}

	tmp, err := os.MkdirTemp(a.o.TempDir, "tally-archive-verify-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	var (
		back     fingerprinter
		campaign string
		pending  = map[sketch.Key]Row{}
		started  bool
	)
	// Rows are sorted by campaign across parts: compare one campaign at
	// a time, so memory holds one campaign-day.
	flush := func() error {
		if !started {
			return nil
		}
		err := a.o.Source.EachMinute(ctx, Query{Campaign: campaign, From: from, To: to}, func(mi Minute) error {
			k := sketch.Key{Series: mi.Series, Minute: mi.Minute}
			got, ok := pending[k]
			if !ok {
				problem("InfluxDB has %s minute %s, the archive does not", mi.Series, time.Unix(mi.Minute, 0).UTC().Format(time.RFC3339))
				return nil
			}
			delete(pending, k)
			r, err := toRow(mi)
			if err != nil {
				return err
			}
			if countersHash(&r) != countersHash(&got) {
				problem("%s minute %s: counters differ: InfluxDB %d events, %d value, %d cost, %d bots; archive %d, %d, %d, %d",
					mi.Series, time.Unix(mi.Minute, 0).UTC().Format(time.RFC3339), r.Events, r.ValueMicros, r.CostMicros, r.Bots,
					got.Events, got.ValueMicros, got.CostMicros, got.Bots)
			}
			same, err := sketchesEqual(&r, &got)
			if err != nil {
				problem("%s minute %s: sketches: %v", mi.Series, time.Unix(mi.Minute, 0).UTC().Format(time.RFC3339), err)
			} else if !same {
				problem("%s minute %s: sketches differ", mi.Series, time.Unix(mi.Minute, 0).UTC().Format(time.RFC3339))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("archive: verify campaign %q of %s: %w", campaign, ds, err)
		}
		for k := range pending {
			problem("the archive has %s minute %s, InfluxDB does not", k.Series, time.Unix(k.Minute, 0).UTC().Format(time.RFC3339))
		}
		clear(pending)
		return nil
	}
	for _, p := range m.Parts {
		err := a.readPart(ctx, ds, p, tmp, func(r *Row) error {
			back.add(r)
			if !started || r.Campaign != campaign {
				if started && r.Campaign < campaign {
					return fmt.Errorf("%w: %s: rows out of order (campaign %q after %q)", ErrDamaged, p.Name, r.Campaign, campaign)
				}
				if err := flush(); err != nil {
					return err
				}
				campaign, started = r.Campaign, true
			}
			row := *r
			row.HLL, row.Quantiles = cloneBytes(r.HLL), cloneBytes(r.Quantiles)
			row.BotsByReason, row.Votes = append([]BotCount(nil), r.BotsByReason...), append([]VoteCount(nil), r.Votes...)
			pending[sketch.Key{Series: r.series(), Minute: r.Minute / 1000}] = row
			return nil
		})
		if errors.Is(err, ErrDamaged) || errors.Is(err, os.ErrNotExist) {
			problem("%v", err)
			res.Duration = time.Since(start)
			return res, nil
		}
		if err != nil {
			return res, err
		}
	}
	if err := flush(); err != nil {
		return res, err
	}
	if got := back.result(); got != m.Counters {
		problem("the parts' rows fingerprint as %+v, the manifest says %+v", got, m.Counters)
	}
	res.Duration = time.Since(start)
	return res, nil
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// RestoreResult describes one restored day.
type RestoreResult struct {
	Day  string
	Rows int64
	// Skipped is true when InfluxDB already held the day as archived.
	Skipped  bool
	Duration time.Duration
}

// ErrDayDiffers reports a restore into an InfluxDB that holds other data
// for the day.
var ErrDayDiffers = errors.New("archive: InfluxDB holds different data for the day")

// restoreBatch is how many minutes go to the sink at once.
const restoreBatch = 5000

// Restore writes an archived day back to the sink (InfluxDB's merged
// minutes) exactly: counters as archived, sketches decoded from the
// archived bytes. Parts are checked against the manifest before a row is
// written. A day InfluxDB already holds with the archive's counters is
// skipped; one it holds with other counters is refused unless overwrite
// (then the archived minutes replace theirs, and minutes the archive
// lacks stay). After writing, the day's counters in InfluxDB must equal
// the manifest's.
func (a *Archiver) Restore(ctx context.Context, day time.Time, overwrite bool) (RestoreResult, error) {
	start := time.Now()
	ds := dayString(day)
	res := RestoreResult{Day: ds}
	if a.o.Sink == nil {
		return res, errors.New("archive: restore needs a sink")
	}
	m, err := a.Manifest(ctx, ds)
	if errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("%w: %s", ErrNotArchived, ds)
	}
	if err != nil {
		return res, err
	}
	from, to := day.UTC(), day.UTC().Add(24*time.Hour)
	before, err := a.scan(ctx, from, to)
	if err != nil {
		return res, err
	}
	switch {
	case before.fp == m.Counters && !overwrite:
		res.Skipped, res.Rows, res.Duration = true, m.Counters.Rows, time.Since(start)
		return res, nil
	case before.fp.Rows > 0 && before.fp != m.Counters && !overwrite:
		return res, fmt.Errorf("%w: %s: InfluxDB has %+v, the archive %+v (restore with overwrite to replace them)",
			ErrDayDiffers, ds, before.fp, m.Counters)
	}
	tmp, err := os.MkdirTemp(a.o.TempDir, "tally-archive-restore-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	batch := make([]Minute, 0, restoreBatch)
	write := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := a.o.Sink.WriteMinutes(ctx, batch); err != nil {
			return fmt.Errorf("archive: restore %s: %w", ds, err)
		}
		res.Rows += int64(len(batch))
		batch = batch[:0]
		return nil
	}
	for _, p := range m.Parts {
		err := a.readPart(ctx, ds, p, tmp, func(r *Row) error {
			mi, err := toMinute(*r)
			if err != nil {
				return err
			}
			batch = append(batch, mi)
			if len(batch) == restoreBatch {
				return write()
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	if err := write(); err != nil {
		return res, err
	}
	after, err := a.scan(ctx, from, to)
	if err != nil {
		return res, err
	}
	if after.fp != m.Counters {
		return res, fmt.Errorf("archive: after restoring %s InfluxDB's counters are %+v, the archive's %+v", ds, after.fp, m.Counters)
	}
	res.Duration = time.Since(start)
	a.log.Info("day restored", "day", ds, "rows", res.Rows, "took", res.Duration.Round(time.Millisecond))
	return res, nil
}

package influx

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/query"
)

// Retention policies per resolution (InfluxDB 1.x, through InfluxQL), and
// the rollups' "since" mark.

// policy is one retention policy as SHOW RETENTION POLICIES lists it.
type policy struct {
	name     string
	duration time.Duration // 0: infinite
}

// policies lists the retention policies of db (ok false: no such
// database).
func (r *Reader) policies(ctx context.Context, db string) (ps []policy, ok bool, err error) {
	dbs, err := r.showColumn(ctx, "SHOW DATABASES")
	if err != nil {
		return nil, false, err
	}
	for _, d := range dbs {
		ok = ok || d == db
	}
	if !ok {
		return nil, false, nil
	}
	err = r.influxQL(ctx, http.MethodGet, "SHOW RETENTION POLICIES ON "+influxQLIdent(db), "", "", 0,
		func(_ *v1Series, _ int64, vals map[string]any) error {
			name, _ := vals["name"].(string)
			s, _ := vals["duration"].(string)
			d, perr := time.ParseDuration(s)
			if perr != nil {
				return fmt.Errorf("retention policy %q: duration %q: %w", name, s, perr)
			}
			ps = append(ps, policy{name: name, duration: d})
			return nil
		})
	return ps, true, err
}

// influxQLDuration is d as an InfluxQL duration literal (INF for 0).
func influxQLDuration(d time.Duration) string {
	if d <= 0 {
		return "INF"
	}
	if d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// shardDuration is the shard group duration InfluxDB 1.x gives a policy
// of duration d by default: 1h below 2 days, 1 day up to 6 months, 7 days
// beyond and for infinite ones. Altering a policy's duration sets it
// again, because InfluxDB refuses a duration shorter than the shard
// group's.
func shardDuration(d time.Duration) time.Duration {
	switch {
	case d <= 0 || d > 180*24*time.Hour:
		return 7 * 24 * time.Hour
	case d >= 2*24*time.Hour:
		return 24 * time.Hour
	}
	return time.Hour
}

// setupRetention makes the retention policy of each bucket keep its
// points as long as Config.Retention says: it creates the policies of the
// contributions, hours and days buckets when they are missing (and create
// is true), and alters a policy whose duration differs. The minutes'
// policy is shortened only when no minute point is older than the new
// duration would keep (what an older policy kept has no rollups yet);
// otherwise Setup logs why it left it. Without create, a differing
// duration is logged and left, and a missing bucket is an error.
func (r *Reader) setupRetention(ctx context.Context, info *ServerInfo, create bool, where string) error {
	c := r.cfg
	for _, b := range []struct {
		kind   string
		bucket string
		keep   time.Duration
	}{{"minutes", c.Bucket, c.Retention.Minutes}, {"contributions", c.ContribBucket, c.Retention.Contributions},
		{"hours", c.HoursBucket, c.Retention.Hours}, {"days", c.DaysBucket, c.Retention.Days}} {
		db, rp := splitBucket(b.bucket)
		if db == "" || rp == "" {
			if b.kind != "minutes" {
				return setupErr(SettingBucket, "%s: the %s bucket %q names no retention policy: want \"database/retention-policy\"", where, b.kind, b.bucket)
			}
			r.log.Info("the minutes bucket names no retention policy; its retention is left as it is", "policy", b.bucket)
			continue
		}
		ps, dbOK, err := r.policies(ctx, db)
		if err != nil {
			if temporary(err) {
				return setupErr(SettingURL, "%s: listing the retention policies of database %q failed (check %s; retrying): %v", where, db, SettingURL, err)
			}
			return setupErr(SettingToken, "%s: cannot list the retention policies of database %q for the user of %s: %v", where, db, SettingToken, err)
		}
		var have *policy
		for i := range ps {
			if ps[i].name == rp {
				have = &ps[i]
			}
		}
		var stmts []string
		switch {
		case have == nil:
			if !dbOK {
				stmts = append(stmts, "CREATE DATABASE "+influxQLIdent(db))
			}
			stmts = append(stmts, fmt.Sprintf("CREATE RETENTION POLICY %s ON %s DURATION %s REPLICATION 1 SHARD DURATION %s",
				influxQLIdent(rp), influxQLIdent(db), influxQLDuration(b.keep), influxQLDuration(shardDuration(b.keep))))
			if !create {
				return setupErr(SettingCreateBucket, "%s has no retention policy %q on database %q for the %s and %s is false: create it (%s), or set %s: true",
					where, rp, db, b.kind, SettingCreateBucket, stmts[len(stmts)-1], SettingCreateBucket)
			}
		case have.duration == max(b.keep, 0):
			continue
		default:
			stmt := fmt.Sprintf("ALTER RETENTION POLICY %s ON %s DURATION %s SHARD DURATION %s", influxQLIdent(rp), influxQLIdent(db),
				influxQLDuration(b.keep), influxQLDuration(shardDuration(b.keep)))
			if !create {
				r.log.Warn("a retention policy keeps points for another time than configured; left as it is ("+SettingCreateBucket+" is false)",
					"policy", b.bucket, "keeps", have.duration.String(), "configured", b.keep.String(), "statement", stmt)
				continue
			}
			shorter := b.keep > 0 && (have.duration == 0 || b.keep < have.duration)
			if b.kind == "minutes" && shorter {
				older, err := r.minutesBefore(ctx, time.Now().Add(-b.keep))
				if err != nil {
					if temporary(err) {
						return setupErr(SettingURL, "%s: reading the oldest minutes failed (check %s; retrying): %v", where, SettingURL, err)
					}
					return setupErr(SettingBucket, "%s: reading the oldest minutes of %q failed: %v", where, b.bucket, err)
				}
				if older {
					r.log.Warn("the minutes' retention policy is left longer than configured: it holds minutes older than that, "+
						"stored before rollups existed, which only they answer", "policy", b.bucket, "keeps", have.duration.String(),
						"configured", b.keep.String(), "statement", stmt)
					continue
				}
			}
			stmts = append(stmts, stmt)
		}
		for _, stmt := range stmts {
			err := r.influxQL(ctx, http.MethodPost, stmt, "", "", 0, func(*v1Series, int64, map[string]any) error { return nil })
			if err != nil {
				if temporary(err) {
					return setupErr(SettingURL, "%s: %s failed (check %s; retrying): %v", where, stmt, SettingURL, err)
				}
				return setupErr(SettingToken, "%s refused %s for the user of %s: %v; run it as an admin, or give %s an admin's credentials",
					where, stmt, SettingToken, err, SettingToken)
			}
			r.log.Info("set up a retention policy", "policy", b.bucket, "keeps", influxQLDuration(b.keep), "statement", stmt)
			info.Policies = append(info.Policies, stmt)
		}
	}
	return nil
}

// minutesBefore reports whether the minutes bucket holds a merged minute
// before t (InfluxQL).
func (r *Reader) minutesBefore(ctx context.Context, t time.Time) (bool, error) {
	db, rp := splitBucket(r.cfg.Bucket)
	stmt := fmt.Sprintf("SELECT %s FROM %s WHERE time < %s LIMIT 1", influxQLIdent(FieldCount), influxQLIdent(MeasurementMinute), influxQLTime(t))
	found := false
	err := r.influxQL(ctx, http.MethodGet, stmt, db, rp, 0, func(*v1Series, int64, map[string]any) error {
		found = true
		return nil
	})
	return found, err
}

// MeasurementSince holds the rollups' since mark, in the days bucket: one
// point (field FieldSince, unix seconds), rewritten with the same value at
// the time of writing so that it outlives any retention of the bucket.
const MeasurementSince = "tally_rollup_since"

// FieldSince is the since mark's field.
const FieldSince = "since"

// WriteSince writes the since mark (see package rollup) at time at.
func (w *Writer) WriteSince(ctx context.Context, since int64, at time.Time) error {
	b := []byte(MeasurementSince + " ")
	f := fieldWriter{b: b, first: true}
	f.int(FieldSince, since)
	b = append(f.b, ' ')
	b = strconv.AppendInt(b, at.Unix(), 10)
	b = append(b, '\n')
	refused, err := w.writeLines(ctx, []line{{bucket: w.cfg.DaysBucket, b: b, measurement: MeasurementSince, minute: at.Unix()}}, nil)
	if err == nil && len(refused) > 0 {
		err = fmt.Errorf("influx write since mark: refused: %w", refused[0].Err)
	}
	return err
}

// sinceHorizon is how far into the future reads of the since mark and of
// the latest minute look (event times ahead of the clock).
const sinceHorizon = 7 * 24 * time.Hour

// LoadSince returns the since mark (ok false when there is none).
func (r *Reader) LoadSince(ctx context.Context) (since int64, ok bool, err error) {
	return r.latest(ctx, r.cfg.DaysBucket, MeasurementSince, FieldSince, true)
}

// LatestMinute returns the start of the latest merged minute stored (ok
// false when there is none).
func (r *Reader) LatestMinute(ctx context.Context) (minute int64, ok bool, err error) {
	return r.latest(ctx, r.cfg.Bucket, MeasurementMinute, FieldCount, false)
}

// latest finds the latest point of one field of a measurement in a
// bucket, over all time up to sinceHorizon ahead, and returns its value
// (value true) or its time.
func (r *Reader) latest(ctx context.Context, bucket, measurement, field string, value bool) (int64, bool, error) {
	lang, err := r.language(ctx)
	if err != nil {
		return 0, false, err
	}
	from, to := time.Unix(0, 0), time.Now().Add(sinceHorizon)
	var (
		best   int64
		bestAt int64
		found  bool
	)
	take := func(t int64, v any) {
		n, err := intValue(v)
		if err != nil {
			return
		}
		if !found || t > bestAt {
			best, bestAt, found = n, t, true
		}
	}
	if lang == QueryFlux {
		pred := `r._measurement == "` + measurement + `" and r._field == "` + field + `"`
		err = r.runFlux(ctx, fluxFrom(bucket, from, to, pred)+"\n  |> last()", func(rec *query.FluxRecord) {
			take(rec.Time().Unix(), rec.Value())
		})
	} else {
		db, rp := splitBucket(bucket)
		stmt := fmt.Sprintf("SELECT last(%s) FROM %s WHERE time >= %s AND time < %s", influxQLIdent(field), influxQLIdent(measurement),
			influxQLTime(from), influxQLTime(to))
		err = r.influxQL(ctx, http.MethodGet, stmt, db, rp, 0, func(_ *v1Series, t int64, vals map[string]any) error {
			take(t, vals["last"])
			return nil
		})
	}
	if err != nil {
		return 0, false, fmt.Errorf("influx latest %s.%s in %s: %w", measurement, field, bucket, err)
	}
	if !value {
		best = bestAt
	}
	return best, found, nil
}

package influx

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// BucketUsage is what one bucket holds: bytes on disk (TSM files and
// WAL, as the server's shard statistics count them) and points of its
// measurement.
type BucketUsage struct {
	// Kind is "minutes", "contributions", "hours" or "days".
	Kind   string
	Bucket string
	Bytes  int64
	Points int64
}

// Usage is the storage report: every bucket's usage and the events its
// merged minutes count.
type Usage struct {
	Buckets []BucketUsage
	Events  int64
}

// Usage reads what each bucket holds on disk (SHOW STATS: shard
// diskBytes plus the WAL's segments) and how many points it holds, and
// the events the minutes count, over everything stored. It needs
// InfluxQL (InfluxDB 1.x: SHOW STATS is per server, and only 1.x lays
// out a bucket as a database and retention policy).
func (r *Reader) Usage(ctx context.Context) (Usage, error) {
	var u Usage
	bytes := map[string]int64{} // "db/rp"
	for _, stmt := range []string{"SHOW STATS FOR 'shard'", "SHOW STATS FOR 'tsm1_wal'"} {
		err := r.influxQL(ctx, http.MethodGet, stmt, "", "", 0, func(s *v1Series, _ int64, vals map[string]any) error {
			key := s.Tags["database"] + "/" + s.Tags["retentionPolicy"]
			for _, f := range []string{"diskBytes", "currentSegmentDiskBytes", "oldSegmentsDiskBytes"} {
				if v, ok := vals[f]; ok && v != nil {
					if n, err := intValue(v); err == nil {
						bytes[key] += n
					}
				}
			}
			return nil
		})
		if err != nil {
			return u, fmt.Errorf("influx usage: %s: %w", stmt, err)
		}
	}
	c := r.cfg
	to := time.Now().Add(sinceHorizon)
	for _, b := range []struct{ kind, bucket, measurement string }{{"minutes", c.Bucket, MeasurementMinute},
		{"contributions", c.ContribBucket, MeasurementContrib}, {"hours", c.HoursBucket, MeasurementMinute},
		{"days", c.DaysBucket, MeasurementMinute}} {
		db, rp := splitBucket(b.bucket)
		bu := BucketUsage{Kind: b.kind, Bucket: b.bucket, Bytes: bytes[db+"/"+rp]}
		fields := "count(" + influxQLIdent(FieldCount) + ")"
		if b.kind == "minutes" {
			fields += ", sum(" + influxQLIdent(FieldCount) + ")"
		}
		stmt := fmt.Sprintf("SELECT %s FROM %s WHERE time >= %s AND time < %s", fields, influxQLIdent(b.measurement),
			influxQLTime(time.Unix(0, 0)), influxQLTime(to))
		err := r.influxQL(ctx, http.MethodGet, stmt, db, rp, 0, func(_ *v1Series, _ int64, vals map[string]any) error {
			if n, err := intValue(vals["count"]); err == nil {
				bu.Points = n
			}
			if n, err := intValue(vals["sum"]); err == nil {
				u.Events = n
			}
			return nil
		})
		if err != nil {
			return u, fmt.Errorf("influx usage: count the points of %s: %w", b.bucket, err)
		}
		u.Buckets = append(u.Buckets, bu)
	}
	return u, nil
}

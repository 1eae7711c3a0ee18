package influx

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// TestInfluxDB18Quirks pins down behaviour of InfluxDB 1.8.10 that this
// package works around (README.md, "InfluxDB 1.8 caveats"). If a server
// upgrade changes one, this test says which workaround to revisit.
func TestInfluxDB18Quirks(t *testing.T) {
	ctx := ctxT(t)
	cfg := freshBucket(t)

	t.Run("missing retention policy answers 500", func(t *testing.T) {
		c := cfg
		c.Bucket = c.Bucket[:len(c.Bucket)-len("rp")] + "norp"
		c.RetryInitial, c.RetryMax, c.MaxElapsed = 10*time.Millisecond, 50*time.Millisecond, 300*time.Millisecond
		w, r := newPair(t, c)
		err := w.Write(ctx, onePoint(), nil)
		var rerr *RetryableError
		if !errors.As(err, &rerr) || rerr.StatusCode != http.StatusInternalServerError {
			t.Fatalf("Write to a missing retention policy = %v, want a retried 500", err)
		}
		if err := r.CheckBucket(ctx); !errors.Is(err, ErrBucketNotFound) {
			t.Fatalf("CheckBucket = %v, want ErrBucketNotFound", err)
		}
	})

	t.Run("range stop is inclusive", func(t *testing.T) {
		w, r := newPair(t, cfg)
		pts := []sketch.Minute{
			{Series: sketch.Series{Campaign: "q"}, Minute: baseMinute, State: &sketch.State{Count: 1}},
			{Series: sketch.Series{Campaign: "q"}, Minute: baseMinute + 60, State: &sketch.State{Count: 2}},
		}
		if err := w.Write(ctx, pts, nil); err != nil {
			t.Fatalf("Write: %v", err)
		}
		raw := rawFlux(t, ctx, r, fmt.Sprintf(`from(bucket: %s) |> range(start: %s, stop: %s)
		  |> filter(fn: (r) => r._measurement == "tally" and r._field == "count")`,
			fluxString(cfg.Bucket), fluxTime(time.Unix(baseMinute, 0)), fluxTime(time.Unix(baseMinute+60, 0))))
		if len(raw) != 2 {
			t.Fatalf("raw range [m0, m1] returned %d points; 1.8 returns 2 (stop inclusive). Revisit fluxFrom's stop-1ns.", len(raw))
		}
		got, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "q", From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)})
		if err != nil || len(got) != 1 || got[0].Minute != baseMinute {
			t.Fatalf("QueryMinutes [m0, m1) = %+v, %v; want only m0", got, err)
		}
	})
}

// rawFlux runs Flux and returns each record's values.
func rawFlux(t *testing.T, ctx context.Context, r *Reader, flux string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	res, err := r.query.Query(ctx, flux)
	if err != nil {
		t.Fatalf("query %s: %v", flux, err)
	}
	defer res.Close()
	for res.Next() {
		rows = append(rows, res.Record().Values())
	}
	if res.Err() != nil {
		t.Fatalf("read query %s: %v", flux, res.Err())
	}
	return rows
}

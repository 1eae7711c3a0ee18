package influx

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/sketch"
)

// TestIsolationFindsRefusedPointsInLogRequests: a server that refuses
// every request holding a bad point; WriteIsolating finds exactly the
// bad ones, with about log2(n) extra requests each, and stops at a
// refusal that is not about points.
func TestIsolationFindsRefusedPointsInLogRequests(t *testing.T) {
	var requests atomic.Int64
	var (
		mu      sync.Mutex
		written = map[string]bool{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), "source=bad") {
			w.Header().Set("X-Influxdb-Error", "partial write: points beyond retention policy dropped=1")
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			written[l] = true
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w := newTestWriter(t, fastConfig(srv.URL))
	var ms []sketch.Minute
	for i := range 256 {
		src := fmt.Sprintf("ok-%d", i)
		if i == 7 || i == 200 {
			src = "bad"
		}
		ms = append(ms, sketch.Minute{Series: sketch.Series{Campaign: "c", Source: src}, Minute: 1_700_000_040 + int64(i)*60, State: &sketch.State{Count: 1}})
	}
	refused, err := w.WriteIsolating(context.Background(), ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, r := range refused {
		got = append(got, r.Minute)
		if r.Reason != ReasonRetention {
			t.Fatalf("reason %q", r.Reason)
		}
	}
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	if len(got) != 2 || got[0] != ms[7].Minute || got[1] != ms[200].Minute {
		t.Fatalf("refused minutes %v, want those of points 7 and 200", got)
	}
	mu.Lock()
	n := len(written)
	mu.Unlock()
	if n != 254 {
		t.Fatalf("%d points written, want 254", n)
	}
	// One request, then two bisections of depth 8, sharing the top.
	if n := requests.Load(); n > 1+2*2*8 {
		t.Fatalf("%d requests to isolate 2 points of 256", n)
	}

	// 401 is not about points: nothing is set aside, the call fails.
	deny := newFakeServer(t, status(http.StatusUnauthorized))
	w2 := newTestWriter(t, fastConfig(deny.srv.URL))
	refused, err = w2.WriteIsolating(context.Background(), ms[:10], nil)
	if err == nil || len(refused) != 0 || deny.requests() != 1 {
		t.Fatalf("401: refused %d, err %v, %d requests; want an error, nothing refused, 1 request", len(refused), err, deny.requests())
	}
}

// TestMaxValuesPerTagIsolated: a real InfluxDB with max-values-per-tag 5
// holding five campaigns refuses the points of new ones (it checks the
// values it holds before a request, so the limit shows from the request
// after the one that reached it); the other points are written.
func TestMaxValuesPerTagIsolated(t *testing.T) {
	srv := influxtest.StartWith(t, influxtest.Options{MaxValuesPerTag: 5})
	w, r := newPair(t, Config{URL: srv.URL(), Token: srv.Token(), Bucket: srv.Bucket()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ms []sketch.Minute
	for i := range 8 {
		ms = append(ms, sketch.Minute{Series: sketch.Series{Campaign: fmt.Sprintf("camp-%d", i), Type: "click"}, Minute: baseMinute, State: &sketch.State{Count: 1}})
	}
	if err := w.Write(ctx, ms[:5], nil); err != nil {
		t.Fatal(err)
	}
	for i := range ms {
		ms[i].State = &sketch.State{Count: 2}
	}
	refused, err := w.WriteIsolating(ctx, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(refused) != 3 {
		t.Fatalf("%d refused, want the 3 campaigns beyond the limit: %+v", len(refused), refused)
	}
	for _, rf := range refused {
		if rf.Reason != ReasonValuesPerTag {
			t.Fatalf("refusal %+v", rf)
		}
	}
	got, err := r.QueryMinutes(ctx, MinuteQuery{AllCampaigns: true, From: time.Unix(baseMinute, 0), To: time.Unix(baseMinute+60, 0)})
	if err != nil || len(got) != 5 {
		t.Fatalf("%d minutes stored (%v), want 5", len(got), err)
	}
	for _, m := range got {
		if m.State.Count != 2 {
			t.Fatalf("campaign %s holds count %d, want the rewrite's 2", m.Series.Campaign, m.State.Count)
		}
	}
}

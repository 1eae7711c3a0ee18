package links

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/internal/harness"
)

// liveLag follows the aggregator's live stream (/api/v1/stream) during a
// live burst and measures the live view's lag behind the agent: for each
// post, how long after the agent accepted its events the stream first
// showed a total that includes them. The stream carries the agent's live
// counters (issue 15) ahead of its batches, so this is what a dashboard
// sees while the batch backlog on a thin link is long.
type liveLag struct {
	mu     sync.Mutex
	latest map[string]map[int64]uint64 // campaign → minute → events shown
	marks  []lagMark                   // posted totals not yet shown, in order
	lags   []time.Duration
	done   chan struct{}
}

// lagMark is the total of events accepted by the end of one post.
type lagMark struct {
	total uint64
	at    time.Time
}

// watchLiveLag subscribes to hostport's stream until the test ends.
func watchLiveLag(t *testing.T, hostport string) *liveLag {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostport+"/api/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+harness.DefaultAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	l := &liveLag{latest: map[string]map[int64]uint64{}, done: make(chan struct{})}
	t.Cleanup(func() { cancel(); <-l.done })
	go func() {
		defer close(l.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var msg struct {
				Updates []live.Update `json:"updates"`
			}
			if json.Unmarshal([]byte(data), &msg) != nil || len(msg.Updates) == 0 {
				continue // status events
			}
			l.shown(msg.Updates, time.Now())
		}
	}()
	return l
}

// shown takes the updates of one stream message.
func (l *liveLag) shown(us []live.Update, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range us {
		if l.latest[u.Campaign] == nil {
			l.latest[u.Campaign] = map[int64]uint64{}
		}
		k := u.KPIs
		l.latest[u.Campaign][u.Minute] = k.Impressions + k.Clicks + k.Conversions + k.Pageviews + k.BotsFiltered
	}
	var total uint64
	for _, minutes := range l.latest {
		for _, n := range minutes {
			total += n
		}
	}
	i := 0
	for ; i < len(l.marks) && l.marks[i].total <= total; i++ {
		l.lags = append(l.lags, at.Sub(l.marks[i].at))
	}
	l.marks = l.marks[i:]
}

// posted records that the agent has accepted total events by at.
func (l *liveLag) posted(total uint64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.marks = append(l.marks, lagMark{total: total, at: at})
}

// summary returns the lags measured, sorted, and how many posts the
// stream has not shown yet.
func (l *liveLag) summary() (lags []time.Duration, unseen int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lags = slices.Clone(l.lags)
	slices.Sort(lags)
	return lags, len(l.marks)
}

// quantile returns the q-quantile of sorted lags (0 for none).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

package live

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/aggregator/kpi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// event is one parsed SSE event; comment holds a ": ..." line instead.
type event struct {
	name, id, data, comment string
	at                      time.Time
}

// sseClient reads a real HTTP response as SSE, the way a browser does.
type sseClient struct {
	resp   *http.Response
	events chan event
	done   chan struct{}
}

func connect(t *testing.T, url, lastEventID string) *sseClient {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream answered %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	c := &sseClient{resp: resp, events: make(chan event, 1000), done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c
}

func (c *sseClient) read() {
	defer close(c.done)
	defer close(c.events)
	sc := bufio.NewScanner(c.resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var ev event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.name != "" || ev.comment != "" {
				ev.at = time.Now()
				c.events <- ev
			}
			ev = event{}
		case strings.HasPrefix(line, ": "):
			ev.comment = line[2:]
		case strings.HasPrefix(line, "event: "):
			ev.name = line[7:]
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		}
	}
}

func (c *sseClient) close() {
	c.resp.Body.Close()
	<-c.done
}

// next returns the next event that is not a comment.
func (c *sseClient) next(t *testing.T) event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("stream ended")
			}
			if ev.comment == "" {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event within 10s")
		}
	}
}

func updatesOf(t *testing.T, ev event) []Update {
	t.Helper()
	var m Message
	if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
		t.Fatalf("event %s data %q: %v", ev.name, ev.data, err)
	}
	return m.Updates
}

// serve starts a real HTTP server streaming the hub with scope.
func serve(t *testing.T, h *Hub, scope Scope) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.Serve(w, r, scope, Status{Node: "agg-1", Members: 1})
	}))
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return srv
}

func all(string) bool { return true }

func upd(c string, minute int64, clicks uint64) Update {
	return Update{Campaign: c, Minute: minute, KPIs: kpi.KPIs{Clicks: clicks}}
}

func nowMinute() int64 { m := time.Now().Unix(); return m - m%60 }

func TestSnapshotThenResume(t *testing.T) {
	h := NewHub(HubConfig{Interval: 20 * time.Millisecond}, nil)
	srv := serve(t, h, all)
	m := nowMinute()
	h.Publish([]Update{upd("a", m, 1), upd("a", m-7200, 9)}) // the second is outside the window

	c := connect(t, srv.URL, "")
	if ev := c.next(t); ev.name != "status" || !strings.Contains(ev.data, `"node":"agg-1"`) {
		t.Fatalf("first event %+v, want status", ev)
	}
	snap := c.next(t)
	if got := updatesOf(t, snap); snap.name != "snapshot" || len(got) != 1 || got[0] != upd("a", m, 1) {
		t.Fatalf("snapshot %+v", snap)
	}
	h.Publish([]Update{upd("a", m-60, 2)})
	ev := c.next(t)
	if got := updatesOf(t, ev); ev.name != "minutes" || len(got) != 1 || got[0] != upd("a", m-60, 2) || ev.id <= snap.id {
		t.Fatalf("minutes %+v after snapshot id %s", ev, snap.id)
	}
	c.close()

	// While the client is away: one minute changes, one is new, one is
	// published again unchanged.
	h.Publish([]Update{upd("a", m, 5), upd("b", m, 1), upd("a", m-60, 2)})
	r := connect(t, srv.URL, ev.id)
	r.next(t) // status
	resumed := r.next(t)
	want := []Update{upd("a", m, 5), upd("b", m, 1)}
	if got := updatesOf(t, resumed); resumed.name != "minutes" || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resume from %s: %+v, want minutes %v", ev.id, resumed, want)
	}

	// An id this hub never issued (another node, an older process) gets a
	// fresh snapshot of everything.
	for _, id := range []string{"5", "not-a-number", "18446744073709551615"} {
		o := connect(t, srv.URL, id)
		o.next(t)
		snap := o.next(t)
		if got := updatesOf(t, snap); snap.name != "snapshot" || len(got) != 3 {
			t.Fatalf("Last-Event-ID %s: %+v, want a snapshot of 3", id, snap)
		}
		o.close()
	}
}

func TestAtMostOneMessagePerSecond(t *testing.T) {
	h := NewHub(HubConfig{}, nil) // Interval 1s
	srv := serve(t, h, all)
	m := nowMinute()
	c := connect(t, srv.URL, "")
	c.next(t) // status
	c.next(t) // snapshot (empty)

	// 30 publishes over ~2.4 s, each changing minute m and one other.
	for i := 1; i <= 30; i++ {
		h.Publish([]Update{upd("a", m, uint64(i)), upd("a", m-int64(i%5)*60-60, uint64(i))})
		time.Sleep(80 * time.Millisecond)
	}
	var msgs []event
	deadline := time.After(4 * time.Second)
collect:
	for {
		select {
		case ev := <-c.events:
			if ev.name == "minutes" {
				msgs = append(msgs, ev)
				if us := updatesOf(t, ev); len(us) > 0 && us[len(us)-1] == upd("a", m, 30) {
					break collect
				}
			}
		case <-deadline:
			t.Fatalf("the final state of minute %d never arrived; got %d messages", m, len(msgs))
		}
	}
	if len(msgs) < 2 || len(msgs) > 5 {
		t.Fatalf("%d messages for 30 publishes over 2.4 s, want 2 to 5", len(msgs))
	}
	// Messages are due a second apart; receipt times also carry delivery
	// jitter, hence the margin (unlimited, they would be 80 ms apart).
	for i := 1; i < len(msgs); i++ {
		if gap := msgs[i].at.Sub(msgs[i-1].at); gap < 700*time.Millisecond {
			t.Fatalf("messages %d and %d only %s apart", i-1, i, gap)
		}
	}
	for _, ev := range msgs {
		seen := map[[2]any]bool{}
		for _, u := range updatesOf(t, ev) {
			k := [2]any{u.Campaign, u.Minute}
			if seen[k] {
				t.Fatalf("campaign-minute %v twice in one message: %s", k, ev.data)
			}
			seen[k] = true
		}
	}
}

// TestOwnersOfOneSecondShareAMessage: agents send live counters on the
// second, and the owners of different campaigns publish them a few
// milliseconds apart; a subscriber gets them in one message, in the slot
// Gather past the second, every second, rather than the later ones a
// second late — even after an update published off that phase (a write
// round's) has gone out.
func TestOwnersOfOneSecondShareAMessage(t *testing.T) {
	h := NewHub(HubConfig{}, nil) // Interval 1s, Gather 200ms
	srv := serve(t, h, all)
	m := nowMinute()
	c := connect(t, srv.URL, "")
	c.next(t) // status
	c.next(t) // snapshot (empty)
	minutes := func() event {
		t.Helper()
		ev := c.next(t)
		for ev.name != "minutes" {
			ev = c.next(t)
		}
		return ev
	}
	// Off phase: half a second past the second.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1500 * time.Millisecond)))
	h.Publish([]Update{upd("w", m, 1)})
	minutes()
	for round := uint64(1); round <= 3; round++ {
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
		h.Publish([]Update{upd("a", m, round)})
		time.Sleep(40 * time.Millisecond)
		h.Publish([]Update{upd("b", m, round)})
		ev := minutes()
		if us := updatesOf(t, ev); len(us) != 2 || us[0] != upd("a", m, round) || us[1] != upd("b", m, round) {
			t.Fatalf("round %d: message %s, want both owners' updates of the second", round, ev.data)
		}
		if late := ev.at.Sub(ev.at.Truncate(time.Second)); late > 400*time.Millisecond {
			t.Fatalf("round %d: the message came %s past the second", round, late)
		}
	}
}

func TestHeartbeat(t *testing.T) {
	h := NewHub(HubConfig{Heartbeat: 30 * time.Millisecond}, nil)
	c := connect(t, serve(t, h, all).URL, "")
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-c.events:
			if ev.comment == "ping" {
				return
			}
		case <-timeout:
			t.Fatal("no heartbeat")
		}
	}
}

func TestViewerSeesOnlyItsCampaigns(t *testing.T) {
	h := NewHub(HubConfig{Interval: 10 * time.Millisecond}, nil)
	srv := serve(t, h, func(c string) bool { return c == "mine" })
	m := nowMinute()
	h.Publish([]Update{upd("mine", m, 1), upd("theirs", m, 1)})
	c := connect(t, srv.URL, "")
	c.next(t)
	if got := updatesOf(t, c.next(t)); len(got) != 1 || got[0].Campaign != "mine" {
		t.Fatalf("snapshot %v", got)
	}
	for i := 2; i < 10; i++ {
		h.Publish([]Update{upd("theirs", m, uint64(i))})
	}
	h.Publish([]Update{upd("mine", m, 2)})
	for _, u := range updatesOf(t, c.next(t)) {
		if u.Campaign != "mine" {
			t.Fatalf("viewer got %v", u)
		}
	}
}

// stalledClient sends a stream request and never reads the answer.
func stalledClient(t *testing.T, url string) net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(url, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestSlowClientDroppedWithoutBlockingPublish(t *testing.T) {
	for _, tc := range []struct {
		reason string
		cfg    HubConfig
	}{
		{DropBuffer, HubConfig{Interval: 5 * time.Millisecond, Buffer: 20000, WriteTimeout: time.Hour}},
		{DropWrite, HubConfig{Interval: 5 * time.Millisecond, Buffer: 1 << 30, WriteTimeout: time.Second}},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			h := NewHub(tc.cfg, reg)
			srv := serve(t, h, all)
			good := connect(t, srv.URL, "")
			stalledClient(t, srv.URL)
			for h.Subscribers() < 2 {
				time.Sleep(time.Millisecond)
			}
			// A well-behaved client drains its stream meanwhile.
			var wg sync.WaitGroup
			ctx, stop := context.WithCancel(context.Background())
			wg.Go(func() {
				for {
					select {
					case <-good.events:
					case <-ctx.Done():
						return
					}
				}
			})
			// Each publish changes 200 campaign-minutes (~25 KB a message),
			// new ones each time (the good client may fall 100 publishes
			// behind before its buffer is full), until the stalled client's socket
			// buffers are full and the hub drops it. Publish must return
			// every time.
			m := nowMinute()
			dropped := func() float64 { return testutil.ToFloat64(h.metrics.dropped.WithLabelValues(tc.reason)) }
			for i := 0; dropped() == 0; i++ {
				if i == 20000 {
					t.Fatalf("stalled client not dropped after %d publishes", i)
				}
				us := make([]Update, 200)
				for j := range us {
					us[j] = upd(fmt.Sprintf("c%05d", (200*i+j)%50000), m-int64((i+j)%60)*60, uint64(i+1))
				}
				h.Publish(us)
				time.Sleep(5 * time.Millisecond)
			}
			stop()
			wg.Wait()
			if n := h.Subscribers(); n != 1 {
				t.Fatalf("%d subscribers after the drop, want the good one only", n)
			}
			other := map[string]string{DropBuffer: DropWrite, DropWrite: DropBuffer}[tc.reason]
			if n := testutil.ToFloat64(h.metrics.dropped.WithLabelValues(other)); n != 0 {
				t.Fatalf("%v drops counted as %s", n, other)
			}
		})
	}
}

// TestStreamEndsWhenCredentialExpires: a stream opened with a credential
// good until t sends "expired" at t and ends, though the hub keeps
// publishing and heartbeats keep it busy; one without an expiry goes on.
func TestStreamEndsWhenCredentialExpires(t *testing.T) {
	h := NewHub(HubConfig{Interval: 10 * time.Millisecond, Heartbeat: 50 * time.Millisecond}, nil)
	until := time.Now().Add(700 * time.Millisecond)
	ended := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("forever") {
			_ = h.Serve(w, r, all, Status{Node: "agg-1", Members: 1})
			return
		}
		ended <- h.ServeUntil(w, r, all, Status{Node: "agg-1", Members: 1}, until)
	}))
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	expiring, forever := connect(t, srv.URL, ""), connect(t, srv.URL+"?forever", "")
	stop := make(chan struct{})
	defer close(stop)
	go func() { // keep the stream busy past the expiry
		for i := uint64(1); ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				h.Publish([]Update{upd("c", nowMinute(), i)})
			}
		}
	}()
	var last event
	for ev := range expiring.events {
		if ev.comment == "" {
			last = ev
		}
	}
	if last.name != "expired" || last.data != `{"reason":"token_expired"}` || last.at.Before(until) || last.at.After(until.Add(2*time.Second)) {
		t.Fatalf("last event %+v (expiry %v)", last, until)
	}
	if err := <-ended; !errors.Is(err, ErrExpired) {
		t.Fatalf("ServeUntil returned %v", err)
	}
	// The stream without an expiry is still delivering.
	for deadline := time.After(5 * time.Second); ; {
		select {
		case ev := <-forever.events:
			if ev.name == "minutes" && ev.at.After(until) {
				return
			}
		case <-deadline:
			t.Fatal("the stream without an expiry stopped too")
		}
	}
}

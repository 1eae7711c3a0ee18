package live

import (
	"errors"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// Status is the body of the "status" event a stream starts with.
type Status struct {
	Node    string `json:"node"`
	Members int    `json:"members"`
}

// Message is the body of "snapshot" and "minutes" events.
type Message struct {
	Updates []Update `json:"updates"`
}

// Serve streams Server-Sent Events to one client until the client goes
// away, the hub is closed or drops the client for being too slow:
//
//   - "status" with status, then "snapshot" with every campaign-minute of
//     the window in scope, or, when the request's Last-Event-ID is a
//     sequence of this hub, "minutes" with what changed since (nothing
//     when nothing did);
//   - then at most one "minutes" event per Interval with the latest state
//     of each campaign-minute in scope that changed since the previous
//     message;
//   - an "alert" event for every alert transition in scope (its JSON as
//     published, see Alert): at the start those the hub holds (after a
//     resume, those published since the last event id), then as they
//     are published, each key once, ahead of the minutes of the same
//     message;
//   - a ": ping" comment every Heartbeat.
//
// Every snapshot and minutes event has an id: the hub sequence it is
// complete up to. A write that takes longer than WriteTimeout drops the
// client. Serve returns nil when the client or Close ended the stream.
func (h *Hub) Serve(w http.ResponseWriter, r *http.Request, scope Scope, status Status) error {
	return h.ServeUntil(w, r, scope, status, time.Time{})
}

// ErrExpired is returned by ServeUntil when the stream ended because its
// credential expired.
var ErrExpired = errors.New("live: the stream's credential expired")

// ServeUntil is Serve for a client whose credential stops being valid at
// until (zero: never). Then the stream sends
//
//	event: expired
//	data: {"reason":"token_expired"}
//
// and ends with ErrExpired: a stream must not outlive the token that
// opened it, and the event tells the client to sign in again rather than
// reconnect with the same token (which would be refused with 401).
func (h *Hub) ServeUntil(w http.ResponseWriter, r *http.Request, scope Scope, status Status, until time.Time) error {
	var expire <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		expire = t.C
	}
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	lastSeq, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	s, first, alerts, seq, snapshot := h.subscribe(scope, lastSeq, err == nil)
	defer h.unsubscribe(s)

	sw := &sseWriter{w: w, rc: rc, timeout: h.cfg.WriteTimeout}
	w.WriteHeader(http.StatusOK)
	sw.event("status", "", mustJSON(status))
	switch {
	case snapshot:
		sw.updates("snapshot", seq, first)
		h.metrics.messages.Inc()
	case len(first) > 0:
		sw.updates("minutes", seq, first)
		h.metrics.messages.Inc()
	}
	sw.writeAlerts(alerts)
	if err := sw.flush(); err != nil {
		return h.writeFailed(s, err)
	}
	// slot is when the last minutes message was due. The snapshot does
	// not start the clock (it is not a minutes event): otherwise every
	// client's messages would lag publishes by however far its connect
	// time was from their phase.
	var slot time.Time
	if !snapshot && len(first) > 0 {
		slot = time.Now()
	}
	heartbeat := time.NewTicker(h.cfg.Heartbeat)
	defer heartbeat.Stop()
	var wait *time.Timer
	defer func() {
		if wait != nil {
			wait.Stop()
		}
	}()
	expired := func() error {
		sw.event("expired", "", []byte(`{"reason":"token_expired"}`))
		_ = sw.flush()
		return ErrExpired
	}
	for {
		select {
		case <-h.done:
			return nil
		case <-r.Context().Done():
			return nil
		case <-s.dropped:
			return ErrDropped
		case <-expire:
			return expired()
		case <-heartbeat.C:
			sw.comment("ping")
			if err := sw.flush(); err != nil {
				return h.writeFailed(s, err)
			}
			continue
		case <-s.notify:
		}
		// At most one message per Interval: wait for the next slot;
		// changes arriving meanwhile coalesce into this message. Slots
		// are on the wall clock's grid (slotAfter), not counted from
		// when a write ended, so a slow fan-out round does not delay
		// every later message.
		due := h.slotAfter(slot.Add(h.cfg.Interval), time.Now())
		if d := time.Until(due); d > 0 {
			if wait == nil {
				wait = time.NewTimer(d)
			} else {
				wait.Reset(d)
			}
			select {
			case <-h.done:
				return nil
			case <-r.Context().Done():
				return nil
			case <-s.dropped:
				return ErrDropped
			case <-expire:
				return expired()
			case <-wait.C:
			}
		}
		as, us, seq, _ := h.take(s)
		if len(us) == 0 && len(as) == 0 {
			continue
		}
		sw.writeAlerts(as)
		if len(us) > 0 {
			sw.updates("minutes", seq, us)
			h.metrics.messages.Inc()
		}
		if err := sw.flush(); err != nil {
			return h.writeFailed(s, err)
		}
		slot = due
	}
}

// slotAfter returns when the next message may go: the first slot, at or
// after both earliest and now, of the wall clock's Interval grid shifted
// by Gather (with the defaults, 100 ms past every second). Agents send
// live counters on the second, so every owner's publishes of one second
// are in by its slot and go out together; slots on a fixed grid keep that
// phase however the stream's earlier messages fell.
func (h *Hub) slotAfter(earliest, now time.Time) time.Time {
	t := earliest
	if now.After(t) {
		t = now
	}
	s := t.Truncate(h.cfg.Interval).Add(h.cfg.Gather)
	if s.Before(t) {
		s = s.Add(h.cfg.Interval)
	}
	return s
}

// ErrDropped is returned by Serve when the hub dropped a client that
// could not keep up (its buffer overflowed or a write timed out).
var ErrDropped = errors.New("live: subscriber dropped: it could not keep up")

// writeFailed drops s when the write timed out (a slow client); other
// errors are a client that went away.
func (h *Hub) writeFailed(s *subscriber, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		h.drop(s, DropWrite)
		return ErrDropped
	}
	return nil
}

// sseWriter frames events. Errors are kept and returned by flush.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     *[]byte // from bufPool while a message is being framed
}

// updates frames a Message of es, joining the updates' JSON encoded at
// Publish instead of encoding them again for every client.
func (s *sseWriter) updates(name string, seq uint64, es []*entry) {
	s.header(name, strconv.FormatUint(seq, 10))
	b := append(*s.buf, `{"updates":[`...)
	for i, e := range es {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.enc...)
	}
	*s.buf = append(b, "]}\n\n"...)
}

// event frames one event whose data is one line of JSON.
func (s *sseWriter) event(name, id string, data []byte) {
	s.header(name, id)
	b := append(*s.buf, data...)
	*s.buf = append(b, "\n\n"...)
}

// header starts an event, up to its data.
func (s *sseWriter) header(name, id string) {
	if s.buf == nil {
		s.buf = bufPool.Get().(*[]byte)
	}
	b := append(*s.buf, "event: "...)
	b = append(b, name...)
	if id != "" {
		b = append(b, "\nid: "...)
		b = append(b, id...)
	}
	*s.buf = append(b, "\ndata: "...)
}

func (s *sseWriter) comment(text string) {
	if s.buf == nil {
		s.buf = bufPool.Get().(*[]byte)
	}
	b := append(*s.buf, ": "...)
	b = append(b, text...)
	*s.buf = append(b, "\n\n"...)
}

// bufPool holds message buffers between writes, so that an idle
// connection holds none: with thousands of clients, a buffer each would
// be most of the hub's memory.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// flush writes what is buffered within the write timeout.
func (s *sseWriter) flush() error {
	if s.buf == nil || len(*s.buf) == 0 {
		return nil
	}
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	_, err := s.w.Write(*s.buf)
	if cap(*s.buf) <= 1<<20 { // a huge snapshot's buffer is left to the GC
		*s.buf = (*s.buf)[:0]
		bufPool.Put(s.buf)
	}
	s.buf = nil
	if err == nil {
		err = s.rc.Flush()
	}
	return err
}

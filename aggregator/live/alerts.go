package live

import (
	"slices"
	"time"
)

// Alert is one alert transition on its way to subscribers: the campaign
// it concerns (a subscriber sees it only within its scope), a key that
// names the transition (the alert's id and state), and the alert as JSON,
// which the stream sends as is in an "alert" event.
//
// The same transition may be published more than once: a campaign's new
// owner re-delivers what its previous owner stored but may not have
// delivered. The hub sends each key to a subscriber once.
type Alert struct {
	Campaign string `msgpack:"c"`
	Key      string `msgpack:"k"`
	// At is when the transition happened (unix seconds): the hub keeps the
	// alerts of the last AlertWindow for new subscribers.
	At   int64  `msgpack:"t"`
	JSON []byte `msgpack:"j"`
}

// AlertPublisher takes alert transitions; implementations must not block
// for long.
type AlertPublisher interface {
	PublishAlerts(as []Alert)
}

// Bounds of the alerts a hub keeps and a message carries.
const (
	// maxAlertJSON bounds one alert's document.
	maxAlertJSON = 16 << 10
)

type alertEntry struct {
	a   Alert
	seq uint64
}

// PublishAlerts records alert transitions and marks them for every
// subscriber that may see them. A key the hub holds already, an alert
// older than AlertWindow, an empty key or a document over 16 KiB changes
// nothing. It never blocks on subscribers.
func (h *Hub) PublishAlerts(as []Alert) {
	if len(as) == 0 {
		return
	}
	cut := h.cfg.Now().Add(-h.cfg.AlertWindow).Unix()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pruneAlerts(cut)
	var fresh []*alertEntry
	for _, a := range as {
		if a.At < cut || a.Key == "" || len(a.JSON) == 0 || len(a.JSON) > maxAlertJSON {
			continue
		}
		if _, ok := h.alertKeys[a.Key]; ok {
			continue
		}
		e := &alertEntry{a: a, seq: h.seq + 1}
		h.alertKeys[a.Key] = e
		h.alerts = append(h.alerts, e)
		fresh = append(fresh, e)
	}
	if len(fresh) == 0 {
		return
	}
	// Past MaxAlerts the oldest go (a subscriber connecting later gets
	// the rest; one connected already got them).
	if over := len(h.alerts) - h.cfg.MaxAlerts; over > 0 {
		for _, e := range h.alerts[:over] {
			delete(h.alertKeys, e.a.Key)
		}
		h.alerts = slices.Delete(h.alerts, 0, over)
	}
	h.seq++
	h.published = time.Now()
	h.metrics.alerts.Add(float64(len(fresh)))
	for s := range h.subs {
		marked := false
		for _, e := range fresh {
			if s.scope(e.a.Campaign) {
				s.alerts = append(s.alerts, e)
				marked = true
			}
		}
		if !marked {
			continue
		}
		if len(s.alerts)+len(s.pending) > h.cfg.Buffer {
			h.dropLocked(s, DropBuffer)
			continue
		}
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

// pruneAlerts forgets alerts older than cut (unix seconds). The list is in
// publishing order, which a re-delivered old alert breaks: every entry is
// looked at (there are at most MaxAlerts).
func (h *Hub) pruneAlerts(cut int64) {
	h.alerts = slices.DeleteFunc(h.alerts, func(e *alertEntry) bool {
		if e.a.At < cut {
			delete(h.alertKeys, e.a.Key)
			return true
		}
		return false
	})
}

// Alerts returns the alerts the hub holds, oldest first.
func (h *Hub) Alerts() []Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Alert, len(h.alerts))
	for i, e := range h.alerts {
		out[i] = e.a
	}
	return out
}

// alertsFor returns the held alerts in scope published after lastSeq
// (every one for a snapshot).
func (h *Hub) alertsForLocked(scope Scope, lastSeq uint64, snapshot bool) []*alertEntry {
	var out []*alertEntry
	for _, e := range h.alerts {
		if scope(e.a.Campaign) && (snapshot || e.seq > lastSeq) {
			out = append(out, e)
		}
	}
	return out
}

// writeAlerts frames one "alert" event per transition.
func (s *sseWriter) writeAlerts(es []*alertEntry) {
	for _, e := range es {
		s.event("alert", "", e.a.JSON)
	}
}

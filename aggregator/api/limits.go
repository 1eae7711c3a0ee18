package api

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Bounds on what one request may ask for, beyond the configured ones.
const (
	// MaxHeaderBytes bounds a request's line and headers (the query
	// string and the bearer token included); beyond it the server
	// answers 431 before any handler runs.
	MaxHeaderBytes = 64 << 10
	// MaxFilterCampaigns bounds the campaigns of a campaigns= list.
	MaxFilterCampaigns = 100
	// maxLinkBody bounds the body of POST /api/v1/links.
	maxLinkBody = 64 << 10
)

// Defaults of the concurrency limits (Config).
const (
	DefaultMaxConcurrentQueries = 16
	DefaultMaxQueriesPerSubject = 8
	DefaultQueryWait            = 5 * time.Second
	DefaultMaxStreams           = 1000
	DefaultMaxStreamsPerSubject = 16
	DefaultWriteTimeout         = 30 * time.Second
)

// errSubjectBusy is a caller over its own share (429); errBusy is the
// node over its total (503). Both carry Retry-After.
var (
	errSubjectBusy = errors.New("too many concurrent requests of this kind for your subject; retry shortly")
	errBusy        = errors.New("this node is at its limit of concurrent requests of this kind; retry shortly")
)

// gate bounds concurrent work of one kind (storage queries, streams): at
// most total at once on the node, and at most perSubject admitted for one
// subject (running or waiting for a slot), so that one caller, or one
// stolen token, cannot take a node's whole capacity from the others.
// Admitted requests wait up to wait for a slot (0: not at all). It is
// safe for concurrent use.
type gate struct {
	kind       string
	slots      chan struct{}
	perSubject int
	wait       time.Duration

	mu        sync.Mutex
	bySubject map[string]int // admitted per subject; entries at 0 are deleted

	refused  *prometheus.CounterVec
	inFlight prometheus.Gauge
}

func newGate(kind string, total, perSubject int, wait time.Duration, refused *prometheus.CounterVec, inFlight prometheus.Gauge) *gate {
	return &gate{kind: kind, slots: make(chan struct{}, total), perSubject: perSubject, wait: wait,
		bySubject: map[string]int{}, refused: refused, inFlight: inFlight}
}

// acquire admits one request of subject; release must be called when it
// is done. The error is errSubjectBusy, errBusy or ctx's.
func (g *gate) acquire(ctx context.Context, subject string) (release func(), err error) {
	g.mu.Lock()
	if g.bySubject[subject] >= g.perSubject {
		g.mu.Unlock()
		g.refused.WithLabelValues("subject_" + g.kind).Inc()
		return nil, errSubjectBusy
	}
	g.bySubject[subject]++
	g.mu.Unlock()
	leave := func() {
		g.mu.Lock()
		if g.bySubject[subject]--; g.bySubject[subject] <= 0 {
			delete(g.bySubject, subject)
		}
		g.mu.Unlock()
	}
	select {
	case g.slots <- struct{}{}:
	default:
		if g.wait <= 0 {
			leave()
			g.refused.WithLabelValues(g.kind).Inc()
			return nil, errBusy
		}
		t := time.NewTimer(g.wait)
		defer t.Stop()
		select {
		case g.slots <- struct{}{}:
		case <-t.C:
			leave()
			g.refused.WithLabelValues(g.kind).Inc()
			return nil, errBusy
		case <-ctx.Done():
			leave()
			return nil, ctx.Err()
		}
	}
	g.inFlight.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.inFlight.Dec()
			<-g.slots
			leave()
		})
	}, nil
}

// writeBusy answers a gate's refusal: 429 for the caller's own share,
// 503 for the node's, both with Retry-After.
func writeBusy(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	code := http.StatusServiceUnavailable
	if errors.Is(err, errSubjectBusy) {
		code = http.StatusTooManyRequests
	}
	writeError(w, code, err.Error())
}

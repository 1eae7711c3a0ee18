package influx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"

	"github.com/tally-edge/tally/sketch"
)

// Writer writes merged minutes and contributions to InfluxDB and returns
// only when they are durable there.
//
// Writer is safe for concurrent use, but the aggregator should call Write
// from one goroutine that owns a bounded queue (see ARCHITECTURE.md §9):
// Write blocks for as long as the server is down.
type Writer struct {
	cfg    Config
	log    *slog.Logger
	hc     *http.Client
	client influxdb2.Client

	apisMu sync.Mutex
	apis   map[string]api.WriteAPIBlocking // by bucket

	pointsWritten   atomic.Uint64
	contribsSkipped atomic.Uint64
	bytesWritten    atomic.Uint64
	requests        atomic.Uint64
	retries         atomic.Uint64
	permanent       atomic.Uint64

	mu          sync.Mutex
	lastErr     string
	lastErrTime time.Time

	closeOnce sync.Once
}

// Stats is a snapshot of a Writer's counters since it was created.
type Stats struct {
	// PointsWritten counts points the server acknowledged.
	PointsWritten uint64
	// BytesWritten counts line-protocol bytes the server acknowledged.
	BytesWritten uint64
	// Requests counts HTTP write attempts, successful or not.
	Requests uint64
	// Retries counts attempts that failed with a retryable error and were
	// tried again.
	Retries uint64
	// PermanentFailures counts Write calls that ended with a
	// *PermanentError.
	PermanentFailures uint64
	// ContribsSkipped counts contribution points not written because
	// their minute is older than the contributions' retention keeps (the
	// merged minute's ledger holds them).
	ContribsSkipped uint64
	// LastError is the most recent failure of any attempt ("" if none), and
	// LastErrorTime when it happened.
	LastError     string
	LastErrorTime time.Time
}

// NewWriter returns a Writer for cfg (zero fields take their defaults).
// It does not contact the server; call Ping for that. logger may be nil.
func NewWriter(cfg Config, logger *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hc := newHTTPClient()
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, influxdb2.DefaultOptions().
		SetHTTPClient(hc).
		SetPrecision(time.Second).
		SetUseGZip(cfg.Gzip).
		SetApplicationName("tally-aggregator"))
	return &Writer{
		cfg:    cfg,
		log:    logger.With("component", "influx-writer", "bucket", cfg.Bucket),
		hc:     hc,
		client: client,
		apis:   map[string]api.WriteAPIBlocking{},
	}, nil
}

// writeAPI returns the blocking write API of a bucket.
func (w *Writer) writeAPI(bucket string) api.WriteAPIBlocking {
	w.apisMu.Lock()
	defer w.apisMu.Unlock()
	a := w.apis[bucket]
	if a == nil {
		a = w.client.WriteAPIBlocking(w.cfg.Org, bucket)
		w.apis[bucket] = a
	}
	return a
}

// contribHorizon returns the oldest minute (unix seconds) whose
// contribution point is still written: younger than the contributions'
// retention by ContribMargin. 0 when they are kept forever.
func (w *Writer) contribHorizon() int64 {
	if w.cfg.Retention.Contributions <= 0 {
		return 0
	}
	return time.Now().Add(-w.cfg.Retention.Contributions + ContribMargin).Unix()
}

// newHTTPClient returns the client shared by every request of one Writer
// or Reader. It has no overall timeout: each call bounds its own requests
// with a context, so a long Flux answer is not cut by a write's timeout.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          8,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}}
}

// Write writes the complete merged value of every minute and the
// contributions of every agent, and returns nil only when the server has
// acknowledged all of them. It splits the points into requests of at most
// BatchSize points and MaxRequestBytes bytes, contributions first (they are
// what a restarted node rebuilds from), and retries every retryable failure
// with jittered exponential backoff, honouring Retry-After, until the
// request succeeds, ctx ends or MaxElapsed passes.
//
// Every point is checked and encoded before the first request, so a
// point that can never be written (*PointTooLargeError, invalid point)
// fails the call with a *PermanentError and nothing sent. A server refusal
// (400, 401, 403, 404, 413) also returns a *PermanentError at once; earlier
// requests of the same call may have been written, which is harmless
// because every write is an idempotent upsert: the caller retries the
// whole call, or drops it, as it sees fit.
//
// When ctx ends first, the error wraps both ctx.Err() and the last
// *RetryableError.
func (w *Writer) Write(ctx context.Context, minutes []sketch.Minute, contribs []ContribPoint) error {
	reqs, err := w.encode(minutes, contribs)
	if err != nil {
		w.permanent.Add(1)
		perr := &PermanentError{Err: err}
		w.noteError(perr)
		return fmt.Errorf("influx write: %w", perr)
	}
	for i, r := range reqs {
		if err := w.send(ctx, r); err != nil {
			var perr *PermanentError
			if errors.As(err, &perr) {
				w.permanent.Add(1)
			}
			return fmt.Errorf("influx write: request %d of %d (%d points, %d bytes): %w", i+1, len(reqs), r.points, len(r.body), err)
		}
	}
	return nil
}

// request is one HTTP request's worth of line protocol, for one bucket.
type request struct {
	bucket string
	body   string
	points int
}

// encode turns the points into request bodies. Each body is built in a
// strings.Builder sized from the lines seen so far, so a body is
// allocated about once and handed to the client without a copy.
func (w *Writer) encode(minutes []sketch.Minute, contribs []ContribPoint) ([]request, error) {
	var (
		reqs  []request
		cur   strings.Builder
		n     int // points in cur
		done  int // points encoded so far
		bytes int // bytes encoded so far
		line  []byte
		err   error
	)
	total := len(minutes) + len(contribs)
	bucket := w.cfg.ContribBucket
	cut := func() {
		if n > 0 {
			reqs = append(reqs, request{bucket: bucket, body: cur.String(), points: n})
			cur, n = strings.Builder{}, 0
		}
	}
	add := func(line []byte) {
		if n > 0 && (n >= w.cfg.BatchSize || cur.Len()+len(line) > w.cfg.MaxRequestBytes) {
			cut()
		}
		if n == 0 {
			// Room for the rest of the request at the average line size
			// so far, plus 1/8 for lines that run larger.
			avg := (bytes + len(line)) / (done + 1)
			left := min(total-done, w.cfg.BatchSize)
			cur.Grow(min(w.cfg.MaxRequestBytes, avg*left+avg*left/8))
		}
		cur.Write(line)
		n++
		done++
		bytes += len(line)
	}
	horizon := w.contribHorizon()
	for i := range contribs {
		if contribs[i].Minute < horizon {
			w.contribsSkipped.Add(1)
			done++
			continue
		}
		if line, err = appendContrib(line[:0], &contribs[i]); err != nil {
			return nil, err
		}
		add(line)
	}
	cut()
	bucket = w.cfg.Bucket
	for i := range minutes {
		if line, err = appendMinute(line[:0], &minutes[i]); err != nil {
			return nil, err
		}
		add(line)
	}
	cut()
	return reqs, nil
}

// send writes one request, retrying retryable failures.
func (w *Writer) send(ctx context.Context, r request) error {
	start := time.Now()
	var answered error // the last failure InfluxDB (or the network) gave, not ctx's end
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
		err := w.writeAPI(r.bucket).WriteRecord(actx, r.body)
		cancel()
		w.requests.Add(1)
		if err == nil {
			w.pointsWritten.Add(uint64(r.points))
			w.bytesWritten.Add(uint64(len(r.body)))
			if attempt > 0 {
				w.log.Info("influxdb write succeeded after retries", "retries", attempt, "elapsed", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if ctx.Err() != nil {
			// The attempt ctx cut short says only that; report what the
			// attempts before it were answered, if any.
			if answered == nil {
				answered = classify(err)
			}
			w.noteError(answered)
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), answered)
		}
		cerr := classify(err)
		answered = cerr
		w.noteError(cerr)
		var rerr *RetryableError
		if !errors.As(cerr, &rerr) {
			return cerr
		}
		wait := rerr.RetryAfter
		if wait == 0 {
			wait = w.backoff(attempt)
		}
		if w.cfg.MaxElapsed > 0 && time.Since(start)+wait > w.cfg.MaxElapsed {
			return fmt.Errorf("gave up after %d attempts in %s: %w", attempt+1, time.Since(start).Round(time.Millisecond), cerr)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return fmt.Errorf("next retry in %s is past the deadline: %w", wait, cerr)
		}
		// Log the first failure and then every tenth, not every attempt:
		// an outage of minutes must not flood the log.
		if attempt%10 == 0 {
			w.log.Warn("influxdb write failed, retrying", "attempt", attempt+1, "wait", wait.Round(time.Millisecond), "err", cerr)
		}
		w.retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), cerr)
		case <-t.C:
		}
	}
}

// backoff returns the jittered delay before retry attempt+1: uniform in
// [d/2, d] with d = RetryInitial·2^attempt capped at RetryMax.
func (w *Writer) backoff(attempt int) time.Duration {
	d := w.cfg.RetryMax
	if attempt < 30 {
		d = min(w.cfg.RetryInitial<<attempt, w.cfg.RetryMax)
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

func (w *Writer) noteError(err error) {
	w.mu.Lock()
	w.lastErr = err.Error()
	w.lastErrTime = time.Now()
	w.mu.Unlock()
}

// Stats returns a snapshot of the Writer's counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	last, lastT := w.lastErr, w.lastErrTime
	w.mu.Unlock()
	return Stats{
		PointsWritten:     w.pointsWritten.Load(),
		BytesWritten:      w.bytesWritten.Load(),
		Requests:          w.requests.Load(),
		Retries:           w.retries.Load(),
		PermanentFailures: w.permanent.Load(),
		ContribsSkipped:   w.contribsSkipped.Load(),
		LastError:         last,
		LastErrorTime:     lastT,
	}
}

// Ping checks that the server answers /ping.
func (w *Writer) Ping(ctx context.Context) error {
	return ping(ctx, w.client, w.cfg)
}

// Close releases the Writer's connections. Call it after the last Write
// has returned; it is safe to call more than once.
func (w *Writer) Close() {
	w.closeOnce.Do(func() {
		w.client.Close()
		w.hc.CloseIdleConnections()
	})
}

func ping(ctx context.Context, c influxdb2.Client, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		return fmt.Errorf("influx ping %s: %w", cfg.URL, classify(err))
	}
	return nil
}

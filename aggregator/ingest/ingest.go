// Package ingest is the aggregator's accept path: from a batch on the
// wire to the merge store, through the write-ahead log. The writer
// (aggregator/writer) takes it from there to InfluxDB.
//
// Nothing is acknowledged before it is durable (ARCHITECTURE invariant 3).
// For each batch, under one lock:
//
//  1. the batch is appended to the write-ahead log, as the sender encoded
//     it (aggregator/wal);
//  2. its contributions are applied to the merge store, which notes the
//     log position each changed minute depends on;
//
// then, outside the lock, the log is fsynced (concurrent batches share
// fsyncs), and only then is the batch acknowledged. Applying before the
// fsync is safe: the store is memory, and what it holds reaches InfluxDB
// only through the writer, which writes merged state (never retracted) and
// releases log segments only before the earliest change not yet written.
// A batch whose fsync fails is answered "busy" though it was applied; the
// agent sends it again, which the merge absorbs (versions and unions).
// Taking the log's end and the store's dirty minutes under the same lock
// (Cut) is what makes a log position split "applied" from "not applied".
//
// After a crash the open window is rebuilt from InfluxDB's tally_contrib
// points and the log is replayed on top (Recover); both are idempotent,
// and every minute the log replays is written again (merge.Store.Replay).
// Late data, for minutes that are neither in memory nor in the rebuilt
// window, is accepted at once and loaded from storage afterwards, by
// campaign and minute (loader.go): the ack never waits for storage.
package ingest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/merge"
	"github.com/tally-edge/tally/aggregator/wal"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Storage is where the accept path reads stored contributions back: the
// open window at start, late minutes, and campaigns taken over. It must be
// safe for concurrent use.
type Storage interface {
	LoadContributions(ctx context.Context, from, to time.Time) ([]influx.ContribPoint, error)
	LoadContributionsOf(ctx context.Context, from, to time.Time, campaigns []string) ([]influx.ContribPoint, error)
	LoadContributionsFunc(ctx context.Context, from, to time.Time, keep func(sketch.Series) bool) ([]influx.ContribPoint, error)
}

// Membership is what the accept path needs of the cluster. A nil
// Membership is a single node.
type Membership interface {
	// IsMember reports whether name is a node of the cluster now.
	IsMember(name string) bool
	// View is the membership told to agents in every ack.
	View() (members []wire.Member, epoch uint64)
}

// Config tunes the accept path. Zero fields take the defaults in
// DefaultConfig.
type Config struct {
	// Dir holds the write-ahead log (Dir/wal).
	Dir string
	// Node is this node's name.
	Node string
	// WALMaxBytes bounds the log. When InfluxDB is down long enough to
	// fill it, batches are answered "busy" and agents keep them in their
	// spools. Default 1 GiB.
	WALMaxBytes int64
	// Lateness is the window rebuilt from storage at start: older minutes
	// are loaded when data arrives for them. Default 1h.
	Lateness time.Duration
	// RequireAgentCN rejects agent batches whose agent name differs from
	// the client certificate's common name. Default true in the
	// aggregator's configuration.
	RequireAgentCN bool
	// NodeCertificate tells a node's certificate from an agent's: only a
	// node may forward batches (of any agent). nil refuses every forward.
	NodeCertificate func(*x509.Certificate) bool
	// BusyRetryAfter is the retry hint sent with busy answers. Default 2s.
	BusyRetryAfter time.Duration
	// MaxPendingLoads bounds the campaign-minutes of late data waiting to
	// be loaded from storage; beyond it batches are answered busy.
	// Default 100000.
	MaxPendingLoads int
	// LoadSpan bounds the minutes one load query covers (default 1h);
	// LoadCampaigns the campaigns it names (default 64); LoadTimeout its
	// time (default 30s).
	LoadSpan      time.Duration
	LoadCampaigns int
	LoadTimeout   time.Duration
	// Cluster, if set, makes this node one of several.
	Cluster Membership
}

// DefaultConfig returns the defaults; the caller sets Dir.
func DefaultConfig() Config {
	return Config{WALMaxBytes: 1 << 30, Lateness: time.Hour, RequireAgentCN: true, BusyRetryAfter: 2 * time.Second,
		MaxPendingLoads: 100_000, LoadSpan: time.Hour, LoadCampaigns: 64, LoadTimeout: 30 * time.Second}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.WALMaxBytes <= 0 {
		c.WALMaxBytes = d.WALMaxBytes
	}
	if c.Lateness <= 0 {
		c.Lateness = d.Lateness
	}
	if c.BusyRetryAfter <= 0 {
		c.BusyRetryAfter = d.BusyRetryAfter
	}
	if c.MaxPendingLoads <= 0 {
		c.MaxPendingLoads = d.MaxPendingLoads
	}
	if c.LoadSpan < time.Minute {
		c.LoadSpan = d.LoadSpan
	}
	if c.LoadCampaigns <= 0 {
		c.LoadCampaigns = d.LoadCampaigns
	}
	if c.LoadTimeout <= 0 {
		c.LoadTimeout = d.LoadTimeout
	}
}

// Validate reports a configuration the pipeline cannot run with.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("ingest: Dir is required")
	}
	return nil
}

// Pipeline is the accept path. It implements wire.PayloadHandler and is
// safe for concurrent use.
type Pipeline struct {
	cfg     Config
	store   *merge.Store
	storage Storage
	wal     *wal.Log
	log     *slog.Logger

	// mu orders log appends with store applies, and with Cut, so that a
	// log position splits "applied" from "not yet applied".
	mu sync.Mutex

	ready      atomic.Bool
	stopping   atomic.Bool
	brokenOnce sync.Once
	broken     chan struct{} // closed when the log breaks
	loadKick   chan struct{} // capacity 1: "late minutes are pending"
	loadErr    atomic.Pointer[string]
	closeOnce  sync.Once
	closeErr   error

	m metrics
}

type metrics struct {
	batches        *prometheus.CounterVec
	contributions  prometheus.Counter
	forwardedIn    prometheus.Counter
	lateLoaded     prometheus.Counter
	loadQueries    *prometheus.CounterVec
	takeovers      prometheus.Counter
	replaySkipped  prometheus.Counter
	walSyncSeconds prometheus.Histogram
}

// Open opens the write-ahead log. Call Recover before serving.
func Open(cfg Config, storage Storage, reg prometheus.Registerer, logger *slog.Logger) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	logger = logger.With("component", "ingest")
	// The data directory holds every agent's batches: the node's user only.
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	log, dropped, err := wal.Open(filepath.Join(cfg.Dir, "wal"), wal.Options{MaxBytes: cfg.WALMaxBytes})
	if err != nil {
		return nil, err
	}
	if dropped > 0 {
		logger.Warn("write-ahead log had a torn tail (never acknowledged); dropped it", "bytes", dropped)
	}
	p := &Pipeline{cfg: cfg, store: merge.New(), storage: storage, wal: log, log: logger,
		broken: make(chan struct{}), loadKick: make(chan struct{}, 1)}
	p.m = metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_batches_total",
			Help: "Batches answered, by ack status."}, []string{"status"}),
		contributions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_contributions_total",
			Help: "Contributions received and applied."}),
		forwardedIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_contributions_received_forwarded_total",
			Help: "Contributions other nodes handed to this node as their owner."}),
		lateLoaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_late_minute_loads_total",
			Help: "Campaign-minutes of late data loaded back from InfluxDB before being written."}),
		loadQueries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_late_load_queries_total",
			Help: "Queries loading late minutes from InfluxDB, by result."}, []string{"result"}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_takeover_points_loaded_total",
			Help: "Contribution points loaded from InfluxDB when this node took campaigns over."}),
		replaySkipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_wal_records_skipped_total",
			Help: "Write-ahead log records replay could not apply (never acknowledged: they failed the same way when received)."}),
		walSyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_aggregator_wal_fsync_seconds",
			Help: "Time a batch waited for the write-ahead log's fsync.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)}),
	}
	reg.MustRegister(p.m.batches, p.m.contributions, p.m.forwardedIn, p.m.lateLoaded, p.m.loadQueries, p.m.takeovers,
		p.m.replaySkipped, p.m.walSyncSeconds)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_wal_bytes",
		Help: "Bytes in the write-ahead log (grows while InfluxDB is unreachable)."}, func() float64 { return float64(p.wal.Size()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_open_minutes",
		Help: "Series-minutes held in memory."}, func() float64 { n, _, _ := p.store.Counts(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_dirty_minutes",
		Help: "Series-minutes changed but not yet written to InfluxDB."}, func() float64 { _, n, _ := p.store.Counts(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_late_loads_pending",
		Help: "Campaign-minutes of late data waiting to be loaded from InfluxDB."}, func() float64 { _, _, n := p.store.Counts(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_wal_broken",
		Help: "1 once a write-ahead log write or fsync failed: the node stops taking batches and exits."}, func() float64 {
		if p.wal.Broken() != nil {
			return 1
		}
		return 0
	}))
	return p, nil
}

// Store is the merge store.
func (p *Pipeline) Store() *merge.Store { return p.store }

// Cut returns the dirty minutes to write (see merge.Store.TakeDirty for
// foreign) and the write-ahead log position they cover, taken together
// under the pipeline's lock.
func (p *Pipeline) Cut(foreign func(campaign string) bool) (*merge.Snapshot, uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := uint64(p.wal.End())
	sn, err := p.store.TakeDirty(0, foreign, at)
	return sn, at, err
}

// Release frees the log before the earliest change not yet written, and
// at most before ceiling (the position of the writer's last cut).
func (p *Pipeline) Release(ceiling uint64) error {
	return p.wal.Release(wal.Pos(p.store.ReleasePoint(ceiling)))
}

// Broken is closed when the write-ahead log fails for good (a write
// that could not be undone, or an fsync): nothing more can be made
// durable. The node should stop taking batches, save what it can, and
// exit.
func (p *Pipeline) Broken() <-chan struct{} { return p.broken }

// BrokenErr returns the error that broke the log, or nil.
func (p *Pipeline) BrokenErr() error { return p.wal.Broken() }

func (p *Pipeline) noteBroken() {
	if p.wal.Broken() == nil {
		return
	}
	p.brokenOnce.Do(func() {
		p.log.Error("write-ahead log is broken: no batch can be made durable any more; stopping", "err", p.wal.Broken())
		close(p.broken)
	})
}

// Ready reports whether the pipeline takes batches: recovered, not
// stopping, and its log not broken.
func (p *Pipeline) Ready() error {
	if err := p.wal.Broken(); err != nil {
		return fmt.Errorf("write-ahead log broken (the node is stopping): %w", err)
	}
	if p.stopping.Load() {
		return errors.New("stopping: writing what is merged")
	}
	if !p.ready.Load() {
		return errors.New("rebuilding open minutes")
	}
	return nil
}

// Stop makes the pipeline answer every batch busy from now on: the node
// is shutting down.
func (p *Pipeline) Stop() { p.stopping.Store(true) }

// LoadHealth returns the last error of loading late minutes, or nil once
// a load succeeded since.
func (p *Pipeline) LoadHealth() error {
	if msg := p.loadErr.Load(); msg != nil {
		return errors.New(*msg)
	}
	return nil
}

// Close closes the log. Call it after the writer and loader stopped; it is
// safe to call more than once.
func (p *Pipeline) Close() error {
	p.closeOnce.Do(func() { p.closeErr = p.wal.Close() })
	return p.closeErr
}

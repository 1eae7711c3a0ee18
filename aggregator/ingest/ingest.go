// Package ingest is the aggregator's path from an agent's batch to
// InfluxDB: write-ahead log, merge store, acknowledgement, and the writer
// loop that persists merged minutes and retires the log behind them.
//
// Nothing is acknowledged before it is durable (ARCHITECTURE invariant 3):
// a batch is appended to the WAL and fsynced, then applied to the store,
// then acked. The writer takes the WAL's end position and the dirty
// minutes under one lock, writes them to InfluxDB, and only then releases
// the WAL before that position. After a crash, the open window is rebuilt
// from InfluxDB's tally_contrib points and the WAL is replayed on top;
// both are idempotent (versions and unions), so overlap is harmless.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/aggregator/merge"
	"github.com/tally-edge/tally/internal/seglog"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Routing tells the pipeline which node owns each campaign and hands
// contributions to the owners. A nil Routing is a single node that owns
// every campaign.
type Routing interface {
	// Owner returns the name and QUIC address of the node that owns
	// campaign, and whether that is this node.
	Owner(campaign string) (node, addr string, self bool)
	// IsMember reports whether name is a node of the cluster: only nodes
	// may forward batches of other agents.
	IsMember(name string) bool
	// Forward hands one agent's contributions to the node at addr and
	// returns nil only when that node acknowledged them as durable.
	Forward(ctx context.Context, addr, agent string, cs []wire.Contribution) error
	// View is the membership told to agents in every ack.
	View() (members []wire.Member, epoch uint64)
}

// Storage is where merged minutes live. Write must be durable when it
// returns nil and idempotent. Implementations must be safe for concurrent use.
type Storage interface {
	Write(ctx context.Context, minutes []sketch.Minute, contribs []influx.ContribPoint) error
	LoadContributions(ctx context.Context, from, to time.Time) ([]influx.ContribPoint, error)
	LoadContributionsFunc(ctx context.Context, from, to time.Time, keep func(sketch.Series) bool) ([]influx.ContribPoint, error)
}

// Config tunes the pipeline.
type Config struct {
	// Dir holds the write-ahead log (Dir/wal).
	Dir string
	// WALMaxBytes bounds the WAL. When InfluxDB is down for long enough to
	// fill it, batches are answered "busy" and agents keep them in their
	// spools. Default 1GiB.
	WALMaxBytes int64
	// Lateness is how long a minute stays in memory after its last change.
	// Contributions for older minutes are merged with what InfluxDB holds.
	// Default 1h.
	Lateness time.Duration
	// WriteInterval is the period of the writer loop. Default 1s.
	WriteInterval time.Duration
	// WriteTimeout bounds one write attempt round (with its retries)
	// before the writer loop tries again. Default 30s.
	WriteTimeout time.Duration
	// RequireAgentCN rejects batches whose Agent differs from the client
	// certificate's common name. Default true when mTLS is on.
	RequireAgentCN bool
	// BusyRetryAfter is the retry hint sent with busy answers. Default 2s.
	BusyRetryAfter time.Duration
	// Node is this node's name, written with its contribution points.
	Node string
	// Routing, if set, makes this pipeline one node of a cluster.
	Routing Routing
	// Publisher, if set, receives the merged state of every campaign-minute
	// this node owns after each write round that changed it.
	Publisher live.Publisher
}

func (c *Config) setDefaults() {
	if c.WALMaxBytes <= 0 {
		c.WALMaxBytes = 1 << 30
	}
	if c.Lateness <= 0 {
		c.Lateness = time.Hour
	}
	if c.WriteInterval <= 0 {
		c.WriteInterval = time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.BusyRetryAfter <= 0 {
		c.BusyRetryAfter = 2 * time.Second
	}
}

// Pipeline receives batches and persists them. It implements wire.Handler.
type Pipeline struct {
	cfg     Config
	store   *merge.Store
	storage Storage
	wal     *seglog.Log
	log     *slog.Logger

	// walMu orders WAL appends with store applies, and with the writer's
	// cut, so a WAL position splits "applied" from "not yet applied".
	walMu sync.Mutex

	// loadedFrom is the first minute rebuilt at start; older minutes are
	// loaded from storage on demand.
	loadedFrom atomic.Int64
	ready      atomic.Bool
	lastWrite  atomic.Int64 // unix ns of the last successful write
	writeErr   atomic.Pointer[string]

	m metrics
}

type metrics struct {
	batches       *prometheus.CounterVec
	contributions prometheus.Counter
	lazyLoads     prometheus.Counter
	writes        *prometheus.CounterVec
	writeSeconds  prometheus.Histogram
	points        prometheus.Counter
	forwardedIn   prometheus.Counter
	handedOver    prometheus.Counter
	takeovers     prometheus.Counter
}

// Open opens the WAL. Call Recover before serving.
func Open(cfg Config, storage Storage, reg prometheus.Registerer, logger *slog.Logger) (*Pipeline, error) {
	cfg.setDefaults()
	logger = logger.With("component", "ingest")
	wal, err := seglog.Open(filepath.Join(cfg.Dir, "wal"), seglog.Options{SegmentSize: 16 << 20, MaxBytes: cfg.WALMaxBytes})
	if err != nil {
		return nil, fmt.Errorf("open write-ahead log: %w", err)
	}
	if rec := wal.Recovered(); rec.Dropped > 0 {
		logger.Warn("write-ahead log had a torn tail (never acknowledged); dropped it", "bytes", rec.Dropped)
	}
	p := &Pipeline{cfg: cfg, store: merge.New(), storage: storage, wal: wal, log: logger}
	p.m = metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_batches_total",
			Help: "Batches answered, by ack status."}, []string{"status"}),
		contributions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_contributions_total",
			Help: "Contributions received and applied."}),
		lazyLoads: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_late_minute_loads_total",
			Help: "Series-minutes loaded back from InfluxDB because late data arrived for them."}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_aggregator_influx_writes_total",
			Help: "Writer rounds by result."}, []string{"result"}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_aggregator_influx_write_duration_seconds",
			Help: "Time of one successful writer round.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
		points: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_minutes_written_total",
			Help: "Merged series-minutes written to InfluxDB."}),
	}
	p.m.forwardedIn = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_contributions_received_forwarded_total",
		Help: "Contributions other nodes handed to this node as their owner."})
	p.m.handedOver = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_minutes_handed_over_total",
		Help: "Series-minutes of campaigns owned elsewhere, handed to their owner instead of written."})
	p.m.takeovers = prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_aggregator_takeover_points_loaded_total",
		Help: "Contribution points loaded from InfluxDB when this node took campaigns over."})
	reg.MustRegister(p.m.batches, p.m.contributions, p.m.lazyLoads, p.m.writes, p.m.writeSeconds, p.m.points,
		p.m.forwardedIn, p.m.handedOver, p.m.takeovers)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_wal_bytes",
		Help: "Bytes in the write-ahead log (grows while InfluxDB is unreachable)."}, func() float64 { return float64(p.wal.Size()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_open_minutes",
		Help: "Series-minutes held in memory."}, func() float64 { return float64(p.store.Stats().Minutes) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_aggregator_dirty_minutes",
		Help: "Series-minutes changed but not yet written to InfluxDB."}, func() float64 { return float64(p.store.Stats().DirtyMinutes) }))
	return p, nil
}

// walRecord is what the WAL keeps per batch.
type walRecord struct {
	Agent    string              `msgpack:"a"`
	Contribs []wire.Contribution `msgpack:"c"`
}

// Recover rebuilds the open window from storage and replays the WAL. It
// retries storage until ctx is done, because serving without the rebuilt
// state would write partial minutes over complete ones.
func (p *Pipeline) Recover(ctx context.Context) error {
	now := time.Now()
	from := now.Add(-p.cfg.Lateness).Truncate(time.Minute)
	var points []influx.ContribPoint
	for attempt := 0; ; attempt++ {
		var err error
		points, err = p.storage.LoadContributions(ctx, from, now.Add(24*time.Hour))
		if err == nil {
			break
		}
		p.log.Warn("rebuilding open minutes from InfluxDB failed; retrying", "err", err, "attempt", attempt+1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("rebuild open minutes: %w", err)
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 10*time.Second)):
		}
	}
	if err := p.loadPoints(points); err != nil {
		return err
	}
	p.loadedFrom.Store(from.Unix())
	var batches, contribs int
	err := p.wal.Read(p.wal.Start(), func(_ seglog.Pos, rec []byte) error {
		var wr walRecord
		if err := msgpack.Unmarshal(rec, &wr); err != nil {
			return fmt.Errorf("decode WAL record: %w", err)
		}
		ds, err := decodeAll(wr.Agent, wr.Contribs)
		if err != nil {
			return err
		}
		if err := p.ensureLoaded(ctx, ds); err != nil {
			return err
		}
		if _, err := p.store.Apply(ds); err != nil {
			return err
		}
		batches++
		contribs += len(ds)
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay write-ahead log: %w", err)
	}
	p.log.Info("recovered", "rebuilt_contribution_points", len(points), "window_from", from.UTC().Format(time.RFC3339),
		"wal_batches", batches, "wal_contributions", contribs)
	p.ready.Store(true)
	return nil
}

func (p *Pipeline) loadPoints(points []influx.ContribPoint) error {
	var ds []merge.Decoded
	for _, pt := range points {
		more, err := decodeAll(pt.Agent, pt.Contribs)
		if err != nil {
			return fmt.Errorf("rebuild %s@%d from storage: %w", pt.Series, pt.Minute, err)
		}
		ds = append(ds, more...)
	}
	return p.store.Load(ds)
}

func decodeAll(agent string, cs []wire.Contribution) ([]merge.Decoded, error) {
	ds := make([]merge.Decoded, 0, len(cs))
	for i := range cs {
		d, err := merge.Decode(agent, &cs[i])
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// ensureLoaded loads from storage the series-minutes that ds touch, are
// not in memory, and may have state in storage: older than the rebuilt
// window or evicted since. Without this a late contribution would write a
// partial merged value over a complete one.
func (p *Pipeline) ensureLoaded(ctx context.Context, ds []merge.Decoded) error {
	horizon := max(p.loadedFrom.Load(), p.store.MaxEvictedMinute()+60)
	var lo, hi int64
	need := false
	for i := range ds {
		k := ds[i].Key
		if k.Minute >= horizon || p.store.Contains(k) {
			continue
		}
		if !need || k.Minute < lo {
			lo = k.Minute
		}
		if !need || k.Minute > hi {
			hi = k.Minute
		}
		need = true
	}
	if !need {
		return nil
	}
	pts, err := p.storage.LoadContributions(ctx, time.Unix(lo, 0), time.Unix(hi+60, 0))
	if err != nil {
		return fmt.Errorf("load late minutes from storage: %w", err)
	}
	// Only install minutes that are still absent: a minute in memory is
	// newer than what storage holds.
	keep := pts[:0]
	for _, pt := range pts {
		if !p.store.Contains(sketch.Key{Series: pt.Series, Minute: pt.Minute}) {
			keep = append(keep, pt)
		}
	}
	p.m.lazyLoads.Add(float64(len(keep)))
	return p.loadPoints(keep)
}

// HandleBatch makes a batch durable, merges it and acknowledges it
// (wire.Handler). It is safe for concurrent use.
func (p *Pipeline) HandleBatch(ctx context.Context, peer wire.Peer, b *wire.Batch) wire.Ack {
	ack := wire.Ack{Version: wire.ProtocolVersion, Seq: b.Seq}
	if p.cfg.Routing != nil {
		ack.Members, ack.Epoch = p.cfg.Routing.View()
	}
	reject := func(status wire.AckStatus, reason string) wire.Ack {
		ack.Status, ack.Reason = status, reason
		if status == wire.AckBusy {
			ack.RetryAfterMillis = p.cfg.BusyRetryAfter.Milliseconds()
		}
		p.m.batches.WithLabelValues(status.String()).Inc()
		return ack
	}
	if !p.ready.Load() {
		return reject(wire.AckBusy, "aggregator is rebuilding its state")
	}
	switch {
	case peer.ALPN == wire.ALPNForward:
		// A node hands over contributions of any agent; only nodes may.
		if p.cfg.Routing == nil || !p.cfg.Routing.IsMember(peer.CommonName) {
			return reject(wire.AckRejected, fmt.Sprintf("forwarded batch from %q, which is not a member of this cluster", peer.CommonName))
		}
		p.m.forwardedIn.Add(float64(len(b.Contributions)))
	case p.cfg.RequireAgentCN && peer.CommonName != b.Agent:
		return reject(wire.AckRejected, fmt.Sprintf("agent name %q does not match its certificate (CN %q)", b.Agent, peer.CommonName))
	}
	ds, err := decodeAll(b.Agent, b.Contributions)
	if err != nil {
		return reject(wire.AckRejected, err.Error())
	}
	if err := p.ensureLoaded(ctx, ds); err != nil {
		p.log.Warn("cannot load late minutes; answering busy", "err", err)
		return reject(wire.AckBusy, "storage unavailable for late data")
	}
	rec, err := msgpack.Marshal(walRecord{Agent: b.Agent, Contribs: b.Contributions})
	if err != nil {
		return reject(wire.AckRejected, "cannot encode batch: "+err.Error())
	}
	p.walMu.Lock()
	_, _, err = p.wal.Append(rec)
	if err == nil {
		_, err = p.store.Apply(ds)
	}
	p.walMu.Unlock()
	if err != nil {
		if errors.Is(err, seglog.ErrFull) {
			return reject(wire.AckBusy, "write-ahead log full: InfluxDB is behind")
		}
		p.log.Error("cannot make batch durable", "agent", b.Agent, "err", err)
		return reject(wire.AckBusy, "write-ahead log error")
	}
	if err := p.wal.Sync(); err != nil {
		p.log.Error("fsync write-ahead log failed", "err", err)
		return reject(wire.AckBusy, "write-ahead log error")
	}
	p.m.contributions.Add(float64(len(ds)))
	p.m.batches.WithLabelValues(wire.AckOK.String()).Inc()
	ack.Status = wire.AckOK
	return ack
}

// Run writes dirty minutes every WriteInterval until ctx is done, then
// writes once more within drainTimeout.
func (p *Pipeline) Run(ctx context.Context, drainTimeout time.Duration) error {
	t := time.NewTicker(p.cfg.WriteInterval)
	defer t.Stop()
	lastEvict := time.Now()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
			defer cancel()
			if err := p.WriteOnce(dctx); err != nil {
				return fmt.Errorf("final write: %w (the WAL keeps it for the next start)", err)
			}
			return nil
		case <-t.C:
			wctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
			if err := p.WriteOnce(wctx); err != nil && ctx.Err() == nil {
				p.log.Warn("writing to InfluxDB failed; the WAL holds the data, will retry", "err", err)
			}
			cancel()
			if time.Since(lastEvict) > time.Minute {
				n := p.store.Evict(time.Now().Add(-p.cfg.Lateness))
				if n > 0 {
					p.log.Debug("evicted idle minutes", "minutes", n)
				}
				lastEvict = time.Now()
			}
		}
	}
}

// WriteOnce writes every dirty minute of the campaigns this node owns,
// hands the others to their owners, and releases the WAL behind them
// when all of it succeeded.
func (p *Pipeline) WriteOnce(ctx context.Context) error {
	p.walMu.Lock()
	pos := p.wal.End()
	sn, err := p.store.TakeDirty(0)
	p.walMu.Unlock()
	if err != nil {
		return err
	}
	var errs []error
	if sn.Len() > 0 {
		owned, foreign := sn, (*merge.Snapshot)(nil)
		if p.cfg.Routing != nil {
			own := map[string]bool{}
			isOwned := func(k sketch.Key) bool {
				self, ok := own[k.Series.Campaign]
				if !ok {
					_, _, self = p.cfg.Routing.Owner(k.Series.Campaign)
					own[k.Series.Campaign] = self
				}
				return self
			}
			owned = sn.Subset(isOwned)
			foreign = sn.Subset(func(k sketch.Key) bool { return !isOwned(k) })
		}
		if owned.Len() > 0 {
			if err := p.write(ctx, owned); err != nil {
				errs = append(errs, err)
			}
		}
		if foreign != nil && foreign.Len() > 0 {
			if err := p.handOver(ctx, foreign); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	p.writeErr.Store(nil)
	p.lastWrite.Store(time.Now().UnixNano())
	if err := p.wal.Release(pos); err != nil {
		p.log.Warn("releasing WAL segments failed; retrying next round", "err", err)
	}
	return nil
}

// write writes a snapshot to storage and publishes what changed.
func (p *Pipeline) write(ctx context.Context, sn *merge.Snapshot) error {
	start := time.Now()
	minutes := sn.Minutes
	contribs := make([]influx.ContribPoint, len(sn.Contribs))
	for i, c := range sn.Contribs {
		contribs[i] = influx.ContribPoint{Series: c.Key.Series, Minute: c.Key.Minute, Agent: c.Agent, Node: p.cfg.Node, Contribs: c.Contribs}
	}
	if err := p.storage.Write(ctx, minutes, contribs); err != nil {
		p.m.writes.WithLabelValues("error").Inc()
		msg := err.Error()
		p.writeErr.Store(&msg)
		return err
	}
	p.store.MarkWritten(sn)
	p.m.writes.WithLabelValues("ok").Inc()
	p.m.points.Add(float64(len(minutes)))
	p.m.writeSeconds.Observe(time.Since(start).Seconds())
	p.publish(sn)
	return nil
}

// publish sends the merged state of every campaign-minute the snapshot
// touched to the Publisher.
func (p *Pipeline) publish(sn *merge.Snapshot) {
	if p.cfg.Publisher == nil {
		return
	}
	touched := map[merge.CampaignMinute]bool{}
	var cms []merge.CampaignMinute
	for _, m := range sn.Minutes {
		cm := merge.CampaignMinute{Campaign: m.Series.Campaign, Minute: m.Minute}
		if !touched[cm] {
			touched[cm] = true
			cms = append(cms, cm)
		}
	}
	ms, err := p.store.MergedOf(cms)
	if err != nil {
		p.log.Error("cannot compute live updates", "err", err)
		return
	}
	groups := map[merge.CampaignMinute][]sketch.Minute{}
	for _, m := range ms {
		cm := merge.CampaignMinute{Campaign: m.Series.Campaign, Minute: m.Minute}
		groups[cm] = append(groups[cm], m)
	}
	updates := make([]live.Update, 0, len(groups))
	for cm, pts := range groups {
		k, _, err := kpi.Compute(pts)
		if err != nil {
			p.log.Error("cannot compute live update", "campaign", cm.Campaign, "minute", cm.Minute, "err", err)
			continue
		}
		updates = append(updates, live.Update{Campaign: cm.Campaign, Minute: cm.Minute, KPIs: k})
	}
	p.cfg.Publisher.Publish(updates)
}

// handOver forwards the contributions of campaigns other nodes own to
// those nodes. What they acknowledge is marked written here; the rest
// stays dirty for the next round.
func (p *Pipeline) handOver(ctx context.Context, sn *merge.Snapshot) error {
	type dest struct{ addr, agent string }
	groups := map[dest][]wire.Contribution{}
	keysOf := map[dest][]sketch.Key{}
	for _, c := range sn.Contribs {
		_, addr, _ := p.cfg.Routing.Owner(c.Key.Series.Campaign)
		d := dest{addr, c.Agent}
		groups[d] = append(groups[d], c.Contribs...)
		keysOf[d] = append(keysOf[d], c.Key)
	}
	var (
		mu     sync.Mutex
		failed = map[sketch.Key]bool{}
		errs   []error
		wg     sync.WaitGroup
		sem    = make(chan struct{}, 8)
	)
	for d, cs := range groups {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			err := p.cfg.Routing.Forward(ctx, d.addr, d.agent, cs)
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			for _, k := range keysOf[d] {
				failed[k] = true
			}
		})
	}
	wg.Wait()
	done := sn.Subset(func(k sketch.Key) bool { return !failed[k] })
	p.store.MarkWritten(done)
	p.m.handedOver.Add(float64(done.Len()))
	if len(errs) > 0 {
		return fmt.Errorf("hand over to owners: %w", errors.Join(errs...))
	}
	return nil
}

// TakeOver rebuilds the open minutes of the campaigns that owns selects
// (those this node just became the owner of) from every node's
// contribution points in storage, and marks them to be written again: a
// merged value another node wrote while it held the campaign may lack
// contributions this node has. Merging is idempotent, so loading what the
// store already holds is harmless.
func (p *Pipeline) TakeOver(ctx context.Context, owns func(campaign string) bool) (int, error) {
	now := time.Now()
	pts, err := p.storage.LoadContributionsFunc(ctx, now.Add(-p.cfg.Lateness).Truncate(time.Minute), now.Add(24*time.Hour),
		func(s sketch.Series) bool { return owns(s.Campaign) })
	if err != nil {
		return 0, fmt.Errorf("take over campaigns: %w", err)
	}
	var ds []merge.Decoded
	for _, pt := range pts {
		more, err := decodeAll(pt.Agent, pt.Contribs)
		if err != nil {
			return 0, fmt.Errorf("take over %s@%d: %w", pt.Series, pt.Minute, err)
		}
		ds = append(ds, more...)
	}
	p.walMu.Lock()
	defer p.walMu.Unlock()
	if _, err := p.store.Apply(ds); err != nil {
		return 0, err
	}
	p.store.MarkDirty(func(k sketch.Key) bool { return owns(k.Series.Campaign) })
	p.m.takeovers.Add(float64(len(pts)))
	return len(pts), nil
}

// DropForeign forgets clean minutes of campaigns this node does not own.
func (p *Pipeline) DropForeign() int {
	if p.cfg.Routing == nil {
		return 0
	}
	return p.store.DropClean(func(k sketch.Key) bool {
		_, _, self := p.cfg.Routing.Owner(k.Series.Campaign)
		return !self
	})
}

// Ready reports whether the pipeline serves: recovered, and the last
// write round succeeded.
func (p *Pipeline) Ready() error {
	if !p.ready.Load() {
		return errors.New("rebuilding open minutes")
	}
	if msg := p.writeErr.Load(); msg != nil {
		return fmt.Errorf("InfluxDB writes failing (data is safe in the WAL): %s", *msg)
	}
	return nil
}

// Store exposes the merge store (for stats).
func (p *Pipeline) Store() *merge.Store { return p.store }

// Close closes the WAL. Call it after Run has returned.
func (p *Pipeline) Close() error { return p.wal.Close() }

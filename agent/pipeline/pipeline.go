// Package pipeline assembles the agent's durable path — spool, collector
// (journal and minute rollup), shipper — and the source.Env every source
// normalises with, in one place for the running agent (agent.Run) and for
// log backfills (backfill.Import), so the two cannot drift apart.
//
// Lifecycle: New opens everything (nothing runs yet), Start starts the
// collector's flushes and the shipper, Stop makes the final flush and
// stops them, Close closes what New opened. Close is safe to call twice
// and after a failed Start.
package pipeline

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/botfilter"
	"github.com/tally-edge/tally/agent/cardinality"
	"github.com/tally-edge/tally/agent/collector"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/deadletter"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/geo"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// Options say how this pipeline differs between a live agent and a
// backfill.
type Options struct {
	// Dir is the pipeline's state directory (epoch, journal, spool).
	Dir string
	// SpoolName names the spool in dead letters: "live" or "import".
	SpoolName string
	// EpochBit is or-ed into the restart epoch, keeping the contribution
	// ids of backfills apart from the live agent's.
	EpochBit uint32
	// NoJournal runs the collector without a journal (sources that can
	// read their input again; see collector.Config.NoJournal).
	NoJournal bool
	// Bulk compresses batches at zstd's fastest level: for a backfill,
	// the CPU is what bounds it, not the network.
	Bulk bool
	// FlushInterval overrides cfg.Rollup.FlushInterval when not 0.
	FlushInterval time.Duration
	// Rollup adjusts the rollup configuration built from cfg.
	Rollup func(*rollup.Config)
	// MaxAge and MaxSkew override cfg.HTTP's event age bounds when not 0.
	MaxAge, MaxSkew time.Duration
}

// Pipeline is an assembled durable path. Its fields are set by New and
// not changed after.
type Pipeline struct {
	// Env is what every source normalises events with.
	Env *source.Env
	// Collector is the sink of every source.
	Collector *collector.Collector
	// Spool holds the batches until acknowledged.
	Spool *spool.Spool
	// Shipper sends them.
	Shipper *ship.Shipper
	// Live sends live counters between flushes (nil when off).
	Live *ship.LiveSender
	// Bots is the bot filter (also in Env).
	Bots *botfilter.Filter
	// DeadLetters keeps rejected batches.
	DeadLetters *deadletter.Store
	// Identity is the agent's client certificate (aggregator.cert and
	// aggregator.key), read again when its files change (Identity.Watch,
	// Identity.Prepare): new connections present the renewed one.
	Identity *pki.Identity
	// Epoch is this run's restart epoch (EpochBit included).
	Epoch uint32

	log     *slog.Logger
	closers []func() error

	runMu    sync.Mutex
	started  bool
	stopCol  context.CancelFunc
	stopShip context.CancelFunc
	colErr   chan error
	shipErr  chan error
	wg       sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New opens the pipeline for cfg, registering its metrics with reg. On
// error everything opened so far is closed again.
func New(cfg config.Config, opts Options, reg prometheus.Registerer, logger *slog.Logger) (p *Pipeline, err error) {
	if err := checkIdentity(cfg); err != nil {
		return nil, err
	}
	p = &Pipeline{log: logger}
	defer func() {
		if err != nil {
			p.Close()
			p = nil
		}
	}()
	epoch, err := collector.NextEpoch(opts.Dir)
	if err != nil {
		return nil, err
	}
	if epoch&opts.EpochBit != 0 {
		return nil, fmt.Errorf("epoch %d exhausted in %s", epoch, opts.Dir)
	}
	p.Epoch = epoch | opts.EpochBit

	hasher, err := privacy.NewHasher(cfg.Privacy.Secret, cfg.Privacy.SaltPeriod)
	if err != nil {
		return nil, err
	}
	if p.Bots, err = botfilter.Open(cfg.Bots); err != nil {
		return nil, fmt.Errorf("bot filter: %w", err)
	}
	p.closers = append(p.closers, func() error { p.Bots.Close(); return nil })
	reg.MustRegister(p.Bots)
	countries, err := p.openGeo(cfg, reg)
	if err != nil {
		return nil, err
	}
	p.Env = &source.Env{Region: cfg.Region, MaxAge: cfg.HTTP.MaxEventAge, MaxSkew: cfg.HTTP.MaxClockSkew,
		Geo: countries, Devices: event.NewDeviceCache(0), Hasher: hasher, Bots: p.Bots}
	if opts.MaxAge > 0 {
		p.Env.MaxAge = opts.MaxAge
	}
	if opts.MaxSkew > 0 {
		p.Env.MaxSkew = opts.MaxSkew
	}
	for _, s := range cfg.HTTP.TrustedProxies {
		p.Env.Proxies.Trusted = append(p.Env.Proxies.Trusted, netip.MustParsePrefix(s)) // validated by config
	}
	registerEnvMetrics(reg, p.Env)

	if p.Spool, err = spool.Open(filepath.Join(opts.Dir, "spool"), spool.Config{MaxBytes: int64(cfg.Spool.MaxBytes)}, logger); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	p.closers = append(p.closers, p.Spool.Close)
	registerSpoolMetrics(reg, p.Spool)

	if p.DeadLetters, err = deadletter.Open(deadletter.Config{Dir: filepath.Join(cfg.StateDir, "dead-letter"),
		MaxBatches: cfg.DeadLetters.MaxBatches, MaxBytes: int64(cfg.DeadLetters.MaxBytes)}); err != nil {
		return nil, err
	}

	routeToOwner := cfg.Aggregator.RouteToOwner == nil || *cfg.Aggregator.RouteToOwner
	membership := &ship.Membership{}
	var routes *ship.Membership
	if routeToOwner {
		routes = membership
	}
	// Live counters are the live agent's: backfills and imports (EpochBit)
	// have none.
	liveOn := cfg.Live.On() && opts.EpochBit == 0
	rcfg := rollup.Config{Lateness: cfg.Rollup.Lateness, MaxOpen: cfg.Rollup.MaxOpen, CampaignUniques: cfg.Rollup.Uniques == "campaign",
		Live: liveOn}
	if opts.Rollup != nil {
		opts.Rollup(&rcfg)
	}
	flush := cfg.Rollup.FlushInterval
	if opts.FlushInterval > 0 {
		flush = opts.FlushInterval
	}
	// Flushes of the live agent wait for a link that is behind; a backfill
	// or import reads faster than any link, and its memory would grow.
	var behind func() bool
	var maxDelay time.Duration
	if opts.EpochBit == 0 && cfg.Rollup.MaxFlushDelay > 0 {
		behind, maxDelay = func() bool { return p.linkBehind(flush) }, cfg.Rollup.MaxFlushDelay
	}
	p.Collector, err = collector.Open(collector.Config{
		Dir: opts.Dir, Epoch: p.Epoch, FlushInterval: flush, Rollup: rcfg, NoJournal: opts.NoJournal,
		Behind: behind, MaxFlushDelay: maxDelay,
		JournalMaxBytes: int64(cfg.Journal.MaxBytes), JournalFsync: cfg.Journal.Fsync,
		Batcher:         ship.NewBatcher(cfg.Aggregator.MaxBatchContributions, int(cfg.Aggregator.MaxBatchBytes), routes),
		Cardinality:     GuardConfig(cfg.Cardinality),
		ForgetPositions: cfg.Sources.ForgetPositions,
	}, p.Spool, reg, logger)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, p.Collector.Close)

	if err := p.newShipper(cfg, opts, membership, routeToOwner, liveOn, flush, reg, logger); err != nil {
		return nil, err
	}
	return p, nil
}

// linkBehind reports whether the link is behind: connected, yet a batch
// committed a whole flush interval ago is still not acknowledged, so the
// link did not carry one flush in the time between two. Not connected is
// not behind: an outage spools as usual.
func (p *Pipeline) linkBehind(flush time.Duration) bool {
	if p.Shipper == nil || !p.Shipper.Connected() {
		return false
	}
	oldest := p.Spool.Stats().OldestPending
	return !oldest.IsZero() && time.Since(oldest) >= flush
}

// checkIdentity refuses to start an agent whose name is not the CN of its
// certificate: the aggregator would refuse every batch it sends.
func checkIdentity(cfg config.Config) error {
	b, err := os.ReadFile(cfg.Aggregator.Cert)
	if err != nil {
		return fmt.Errorf("aggregator.cert: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return fmt.Errorf("aggregator.cert %s: no PEM certificate", cfg.Aggregator.Cert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("aggregator.cert %s: %w", cfg.Aggregator.Cert, err)
	}
	if cn := cert.Subject.CommonName; cn != cfg.Name {
		return fmt.Errorf("name %q is not the CN of aggregator.cert %s (%q): aggregators would refuse every batch; fix name or use this agent's certificate", cfg.Name, cfg.Aggregator.Cert, cn)
	}
	return nil
}

// GuardConfig is the cardinality guard's view of the agent's limits.
func GuardConfig(c config.Cardinality) cardinality.Config {
	return cardinality.Config{MaxCampaigns: c.MaxCampaigns, MaxSources: c.MaxSources,
		MaxMediums: c.MaxMediums, MaxAnswers: c.MaxAnswers, MaxSeries: c.MaxSeries}
}

// openGeo opens the configured country database, if any. The returned
// event.Geo is a nil interface (never a nil *geo.DB) when there is none.
func (p *Pipeline) openGeo(cfg config.Config, reg prometheus.Registerer) (event.Geo, error) {
	if cfg.Geo.Database == "" {
		return nil, nil
	}
	db, err := geo.Open(cfg.Geo.Database)
	if err != nil {
		return nil, err // names the file and the problem
	}
	p.closers = append(p.closers, func() error { db.Close(); return nil })
	reg.MustRegister(db)
	info := db.Info()
	p.log.Info("geo database loaded", "type", info.Type, "built", info.Built.Format(time.DateOnly))
	return db, nil
}

// newShipper builds the QUIC shipper on a process-wide endpoint.
func (p *Pipeline) newShipper(cfg config.Config, opts Options, membership *ship.Membership, routeToOwner, liveOn bool,
	flush time.Duration, reg prometheus.Registerer, logger *slog.Logger) error {
	id, err := pki.LoadIdentity("aggregator.cert", cfg.Aggregator.Cert, cfg.Aggregator.Key)
	if err != nil {
		return err
	}
	p.Identity = id
	tlsConf, err := pki.ClientTLSFor(id, cfg.Aggregator.CA, cfg.Aggregator.ServerName, wire.ALPN)
	if err != nil {
		return err
	}
	ep, err := wire.NewEndpoint(":0")
	if err != nil {
		return fmt.Errorf("open QUIC endpoint: %w", err)
	}
	// Closed after the shipper stops (Close runs closers in reverse).
	p.closers = append(p.closers, ep.Close)
	compress := cfg.Aggregator.Compress == nil || *cfg.Aggregator.Compress
	wireBytes := &bytesCounter{}
	dial := func(ctx context.Context, addr string) (ship.Sender, error) {
		c, err := wire.Dial(ctx, addr, tlsConf, wire.ClientConfig{Endpoint: ep, Compress: compress, CompressFastest: opts.Bulk,
			SendTimeout: cfg.Aggregator.SendTimeout})
		if err != nil {
			return nil, err
		}
		return wireBytes.track(c), nil
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_agent_wire_bytes_sent_total",
		Help: "Bytes sent to aggregators in batch frames (headers included)."}, func() float64 { return float64(wireBytes.sent()) }))
	col := p.Collector
	p.Shipper = ship.New(ship.Config{Agent: cfg.Name, Region: cfg.Region, Addrs: cfg.Aggregator.Addrs,
		InFlight: cfg.Aggregator.InFlight, BackoffMin: cfg.Aggregator.BackoffMin, BackoffMax: cfg.Aggregator.BackoffMax,
		SendTimeout: cfg.Aggregator.SendTimeout, MaxSendTimeout: cfg.Aggregator.MaxSendTimeout, DeadLetters: p.DeadLetters, SpoolName: opts.SpoolName,
		OnMembershipChange: func(uint64) { col.ResendOpen() }, MaxBatchesPerSecond: cfg.Aggregator.MaxBatchesPerSecond,
		RouteToOwner: routeToOwner, Membership: membership},
		p.Spool, dial, reg, logger)
	if liveOn {
		// Live streams have connections of their own (one per node they
		// go to), so a bulk upload never holds them up.
		liveDial := func(ctx context.Context, addr string) (*wire.Client, error) {
			return wire.Dial(ctx, addr, tlsConf, wire.ClientConfig{Endpoint: ep, Compress: compress,
				SendTimeout: cfg.Aggregator.SendTimeout})
		}
		// A flush may wait for the link (rollup.max_flush_delay): receivers
		// keep live counters unconfirmed for a few of the longest gaps
		// between two flushes, not of the interval alone.
		p.Live = ship.NewLiveSender(ship.LiveConfig{Interval: cfg.Live.Interval, Epoch: p.Epoch, Flush: flush + cfg.Rollup.MaxFlushDelay, Source: col,
			Dial: liveDial, Primary: p.Shipper.Addr, Membership: membership, Addrs: cfg.Aggregator.Addrs, RouteToOwner: routeToOwner, Logger: logger}, reg)
	}
	return nil
}

// Start starts the collector's flushes and the shipper. Call it once.
func (p *Pipeline) Start() {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	if p.started {
		return
	}
	p.started = true
	colCtx, stopCol := context.WithCancel(context.Background())
	shipCtx, stopShip := context.WithCancel(context.Background())
	p.stopCol, p.stopShip = stopCol, stopShip
	p.colErr, p.shipErr = make(chan error, 1), make(chan error, 1)
	p.wg.Go(func() { p.colErr <- p.Collector.Run(colCtx) })
	p.wg.Go(func() { p.shipErr <- p.Shipper.Run(shipCtx) })
	if p.Live != nil {
		p.wg.Go(func() { p.Live.Run(shipCtx) })
	}
}

// ShipperStopped returns a channel that yields the shipper's error if it
// stops on its own (the aggregator refused this agent). Nil before Start.
func (p *Pipeline) ShipperStopped() <-chan error { return p.shipErr }

// Flush stops the collector after its final flush: from then on nothing
// new reaches the spool. It returns the final flush's error. Safe to call
// more than once (later calls return nil).
func (p *Pipeline) Flush() error {
	p.runMu.Lock()
	stop, errc := p.stopCol, p.colErr
	p.stopCol = nil
	p.runMu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	return <-errc
}

// Drain waits until the spool is empty, the shipper is not connected, or
// the deadline passes, whichever is first.
func (p *Pipeline) Drain(deadline time.Time) {
	for p.Shipper.Connected() && p.Spool.Stats().PendingBatches > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop makes the final flush (if Flush was not called), stops the
// shipper and waits for both goroutines.
func (p *Pipeline) Stop() error {
	err := p.Flush()
	p.runMu.Lock()
	stopShip := p.stopShip
	p.stopShip = nil
	p.runMu.Unlock()
	if stopShip != nil {
		stopShip()
	}
	p.wg.Wait()
	return err
}

// Close stops what runs (without waiting to drain) and closes, in
// reverse order, everything New opened. Safe to call twice.
func (p *Pipeline) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		if p.Collector != nil && p.Shipper != nil {
			errs = append(errs, p.Stop())
		}
		for i := len(p.closers) - 1; i >= 0; i-- {
			errs = append(errs, p.closers[i]())
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

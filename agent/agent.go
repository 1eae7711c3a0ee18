// Package agent wires tally-agent together: HTTP ingest → collector
// (journal + minute rollup) → spool → QUIC shipper, plus health and
// metrics. Its parts live in the subpackages; Run only starts them in
// order and stops them in reverse.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tally-edge/tally/agent/botfilter"
	"github.com/tally-edge/tally/agent/browser"
	"github.com/tally-edge/tally/agent/cardinality"
	"github.com/tally-edge/tally/agent/collector"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/geo"
	"github.com/tally-edge/tally/agent/imports"
	"github.com/tally-edge/tally/agent/ingest"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// DrainTimeout bounds how long shutdown waits for the last flush to be
// acknowledged. Whatever is not acknowledged by then stays in the spool
// and is sent at the next start.
const DrainTimeout = 10 * time.Second

// Run runs the agent until ctx is done, then shuts down gracefully: stop
// taking requests, flush, give the shipper DrainTimeout to deliver, close.
// ready, if not nil, is called with the HTTP address once serving.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger, ready func(httpAddr string)) error {
	logger = logger.With("agent", cfg.Name, "region", cfg.Region)
	setMemoryLimit(int64(cfg.MemoryLimit), logger)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	epoch, err := collector.NextEpoch(cfg.StateDir)
	if err != nil {
		return err
	}
	sp, err := spool.Open(filepath.Join(cfg.StateDir, "spool"), spool.Config{MaxBytes: int64(cfg.Spool.MaxBytes)}, logger)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer sp.Close()
	registerSpoolMetrics(reg, sp)

	col, err := collector.Open(collector.Config{
		Dir: cfg.StateDir, Epoch: epoch, FlushInterval: cfg.Rollup.FlushInterval,
		Rollup: rollup.Config{Lateness: cfg.Rollup.Lateness, MaxOpen: cfg.Rollup.MaxOpen,
			CampaignUniques: cfg.Rollup.Uniques == "campaign"},
		JournalMaxBytes: int64(cfg.Journal.MaxBytes), JournalFsync: cfg.Journal.Fsync,
		MaxBatchContributions: cfg.Aggregator.MaxBatchContributions,
		Cardinality:           guardConfig(cfg.Cardinality),
	}, sp, reg, logger)
	if err != nil {
		return err
	}
	defer col.Close()

	hasher, err := privacy.NewHasher(cfg.Privacy.Secret, cfg.Privacy.SaltPeriod)
	if err != nil {
		return err
	}
	bots, err := botfilter.Open(cfg.Bots)
	if err != nil {
		return fmt.Errorf("bot filter: %w", err)
	}
	reg.MustRegister(bots)
	countries, closeGeo, err := openGeo(cfg, reg, logger)
	if err != nil {
		return err
	}
	defer closeGeo()
	var proxies []netip.Prefix
	for _, p := range cfg.HTTP.TrustedProxies {
		proxies = append(proxies, netip.MustParsePrefix(p)) // validated by config
	}
	ingCfg := ingest.Config{Region: cfg.Region, MaxBodyBytes: int64(cfg.HTTP.MaxBodyBytes),
		MaxEvents: cfg.HTTP.MaxEventsPerRequest, MaxAge: cfg.HTTP.MaxEventAge, MaxSkew: cfg.HTTP.MaxClockSkew,
		TrustedProxies: proxies, Geo: countries}
	ing := ingest.New(ingCfg, col, hasher, bots, reg, logger)
	bcfg := cfg.Browser
	bcfg.Ingest = ingCfg
	web, err := browser.New(bcfg, col, hasher, bots, reg, logger)
	if err != nil {
		return fmt.Errorf("browser sources: %w", err)
	}
	imp, err := imports.New(cfg.Imports, col, hasher, cfg.Region, reg, logger)
	if err != nil {
		return fmt.Errorf("imports: %w", err)
	}

	shipper, closeShipping, err := newShipper(cfg, sp, false, func(uint64) { col.ResendOpen() }, reg, logger)
	if err != nil {
		return err
	}
	defer closeShipping()
	if cfg.Aggregator.RouteToOwner == nil || *cfg.Aggregator.RouteToOwner {
		col.SetRouter(shipper.OwnerOf)
	}

	tailers, err := newTailers(cfg, col, hasher, bots, countries, reg, logger)
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/events", web.CORS(ing)) // no method in the pattern: OPTIONS must reach CORS
	mux.Handle("GET /v1/t.js", web.Script())
	mux.Handle("GET /v1/pixel.gif", web.Pixel())
	mux.Handle("POST "+imports.CostPath, imp.Cost())
	mux.Handle("POST "+imports.EmailWebhookPath, imp.EmailWebhook())
	mux.Handle("POST "+imports.PollsPath, imp.Polls())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if sp.Full() {
			http.Error(w, "spool full", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTP.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}

	// Start order: collector, shipper, HTTP. Stop order: HTTP, collector
	// (final flush), shipper (after a drain window).
	colCtx, stopCol := context.WithCancel(context.Background())
	shipCtx, stopShip := context.WithCancel(context.Background())
	defer stopCol()
	defer stopShip()
	var wg sync.WaitGroup
	colErr := make(chan error, 1)
	wg.Go(func() { colErr <- col.Run(colCtx) })
	wg.Go(func() { _ = shipper.Run(shipCtx) })
	tailCtx, stopTails := context.WithCancel(context.Background())
	defer stopTails()
	var tailWG sync.WaitGroup
	tailErr := make(chan error, len(tailers))
	for _, t := range tailers {
		tailWG.Go(func() {
			if err := t.Run(tailCtx); err != nil {
				tailErr <- err
			}
		})
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(ln) }()
	logger.Info("agent started", "http", ln.Addr().String(), "aggregators", cfg.Aggregator.Addrs, "epoch", epoch,
		"flush_interval", cfg.Rollup.FlushInterval, "log_sources", len(tailers))
	if ready != nil {
		ready(ln.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-httpErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-tailErr:
		// A sink failure other than backpressure: stop, so a restart
		// resumes every log exactly from its journaled position.
		runErr = fmt.Errorf("log source: %w", err)
	}
	logger.Info("shutting down: stop ingest, flush, drain")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	stopTails()
	tailWG.Wait()
	stopCol()
	if err := <-colErr; err != nil {
		runErr = errors.Join(runErr, err)
	}
	deadline := time.Now().Add(DrainTimeout)
	for shipper.Connected() && sp.Stats().PendingBatches > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stopShip()
	wg.Wait()
	st := sp.Stats()
	logger.Info("agent stopped", "spooled_batches_left", st.PendingBatches)
	return runErr
}

// setMemoryLimit applies a soft heap limit unless GOMEMLIMIT is set.
func setMemoryLimit(limit int64, logger *slog.Logger) {
	if limit <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(limit)
	logger.Info("soft memory limit set", "bytes", limit)
}

// openGeo opens the configured country database, if any. The returned
// event.Geo is a nil interface (never a nil *geo.DB) when there is none.
func openGeo(cfg config.Config, reg prometheus.Registerer, logger *slog.Logger) (event.Geo, func(), error) {
	if cfg.Geo.Database == "" {
		return nil, func() {}, nil
	}
	db, err := geo.Open(cfg.Geo.Database)
	if err != nil {
		return nil, nil, err // names the file and the problem
	}
	reg.MustRegister(db)
	info := db.Info()
	logger.Info("geo database loaded", "type", info.Type, "built", info.Built.Format(time.DateOnly))
	return db, func() { db.Close() }, nil
}

// newShipper builds the QUIC shipper for cfg on a process-wide endpoint.
// The returned func closes the endpoint; call it after the shipper stops.
// bulk (a backfill) compresses at zstd's fastest level: the CPU, not the
// network, is what bounds it.
func newShipper(cfg config.Config, sp *spool.Spool, bulk bool, onMembershipChange func(uint64), reg prometheus.Registerer, logger *slog.Logger) (*ship.Shipper, func(), error) {
	tlsConf, err := pki.ClientTLS(pki.Files{CA: cfg.Aggregator.CA, Cert: cfg.Aggregator.Cert, Key: cfg.Aggregator.Key},
		cfg.Aggregator.ServerName, wire.ALPN)
	if err != nil {
		return nil, nil, err
	}
	ep, err := wire.NewEndpoint(":0")
	if err != nil {
		return nil, nil, fmt.Errorf("open QUIC endpoint: %w", err)
	}
	compress := cfg.Aggregator.Compress == nil || *cfg.Aggregator.Compress
	wireBytes := &bytesCounter{}
	dial := func(ctx context.Context, addr string) (ship.Sender, error) {
		c, err := wire.Dial(ctx, addr, tlsConf, wire.ClientConfig{Endpoint: ep, Compress: compress, CompressFastest: bulk,
			SendTimeout: cfg.Aggregator.SendTimeout})
		if err != nil {
			return nil, err
		}
		return wireBytes.track(c), nil
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_agent_wire_bytes_sent_total",
		Help: "Bytes sent to aggregators in batch frames (headers included)."}, func() float64 { return float64(wireBytes.sent()) }))
	shipper := ship.New(ship.Config{Agent: cfg.Name, Region: cfg.Region, Addrs: cfg.Aggregator.Addrs,
		InFlight: cfg.Aggregator.InFlight, BackoffMin: cfg.Aggregator.BackoffMin, BackoffMax: cfg.Aggregator.BackoffMax,
		SendTimeout: cfg.Aggregator.SendTimeout, DeadLetterDir: filepath.Join(cfg.StateDir, "dead-letter"),
		OnMembershipChange: onMembershipChange, MaxBatchesPerSecond: cfg.Aggregator.MaxBatchesPerSecond,
		RouteToOwner: cfg.Aggregator.RouteToOwner == nil || *cfg.Aggregator.RouteToOwner},
		sp, dial, reg, logger)
	return shipper, func() { ep.Close() }, nil
}

func registerSpoolMetrics(reg prometheus.Registerer, sp *spool.Spool) {
	gauge := func(name, help string, f func(spool.Stats) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(sp.Stats()) }))
	}
	gauge("tally_agent_spool_pending_batches", "Batches in the spool awaiting an ack.", func(s spool.Stats) float64 { return float64(s.PendingBatches) })
	gauge("tally_agent_spool_pending_bytes", "Bytes of batches awaiting an ack.", func(s spool.Stats) float64 { return float64(s.PendingBytes) })
	gauge("tally_agent_spool_acked_batches", "Batches acknowledged since start.", func(s spool.Stats) float64 { return float64(s.AckedTotal) })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_agent_spool_bytes",
		Help: "Bytes the spool uses on disk."}, func() float64 { used, _ := sp.Usage(); return float64(used) }))
}

// bytesCounter sums the bytes sent by every client the agent dialled.
type bytesCounter struct {
	mu     sync.Mutex
	closed uint64
	live   []*wire.Client
}

func (b *bytesCounter) track(c *wire.Client) ship.Sender {
	b.mu.Lock()
	b.live = append(b.live, c)
	b.mu.Unlock()
	return &trackedClient{Client: c, b: b}
}

func (b *bytesCounter) sent() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.closed
	for _, c := range b.live {
		n += c.Stats().BytesSent
	}
	return n
}

type trackedClient struct {
	*wire.Client
	b *bytesCounter
}

func (t *trackedClient) Close() error {
	t.b.mu.Lock()
	for i, c := range t.b.live {
		if c == t.Client {
			t.b.closed += c.Stats().BytesSent
			t.b.live = append(t.b.live[:i], t.b.live[i+1:]...)
			break
		}
	}
	t.b.mu.Unlock()
	return t.Client.Close()
}

// guardConfig is the cardinality guard's view of the agent's limits.
func guardConfig(c config.Cardinality) cardinality.Config {
	return cardinality.Config{MaxCampaigns: c.MaxCampaigns, MaxSources: c.MaxSources,
		MaxMediums: c.MaxMediums, MaxAnswers: c.MaxAnswers}
}

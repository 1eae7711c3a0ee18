// Package aggregator wires tally-aggregator together: QUIC ingest →
// write-ahead log and merge store → InfluxDB, and the HTTP API and
// dashboard. Its parts live in the subpackages; Run only starts them in
// order and stops them in reverse.
package aggregator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/cluster"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/aggregator/forward"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/ingest"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/aggregator/liveview"
	"github.com/tally-edge/tally/aggregator/quarantine"
	"github.com/tally-edge/tally/aggregator/rollup"
	"github.com/tally-edge/tally/aggregator/writer"
	"github.com/tally-edge/tally/internal/buildinfo"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/internal/reload"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// alertObjectsKey is hashed like a campaign to choose the node that
// refreshes the alerting objects in storage.
const alertObjectsKey = "\x00tally:alerting-objects"

// Addrs are the addresses a running aggregator serves on.
type Addrs struct {
	QUIC, HTTP string
}

// Run runs the aggregator until ctx is done, then stops taking batches,
// writes everything merged to InfluxDB (within the shutdown timeout; the
// WAL keeps whatever it could not) and closes. ready, if not nil, is
// called once both listeners are up.
//
// When the write-ahead log breaks (a failed fsync), Run stops the same
// way, saving to InfluxDB what it can, and returns an error, so the
// process exits non-zero and its supervisor restarts it on a log reread
// from disk.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger, ready func(Addrs)) error {
	return RunWith(ctx, cfg, logger, Options{Ready: ready})
}

// Options are what the command adds to a run of the aggregator.
type Options struct {
	// Ready, if not nil, is called once both listeners are up.
	Ready func(Addrs)
	// Reload delivers new configurations (SIGHUP) to put in force while
	// the node runs: see reload.go. The zero value delivers none.
	Reload reload.Source[config.Config]
}

// RunWith is Run with Options.
func RunWith(ctx context.Context, cfg config.Config, logger *slog.Logger, opts Options) error {
	ready := opts.Ready
	logger = logger.With("node", cfg.Name)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector("tally_aggregator"))

	icfg := cfg.Influx.Storage()
	iw, err := influx.NewWriter(icfg, logger)
	if err != nil {
		return err
	}
	defer iw.Close()
	reader, err := influx.NewReader(icfg, logger)
	if err != nil {
		return err
	}
	defer reader.Close()
	registerWriterMetrics(reg, iw)
	storageCheck := newStorageSetup(reader, icfg, cfg.Influx.CreateBucket, reg, logger)
	usage := newStorageUsage(reader, 10*time.Minute, reg, logger)

	// One UDP endpoint serves agents and peers and dials peers.
	ep, err := wire.NewEndpoint(cfg.QUIC.Listen)
	if err != nil {
		return fmt.Errorf("listen QUIC %s: %w", cfg.QUIC.Listen, err)
	}
	defer ep.Close()
	// The node's certificates are read again when their files change
	// (cert_check_interval) and at a reload: new handshakes present the
	// renewed one.
	ids, err := loadIdentities(cfg)
	if err != nil {
		return err
	}
	reg.MustRegister(pki.IdentityMetrics("tally_aggregator", ids.quic, ids.http))
	serverTLS, err := pki.ServerTLSFor(ids.quic, cfg.QUIC.CA, wire.ALPN, wire.ALPNForward)
	if err != nil {
		return err
	}
	clientTLS, err := pki.ClientTLSFor(ids.quic, cfg.QUIC.CA, "", wire.ALPNForward)
	if err != nil {
		return err
	}
	clustered := cfg.Cluster.Bind != ""
	signer, err := ids.quic.NodeSigner()
	switch {
	case err != nil && clustered:
		return fmt.Errorf("quic.cert: %w", err)
	case err != nil:
		logger.Warn("this node's certificate is not a node certificate: `tally-aggregator quarantine replay` cannot reach it until it is issued again with `tally-aggregator certs`", "err", err)
	}
	verifier, err := pki.LoadNodeVerifier(cfg.QUIC.CA)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("listen HTTP %s: %w", cfg.HTTP.Listen, err)
	}
	defer ln.Close()

	quicAdvertise := cfg.QUIC.Advertise
	if quicAdvertise == "" {
		quicAdvertise = ep.Addr().String()
	}
	// hub is this node's live hub: owners' updates reach it through the
	// fan-out (this node's own and every peer's), and /api/v1/stream
	// serves it.
	hub := live.NewHub(live.HubConfig{Heartbeat: cfg.HTTP.Stream.Heartbeat, Buffer: cfg.HTTP.Stream.Buffer,
		WriteTimeout: cfg.HTTP.Stream.WriteTimeout}, reg)
	defer hub.Close()
	key, err := cfg.Cluster.GossipKey()
	if err != nil {
		return err
	}
	// The fan-out needs the cluster and the cluster delivers to the
	// fan-out: messages that arrive before it exists are dropped (the
	// stream is a fast path; REST reads storage).
	var fan atomic.Pointer[live.Fanout]
	cl, err := cluster.Start(cluster.Config{Name: cfg.Name, Bind: cfg.Cluster.Bind, Advertise: cfg.Cluster.Advertise,
		Seeds: cfg.Cluster.Seeds, SecretKey: key, Profile: cfg.Cluster.Profile, ProbeInterval: cfg.Cluster.ProbeInterval,
		ProbeTimeout: cfg.Cluster.ProbeTimeout, SuspicionMult: cfg.Cluster.SuspicionMult, GossipInterval: cfg.Cluster.GossipInterval,
		DeadNodeReclaimTime: cfg.Cluster.DeadNodeReclaim},
		cluster.Meta{QUIC: quicAdvertise, HTTP: ln.Addr().String()}, logger, func(b []byte) {
			if f := fan.Load(); f != nil {
				f.Receive(b)
			}
		})
	if err != nil {
		return err
	}
	defer cl.Close()
	fcfg := live.FanoutConfig{Node: cfg.Name, Local: hub, Logger: logger}
	if clustered {
		fcfg.Peers, fcfg.Signer, fcfg.Verifier, fcfg.IsMember = cl, signer, verifier, cl.IsMember
	}
	fanout, err := live.NewFanout(fcfg)
	if err != nil {
		return err
	}
	fan.Store(fanout)
	defer fanout.Close()
	reg.MustRegister(newClusterCollector(cl, fanout), newFanoutCollector(fanout))
	fwd := forward.New(cfg.Name, ep, clientTLS, reg, logger)
	defer fwd.Close()

	icfgPipe := ingest.DefaultConfig()
	icfgPipe.Dir, icfgPipe.Node, icfgPipe.WALMaxBytes, icfgPipe.Lateness = cfg.DataDir, cfg.Name, int64(cfg.Merge.WALMaxBytes), cfg.Merge.Lateness
	icfgPipe.RequireAgentCN = cfg.QUIC.RequireAgentCN == nil || *cfg.QUIC.RequireAgentCN
	icfgPipe.NodeCertificate = pki.IsNodeCertificate
	icfgPipe.MaxPendingLoads = cfg.Merge.MaxPendingLoads
	if clustered {
		icfgPipe.Cluster = membership{cl}
	}
	pipe, err := ingest.Open(icfgPipe, storage{reader}, reg, logger)
	if err != nil {
		return err
	}
	defer pipe.Close()
	quar, err := quarantine.Open(filepath.Join(cfg.DataDir, "quarantine"), int64(cfg.Merge.QuarantineMaxBytes))
	if err != nil {
		return err
	}
	if r, h := cfg.Influx.Retention.Minutes, cfg.Alerts.History(); !cfg.Alerts.Disabled && r > 0 && r < h {
		logger.Warn("influx.retention.minutes is shorter than the history alerting reads: seasonal baselines and forecasts get only what is kept",
			"retention_minutes", r, "alerting_history", h, "reason", "alert_history_beyond_retention")
	}
	alerts, err := newAlertSide(cfg, pipe.Store(), fanout, iw, reader, clustered, reg, logger)
	if err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	defer alerts.close()
	// With live counters on, the writer publishes through the live view,
	// which lays agents' live counters over what it publishes.
	var publisher live.Publisher = fanout
	var handler wire.Handler = pipe
	var liveReady atomic.Bool
	var lview *liveview.View
	if cfg.Live.On() && icfgPipe.RequireAgentCN {
		lcfg := liveview.DefaultConfig()
		lcfg.Store, lcfg.Out, lcfg.Window, lcfg.MaxRecords = pipe.Store(), fanout, cfg.Live.Window, cfg.Live.MaxRecords
		lcfg.Logger = logger.With("component", "liveview")
		if clustered {
			self := cfg.Name
			lcfg.Owns = func(c string) bool { return cl.View().Owner(c).Name == self }
		}
		if lview, err = liveview.New(lcfg, reg); err != nil {
			return err
		}
		publisher = lview
		handler = liveIngest{Pipeline: pipe, view: lview, ready: &liveReady}
	} else if cfg.Live.On() {
		logger.Warn("live counters off: they need quic.require_agent_cn", "reason", "live_needs_agent_cn")
	}
	rcfg := rollup.Config{}
	if clustered {
		self := cfg.Name
		rcfg.Owns = func(c string) bool { return cl.View().Owner(c).Name == self }
	}
	roller := rollup.New(rcfg, rollupStorage{reader, iw}, reg, logger)
	wcfg := writer.Config{Node: cfg.Name, Interval: cfg.Merge.WriteInterval, Lateness: cfg.Merge.Lateness,
		Source: pipe, Storage: iw, Quarantine: quar, Publisher: writtenPublisher{publisher, alerts.engine}, Rollups: roller}
	if clustered {
		wcfg.Routing = routing{cl, fwd}
	}
	wr, err := writer.New(wcfg, reg, logger)
	if err != nil {
		return err
	}

	qsrv, err := wire.NewServer(wire.ServerConfig{Endpoint: ep, TLS: serverTLS, Handler: handler,
		MaxFrameSize: int(cfg.QUIC.MaxFrameBytes), MaxConns: cfg.QUIC.MaxConns, MaxConnsPerPeer: cfg.QUIC.MaxConnsPerPeer,
		MaxStreamsPerPeer: cfg.QUIC.MaxStreamsPerPeer, MaxDecodeBytesPerPeer: int64(cfg.QUIC.MaxDecodeBytesPerPeer),
		MaxDecodeBytes: int64(cfg.QUIC.MaxDecodeBytes), Logger: logger.With("component", "quic")})
	if err != nil {
		return fmt.Errorf("serve QUIC %s: %w", cfg.QUIC.Listen, err)
	}
	defer qsrv.Close()
	registerServerMetrics(reg, qsrv)

	readiness := func() error {
		if err := pipe.Ready(); err != nil {
			return err
		}
		if err := wr.Health(); err != nil {
			return err
		}
		if err := pipe.LoadHealth(); err != nil {
			return &writer.DegradedError{Reason: "cannot load late minutes from InfluxDB (they wait in the WAL): " + err.Error()}
		}
		return nil
	}
	side, err := newHTTPSide(cfg, hub, func() live.Status { return live.Status{Node: cfg.Name, Members: len(cl.Members())} },
		&rollup.Source{Reader: reader, Retention: icfg.Retention}, alerts.service, storageCheck.ready(readiness), reg, logger)
	if err != nil {
		return err
	}
	defer side.close()
	apiSrv := side.api
	apiSrv.Handle(api.ClusterRoute, clusterHandler(cl, fanout))
	hsrv := api.HTTPServer(apiSrv)
	hsrv.RegisterOnShutdown(hub.Close) // Shutdown does not end streams by itself

	var wg sync.WaitGroup
	defer wg.Wait()
	httpErr := make(chan error, 2)
	wg.Go(func() { httpErr <- serveHTTP(hsrv, ln, ids.http) })
	wg.Go(func() {
		if err := side.serveMetrics(ids.http); err != nil {
			httpErr <- err
		}
	})
	defer hsrv.Close()
	defer func() {
		if side.metrics != nil {
			side.metrics.Close()
		}
	}()
	quicCtx, stopQUIC := context.WithCancel(context.Background())
	defer stopQUIC()
	quicErr := make(chan error, 1)
	wg.Go(func() { quicErr <- qsrv.Serve(quicCtx) })
	// Certificates watched, and reloads applied, until the node stops.
	opsCtx, stopOps := context.WithCancel(context.Background())
	defer stopOps()
	wg.Go(func() { ids.watch(opsCtx, cfg.CertCheckInterval, logger) })
	reloader := newReloader(opts.Reload, ids, side.authn, reg, logger)
	wg.Go(func() { reloader.Run(opsCtx, cfg) })
	addrs := Addrs{QUIC: qsrv.Addr().String(), HTTP: ln.Addr().String()}
	logger.Info("aggregator listening; joining the cluster and rebuilding open minutes", "quic", addrs.QUIC, "http", addrs.HTTP,
		"gossip", cfg.Cluster.Bind)
	if ready != nil {
		ready(addrs)
	}

	// The storage first: check InfluxDB, create the bucket if allowed
	// (retrying while it is unreachable; /readyz says so meanwhile).
	storageInfo, err := storageCheck.run(ctx)
	if err != nil && ctx.Err() == nil {
		return err
	}
	// The rollups' since mark, before any minute is written (a failure
	// leaves answers to minutes until a sweep sets it).
	if err := roller.Init(ctx); err != nil && ctx.Err() == nil {
		logger.Warn("setting the rollups' since mark failed; answers come from minutes until a sweep sets it", "err", err)
	}

	// Ownership is only known once this node sees its peers: wait for them
	// (a node alone would think it owns everything), then rebuild. Batches
	// are answered "busy" until then.
	waitForPeers(ctx, cl, cfg.Cluster, logger)
	if err := pipe.Recover(ctx); err != nil {
		if ctx.Err() == nil {
			return err
		}
		logger.Info("stopped before recovery finished")
	}
	if clustered {
		self := cfg.Name
		pipe.DropForeign(func(c string) bool { return cl.View().Owner(c).Name != self })
	}

	pipeCtx, stopPipe := context.WithCancel(context.Background())
	defer stopPipe()
	var pipeWG sync.WaitGroup
	writeErr := make(chan error, 1)
	pipeWG.Go(func() { writeErr <- wr.Run(pipeCtx, cfg.Merge.ShutdownTimeout) })
	pipeWG.Go(func() { _ = pipe.RunLoader(pipeCtx) })
	pipeWG.Go(func() { _ = roller.Run(pipeCtx) })
	if storageInfo.InfluxQL && storageInfo.Generation < 2 {
		pipeWG.Go(func() { usage.run(pipeCtx) })
	}
	pipeWG.Go(func() { runScheduledArchive(pipeCtx, cfg, reader, cl, reg, logger) })
	// One node at a time keeps the alerting objects fresh in storage.
	objectsKeeper := func() bool { return !clustered || cl.View().Owner(alertObjectsKey).Name == cfg.Name }
	pipeWG.Go(func() { alerts.run(pipeCtx, cfg.Alerts.ObjectsPoll, objectsKeeper) })
	fanout.Start()
	if lview != nil {
		liveReady.Store(true)
		stopLive := make(chan struct{})
		pipeWG.Go(func() { lview.Run(stopLive) })
		go func() { <-pipeCtx.Done(); close(stopLive) }()
	}
	if clustered {
		last := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_aggregator_last_takeover_timestamp_seconds",
			Help: "Unix time at which this node last finished rebuilding campaigns it gained (0: never)."})
		reg.MustRegister(last)
		pipeWG.Go(func() {
			cluster.RunHandoff(pipeCtx, cl, rebuilder{pipe, alerts.engine}, cluster.HandoffConfig{Settle: cfg.Cluster.HandoffSettle,
				TookOver: func(int) { last.Set(float64(time.Now().UnixNano()) / 1e9) }, Logger: logger.With("component", "handoff")})
		})
	}
	if ctx.Err() == nil {
		logger.Info("aggregator ready", "members", len(cl.Members()))
	}

	var runErr error
	select {
	case <-ctx.Done():
	case <-pipe.Broken():
		runErr = fmt.Errorf("write-ahead log broken: %w (stopped taking batches; wrote what was merged; restart to reread the log from disk)", pipe.BrokenErr())
	case err := <-httpErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-quicErr:
		runErr = fmt.Errorf("quic server: %w", err)
	}
	// /readyz answers 503 from here on, and goes on answering while what
	// is merged is written, so a balancer sees the node leave.
	logger.Info("shutting down: stop QUIC, write what is merged, stop HTTP, leave the cluster")
	pipe.Stop()
	stopQUIC()
	qsrv.Close()
	stopPipe()
	pipeWG.Wait()
	if err := <-writeErr; err != nil {
		runErr = errors.Join(runErr, err)
	}
	fanout.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = hsrv.Shutdown(sctx)
	if side.metrics != nil {
		_ = side.metrics.Shutdown(sctx)
	}
	cancel()
	// Leave only now: the new owners rebuild from what was just written.
	if err := cl.Leave(5 * time.Second); err != nil {
		logger.Warn("leaving the cluster gracefully failed; the others will detect it", "err", err)
	}
	if runErr != nil {
		logger.Error("aggregator stopped", "err", runErr)
	} else {
		logger.Info("aggregator stopped")
	}
	return runErr
}

// waitForPeers waits until this node sees another member, for at most the
// join timeout, when it has seeds other than itself.
func waitForPeers(ctx context.Context, cl *cluster.Cluster, cfg config.Cluster, logger *slog.Logger) {
	if cfg.Bind == "" || len(cfg.Seeds) == 0 || (len(cfg.Seeds) == 1 && cfg.Seeds[0] == cfg.Bind) {
		return
	}
	deadline := time.Now().Add(cfg.JoinTimeout)
	for len(cl.Members()) < 2 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	if len(cl.Members()) < 2 {
		logger.Warn("no other cluster member reachable yet; serving alone until they join", "waited", cfg.JoinTimeout)
	}
}

// serveHTTP serves HTTPS (HTTP/2 included) with id's certificate when
// there is one (http.tls_cert), plain HTTP otherwise.
func serveHTTP(srv *http.Server, ln net.Listener, id *pki.Identity) error {
	if id != nil {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: id.GetCertificate}
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}

// storage is ingest.Storage over the reader.
type storage struct{ r *influx.Reader }

func (s storage) LoadContributions(ctx context.Context, from, to time.Time) ([]influx.ContribPoint, error) {
	return s.r.LoadContributions(ctx, from, to)
}

func (s storage) LoadContributionsOf(ctx context.Context, from, to time.Time, campaigns []string) ([]influx.ContribPoint, error) {
	return s.r.LoadContributionsOf(ctx, from, to, campaigns)
}

func (s storage) LoadContributionsFunc(ctx context.Context, from, to time.Time, keep func(sketch.Series) bool) ([]influx.ContribPoint, error) {
	return s.r.LoadContributionsFunc(ctx, from, to, keep)
}

// rollupStorage is rollup.Storage: the reader's reads, the writer's
// writes.
type rollupStorage struct {
	*influx.Reader
	w *influx.Writer
}

func (s rollupStorage) WriteRollups(ctx context.Context, res influx.Resolution, points []sketch.Minute) ([]influx.Refusal, error) {
	return s.w.WriteRollups(ctx, res, points)
}

func (s rollupStorage) WriteMarkers(ctx context.Context, res influx.Resolution, field string, marks []influx.Marker) error {
	return s.w.WriteMarkers(ctx, res, field, marks)
}

func (s rollupStorage) WriteSince(ctx context.Context, since int64, at time.Time) error {
	return s.w.WriteSince(ctx, since, at)
}

func registerWriterMetrics(reg prometheus.Registerer, w *influx.Writer) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_aggregator_influx_points_written_total",
		Help: "Points written to InfluxDB (merged and contribution points)."}, func() float64 { return float64(w.Stats().PointsWritten) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_aggregator_influx_retries_total",
		Help: "InfluxDB write attempts retried."}, func() float64 { return float64(w.Stats().Retries) }))
}

func registerServerMetrics(reg prometheus.Registerer, s *wire.Server) {
	reg.MustRegister(newServerCollector(s))
}

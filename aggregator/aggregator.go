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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/aggregator/cluster"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/aggregator/forward"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/ingest"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/aggregator/live"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Addrs are the addresses a running aggregator serves on.
type Addrs struct {
	QUIC, HTTP string
}

// Run runs the aggregator until ctx is done, then stops taking batches,
// writes everything merged to InfluxDB (within the shutdown timeout; the
// WAL keeps whatever it could not) and closes. ready, if not nil, is
// called once both listeners are up.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger, ready func(Addrs)) error {
	logger = logger.With("node", cfg.Name)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	icfg := influx.DefaultConfig()
	icfg.URL, icfg.Token, icfg.Org, icfg.Bucket, icfg.Timeout = cfg.Influx.URL, cfg.Influx.Token, cfg.Influx.Org, cfg.Influx.Bucket, cfg.Influx.Timeout
	icfg.QueryLanguage = cfg.Influx.QueryLanguage
	writer, err := influx.NewWriter(icfg, logger)
	if err != nil {
		return err
	}
	defer writer.Close()
	reader, err := influx.NewReader(icfg, logger)
	if err != nil {
		return err
	}
	defer reader.Close()
	registerWriterMetrics(reg, writer)
	storageCheck := newStorageSetup(reader, icfg, cfg.Influx.CreateBucket, reg, logger)

	// One UDP endpoint serves agents and peers and dials peers.
	ep, err := wire.NewEndpoint(cfg.QUIC.Listen)
	if err != nil {
		return fmt.Errorf("listen QUIC %s: %w", cfg.QUIC.Listen, err)
	}
	defer ep.Close()
	files := pki.Files{CA: cfg.QUIC.CA, Cert: cfg.QUIC.Cert, Key: cfg.QUIC.Key}
	serverTLS, err := pki.ServerTLS(files, wire.ALPN, wire.ALPNForward)
	if err != nil {
		return err
	}
	clientTLS, err := pki.ClientTLS(files, "", wire.ALPNForward)
	if err != nil {
		return err
	}
	if cfg.HTTP.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey); err != nil {
			return fmt.Errorf("http tls: %w", err)
		}
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
	// fanout (this node's own and every peer's), and /api/v1/stream
	// serves it.
	hub := live.NewHub(live.HubConfig{Heartbeat: cfg.HTTP.Stream.Heartbeat, Buffer: cfg.HTTP.Stream.Buffer,
		WriteTimeout: cfg.HTTP.Stream.WriteTimeout}, reg)
	defer hub.Close()
	pub := newFanout(hub, logger)
	key, err := cfg.Cluster.GossipKey()
	if err != nil {
		return err
	}
	cl, err := cluster.Start(cluster.Config{Name: cfg.Name, Bind: cfg.Cluster.Bind, Advertise: cfg.Cluster.Advertise,
		Seeds: cfg.Cluster.Seeds, SecretKey: key, Profile: cfg.Cluster.Profile, ProbeInterval: cfg.Cluster.ProbeInterval,
		ProbeTimeout: cfg.Cluster.ProbeTimeout, SuspicionMult: cfg.Cluster.SuspicionMult, GossipInterval: cfg.Cluster.GossipInterval,
		DeadNodeReclaimTime: cfg.Cluster.DeadNodeReclaim},
		cluster.Meta{QUIC: quicAdvertise, HTTP: ln.Addr().String()}, logger, pub.receive)
	if err != nil {
		return err
	}
	defer cl.Close()
	pub.c = cl
	reg.MustRegister(newClusterCollector(cl, pub))
	fwd := forward.New(cfg.Name, ep, clientTLS, reg, logger)
	defer fwd.Close()

	pipe, err := ingest.Open(ingest.Config{Dir: cfg.DataDir, WALMaxBytes: int64(cfg.Merge.WALMaxBytes),
		Lateness: cfg.Merge.Lateness, WriteInterval: cfg.Merge.WriteInterval,
		RequireAgentCN: cfg.QUIC.RequireAgentCN == nil || *cfg.QUIC.RequireAgentCN,
		Node:           cfg.Name, Routing: routing{cl, fwd}, Publisher: pub},
		storage{writer, reader}, reg, logger)
	if err != nil {
		return err
	}
	defer pipe.Close()

	qsrv, err := wire.NewServer(wire.ServerConfig{Endpoint: ep, TLS: serverTLS, Handler: pipe,
		MaxFrameSize: int(cfg.QUIC.MaxFrameBytes), Logger: logger.With("component", "quic")})
	if err != nil {
		return fmt.Errorf("serve QUIC %s: %w", cfg.QUIC.Listen, err)
	}
	defer qsrv.Close()
	registerServerMetrics(reg, qsrv)

	side, err := newHTTPSide(cfg, hub, func() live.Status { return live.Status{Node: cfg.Name, Members: len(cl.Members())} },
		minuteSource{reader}, storageCheck.ready(pipe.Ready), reg, logger)
	if err != nil {
		return err
	}
	defer side.close()
	apiSrv := side.api
	apiSrv.Handle(api.ClusterRoute, clusterHandler(cl, pub))
	hsrv := api.HTTPServer(apiSrv)
	hsrv.RegisterOnShutdown(hub.Close) // Shutdown does not end streams by itself

	httpErr := make(chan error, 2)
	go func() { httpErr <- serveHTTP(hsrv, ln, cfg.HTTP) }()
	go func() {
		if err := side.serveMetrics(cfg.HTTP); err != nil {
			httpErr <- err
		}
	}()
	quicCtx, stopQUIC := context.WithCancel(context.Background())
	defer stopQUIC()
	quicErr := make(chan error, 1)
	go func() { quicErr <- qsrv.Serve(quicCtx) }()
	addrs := Addrs{QUIC: qsrv.Addr().String(), HTTP: ln.Addr().String()}
	logger.Info("aggregator listening; joining the cluster and rebuilding open minutes", "quic", addrs.QUIC, "http", addrs.HTTP,
		"gossip", cfg.Cluster.Bind)
	if ready != nil {
		ready(addrs)
	}

	// The storage first: check InfluxDB, create the bucket if allowed
	// (retrying while it is unreachable; /readyz says so meanwhile).
	if _, err := storageCheck.run(ctx); err != nil && ctx.Err() == nil {
		return err
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
	pipe.DropForeign()

	pipeCtx, stopPipe := context.WithCancel(context.Background())
	defer stopPipe()
	var wg sync.WaitGroup
	pipeErr := make(chan error, 1)
	wg.Go(func() { pipeErr <- pipe.Run(pipeCtx, cfg.Merge.ShutdownTimeout) })
	if cfg.Cluster.Bind != "" {
		wg.Go(func() {
			handoff(pipeCtx, cl, pipe, cfg.Cluster.HandoffSettle, reg, logger.With("component", "handoff"))
		})
	}
	if ctx.Err() == nil {
		logger.Info("aggregator ready", "members", len(cl.Members()))
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-httpErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-quicErr:
		runErr = fmt.Errorf("quic server: %w", err)
	}
	logger.Info("shutting down: stop QUIC, stop HTTP, write what is merged, leave the cluster")
	stopQUIC()
	qsrv.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = hsrv.Shutdown(sctx)
	if side.metrics != nil {
		_ = side.metrics.Shutdown(sctx)
	}
	cancel()
	stopPipe()
	wg.Wait()
	if err := <-pipeErr; err != nil {
		runErr = errors.Join(runErr, err)
	}
	// Leave only now: the new owners rebuild from what was just written.
	if err := cl.Leave(5 * time.Second); err != nil {
		logger.Warn("leaving the cluster gracefully failed; the others will detect it", "err", err)
	}
	logger.Info("aggregator stopped")
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

// serveHTTP serves HTTPS (HTTP/2 included) when a certificate is
// configured, plain HTTP otherwise.
func serveHTTP(srv *http.Server, ln net.Listener, c config.HTTP) error {
	if c.TLSCert != "" {
		return srv.ServeTLS(ln, c.TLSCert, c.TLSKey)
	}
	return srv.Serve(ln)
}

// storage joins the writer and the reader into ingest.Storage.
type storage struct {
	*influx.Writer
	r *influx.Reader
}

func (s storage) LoadContributions(ctx context.Context, from, to time.Time) ([]influx.ContribPoint, error) {
	return s.r.LoadContributions(ctx, from, to)
}

func (s storage) LoadContributionsFunc(ctx context.Context, from, to time.Time, keep func(sketch.Series) bool) ([]influx.ContribPoint, error) {
	return s.r.LoadContributionsFunc(ctx, from, to, keep)
}

// minuteSource answers API queries from InfluxDB.
type minuteSource struct{ r *influx.Reader }

func (m minuteSource) EachMinute(ctx context.Context, q api.Query, fn func(kpi.Point) error) error {
	return m.r.EachMinute(ctx, influx.MinuteQuery{Campaigns: q.Campaigns, AllCampaigns: q.AllCampaigns, From: q.From, To: q.To,
		Source: q.Source, Medium: q.Medium, Country: q.Country, Device: q.Device, Region: q.Region, Type: q.Type,
		CountersOnly: q.CountersOnly},
		func(p influx.MinutePoint) error {
			return fn(kpi.Point{Series: p.Series, Minute: p.Minute, State: p.State})
		})
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

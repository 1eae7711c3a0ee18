// Package agent wires tally-agent together: the pipeline (collector,
// spool, shipper; see agent/pipeline), the HTTP sources on their
// listeners, the log tailers, health and metrics. Its parts live in the
// subpackages; Run only starts them in order and stops them in reverse.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tally-edge/tally/agent/backfill"
	"github.com/tally-edge/tally/agent/browser"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/edge"
	"github.com/tally-edge/tally/agent/imports"
	"github.com/tally-edge/tally/agent/ingest"
	"github.com/tally-edge/tally/agent/pipeline"
	"github.com/tally-edge/tally/agent/tail"
)

// DrainTimeout bounds how long shutdown waits for the last flush to be
// acknowledged. Whatever is not acknowledged by then stays in the spool
// and is sent at the next start.
const DrainTimeout = 10 * time.Second

// FailureGrace is how long the agent keeps answering (every request with
// an error, /readyz with 503) after its storage failed, before it stops.
const FailureGrace = 2 * time.Second

// Listeners are the addresses the agent serves HTTP on.
type Listeners struct {
	// HTTP is the public listener (http.listen).
	HTTP string
	// Server is the server senders' listener (http.server_listen), or ""
	// when there is none.
	Server string
}

// Run runs the agent until ctx is done, then shuts down gracefully: stop
// taking requests, flush, give the shipper DrainTimeout to deliver, close.
// ready, if not nil, is called with the listeners' addresses once serving.
//
// Run returns an error, after saving what it can, when the journal or the
// spool fails for good (a failed fsync: nothing more can be made durable),
// when a listener fails, or when a log source fails.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger, ready func(Listeners)) error {
	logger = logger.With("agent", cfg.Name, "region", cfg.Region)
	backfill.SetMemoryLimit(int64(cfg.MemoryLimit), logger)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	p, err := pipeline.New(cfg, pipeline.Options{Dir: cfg.StateDir, SpoolName: "live"}, reg, logger)
	if err != nil {
		return err
	}
	defer p.Close()

	tokens := edge.NewTokens(cfg.HTTP.ServerTokens...)
	inflight := edge.NewInFlight(int64(cfg.HTTP.MaxBytesInFlight))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_agent_http_bytes_in_flight",
		Help: "Request body bytes held by requests being read or handled."}, func() float64 { return float64(inflight.Bytes()) }))
	ing := ingest.New(ingest.Config{MaxBodyBytes: int64(cfg.HTTP.MaxBodyBytes), MaxEvents: cfg.HTTP.MaxEventsPerRequest,
		Tokens: tokens, InFlight: inflight}, p.Env, p.Collector, reg, logger)
	web, err := browser.New(cfg.Browser, p.Env, p.Collector, reg, logger)
	if err != nil {
		return fmt.Errorf("browser sources: %w", err)
	}
	icfg := cfg.Imports
	icfg.Tokens, icfg.InFlight = tokens, inflight
	imp, err := imports.New(icfg, p.Env, p.Collector, reg, logger)
	if err != nil {
		return fmt.Errorf("imports: %w", err)
	}
	tailers, err := newTailers(cfg, p.Env, p.Collector, reg, logger)
	if err != nil {
		return err
	}

	ready200 := readiness(p)
	health := func(mux *http.ServeMux) {
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
		mux.HandleFunc("GET /readyz", ready200)
	}
	serverRoutes := func(mux *http.ServeMux) {
		mux.Handle("POST "+imports.CostPath, imp.Cost())
		mux.Handle("POST "+imports.EmailWebhookPath, imp.EmailWebhook())
		mux.Handle("POST "+imports.PollsPath, imp.Polls())
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	public := http.NewServeMux()
	public.Handle("/v1/events", web.CORS(ing)) // no method in the pattern: OPTIONS must reach CORS
	public.Handle("GET /v1/t.js", web.Script())
	public.Handle("GET /v1/pixel.gif", web.Pixel())
	health(public)
	var private *http.ServeMux
	if cfg.HTTP.ServerListen == "" {
		serverRoutes(public)
	} else {
		private = http.NewServeMux()
		private.Handle("POST /v1/events", edge.RequireToken(tokens, ing))
		serverRoutes(private)
		health(private)
	}

	var servers []*http.Server
	var addrs Listeners
	listen := func(addr string, h http.Handler) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		servers = append(servers, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, ErrorLog: httpErrorLog(logger)})
		return ln, nil
	}
	var lns []net.Listener
	ln, err := listen(cfg.HTTP.Listen, public)
	if err != nil {
		return err
	}
	lns = append(lns, ln)
	addrs.HTTP = ln.Addr().String()
	if private != nil {
		ln, err := listen(cfg.HTTP.ServerListen, private)
		if err != nil {
			lns[0].Close()
			return err
		}
		lns = append(lns, ln)
		addrs.Server = ln.Addr().String()
	}

	// Start order: pipeline (collector, shipper), tailers, HTTP. Stop
	// order: HTTP, tailers, collector (final flush), shipper (after a
	// drain window).
	p.Start()
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
	httpErr := make(chan error, len(servers))
	var httpWG sync.WaitGroup
	for i, srv := range servers {
		httpWG.Go(func() {
			if err := srv.Serve(lns[i]); !errors.Is(err, http.ErrServerClosed) {
				httpErr <- err
			}
		})
	}
	logger.Info("agent started", "http", addrs.HTTP, "server_http", addrs.Server, "aggregators", cfg.Aggregator.Addrs,
		"epoch", p.Epoch, "flush_interval", cfg.Rollup.FlushInterval, "log_sources", len(tailers), "server_tokens", len(cfg.HTTP.ServerTokens))
	if ready != nil {
		ready(addrs)
	}

	runErr := wait(ctx, p, tailers, httpErr, tailErr)
	if p.Collector.Err() != nil {
		// Storage failed: every request is refused already (the journal
		// cannot take events) and /readyz says why. Keep saying it a
		// moment, so load balancers and probes see it, then stop.
		time.Sleep(FailureGrace)
	}
	logger.Info("shutting down: stop ingest, flush, drain")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	for _, srv := range servers {
		_ = srv.Shutdown(sctx)
	}
	cancel()
	httpWG.Wait()
	stopTails()
	tailWG.Wait()
	if err := p.Flush(); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("final flush: %w", err))
	}
	p.Drain(time.Now().Add(DrainTimeout))
	if err := p.Stop(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	st := p.Spool.Stats()
	logger.Info("agent stopped", "spooled_batches_left", st.PendingBatches)
	return runErr
}

// wait blocks until the agent must stop and says why (nil: asked to).
func wait(ctx context.Context, p *pipeline.Pipeline, tailers []*tail.Tailer, httpErr, tailErr <-chan error) error {
	shipStopped := p.ShipperStopped()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-httpErr:
			return fmt.Errorf("http server: %w", err)
		case err := <-tailErr:
			// A sink failure other than backpressure: stop, so a restart
			// resumes every log exactly from its journaled position.
			return fmt.Errorf("log source: %w", err)
		case <-p.Collector.Failed():
			// Nothing more can be made durable: refuse traffic (by
			// stopping), ship what the spool holds, exit non-zero.
			return fmt.Errorf("storage failed: %w", p.Collector.Err())
		case <-shipStopped:
			// The aggregator refused this agent: the shipper has said so
			// and /readyz says so; keep taking events into the spool
			// until an operator fixes the configuration.
			shipStopped = nil
		}
	}
}

// addrPattern matches IPv4 and IPv6 addresses (with a port or not).
var addrPattern = regexp.MustCompile(`\[?[0-9a-fA-F:]*:[0-9a-fA-F:.]+\]?(:\d+)?|\d{1,3}(\.\d{1,3}){3}(:\d+)?`)

// httpErrorLog is the HTTP servers' own error log (TLS handshake errors,
// panics, bad requests), with client addresses replaced: the agent's logs
// never carry them.
func httpErrorLog(logger *slog.Logger) *log.Logger {
	return log.New(logWriter(func(msg string) {
		logger.Warn("http server", "reason_code", "http_server", "detail", addrPattern.ReplaceAllString(strings.TrimSpace(msg), "[addr]"))
	}), "", 0)
}

type logWriter func(string)

func (w logWriter) Write(p []byte) (int, error) {
	w(string(p))
	return len(p), nil
}

// readiness answers /readyz: 503 and the reason while the agent cannot
// make events durable or cannot ship them.
func readiness(p *pipeline.Pipeline) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		var why []string
		if err := p.Collector.Err(); err != nil {
			why = append(why, "storage failed: "+err.Error())
		}
		if p.Spool.Full() {
			why = append(why, "spool full")
		}
		if prob := p.Shipper.Problem(); prob != "" {
			why = append(why, prob)
		}
		if len(why) > 0 {
			http.Error(w, strings.Join(why, "; "), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	}
}

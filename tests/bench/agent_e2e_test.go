package bench

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// benchServerToken authenticates the benchmarks' server senders.
const benchServerToken = "bench-server-token-0123456789"

// BenchmarkAgentEndToEnd drives one real agent (in this process) over
// loopback HTTP with NDJSON bodies of 500 events from two clients, and lets
// it ship over QUIC with mutual TLS to a wire server that acknowledges
// every batch. It reports events/s through the agent and the bytes its
// batches took on the wire per 1,000 events (default 15 s flush, so the
// figure includes re-sent cumulative state of busy series).
//
//	go test -run='^$' -bench=BenchmarkAgentEndToEnd -benchtime=200x ./tests/bench/
func BenchmarkAgentEndToEnd(b *testing.B) {
	dir := b.TempDir()
	certs := filepath.Join(dir, "certs")
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: []string{"agent-bench"}, Aggregators: []string{"agg-bench"}}); err != nil {
		b.Fatal(err)
	}
	tlsConf, err := pki.ServerTLS(pki.DevFiles(certs, "agg-bench"), wire.ALPN)
	if err != nil {
		b.Fatal(err)
	}
	var contributions atomic.Int64
	srv, err := wire.NewServer(wire.ServerConfig{Addr: "127.0.0.1:0", TLS: tlsConf,
		Handler: wire.HandlerFunc(func(_ context.Context, _ wire.Peer, bt *wire.Batch) wire.Ack {
			contributions.Add(int64(len(bt.Contributions)))
			return wire.Ack{Version: wire.ProtocolVersion, Seq: bt.Seq, Status: wire.AckOK}
		})})
	if err != nil {
		b.Fatal(err)
	}
	sctx, stopSrv := context.WithCancel(context.Background())
	go srv.Serve(sctx)
	defer func() { stopSrv(); srv.Close() }()

	cfg := config.DefaultConfig()
	cfg.Name, cfg.Region, cfg.StateDir = "agent-bench", "eu", filepath.Join(dir, "state")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Aggregator.Addrs = []string{srv.Addr().String()}
	cfg.Aggregator.ServerName = "localhost"
	files := pki.DevFiles(certs, "agent-bench")
	cfg.Aggregator.CA, cfg.Aggregator.Cert, cfg.Aggregator.Key = files.CA, files.Cert, files.Key
	cfg.Privacy.Secret = "bench-secret-0123456789"
	cfg.HTTP.ServerTokens = []string{benchServerToken}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	addr := make(chan string, 1)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(l agent.Listeners) { addr <- l.HTTP })
	}()
	url := "http://" + <-addr + "/v1/events"

	// Pre-encode the bodies: the benchmark measures the agent, not the
	// generator.
	gen := loadgen.New(loadgen.Config{Seed: 1})
	bodies := make([][]byte, 64)
	now := time.Now()
	for i := range bodies {
		evs := make([]loadgen.Event, 500)
		for j := range evs {
			evs[j] = gen.Event(now)
		}
		bodies[i] = loadgen.EncodeNDJSON(evs)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i%int64(len(bodies))]))
				if err != nil {
					b.Error(err)
					return
				}
				req.Header.Set("Content-Type", "application/x-ndjson")
				// A backend posting its visitors' events: a server sender.
				req.Header.Set("Authorization", "Bearer "+benchServerToken)
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := b.Elapsed()
	b.StopTimer()
	// Graceful stop: final flush and drain, so every event's state is on
	// the wire before counting bytes.
	stop()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	events := float64(b.N * 500)
	b.ReportMetric(events/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(srv.Stats().BytesIn)/events*1000, "wire_B/1000events")
	if contributions.Load() == 0 {
		b.Fatal("no contributions reached the server")
	}
}

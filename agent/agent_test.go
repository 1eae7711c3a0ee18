package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/agent"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// serverToken is the server senders' token of the tests' agents.
const serverToken = "agent-test-server-token"

// postAsServer posts body to url as a server sender.
func postAsServer(url, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+serverToken)
	return http.DefaultClient.Do(req)
}

// capture is a QUIC aggregator stand-in that keeps every batch it acks.
type capture struct {
	mu      sync.Mutex
	batches []*wire.Batch
}

func (c *capture) HandleBatch(_ context.Context, _ wire.Peer, b *wire.Batch) wire.Ack {
	c.mu.Lock()
	c.batches = append(c.batches, b)
	c.mu.Unlock()
	return wire.Ack{Version: wire.ProtocolVersion, Seq: b.Seq, Status: wire.AckOK}
}

// captureSetup starts a capturing QUIC server and returns an agent
// configuration that ships to it.
func captureSetup(t *testing.T) (config.Config, *capture) {
	t.Helper()
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: []string{"agent-t"}, Aggregators: []string{"agg-t"}}); err != nil {
		t.Fatal(err)
	}
	tlsConf, err := pki.ServerTLS(pki.DevFiles(certs, "agg-t"), wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	cap := &capture{}
	srv, err := wire.NewServer(wire.ServerConfig{Addr: "127.0.0.1:0", TLS: tlsConf, Handler: cap})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopSrv := context.WithCancel(context.Background())
	go srv.Serve(sctx)
	t.Cleanup(func() { stopSrv(); srv.Close() })

	cfg := config.DefaultConfig()
	cfg.Name, cfg.Region, cfg.StateDir = "agent-t", "eu", filepath.Join(dir, "state")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Aggregator.Addrs, cfg.Aggregator.ServerName = []string{srv.Addr().String()}, "localhost"
	f := pki.DevFiles(certs, "agent-t")
	cfg.Aggregator.CA, cfg.Aggregator.Cert, cfg.Aggregator.Key = f.CA, f.Cert, f.Key
	cfg.Privacy.Secret = "privacy-test-secret-0123456789"
	cfg.HTTP.ServerTokens = []string{serverToken}
	cfg.Rollup.FlushInterval = 200 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg, cap
}

// batchCount returns how many batches arrived so far.
func (c *capture) batchCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.batches)
}

// latest applies the receiver's rule: the highest version of every CID.
func (c *capture) latest() map[uint64]wire.Contribution {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[uint64]wire.Contribution{}
	for _, b := range c.batches {
		for _, ct := range b.Contributions {
			if ct.Version > out[ct.CID].Version {
				out[ct.CID] = ct
			}
		}
	}
	return out
}

// startAgent runs a real agent shipping to a capturing QUIC server.
func startAgent(t *testing.T) (eventsURL string, cap *capture, stop func()) {
	t.Helper()
	cfg, cap := captureSetup(t)
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(l agent.Listeners) { addr <- l.HTTP })
	}()
	select {
	case a := <-addr:
		eventsURL = "http://" + a + "/v1/events"
	case err := <-done:
		t.Fatalf("agent exited: %v", err)
	}
	return eventsURL, cap, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
}

// TestRawIdentitiesNeverLeaveTheAgent sends events carrying distinctive
// IPs, visitor ids, user agents and URLs, and searches everything the
// agent shipped for them. Only salted hashes inside sketches may leave.
func TestRawIdentitiesNeverLeaveTheAgent(t *testing.T) {
	url, cap, stop := startAgent(t)
	var secrets []string
	var body bytes.Buffer
	for i := range 50 {
		ip := fmt.Sprintf("203.0.113.%d", 100+i)
		visitor := fmt.Sprintf("visitor-secret-%04d", i)
		// A browser's user agent with a distinctive bare word appended (the
		// bot filter lets in-app browsers' bare words through).
		ua := fmt.Sprintf("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 PrivacyProbe%04d", i)
		page := fmt.Sprintf("https://shop.example/account/%04d?email=person%04d@example.org&utm_campaign=probe", i, i)
		secrets = append(secrets, ip, visitor, ua, fmt.Sprintf("person%04d@example.org", i))
		fmt.Fprintf(&body, `{"type":"pageview","campaign":"probe","ip":%q,"visitor":%q,"ua":%q,"url":%q}`+"\n", ip, visitor, ua, page)
		// Anonymous visitors: identity from (ip, ua, site) only.
		fmt.Fprintf(&body, `{"type":"click","campaign":"probe","ip":%q,"ua":%q,"url":%q}`+"\n", ip, ua, page)
	}
	resp, err := postAsServer(url, "application/x-ndjson", &body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// Stop only once the shipper has delivered something: a shutdown
	// drains the spool over a connection that is up, and does not wait
	// for one still being dialled (what it holds then is kept for the
	// next start, which this test would not see).
	deadline := time.Now().Add(15 * time.Second)
	for cap.batchCount() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop() // final flush and drain

	cap.mu.Lock()
	defer cap.mu.Unlock()
	if len(cap.batches) == 0 {
		t.Fatal("nothing was shipped")
	}
	var shipped bytes.Buffer
	for _, b := range cap.batches {
		raw, err := msgpack.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		shipped.Write(raw)
	}
	cap.mu.Unlock()
	var count uint64
	for _, c := range cap.latest() {
		count += c.State.Count
	}
	cap.mu.Lock()
	if count != 100 {
		t.Fatalf("shipped %d events, want 100", count)
	}
	text := shipped.String()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Fatalf("raw identity %q left the agent", s)
		}
	}
	// The probe itself must be able to fail: the campaign name is there.
	if !strings.Contains(text, "probe") {
		t.Fatal("search found nothing at all; the test is not looking at the payload")
	}
}

// TestServerListenerKeepsImportsOffThePublicOne: with http.server_listen,
// the import routes and /metrics leave the public listener, and the server
// listener takes events from server senders only.
func TestServerListenerKeepsImportsOffThePublicOne(t *testing.T) {
	cfg, _ := captureSetup(t)
	cfg.HTTP.ServerListen = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan agent.Listeners, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(l agent.Listeners) { ready <- l })
	}()
	var l agent.Listeners
	select {
	case l = <-ready:
	case err := <-done:
		t.Fatalf("agent exited: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	if l.Server == "" || l.Server == l.HTTP {
		t.Fatalf("listeners %+v", l)
	}
	status := func(method, url, token string) int {
		req, _ := http.NewRequest(method, url, strings.NewReader(`{"type":"click","campaign":"c"}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	pub, srv := "http://"+l.HTTP, "http://"+l.Server
	for _, c := range []struct {
		method, url, token string
		want               int
	}{
		{"POST", pub + "/v1/import/cost", serverToken, 404},
		{"POST", pub + "/v1/webhooks/email", serverToken, 404},
		{"GET", pub + "/metrics", "", 404},
		{"POST", pub + "/v1/events", "", 202}, // browsers
		{"POST", srv + "/v1/events", "", 401},
		{"POST", srv + "/v1/events", serverToken, 202},
		{"POST", srv + "/v1/import/cost", "", 401},
		{"GET", srv + "/metrics", "", 200},
		{"GET", srv + "/readyz", "", 200},
		{"GET", pub + "/readyz", "", 200},
	} {
		if got := status(c.method, c.url, c.token); got != c.want {
			t.Errorf("%s %s (token %v): %d, want %d", c.method, c.url, c.token != "", got, c.want)
		}
	}
}

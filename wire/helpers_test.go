package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
)

func TestMain(m *testing.M) {
	// quic-go warns once when the kernel refuses 7 MiB socket buffers;
	// that is expected on test machines.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	goleak.VerifyTestMain(m)
}

// baseMinute is 2026-01-01T00:00:00Z in unix seconds.
const baseMinute = 1767225600

// buildBatch returns a deterministic batch of n contributions that looks
// like a real flush: a few campaigns, sources and devices, HLLs of a few
// hundred visitor hashes, value sketches on conversions, one bot reason
// (single-key maps keep the encoding deterministic: msgpack cannot sort
// map[string]uint64 keys).
func buildBatch(tb testing.TB, n int, seed uint64) *Batch {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	sources := []string{"google", "newsletter", "facebook", "direct"}
	media := []string{"cpc", "email", "social", "(none)"}
	types := []string{"pageview", "click", "impression", "conversion"}
	countries := []string{"DE", "FR", "US", "JP"}
	devices := []string{"desktop", "mobile"}
	b := &Batch{Version: ProtocolVersion, Agent: "agent-eu-1", Region: "eu-west", Seq: seed}
	for i := range n {
		var st sketch.State
		typ := types[i%len(types)]
		st.Count = 50 + rng.Uint64N(450)
		for range 100 + rng.IntN(300) {
			st.AddVisitor(rng.Uint64() | 1)
		}
		if typ == "conversion" {
			for range 5 + rng.IntN(20) {
				st.AddValue(sketch.ToMicros(float64(rng.IntN(20000)) / 100))
			}
		}
		if i%10 == 0 {
			for range 1 + rng.IntN(5) {
				st.AddBot("ua-list")
			}
		}
		enc, err := st.Encode()
		if err != nil {
			tb.Fatalf("encode state: %v", err)
		}
		b.Contributions = append(b.Contributions, Contribution{
			Series: sketch.Series{
				Campaign: fmt.Sprintf("spring-sale-%02d", i%17),
				Source:   sources[i%len(sources)],
				Medium:   media[(i/4)%len(media)],
				Type:     typ,
				Country:  countries[(i/16)%len(countries)],
				Device:   devices[(i/64)%len(devices)],
				Region:   "eu-west",
			},
			Minute:  baseMinute + 60*int64(i%5),
			CID:     uint64(7)<<32 | uint64(i),
			Version: 3,
			State:   enc,
		})
	}
	return b
}

// testAck returns an ack with a member list, so it has something to
// compress.
func testAck(seq uint64) *Ack {
	a := &Ack{Version: ProtocolVersion, Seq: seq, Status: AckOK, Epoch: 42}
	for i := range 12 {
		a.Members = append(a.Members, Member{
			Name: fmt.Sprintf("aggregator-%02d.eu-west.tally.internal", i),
			Addr: fmt.Sprintf("10.0.0.%d:4433", 10+i),
		})
	}
	return a
}

// testPKI is a dev PKI in a temporary directory with an aggregator "agg1"
// and an agent "agent1".
type testPKI struct {
	dir string
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.GenerateDev(dir, pki.DevOptions{Agents: []string{"agent1"}, Aggregators: []string{"agg1"}}); err != nil {
		t.Fatalf("GenerateDev: %v", err)
	}
	return testPKI{dir: dir}
}

func (p testPKI) serverTLS(t testing.TB, alpn ...string) *tls.Config {
	t.Helper()
	c, err := pki.ServerTLS(pki.DevFiles(p.dir, "agg1"), alpn...)
	if err != nil {
		t.Fatalf("ServerTLS: %v", err)
	}
	return c
}

func (p testPKI) clientTLS(t testing.TB, name string, alpn ...string) *tls.Config {
	t.Helper()
	c, err := pki.ClientTLS(pki.DevFiles(p.dir, name), "localhost", alpn...)
	if err != nil {
		t.Fatalf("ClientTLS: %v", err)
	}
	return c
}

func (p testPKI) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// startServer starts a server on 127.0.0.1 and stops it at cleanup,
// checking that Serve returned.
func startServer(t testing.TB, p testPKI, h Handler, configure func(*ServerConfig)) *Server {
	t.Helper()
	cfg := ServerConfig{Addr: "127.0.0.1:0", TLS: p.serverTLS(t), Handler: h}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv
}

func dialServer(t testing.TB, srv *Server, tlsConf *tls.Config, cfg ClientConfig) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, srv.Addr().String(), tlsConf, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// okHandler acks every batch.
var okHandler = HandlerFunc(func(_ context.Context, _ Peer, b *Batch) Ack {
	return Ack{Status: AckOK}
})

// waitFor polls cond until it holds or a generous bound passes; it is for
// counters updated asynchronously (handshake failures are counted when
// quic-go tears the attempt down), not for timing.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

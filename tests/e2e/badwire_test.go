package e2e

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// TestHostileWireInput sends the aggregator garbage frames, a frame of an
// unknown protocol version, and handshakes without a valid certificate.
// Each gets its clear error and is counted in /metrics, and the events
// flowing through a real agent meanwhile all arrive.
func TestHostileWireInput(t *testing.T) {
	c := startCluster(t, "agent-eu")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	good, err := pki.ClientTLS(pki.DevFiles(c.certs, "agent-eu"), "localhost", wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := quic.DialAddr(ctx, c.aggQUIC, good, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")

	exchange := func(raw []byte) *wire.Ack {
		t.Helper()
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := str.Write(raw); err != nil {
			t.Fatal(err)
		}
		str.Close()
		f, err := wire.ReadFrame(str, 1<<20)
		if err != nil {
			t.Fatalf("reading the answer to %q: %v", raw[:min(8, len(raw))], err)
		}
		ack, err := wire.DecodeAck(f)
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	if ack := exchange([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); ack.Status != wire.AckRejected || ack.Reason == "" {
		t.Fatalf("garbage frame answered %+v", ack)
	}
	future := []byte{'T', 'L', 9, 1, 0, 0, 0, 0, 0}
	if ack := exchange(future); ack.Status != wire.AckRejected || !strings.Contains(ack.Reason, "9") {
		t.Fatalf("version 9 answered %+v", ack)
	}
	huge := []byte{'T', 'L', wire.ProtocolVersion, 1, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(huge[5:], 1<<31)
	if ack := exchange(huge); ack.Status != wire.AckRejected {
		t.Fatalf("2 GiB frame header answered %+v", ack)
	}

	// The same connection still carries a valid batch.
	client, err := wire.Dial(ctx, c.aggQUIC, good, wire.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// Handshakes that must fail: no client certificate, and a certificate
	// from another CA.
	// In TLS 1.3 the client may finish its side of the handshake before
	// the server has checked its certificate, so the proof is that no
	// batch gets through.
	refused := func(name string, conf *tls.Config) {
		t.Helper()
		cl, err := wire.Dial(ctx, c.aggQUIC, conf, wire.ClientConfig{HandshakeTimeout: 5 * time.Second})
		if err != nil {
			return
		}
		defer cl.Close()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		batch := &wire.Batch{Version: wire.ProtocolVersion, Agent: "agent-eu", Region: "r", Seq: 1, Contributions: []wire.Contribution{{
			Series: sketch.Series{Campaign: "intruder", Type: "click", Region: "r"}, Minute: 1_800_000_000 - 1_800_000_000%60, CID: 1, Version: 1,
			State: sketch.Encoded{Count: 1}}}}
		if err := batch.Validate(); err != nil {
			t.Fatal(err)
		}
		if ack, err := cl.Send(sctx, batch); err == nil {
			t.Fatalf("%s: a batch got through: %+v", name, ack)
		}
	}
	noCert := &tls.Config{RootCAs: good.RootCAs, ServerName: "localhost", NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13}
	refused("no client certificate", noCert)
	other := filepath.Join(t.TempDir(), "other-ca")
	if _, err := pki.GenerateDev(other, pki.DevOptions{Agents: []string{"agent-eu"}}); err != nil {
		t.Fatal(err)
	}
	foreign, err := pki.ClientTLS(pki.DevFiles(other, "agent-eu"), "localhost", wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	foreign.RootCAs = good.RootCAs // trusts the server, but is not trusted by it
	refused("certificate from another CA", foreign)

	// An agent that speaks the nodes' forwarding protocol, to pass off
	// contributions as another agent's, is refused: only node
	// certificates (which agents cannot hold) of cluster members may
	// forward.
	impostor, err := pki.ClientTLS(pki.DevFiles(c.certs, "agent-eu"), "localhost", wire.ALPNForward)
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := wire.Dial(ctx, c.aggQUIC, impostor, wire.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	forged := &wire.Batch{Version: wire.ProtocolVersion, Agent: "someone-else", Region: "r", Seq: 1, Contributions: []wire.Contribution{{
		Series: sketch.Series{Campaign: "forged", Type: "click", Region: "r"}, Minute: 1_800_000_000 - 1_800_000_000%60, CID: 1, Version: 1,
		State: sketch.Encoded{Count: 1}}}}
	if ack, err := fwd.Send(ctx, forged); err != nil || ack.Status != wire.AckRejected || !strings.Contains(ack.Reason, "not a node certificate") {
		t.Fatalf("forwarded batch from an agent answered %+v, %v; want a rejection", ack, err)
	}

	// Real traffic through the agent is untouched.
	gen := loadgen.New(loadgen.Config{Seed: 11, Countries: 2, Channels: 2})
	now := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Minute)
	var evs []loadgen.Event
	for i := range 2000 {
		evs = append(evs, gen.Event(now.Add(time.Duration(i)*time.Millisecond*30)))
	}
	truth := loadgen.NewTruth()
	lc := &loadgen.Client{URL: c.agents[0].eventsURL(), HTTP: &http.Client{Timeout: 30 * time.Second}, Token: harness.DefaultServerToken}
	if err := lc.Post(ctx, evs); err != nil {
		t.Fatal(err)
	}
	truth.Add(evs)
	want := truth.Cells()
	for {
		got := queryCells(t, c, now.Add(-time.Minute), now.Add(3*time.Minute))
		if cellsEqual(got, want) == "" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("events lost next to hostile input: %s", cellsEqual(got, want))
		}
		time.Sleep(500 * time.Millisecond)
	}

	m := metrics(t, c.aggHTTP)
	if n := harness.MetricSum(m, "tally_aggregator_quic_frame_errors_total"); n < 3 {
		t.Fatalf("frame errors counted %v, want ≥ 3", n)
	}
	if n := harness.MetricSum(m, "tally_aggregator_quic_frame_errors_total", `reason="`+wire.ErrUnknownVersion.String()+`"`); n < 1 {
		t.Fatalf("unknown version not counted by reason:\n%s", grepLines(m, "frame_errors"))
	}
	if n := harness.MetricSum(m, "tally_aggregator_quic_handshake_failures_total"); n < 2 {
		t.Fatalf("handshake failures counted %v, want ≥ 2", n)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

package pki_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// pair writes kp's certificate and key to dir/name.pem and
// dir/name-key.pem, each replaced in one rename.
func writePair(t *testing.T, dir, name string, kp *pki.KeyPair) (certFile, keyFile string) {
	t.Helper()
	key, err := kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writeAtomic(t, certFile, kp.CertPEM())
	writeAtomic(t, keyFile, key)
	return certFile, keyFile
}

func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestIdentityRotationOverQUIC rotates both sides' certificates of real
// QUIC connections: an aggregator's server certificate and an agent's
// client certificate are replaced on disk while a connection is open. The
// open connection keeps working (with the certificates it was made with),
// and a new connection presents the new ones, in both directions.
func TestIdentityRotationOverQUIC(t *testing.T) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	writeAtomic(t, caFile, ca.CertPEM())
	issueServer := func() *pki.KeyPair {
		kp, err := ca.IssueServer("agg-1", []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	issueAgent := func(name string) *pki.KeyPair {
		kp, err := ca.IssueClient(name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	srv1, agent1 := issueServer(), issueAgent("edge-1")
	srvCert, srvKey := writePair(t, dir, "agg-1", srv1)
	agCert, agKey := writePair(t, dir, "edge-1", agent1)
	srvID, err := pki.LoadIdentity("quic.cert", srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	agID, err := pki.LoadIdentity("aggregator.cert", agCert, agKey)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, err := pki.ServerTLSFor(srvID, caFile, wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := pki.ClientTLSFor(agID, caFile, "127.0.0.1", wire.ALPN)
	if err != nil {
		t.Fatal(err)
	}

	// The server tells which client certificate each batch came with.
	var mu sync.Mutex
	clientSerial := map[uint64]*big.Int{} // batch seq → client certificate serial
	handler := wire.HandlerFunc(func(_ context.Context, peer wire.Peer, b *wire.Batch) wire.Ack {
		mu.Lock()
		clientSerial[b.Seq] = peer.Certificate.SerialNumber
		mu.Unlock()
		return wire.Ack{Status: wire.AckOK}
	})
	ep, err := wire.NewEndpoint("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	srv, err := wire.NewServer(wire.ServerConfig{Endpoint: ep, TLS: serverTLS, Handler: handler,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		srv.Close()
		<-served
	}()

	// dial connects and returns the client with the server certificate
	// the handshake verified.
	dial := func() (*wire.Client, *big.Int) {
		t.Helper()
		var serverSerial *big.Int
		c := clientTLS.Clone()
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			serverSerial = cs.PeerCertificates[0].SerialNumber
			return nil
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		cl, err := wire.Dial(dctx, srv.Addr().String(), c, wire.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return cl, serverSerial
	}
	st, err := (&sketch.State{Count: 1}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	send := func(cl *wire.Client, seq uint64) *big.Int {
		t.Helper()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		ack, err := cl.Send(sctx, &wire.Batch{Version: wire.ProtocolVersion, Agent: "edge-1", Region: "r", Seq: seq,
			Contributions: []wire.Contribution{{Series: sketch.Series{Campaign: "c", Type: "click", Region: "r"},
				Minute: time.Now().Truncate(time.Minute).Unix(), CID: 1, Version: seq, State: st}}})
		if err != nil {
			t.Fatalf("send %d: %v", seq, err)
		}
		if ack.Status != wire.AckOK {
			t.Fatalf("send %d: ack %v", seq, ack.Status)
		}
		mu.Lock()
		defer mu.Unlock()
		return clientSerial[seq]
	}

	old, oldServer := dial()
	defer old.Close()
	if got := send(old, 1); got.Cmp(agent1.Cert.SerialNumber) != 0 || oldServer.Cmp(srv1.Cert.SerialNumber) != 0 {
		t.Fatalf("first connection: client %v server %v, want the first certificates", got, oldServer)
	}

	// Rotate both certificates on disk; watchers put them in force.
	srv2, agent2 := issueServer(), issueAgent("edge-1")
	writePair(t, dir, "agg-1", srv2)
	writePair(t, dir, "edge-1", agent2)
	wctx, wcancel := context.WithCancel(context.Background())
	var watchers sync.WaitGroup
	for _, id := range []*pki.Identity{srvID, agID} {
		watchers.Go(func() { id.Watch(wctx, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil))) })
	}
	deadline := time.Now().Add(10 * time.Second)
	for (srvID.Leaf().SerialNumber.Cmp(srv2.Cert.SerialNumber) != 0 || agID.Leaf().SerialNumber.Cmp(agent2.Cert.SerialNumber) != 0) &&
		time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	wcancel()
	watchers.Wait()
	if srvID.Leaf().SerialNumber.Cmp(srv2.Cert.SerialNumber) != 0 || agID.Leaf().SerialNumber.Cmp(agent2.Cert.SerialNumber) != 0 {
		t.Fatal("the watchers never put the new certificates in force")
	}

	// The open connection keeps working, with the certificate it was
	// made with.
	if got := send(old, 2); got.Cmp(agent1.Cert.SerialNumber) != 0 {
		t.Fatalf("the open connection now shows client certificate %v, want the first", got)
	}
	// A new connection presents the new certificates both ways.
	fresh, freshServer := dial()
	defer fresh.Close()
	if got := send(fresh, 3); got.Cmp(agent2.Cert.SerialNumber) != 0 {
		t.Fatalf("new connection: server saw client certificate %v, want the rotated one %v", got, agent2.Cert.SerialNumber)
	}
	if freshServer.Cmp(srv2.Cert.SerialNumber) != 0 {
		t.Fatalf("new connection: client saw server certificate %v, want the rotated one %v", freshServer, srv2.Cert.SerialNumber)
	}
	if got := send(old, 4); got.Cmp(agent1.Cert.SerialNumber) != 0 {
		t.Fatal("the old connection stopped working after a new one was made")
	}

	// A certificate for another holder is refused; the rotated one stays
	// in force and new connections still work.
	writePair(t, dir, "edge-1", issueAgent("edge-2"))
	if _, err := agID.Check(true); err == nil || !strings.Contains(err.Error(), `names "edge-2"`) {
		t.Fatalf("a certificate for edge-2 replacing edge-1's: %v", err)
	}
	third, _ := dial()
	defer third.Close()
	if got := send(third, 5); got.Cmp(agent2.Cert.SerialNumber) != 0 {
		t.Fatalf("after a refused rotation the server saw %v, want the certificate in force %v", got, agent2.Cert.SerialNumber)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(pki.IdentityMetrics("tally_test", srvID, agID))
	if n := testutil.CollectAndCount(reg, "tally_test_tls_certificate_expiry_timestamp_seconds"); n != 2 {
		t.Fatalf("%d expiry series, want 2", n)
	}
	want := `
# HELP tally_test_tls_certificate_reload_failures_total Times changed certificate files could not be used (the certificate in force stayed).
# TYPE tally_test_tls_certificate_reload_failures_total counter
tally_test_tls_certificate_reload_failures_total{cert="aggregator.cert"} 1
tally_test_tls_certificate_reload_failures_total{cert="quic.cert"} 0
# HELP tally_test_tls_certificate_reloads_total Times changed certificate files were put in force without a restart.
# TYPE tally_test_tls_certificate_reloads_total counter
tally_test_tls_certificate_reloads_total{cert="aggregator.cert"} 1
tally_test_tls_certificate_reloads_total{cert="quic.cert"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tally_test_tls_certificate_reloads_total",
		"tally_test_tls_certificate_reload_failures_total"); err != nil {
		t.Fatal(err)
	}
}

// TestIdentityRefusals covers what a rotation may not do, and how a
// half-replaced pair is reported.
func TestIdentityRefusals(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca.IssueServer("agg-1", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writePair(t, dir, "agg-1", node)
	id, err := pki.LoadIdentity("quic.cert", certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := id.NodeSigner()
	if err != nil {
		t.Fatal(err)
	}
	inForce := func() *big.Int { return id.Leaf().SerialNumber }
	first := inForce()

	// Each refused replacement, prepared as a SIGHUP would.
	noPolicy, _ := ca.Issue(pki.IssueOptions{CommonName: "agg-1", Hosts: []string{"127.0.0.1"}, Server: true, Client: true, Validity: time.Hour})
	clientOnly, _ := ca.Issue(pki.IssueOptions{CommonName: "agg-1", Client: true, Node: true, Validity: time.Hour})
	expired := expiredPair(t, ca)
	for name, c := range map[string]struct {
		kp   *pki.KeyPair
		want string
	}{
		"node policy lost":  {noPolicy, "node policy"},
		"server usage lost": {clientOnly, "TLS server"},
		"expired":           {expired, "expired"},
	} {
		writePair(t, dir, "agg-1", c.kp)
		commit, err := id.Prepare()
		if err == nil || commit != nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Prepare = %v, %v; want an error about %q", name, commit != nil, err, c.want)
		}
		if inForce().Cmp(first) != 0 {
			t.Fatalf("%s: the certificate in force changed", name)
		}
	}

	// A key that does not match (the certificate replaced, the key not
	// yet): not reported at the first check, reported once when it stays,
	// not again at later checks.
	renewed, _ := ca.IssueServer("agg-1", []string{"127.0.0.1"}, time.Hour)
	writeAtomic(t, certFile, renewed.CertPEM())
	var reports int
	for i := range 4 {
		changed, err := id.Check(false)
		if changed {
			t.Fatal("a mismatched pair was put in force")
		}
		if err != nil {
			reports++
			if i == 0 {
				t.Fatalf("reported at the first check: %v", err)
			}
		}
	}
	if reports != 1 {
		t.Fatalf("a stable mismatched pair was reported %d times, want once", reports)
	}
	// The key arrives: the next check puts the pair in force, and the
	// signer signs with it.
	key, _ := renewed.KeyPEM()
	writeAtomic(t, keyFile, key)
	changed, err := id.Check(false)
	if err != nil || !changed || inForce().Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatalf("completed pair: changed %v err %v", changed, err)
	}
	cert, _, err := signer.Sign([]byte("msg"))
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := x509.ParseCertificate(cert); c.SerialNumber.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatal("the node signer still signs with the old certificate")
	}
	// Prepare's commit puts a good pair in force only when committed.
	again, _ := ca.IssueServer("agg-1", []string{"127.0.0.1"}, time.Hour)
	writePair(t, dir, "agg-1", again)
	commit, err := id.Prepare()
	if err != nil || commit == nil {
		t.Fatalf("Prepare of a good pair: %v", err)
	}
	if inForce().Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatal("Prepare put the pair in force before its commit")
	}
	commit()
	if inForce().Cmp(again.Cert.SerialNumber) != 0 {
		t.Fatal("commit did not put the pair in force")
	}
	if commit, err := id.Prepare(); commit != nil || err != nil {
		t.Fatalf("unchanged files: Prepare = %v, %v", commit != nil, err)
	}
	// An agent certificate cannot sign as a node.
	agent, _ := ca.IssueClient("edge-1", time.Hour)
	ac, ak := writePair(t, dir, "edge-1", agent)
	aid, err := pki.LoadIdentity("aggregator.cert", ac, ak)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aid.NodeSigner(); err == nil {
		t.Fatal("an agent certificate made a node signer")
	}
}

// expiredPair issues a certificate valid for a nanosecond, expired by the
// time it is checked.
func expiredPair(t *testing.T, ca *pki.CA) *pki.KeyPair {
	t.Helper()
	kp, err := ca.Issue(pki.IssueOptions{CommonName: "agg-1", Hosts: []string{"127.0.0.1"}, Server: true, Client: true, Node: true,
		Validity: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	return kp
}

package aggregator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/pki"
)

func TestHTTPServesTLSWhenConfigured(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.GenerateDev(dir, pki.DevOptions{Aggregators: []string{"agg-1"}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Proto))
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	certFile, keyFile := filepath.Join(dir, "agg-1.pem"), filepath.Join(dir, "agg-1-key.pem")
	id, err := pki.LoadIdentity("http.tls_cert", certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- serveHTTP(srv, ln, id) }()
	defer func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	ca, err := pki.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	get := func() *x509.Certificate {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatalf("https: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("https answered %d over %s", resp.StatusCode, resp.Proto)
		}
		return resp.TLS.PeerCertificates[0]
	}
	first := get()

	// A renewed certificate in the same files is presented by the next
	// handshake once the files are checked, without a restart.
	renewed, err := ca.IssueServer("agg-1", pki.DefaultHosts(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := renewed.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, renewed.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := get(); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("the certificate changed before its files were checked")
	}
	if changed, err := id.Check(true); err != nil || !changed {
		t.Fatalf("check: changed %v, %v", changed, err)
	}
	if got := get(); got.SerialNumber.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatalf("after the check the server presents serial %s, want the renewed %s", got.SerialNumber, renewed.Cert.SerialNumber)
	}
	plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	if resp, err := plain.Get("http://" + ln.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on the TLS listener")
		}
	}
}

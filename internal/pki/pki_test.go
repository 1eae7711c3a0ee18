package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGenerateDevWritesFilesWithPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	written, err := GenerateDev(dir, DevOptions{Agents: []string{"agent-eu-1"}, Aggregators: []string{"agg1"}})
	if err != nil {
		t.Fatalf("GenerateDev: %v", err)
	}
	want := []string{"ca.pem", "ca-key.pem", "agg1.pem", "agg1-key.pem", "agent-eu-1.pem", "agent-eu-1-key.pem"}
	if len(written) != len(want) {
		t.Fatalf("wrote %v, want %v", written, want)
	}
	for _, name := range want {
		p := filepath.Join(dir, name)
		if !slices.Contains(written, p) {
			t.Fatalf("%s not reported as written: %v", p, written)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		wantPerm := os.FileMode(0o644)
		if strings.HasSuffix(name, "-key.pem") {
			wantPerm = 0o600
		}
		if fi.Mode().Perm() != wantPerm {
			t.Fatalf("%s has mode %v, want %v", name, fi.Mode().Perm(), wantPerm)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read dir: %v", err)
	}
	if len(entries) != len(want) {
		t.Fatalf("dir holds %d entries, want %d (temporary files left?)", len(entries), len(want))
	}

	ca, err := LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	tests := []struct {
		name    string
		usage   x509.ExtKeyUsage
		host    string
		wantErr bool
	}{
		{name: "agg1", usage: x509.ExtKeyUsageServerAuth, host: "localhost"},
		{name: "agg1", usage: x509.ExtKeyUsageServerAuth, host: "127.0.0.1"},
		{name: "agg1", usage: x509.ExtKeyUsageServerAuth, host: "::1"},
		{name: "agg1", usage: x509.ExtKeyUsageServerAuth, host: "agg1"},
		{name: "agg1", usage: x509.ExtKeyUsageServerAuth, host: "example.com", wantErr: true},
		{name: "agg1", usage: x509.ExtKeyUsageClientAuth},
		{name: "agent-eu-1", usage: x509.ExtKeyUsageClientAuth},
		{name: "agent-eu-1", usage: x509.ExtKeyUsageServerAuth, wantErr: true},
	}
	for _, tc := range tests {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, tc.name+".pem"), filepath.Join(dir, tc.name+"-key.pem"))
		if err != nil {
			t.Fatalf("load %s: %v", tc.name, err)
		}
		if pair.Leaf.Subject.CommonName != tc.name {
			t.Fatalf("%s: CommonName %q", tc.name, pair.Leaf.Subject.CommonName)
		}
		_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{tc.usage}, DNSName: tc.host})
		if (err != nil) != tc.wantErr {
			t.Fatalf("%s as %v for %q: err = %v, want error %v", tc.name, tc.usage, tc.host, err, tc.wantErr)
		}
	}
}

func TestGenerateDevIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	opts := DevOptions{Agents: []string{"a1"}, Aggregators: []string{"agg"}}
	if _, err := GenerateDev(dir, opts); err != nil {
		t.Fatalf("first run: %v", err)
	}
	before := readAll(t, dir)

	written, err := GenerateDev(dir, opts)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if len(written) != 0 {
		t.Fatalf("second run wrote %v, want nothing", written)
	}
	if after := readAll(t, dir); !equalFiles(before, after) {
		t.Fatalf("second run changed files")
	}

	// A new agent and a new host: only what is missing or stale changes.
	opts.Agents = append(opts.Agents, "a2")
	opts.Hosts = append(DefaultHosts(), "agg.internal")
	written, err = GenerateDev(dir, opts)
	if err != nil {
		t.Fatalf("third run: %v", err)
	}
	wantWritten := []string{"agg.pem", "agg-key.pem", "a2.pem", "a2-key.pem"}
	if len(written) != len(wantWritten) {
		t.Fatalf("third run wrote %v, want %v", written, wantWritten)
	}
	after := readAll(t, dir)
	for _, keep := range []string{"ca.pem", "ca-key.pem", "a1.pem", "a1-key.pem"} {
		if !bytes.Equal(before[keep], after[keep]) {
			t.Fatalf("%s changed", keep)
		}
	}

	// Force replaces the CA and so every certificate.
	written, err = GenerateDev(dir, DevOptions{Agents: []string{"a1"}, Force: true})
	if err != nil {
		t.Fatalf("forced run: %v", err)
	}
	if len(written) != 4 {
		t.Fatalf("forced run wrote %v, want CA and a1", written)
	}
	if bytes.Equal(before["ca.pem"], readAll(t, dir)["ca.pem"]) {
		t.Fatalf("Force kept the CA")
	}
}

func TestGenerateDevReissuesCertificatesOfAnotherCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := GenerateDev(dir, DevOptions{Agents: []string{"a1"}}); err != nil {
		t.Fatalf("GenerateDev: %v", err)
	}
	other := t.TempDir()
	if _, err := GenerateDev(other, DevOptions{Agents: []string{"a1"}}); err != nil {
		t.Fatalf("GenerateDev other: %v", err)
	}
	for _, f := range []string{"a1.pem", "a1-key.pem"} {
		b, err := os.ReadFile(filepath.Join(other, f))
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	written, err := GenerateDev(dir, DevOptions{Agents: []string{"a1"}})
	if err != nil {
		t.Fatalf("GenerateDev: %v", err)
	}
	if len(written) != 2 {
		t.Fatalf("wrote %v, want a1 reissued", written)
	}
}

func TestGenerateDevRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		opts  DevOptions
		want  string
	}{
		{name: "half a CA", setup: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("x"), 0o644); err != nil {
				t.Fatalf("write: %v", err)
			}
		}, want: "only one of"},
		{name: "garbage CA", setup: func(t *testing.T, dir string) {
			for _, f := range []string{"ca.pem", "ca-key.pem"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
					t.Fatalf("write: %v", err)
				}
			}
		}, want: "load CA"},
		{name: "path in name", opts: DevOptions{Agents: []string{"../evil"}}, want: "bad name"},
		{name: "name ca", opts: DevOptions{Aggregators: []string{"ca"}}, want: "bad name"},
		{name: "key suffix", opts: DevOptions{Agents: []string{"a-key"}}, want: "bad name"},
		{name: "duplicate", opts: DevOptions{Agents: []string{"x"}, Aggregators: []string{"x"}}, want: "twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			_, err := GenerateDev(dir, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestTLSConfigsHandshake runs real TLS handshakes over an in-memory pipe.
func TestTLSConfigsHandshake(t *testing.T) {
	dir := t.TempDir()
	if _, err := GenerateDev(dir, DevOptions{Agents: []string{"agent1"}, Aggregators: []string{"agg1"}}); err != nil {
		t.Fatalf("GenerateDev: %v", err)
	}
	foreign := t.TempDir()
	if _, err := GenerateDev(foreign, DevOptions{Agents: []string{"agent1"}}); err != nil {
		t.Fatalf("GenerateDev foreign: %v", err)
	}
	serverConf, err := ServerTLS(DevFiles(dir, "agg1"), "tally/1")
	if err != nil {
		t.Fatalf("ServerTLS: %v", err)
	}
	if serverConf.MinVersion != tls.VersionTLS13 || serverConf.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("server config: min version %x, client auth %v", serverConf.MinVersion, serverConf.ClientAuth)
	}

	tests := []struct {
		name       string
		files      Files
		serverName string
		wantCN     string
		wantErr    bool
	}{
		{name: "agent", files: DevFiles(dir, "agent1"), serverName: "localhost", wantCN: "agent1"},
		{name: "aggregator as client", files: DevFiles(dir, "agg1"), serverName: "agg1", wantCN: "agg1"},
		{name: "wrong server name", files: DevFiles(dir, "agent1"), serverName: "example.com", wantErr: true},
		{name: "client cert of another CA", files: Files{CA: DevFiles(dir, "x").CA, Cert: DevFiles(foreign, "agent1").Cert, Key: DevFiles(foreign, "agent1").Key}, serverName: "localhost", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clientConf, err := ClientTLS(tc.files, tc.serverName, "tally/1")
			if err != nil {
				t.Fatalf("ClientTLS: %v", err)
			}
			cn, err := handshake(t, serverConf, clientConf)
			if (err != nil) != tc.wantErr {
				t.Fatalf("handshake err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && cn != tc.wantCN {
				t.Fatalf("server saw CN %q, want %q", cn, tc.wantCN)
			}
		})
	}
}

func TestClientTLSWithoutCertificateIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := GenerateDev(dir, DevOptions{Aggregators: []string{"agg1"}}); err != nil {
		t.Fatalf("GenerateDev: %v", err)
	}
	serverConf, err := ServerTLS(DevFiles(dir, "agg1"))
	if err != nil {
		t.Fatalf("ServerTLS: %v", err)
	}
	ca, err := LoadCA(DevFiles(dir, "").CA, filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	clientConf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), ServerName: "localhost"}
	if _, err := handshake(t, serverConf, clientConf); err == nil {
		t.Fatalf("handshake without client certificate succeeded")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := GenerateDev(dir, DevOptions{Agents: []string{"a"}}); err != nil {
		t.Fatalf("GenerateDev: %v", err)
	}
	tests := []struct {
		name  string
		files Files
	}{
		{name: "missing cert", files: Files{CA: DevFiles(dir, "a").CA, Cert: filepath.Join(dir, "nope.pem"), Key: DevFiles(dir, "a").Key}},
		{name: "missing CA", files: Files{CA: filepath.Join(dir, "nope.pem"), Cert: DevFiles(dir, "a").Cert, Key: DevFiles(dir, "a").Key}},
		{name: "CA not PEM", files: Files{CA: DevFiles(dir, "a").Key + "x", Cert: DevFiles(dir, "a").Cert, Key: DevFiles(dir, "a").Key}},
		{name: "key of another cert", files: Files{CA: DevFiles(dir, "a").CA, Cert: DevFiles(dir, "a").Cert, Key: filepath.Join(dir, "ca-key.pem")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ClientTLS(tc.files, "localhost"); err == nil {
				t.Fatalf("ClientTLS succeeded")
			}
			if _, err := ServerTLS(tc.files); err == nil {
				t.Fatalf("ServerTLS succeeded")
			}
		})
	}
	if _, err := LoadCA(DevFiles(dir, "a").Cert, DevFiles(dir, "a").Key); err == nil {
		t.Fatalf("LoadCA accepted a leaf certificate")
	}
}

func TestIssueRefusesNonsense(t *testing.T) {
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	tests := []IssueOptions{
		{Client: true, Validity: time.Hour},
		{CommonName: "x", Validity: time.Hour},
		{CommonName: "x", Client: true},
	}
	for _, o := range tests {
		if _, err := ca.Issue(o); err == nil {
			t.Fatalf("Issue(%+v) succeeded", o)
		}
	}
	kp, err := ca.IssueClient("x", 24*time.Hour)
	if err != nil {
		t.Fatalf("IssueClient: %v", err)
	}
	if kp.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("leaf outlives its CA: %v > %v", kp.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

// handshake runs a TLS handshake between the two configs and returns the
// client CommonName the server verified.
func handshake(t *testing.T, server, client *tls.Config) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	srv, cli := tls.Server(sc, server), tls.Client(cc, client)
	errc := make(chan error, 1)
	go func() {
		err := srv.HandshakeContext(ctx)
		if err != nil {
			sc.Close() // unblock the client
		}
		errc <- err
	}()
	cerr := cli.HandshakeContext(ctx)
	if cerr == nil {
		// In TLS 1.3 the server verifies the client after the client is
		// done: a read surfaces the server's verdict.
		_ = cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		go func() { _, _ = srv.Write([]byte{1}) }()
		_, cerr = cli.Read(make([]byte, 1))
	}
	if cerr != nil {
		cc.Close() // unblock the server
	}
	serr := <-errc
	if err := errors.Join(serr, cerr); err != nil {
		return "", err
	}
	return srv.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read dir: %v", err)
	}
	m := make(map[string][]byte, len(entries))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		m[e.Name()] = b
	}
	return m
}

func equalFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

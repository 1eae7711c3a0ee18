package pki

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Identity is a certificate and its private key, read from PEM files and
// read again when their contents change, so that a running process
// presents a renewed certificate in its next TLS handshakes without a
// restart. Connections already made keep the certificate they were made
// with: TLS never looks at it again.
//
// A new pair is put in force only when it is a pair (the key matches), is
// valid now, and may stand for the same holder as the one in force: the
// same CommonName, every usage (TLS server, TLS client) the old one
// allowed, and the node policy if the old one had it. Otherwise the one in
// force stays and the check says why. An Identity is safe for concurrent
// use.
type Identity struct {
	name           string // the configuration key, e.g. "quic.cert"
	certFile, keys string
	cur            atomic.Pointer[loadedPair]

	mu         sync.Mutex        // serialises reads of the files
	lastFailed [sha256.Size]byte // contents that failed at the last check
	reported   [sha256.Size]byte // contents whose failure was reported

	reloads, failures atomic.Uint64
}

type loadedPair struct {
	cert tls.Certificate // Leaf set
	sum  [sha256.Size]byte
}

// LoadIdentity reads the pair named by certFile and keyFile. name is the
// configuration key of the certificate, used in errors, logs and metric
// labels.
func LoadIdentity(name, certFile, keyFile string) (*Identity, error) {
	id := &Identity{name: name, certFile: certFile, keys: keyFile}
	p, err := id.read()
	if err != nil {
		return nil, err
	}
	if err := validNow(p.cert.Leaf, time.Now()); err != nil {
		return nil, fmt.Errorf("%s %s: %w", name, certFile, err)
	}
	id.cur.Store(p)
	return id, nil
}

// Name is the configuration key the identity was loaded for.
func (id *Identity) Name() string { return id.name }

// Certificate returns the pair in force.
func (id *Identity) Certificate() *tls.Certificate { return &id.cur.Load().cert }

// Leaf returns the certificate in force, parsed.
func (id *Identity) Leaf() *x509.Certificate { return id.cur.Load().cert.Leaf }

// GetCertificate is tls.Config.GetCertificate for servers.
func (id *Identity) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return id.Certificate(), nil
}

// GetClientCertificate is tls.Config.GetClientCertificate for clients.
func (id *Identity) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return id.Certificate(), nil
}

// Prepare reads the files again. When their contents are those in force
// it returns a nil commit; when they changed and hold an acceptable pair,
// it returns the commit that puts it in force; otherwise the reason, and
// nothing changes. A reload of the whole configuration (SIGHUP) prepares
// its certificates with its other parts and commits them together.
func (id *Identity) Prepare() (commit func(), err error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	old := id.cur.Load()
	p, err := id.read()
	if err == nil && p.sum == old.sum {
		return nil, nil
	}
	if err == nil {
		err = acceptable(old.cert.Leaf, p.cert.Leaf, time.Now())
	}
	if err != nil {
		id.failures.Add(1)
		return nil, fmt.Errorf("%s %s: %w (the certificate in force stays)", id.name, id.certFile, err)
	}
	return func() {
		if id.cur.CompareAndSwap(old, p) {
			id.reloads.Add(1)
		}
	}, nil
}

// Check reads the files and puts a changed, acceptable pair in force at
// once. It reports whether the certificate in force changed. A pair that
// is not acceptable is reported (an error, and a failure counted) once for
// each distinct contents, and only once the same contents are found at two
// checks in a row, or at once when report is set: files are rarely
// replaced in one step (certificate, then key), and a check between the
// two must not cry wolf, nor must a broken file every interval.
func (id *Identity) Check(report bool) (changed bool, err error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	old := id.cur.Load()
	p, err := id.read()
	if err == nil && p.sum == old.sum {
		id.lastFailed = [sha256.Size]byte{}
		return false, nil
	}
	if err == nil {
		err = acceptable(old.cert.Leaf, p.cert.Leaf, time.Now())
	}
	if err == nil {
		id.cur.Store(p)
		id.reloads.Add(1)
		id.lastFailed = [sha256.Size]byte{}
		return true, nil
	}
	sum := contentsSum(id.certFile, id.keys)
	if p != nil {
		sum = p.sum
	}
	stable := sum == id.lastFailed
	id.lastFailed = sum
	if !report && (!stable || sum == id.reported) {
		return false, nil
	}
	id.reported = sum
	id.failures.Add(1)
	return false, fmt.Errorf("%s %s: %w (the certificate in force stays)", id.name, id.certFile, err)
}

// Watch checks the files every interval until ctx ends, logging each
// certificate put in force and each pair refused.
func (id *Identity) Watch(ctx context.Context, interval time.Duration, logger *slog.Logger) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := id.Check(false)
		switch {
		case err != nil:
			logger.Error("certificate files changed but cannot be used", "reason_code", "tls_reload_failed", "cert", id.name, "err", err)
		case changed:
			leaf := id.Leaf()
			logger.Info("certificate reloaded", "cert", id.name, "subject", leaf.Subject.CommonName,
				"serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
}

// read reads and parses both files.
func (id *Identity) read() (*loadedPair, error) {
	certPEM, err := os.ReadFile(id.certFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id.name, err)
	}
	keyPEM, err := os.ReadFile(id.keys)
	if err != nil {
		return nil, fmt.Errorf("%s: key: %w", id.name, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return &loadedPair{sum: sumOf(certPEM, keyPEM)}, fmt.Errorf("%s %s: %w", id.name, id.certFile, err)
	}
	return &loadedPair{cert: pair, sum: sumOf(certPEM, keyPEM)}, nil
}

func sumOf(cert, key []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(cert)
	h.Write([]byte{0})
	h.Write(key)
	var s [sha256.Size]byte
	h.Sum(s[:0])
	return s
}

func contentsSum(certFile, keyFile string) [sha256.Size]byte {
	c, _ := os.ReadFile(certFile)
	k, _ := os.ReadFile(keyFile)
	return sumOf(c, k)
}

func validNow(c *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("certificate %q is not valid before %s", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	case now.After(c.NotAfter):
		return fmt.Errorf("certificate %q expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// acceptable says whether next may replace cur: valid now, the same
// holder, no usage or node policy lost.
func acceptable(cur, next *x509.Certificate, now time.Time) error {
	if err := validNow(next, now); err != nil {
		return err
	}
	if next.Subject.CommonName != cur.Subject.CommonName {
		return fmt.Errorf("the new certificate names %q, the one in force %q: a renewed certificate names the same holder", next.Subject.CommonName, cur.Subject.CommonName)
	}
	for _, u := range []struct {
		usage x509.ExtKeyUsage
		name  string
	}{{x509.ExtKeyUsageServerAuth, "TLS server"}, {x509.ExtKeyUsageClientAuth, "TLS client"}} {
		if allows(cur, u.usage) && !allows(next, u.usage) {
			return fmt.Errorf("the new certificate does not allow %s authentication, which the one in force does", u.name)
		}
	}
	if IsNodeCertificate(cur) && !IsNodeCertificate(next) {
		return errors.New("the new certificate lacks the Tally node policy the one in force has (issue it with `tally-aggregator certs` or add the policy)")
	}
	return nil
}

func allows(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	return len(c.ExtKeyUsage) == 0 || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) || slices.Contains(c.ExtKeyUsage, u)
}

// ServerTLSFor is ServerTLS with id's certificate, read again when its
// files change. The CA is read once.
func ServerTLSFor(id *Identity, caFile string, nextProtos ...string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("server TLS: %w", err)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: id.GetCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      pool,
		NextProtos:     nextProtos,
	}, nil
}

// ClientTLSFor is ClientTLS with id's certificate, read again when its
// files change. The CA is read once.
func ClientTLSFor(id *Identity, caFile, serverName string, nextProtos ...string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: id.GetClientCertificate,
		RootCAs:              pool,
		ServerName:           serverName,
		NextProtos:           nextProtos,
	}, nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load CA %s: no certificate in PEM", caFile)
	}
	return pool, nil
}

// NodeSigner returns a signer with the identity's current certificate and
// key, which must be a node certificate (LoadNodeSigner's check; a reload
// never drops the node policy).
func (id *Identity) NodeSigner() (*NodeSigner, error) {
	leaf := id.Leaf()
	if !IsNodeCertificate(leaf) {
		return nil, fmt.Errorf("node signer: %s is not a node certificate (no Tally node policy); issue it again with `tally-aggregator certs`", id.certFile)
	}
	if _, ok := id.Certificate().PrivateKey.(crypto.Signer); !ok {
		return nil, errors.New("node signer: key cannot sign")
	}
	return &NodeSigner{id: id}, nil
}

// IdentityMetrics exports, per identity (label cert, its configuration
// key), when its certificate expires and how many reloads succeeded and
// failed, under prefix (tally_agent, tally_aggregator).
func IdentityMetrics(prefix string, ids ...*Identity) prometheus.Collector {
	return &identityCollector{ids: ids,
		expiry: prometheus.NewDesc(prefix+"_tls_certificate_expiry_timestamp_seconds",
			"When the certificate in force expires (its NotAfter), in unix seconds.", []string{"cert"}, nil),
		reloads: prometheus.NewDesc(prefix+"_tls_certificate_reloads_total",
			"Times changed certificate files were put in force without a restart.", []string{"cert"}, nil),
		failures: prometheus.NewDesc(prefix+"_tls_certificate_reload_failures_total",
			"Times changed certificate files could not be used (the certificate in force stayed).", []string{"cert"}, nil),
	}
}

type identityCollector struct {
	ids                       []*Identity
	expiry, reloads, failures *prometheus.Desc
}

func (c *identityCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	ch <- c.reloads
	ch <- c.failures
}

func (c *identityCollector) Collect(ch chan<- prometheus.Metric) {
	for _, id := range c.ids {
		if id == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, float64(id.Leaf().NotAfter.Unix()), id.name)
		ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(id.reloads.Load()), id.name)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(id.failures.Load()), id.name)
	}
}

// Package pki makes and loads the certificates of a Tally cluster: a CA
// that signs aggregator certificates (server and client: aggregators also
// dial each other) and agent certificates (client only, CommonName = the
// agent's name), and the TLS configurations both sides of the wire use.
//
// Keys are ECDSA P-256. Files are PEM: certificates 0644, private keys
// (PKCS #8) 0600. GenerateDev builds a complete development setup in a
// directory; production deployments may bring their own CA and use only
// ServerTLS and ClientTLS.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// clockSkew backdates NotBefore so a certificate made on one machine is
// valid at once on another whose clock is a little behind.
const clockSkew = time.Hour

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA valid for the given duration.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: generate key: %w", commonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", commonName, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Tally"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: sign: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: parse: %w", commonName, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA certificate and its key from PEM files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", certFile, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load CA %s: key is %T, want ECDSA", certFile, pair.PrivateKey)
	}
	if !pair.Leaf.IsCA || pair.Leaf.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA %s: certificate %q is not a CA", certFile, pair.Leaf.Subject.CommonName)
	}
	return &CA{Cert: pair.Leaf, Key: key}, nil
}

// CertPEM returns the CA certificate in PEM.
func (ca *CA) CertPEM() []byte { return certPEM(ca.Cert) }

// KeyPEM returns the CA key in PEM (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueOptions describe a certificate to issue.
type IssueOptions struct {
	// CommonName names the holder: the agent or node name.
	CommonName string
	// Hosts are the DNS names and IP addresses a server certificate is
	// valid for. Ignored unless Server.
	Hosts []string
	// Server allows the certificate to authenticate a TLS server.
	Server bool
	// Client allows the certificate to authenticate a TLS client.
	Client bool
	// Node marks the certificate as an aggregator node's with the
	// NodePolicy certificate policy: only such certificates may forward
	// batches of other agents or publish live updates to the cluster.
	Node bool
	// Validity is how long the certificate is valid from now.
	Validity time.Duration
}

// KeyPair is an issued certificate and its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// CertPEM returns the certificate in PEM.
func (kp *KeyPair) CertPEM() []byte { return certPEM(kp.Cert) }

// KeyPEM returns the private key in PEM (PKCS #8).
func (kp *KeyPair) KeyPEM() ([]byte, error) { return keyPEM(kp.Key) }

// TLSCertificate returns the pair as a tls.Certificate.
func (kp *KeyPair) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}
}

// Issue signs a new certificate with a fresh key.
func (ca *CA) Issue(opts IssueOptions) (*KeyPair, error) {
	if opts.CommonName == "" {
		return nil, errors.New("issue: empty CommonName")
	}
	if !opts.Server && !opts.Client {
		return nil, fmt.Errorf("issue %q: neither server nor client usage", opts.CommonName)
	}
	if opts.Validity <= 0 {
		return nil, fmt.Errorf("issue %q: validity %v is not positive", opts.CommonName, opts.Validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue %q: generate key: %w", opts.CommonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("issue %q: %w", opts.CommonName, err)
	}
	now := time.Now()
	notAfter := now.Add(opts.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter // a leaf cannot outlive its CA
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName, Organization: []string{"Tally"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	if opts.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		for _, h := range opts.Hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	if opts.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if opts.Node {
		tmpl.Policies = []x509.OID{NodePolicy}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue %q: sign: %w", opts.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue %q: parse: %w", opts.CommonName, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// IssueServer issues a certificate for a node: valid as a TLS server for
// hosts and as a TLS client, since aggregators also dial each other, and
// carrying NodePolicy.
func (ca *CA) IssueServer(name string, hosts []string, validity time.Duration) (*KeyPair, error) {
	return ca.Issue(IssueOptions{CommonName: name, Hosts: hosts, Server: true, Client: true, Node: true, Validity: validity})
}

// IssueClient issues a client-only certificate, e.g. for an agent.
func (ca *CA) IssueClient(name string, validity time.Duration) (*KeyPair, error) {
	return ca.Issue(IssueOptions{CommonName: name, Client: true, Validity: validity})
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Files names the PEM files of one identity.
type Files struct {
	// CA is the cluster CA certificate, to verify peers against.
	CA string
	// Cert and Key are the identity's certificate and private key.
	Cert string
	Key  string
}

// DevFiles returns the files GenerateDev writes for name in dir:
// ca.pem, <name>.pem and <name>-key.pem.
func DevFiles(dir, name string) Files {
	return Files{CA: caCertPath(dir), Cert: certPath(dir, name), Key: keyPath(dir, name)}
}

// ServerTLS loads a TLS configuration for a server of the cluster: TLS 1.3,
// the given certificate, clients required to present a certificate signed
// by the CA, and the given ALPN protocols.
func ServerTLS(f Files, nextProtos ...string) (*tls.Config, error) {
	pair, pool, err := load(f)
	if err != nil {
		return nil, fmt.Errorf("server TLS: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   nextProtos,
	}, nil
}

// ClientTLS loads a TLS configuration for a client of the cluster: TLS 1.3,
// the given client certificate, servers verified against the CA under
// serverName (empty means the host dialled), and the given ALPN protocols.
func ClientTLS(f Files, serverName string, nextProtos ...string) (*tls.Config, error) {
	pair, pool, err := load(f)
	if err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   serverName,
		NextProtos:   nextProtos,
	}, nil
}

func load(f Files) (tls.Certificate, *x509.CertPool, error) {
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load %s: %w", f.Cert, err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("load CA %s: no certificate in PEM", f.CA)
	}
	return pair, pool, nil
}

package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// NodePolicy is the certificate policy that marks an aggregator node's
// certificate. Agents and nodes share one CA, so the CA's signature alone
// says "a member of this deployment", not "a node": forwarding batches of
// any agent, and publishing live figures to every dashboard, need this
// policy too. `tally-aggregator certs` (GenerateDev, IssueServer) puts it
// in node certificates and never in agent ones; with a CA of your own,
// add it to node certificates only.
//
// The OID is a UUID under the 2.25 arc (ITU-T X.667), which needs no
// registration: 2.25.19342037260615364694524456588429059811.
var NodePolicy = mustOID("2.25.19342037260615364694524456588429059811")

func mustOID(s string) x509.OID {
	o, err := x509.ParseOID(s)
	if err != nil {
		panic(err) // a constant
	}
	return o
}

// IsNodeCertificate reports whether c carries NodePolicy. It does not
// verify c: call it on a certificate TLS (or VerifyNode) has verified.
func IsNodeCertificate(c *x509.Certificate) bool {
	if c == nil {
		return false
	}
	for _, p := range c.Policies {
		if p.Equal(NodePolicy) {
			return true
		}
	}
	return false
}

// NodeSigner signs messages a node sends to the others outside TLS (live
// updates over gossip): with its certificate's key, so any member can
// tell that a node sent them.
type NodeSigner struct {
	cert []byte
	key  crypto.Signer
	id   *Identity // when set, its certificate in force signs
}

// LoadNodeSigner loads a node's certificate and key, which must be a node
// certificate.
func LoadNodeSigner(f Files) (*NodeSigner, error) {
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("node signer: %w", err)
	}
	if !IsNodeCertificate(pair.Leaf) {
		return nil, fmt.Errorf("node signer: %s is not a node certificate (no Tally node policy); issue it again with `tally-aggregator certs`", f.Cert)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("node signer: key cannot sign")
	}
	return &NodeSigner{cert: pair.Leaf.Raw, key: key}, nil
}

// Sign returns the node's certificate (DER) and its signature of msg
// (ECDSA over SHA-256, ASN.1).
func (s *NodeSigner) Sign(msg []byte) (cert, sig []byte, err error) {
	cert, key := s.cert, s.key
	if s.id != nil {
		c := s.id.Certificate()
		signer, ok := c.PrivateKey.(crypto.Signer)
		if !ok {
			return nil, nil, errors.New("sign: key cannot sign")
		}
		cert, key = c.Leaf.Raw, signer
	}
	h := sha256.Sum256(msg)
	sig, err = key.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	return cert, sig, nil
}

// NodeVerifier checks messages signed by a NodeSigner. It is safe for
// concurrent use and remembers the certificates it verified.
type NodeVerifier struct {
	roots *x509.CertPool
	mu    sync.Mutex
	seen  map[string]*x509.Certificate // DER → verified node certificate
}

// LoadNodeVerifier loads the cluster CA to verify node certificates
// against.
func LoadNodeVerifier(caFile string) (*NodeVerifier, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("node verifier: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("node verifier: no certificate in %s", caFile)
	}
	return &NodeVerifier{roots: pool, seen: map[string]*x509.Certificate{}}, nil
}

// maxSeen bounds the certificates a verifier remembers.
const maxSeen = 1024

// Verify checks that cert chains to the CA, is valid now, is a node
// certificate, and signed msg with sig. It returns the node's name (the
// certificate's CommonName).
func (v *NodeVerifier) Verify(cert, msg, sig []byte) (string, error) {
	c, err := v.node(cert)
	if err != nil {
		return "", err
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return "", fmt.Errorf("node %q: key is %T, want ECDSA", c.Subject.CommonName, c.PublicKey)
	}
	h := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(pub, h[:], sig) {
		return "", fmt.Errorf("node %q: bad signature", c.Subject.CommonName)
	}
	return c.Subject.CommonName, nil
}

func (v *NodeVerifier) node(der []byte) (*x509.Certificate, error) {
	v.mu.Lock()
	c, ok := v.seen[string(der)]
	v.mu.Unlock()
	if ok {
		// Verified before; only its validity period can have ended.
		if _, err := c.Verify(x509.VerifyOptions{Roots: v.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return nil, fmt.Errorf("node certificate: %w", err)
		}
		return c, nil
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: v.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("node certificate %q: %w", c.Subject.CommonName, err)
	}
	if !IsNodeCertificate(c) {
		return nil, fmt.Errorf("certificate %q is not a node certificate", c.Subject.CommonName)
	}
	v.mu.Lock()
	if len(v.seen) >= maxSeen {
		clear(v.seen)
	}
	v.seen[string(der)] = c
	v.mu.Unlock()
	return c, nil
}

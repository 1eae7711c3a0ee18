package pki

import (
	"crypto"
	"crypto/tls"
	"path/filepath"
	"testing"
)

// TestNodeCertificates: nodes get the node policy, agents never; a node
// certificate of an older release is issued again; messages signed by a
// node verify, and nothing signed with an agent's key or from another CA
// does.
func TestNodeCertificates(t *testing.T) {
	dir := t.TempDir()
	if _, err := GenerateDev(dir, DevOptions{Agents: []string{"edge-1"}, Aggregators: []string{"agg-1"}}); err != nil {
		t.Fatal(err)
	}
	leaf := func(name string) *tls.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return &pair
	}
	if !IsNodeCertificate(leaf("agg-1").Leaf) || IsNodeCertificate(leaf("edge-1").Leaf) {
		t.Fatal("node policy on the wrong certificates")
	}

	// A node certificate without the policy (an older release's) is
	// replaced by the next certs run.
	ca, err := LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	old, err := ca.Issue(IssueOptions{CommonName: "agg-1", Hosts: append(DefaultHosts(), "agg-1"), Server: true, Client: true, Validity: DefaultLeafValidity})
	if err != nil {
		t.Fatal(err)
	}
	if err := writePair(certPath(dir, "agg-1"), keyPath(dir, "agg-1"), old.CertPEM(), old.KeyPEM); err != nil {
		t.Fatal(err)
	}
	written, err := GenerateDev(dir, DevOptions{Agents: []string{"edge-1"}, Aggregators: []string{"agg-1"}})
	if err != nil || len(written) != 2 || !IsNodeCertificate(leaf("agg-1").Leaf) {
		t.Fatalf("certs run over an old node certificate wrote %v (%v)", written, err)
	}

	v, err := LoadNodeVerifier(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadNodeSigner(DevFiles(dir, "agg-1"))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("live figures")
	cert, sig, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := v.Verify(cert, msg, sig); err != nil || name != "agg-1" {
		t.Fatalf("Verify = %q, %v", name, err)
	}
	if _, err := v.Verify(cert, []byte("other figures"), sig); err == nil {
		t.Fatal("a signature verified another message")
	}
	if _, err := LoadNodeSigner(DevFiles(dir, "edge-1")); err == nil {
		t.Fatal("an agent certificate made a node signer")
	}
	// An agent signing with its own key is no node.
	agentPair := leaf("edge-1")
	agent := &NodeSigner{cert: agentPair.Leaf.Raw, key: agentPair.PrivateKey.(crypto.Signer)}
	cert, sig, err = agent.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(cert, msg, sig); err == nil {
		t.Fatal("an agent's signature verified as a node's")
	}
	// A node of another CA is no node of this cluster.
	other := t.TempDir()
	if _, err := GenerateDev(other, DevOptions{Aggregators: []string{"agg-1"}}); err != nil {
		t.Fatal(err)
	}
	foreign, err := LoadNodeSigner(DevFiles(other, "agg-1"))
	if err != nil {
		t.Fatal(err)
	}
	cert, sig, _ = foreign.Sign(msg)
	if _, err := v.Verify(cert, msg, sig); err == nil {
		t.Fatal("a node certificate of another CA verified")
	}
}

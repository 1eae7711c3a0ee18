package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Defaults of DevOptions.
const (
	// DefaultCAValidity is how long a new dev CA is valid: ten years.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultLeafValidity is how long an issued certificate is valid: a
	// year, or less if the CA expires first.
	DefaultLeafValidity = 365 * 24 * time.Hour
)

// DefaultHosts returns the hosts a development server certificate is valid
// for when none are given: localhost over IPv4 and IPv6.
func DefaultHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// DevOptions say what GenerateDev creates.
type DevOptions struct {
	// Hosts are the DNS names and IPs every aggregator certificate is
	// valid for, besides the aggregator's own name. Default DefaultHosts().
	Hosts []string
	// Agents get client certificates with their name as CommonName.
	Agents []string
	// Aggregators get certificates valid as server (for Hosts and their
	// name) and as client (to forward to each other).
	Aggregators []string
	// Validity of the issued certificates. Default DefaultLeafValidity.
	Validity time.Duration
	// CAValidity of a new CA. Default DefaultCAValidity.
	CAValidity time.Duration
	// Force replaces the CA and every requested certificate even if they
	// exist and are valid.
	Force bool
}

// namePattern keeps names usable as file names and CommonNames.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// GenerateDev creates a development PKI in dir: ca.pem and ca-key.pem, and
// <name>.pem and <name>-key.pem for every agent and aggregator. It returns
// the paths it wrote.
//
// It is idempotent: an existing CA is kept (unless Force), and so is every
// existing certificate that still verifies against it for its usage, covers
// the requested hosts and is not expired; missing or stale ones are issued
// anew. A directory with only half a CA is an error, not something to
// overwrite silently.
func GenerateDev(dir string, opts DevOptions) (written []string, err error) {
	if opts.Validity == 0 {
		opts.Validity = DefaultLeafValidity
	}
	if opts.CAValidity == 0 {
		opts.CAValidity = DefaultCAValidity
	}
	if len(opts.Hosts) == 0 {
		opts.Hosts = DefaultHosts()
	}
	if opts.Validity < 0 || opts.CAValidity < 0 {
		return nil, errors.New("dev PKI: validity must be positive")
	}
	seen := map[string]bool{}
	for _, n := range slices.Concat(opts.Agents, opts.Aggregators) {
		// "x-key" would collide with the key file of "x".
		if !namePattern.MatchString(n) || n == "ca" || strings.HasSuffix(n, "-key") {
			return nil, fmt.Errorf("dev PKI: bad name %q: use letters, digits, '.', '_' and '-', not \"ca\" nor a \"-key\" suffix", n)
		}
		if seen[n] {
			return nil, fmt.Errorf("dev PKI: name %q given twice", n)
		}
		seen[n] = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev PKI: %w", err)
	}

	ca, fresh, err := devCA(dir, opts)
	if err != nil {
		return nil, err
	}
	if fresh {
		written = append(written, caCertPath(dir), caKeyPath(dir))
	}
	issue := func(name string, o IssueOptions) error {
		if !fresh && !opts.Force && leafValid(dir, name, ca, o) {
			return nil
		}
		kp, err := ca.Issue(o)
		if err != nil {
			return fmt.Errorf("dev PKI: %w", err)
		}
		if err := writePair(certPath(dir, name), keyPath(dir, name), kp.CertPEM(), kp.KeyPEM); err != nil {
			return fmt.Errorf("dev PKI: %q: %w", name, err)
		}
		written = append(written, certPath(dir, name), keyPath(dir, name))
		return nil
	}
	for _, n := range opts.Aggregators {
		hosts := opts.Hosts
		if !slices.Contains(hosts, n) {
			hosts = append(slices.Clip(hosts), n)
		}
		if err := issue(n, IssueOptions{CommonName: n, Hosts: hosts, Server: true, Client: true, Node: true, Validity: opts.Validity}); err != nil {
			return written, err
		}
	}
	for _, n := range opts.Agents {
		if err := issue(n, IssueOptions{CommonName: n, Client: true, Validity: opts.Validity}); err != nil {
			return written, err
		}
	}
	return written, nil
}

// devCA loads the CA in dir or creates one; fresh reports a new CA.
func devCA(dir string, opts DevOptions) (ca *CA, fresh bool, err error) {
	certFile, keyFile := caCertPath(dir), caKeyPath(dir)
	haveCert, haveKey := exists(certFile), exists(keyFile)
	if !opts.Force {
		switch {
		case haveCert && haveKey:
			ca, err := LoadCA(certFile, keyFile)
			if err != nil {
				return nil, false, fmt.Errorf("dev PKI: %w (use Force to replace it)", err)
			}
			if time.Now().After(ca.Cert.NotAfter) {
				return nil, false, fmt.Errorf("dev PKI: CA %s expired on %s (use Force to replace it)", certFile, ca.Cert.NotAfter.Format(time.DateOnly))
			}
			return ca, false, nil
		case haveCert || haveKey:
			return nil, false, fmt.Errorf("dev PKI: %s has only one of ca.pem and ca-key.pem (use Force to replace them)", dir)
		}
	}
	ca, err = NewCA("Tally dev CA", opts.CAValidity)
	if err != nil {
		return nil, false, fmt.Errorf("dev PKI: %w", err)
	}
	if err := writePair(certFile, keyFile, ca.CertPEM(), ca.KeyPEM); err != nil {
		return nil, false, fmt.Errorf("dev PKI: CA: %w", err)
	}
	return ca, true, nil
}

// leafValid tells whether name's existing certificate can be kept.
func leafValid(dir, name string, ca *CA, o IssueOptions) bool {
	pair, err := tls.LoadX509KeyPair(certPath(dir, name), keyPath(dir, name))
	if err != nil || pair.Leaf == nil || pair.Leaf.Subject.CommonName != name {
		return false
	}
	var usages []x509.ExtKeyUsage
	if o.Server {
		usages = append(usages, x509.ExtKeyUsageServerAuth)
	}
	if o.Client {
		usages = append(usages, x509.ExtKeyUsageClientAuth)
	}
	for _, u := range usages {
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return false
		}
	}
	if o.Server {
		for _, h := range o.Hosts {
			if pair.Leaf.VerifyHostname(h) != nil {
				return false
			}
		}
	}
	// A node certificate from before node policies existed is issued
	// again; an agent certificate must never carry the policy.
	return IsNodeCertificate(pair.Leaf) == o.Node
}

// writePair writes a certificate (0644) and its key (0600), each
// atomically, key first so a certificate never exists without its key.
func writePair(certFile, keyFile string, cert []byte, key func() ([]byte, error)) error {
	k, err := key()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyFile, k, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, cert, 0o644)
}

// writeFileAtomic writes data to a temporary file with perm and renames it
// over path, so a crash leaves the old file or the new one, never half.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

func caCertPath(dir string) string     { return filepath.Join(dir, "ca.pem") }
func caKeyPath(dir string) string      { return filepath.Join(dir, "ca-key.pem") }
func certPath(dir, name string) string { return filepath.Join(dir, name+".pem") }
func keyPath(dir, name string) string  { return filepath.Join(dir, name+"-key.pem") }

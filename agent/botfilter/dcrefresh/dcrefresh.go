// Package dcrefresh makes the datacenter list of the bot filter from a
// maintained public data set shipped by a registry package: the IP-to-ASN
// database of the npm package @ip-location-db/asn (RouteViews, the five
// RIRs and DB-IP, CC BY 4.0, rebuilt and republished by its maintainer),
// keeping the networks of the autonomous systems of cloud and hosting
// providers. `tally-agent datacenter-refresh` runs it; README.md of
// agent/botfilter says how to schedule it.
//
// The list it writes is a CIDR file for bots.datacenter.files whose
// "# data-date:" comment is the date of the data, which the agent shows
// as tally_agent_bots_datacenter_data_timestamp_seconds.
package dcrefresh

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go4.org/netipx"

	"github.com/tally-edge/tally/agent/botfilter"
)

// Package is the registry package the data comes from.
const Package = "@ip-location-db/asn"

// DefaultRegistry is npm's public registry.
const DefaultRegistry = "https://registry.npmjs.org"

// Provider is a cloud or hosting provider and its autonomous systems.
type Provider struct {
	Name string
	ASNs []uint32
}

// DefaultProviders are the providers whose networks are datacenters by
// default: compute clouds and hosting companies, where visitors are
// servers, VPN exits and scripts. Left out on purpose: Google's AS15169
// (Googlebot is named by its user agent, and Gmail's image proxy fetches
// real people's email opens), CDNs (Cloudflare, Akamai, Fastly: their
// networks also carry iCloud Private Relay and WARP users), and ISPs.
// Microsoft's AS8075 carries Azure and also Microsoft's own offices.
var DefaultProviders = []Provider{
	{"Amazon Web Services", []uint32{16509, 14618}},
	{"Google Cloud", []uint32{396982}},
	{"Microsoft Azure", []uint32{8075}},
	{"Oracle Cloud", []uint32{31898}},
	{"Alibaba Cloud", []uint32{45102}},
	{"Tencent Cloud", []uint32{132203}},
	{"DigitalOcean", []uint32{14061}},
	{"Akamai Connected Cloud (Linode)", []uint32{63949}},
	{"Vultr", []uint32{20473}},
	{"Hetzner", []uint32{24940}},
	{"OVHcloud", []uint32{16276}},
	{"Scaleway", []uint32{12876}},
	{"Contabo", []uint32{51167}},
}

// Options configure a refresh.
type Options struct {
	// Out is the file written (atomically: a temporary file renamed).
	Out string
	// Registry is the npm registry's base URL; DefaultRegistry when "".
	Registry string
	// Version of the package; "" for its latest.
	Version string
	// From reads the package tarball from this file (as `npm pack` writes
	// it) instead of the registry; the date of the data then comes from
	// the version.
	From string
	// ASNs to keep; DefaultProviders' when empty.
	ASNs []uint32
	// Client fetches from the registry; http.DefaultClient when nil.
	Client *http.Client
}

// Result says what a refresh wrote.
type Result struct {
	Version  string
	DataDate time.Time
	// Networks is the number of networks written, IPv4 and IPv6.
	Networks int
}

// maxTarball bounds the download: the package is about 19 MB.
const maxTarball = 256 << 20

// Refresh fetches the package, keeps the networks of the ASNs and writes
// them to opts.Out. The file is replaced only when everything succeeded.
func Refresh(ctx context.Context, opts Options) (Result, error) {
	if opts.Out == "" {
		return Result{}, errors.New("no output file")
	}
	if opts.Registry == "" {
		opts.Registry = DefaultRegistry
	}
	if opts.Client == nil {
		opts.Client = http.DefaultClient
	}
	asns := map[uint32]bool{}
	for _, a := range opts.ASNs {
		asns[a] = true
	}
	if len(asns) == 0 {
		for _, p := range DefaultProviders {
			for _, a := range p.ASNs {
				asns[a] = true
			}
		}
	}

	var tgz []byte
	var res Result
	var err error
	if opts.From != "" {
		if tgz, err = os.ReadFile(opts.From); err != nil {
			return Result{}, err
		}
	} else {
		var published time.Time
		if tgz, res.Version, published, err = download(ctx, opts); err != nil {
			return Result{}, err
		}
		res.DataDate = published
	}
	nets, version, err := extract(tgz, asns)
	if err != nil {
		return Result{}, err
	}
	if res.Version == "" {
		res.Version = version
	}
	// The package's versions end with the hour its data was built
	// (2.3.2026061719): the date of the data, better than the upload's.
	if d, ok := versionDate(res.Version); ok {
		res.DataDate = d
	}
	if res.DataDate.IsZero() {
		return Result{}, fmt.Errorf("%s %s: no date for the data (version without a date, and no registry time)", Package, res.Version)
	}
	res.Networks = len(nets)
	if err := write(opts.Out, nets, res, asns); err != nil {
		return Result{}, err
	}
	return res, nil
}

// download fetches the package document and the tarball of the version,
// checking the tarball against the registry's sha512 integrity.
func download(ctx context.Context, opts Options) (tgz []byte, version string, published time.Time, err error) {
	docURL := strings.TrimSuffix(opts.Registry, "/") + "/" + url.PathEscape(Package)
	body, err := get(ctx, opts.Client, docURL, 64<<20)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	var doc struct {
		DistTags map[string]string `json:"dist-tags"`
		Versions map[string]struct {
			Dist struct {
				Tarball   string `json:"tarball"`
				Integrity string `json:"integrity"`
			} `json:"dist"`
		} `json:"versions"`
		Time map[string]time.Time `json:"time"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, "", time.Time{}, fmt.Errorf("%s: decode package document: %w", docURL, err)
	}
	version = opts.Version
	if version == "" {
		version = doc.DistTags["latest"]
	}
	v, ok := doc.Versions[version]
	if !ok || v.Dist.Tarball == "" {
		return nil, "", time.Time{}, fmt.Errorf("%s has no version %q", Package, version)
	}
	tgz, err = get(ctx, opts.Client, v.Dist.Tarball, maxTarball)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	algo, want, ok := strings.Cut(v.Dist.Integrity, "-")
	if !ok || algo != "sha512" {
		return nil, "", time.Time{}, fmt.Errorf("%s %s: no sha512 integrity to check the tarball against", Package, version)
	}
	sum := sha512.Sum512(tgz)
	if base64.StdEncoding.EncodeToString(sum[:]) != want {
		return nil, "", time.Time{}, fmt.Errorf("%s %s: tarball does not match its integrity %s", Package, version, v.Dist.Integrity)
	}
	return tgz, version, doc.Time[version], nil
}

func get(ctx context.Context, c *http.Client, u string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, limit)
	}
	return b, nil
}

// extract reads asn-ipv4.csv and asn-ipv6.csv (start,end,asn,organisation
// per line) from the tarball and returns the networks of the ASNs, merged,
// and the package's version.
func extract(tgz []byte, asns map[uint32]bool) ([]netip.Prefix, string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, "", fmt.Errorf("%s tarball: %w", Package, err)
	}
	var b netipx.IPSetBuilder
	var version string
	seen := map[string]bool{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s tarball: %w", Package, err)
		}
		switch name := filepath.Base(h.Name); name {
		case "package.json":
			var pj struct {
				Version string `json:"version"`
			}
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&pj); err != nil {
				return nil, "", fmt.Errorf("%s package.json: %w", Package, err)
			}
			version = pj.Version
		case "asn-ipv4.csv", "asn-ipv6.csv":
			seen[name] = true
			if err := readCSV(tr, name, asns, &b); err != nil {
				return nil, "", err
			}
		}
	}
	if !seen["asn-ipv4.csv"] || !seen["asn-ipv6.csv"] {
		return nil, "", fmt.Errorf("%s tarball: no asn-ipv4.csv and asn-ipv6.csv", Package)
	}
	set, err := b.IPSet()
	if err != nil {
		return nil, "", err
	}
	return set.Prefixes(), version, nil
}

func readCSV(r io.Reader, name string, asns map[uint32]bool, b *netipx.IPSetBuilder) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		// The organisation may be quoted and hold commas; it comes last.
		parts := strings.SplitN(sc.Text(), ",", 4)
		if len(parts) < 3 {
			return fmt.Errorf("%s:%d: want start,end,asn,organisation", name, n)
		}
		asn, err := strconv.ParseUint(parts[2], 10, 32)
		if err != nil {
			return fmt.Errorf("%s:%d: asn %q: %w", name, n, parts[2], err)
		}
		if !asns[uint32(asn)] {
			continue
		}
		lo, err1 := netip.ParseAddr(parts[0])
		hi, err2 := netip.ParseAddr(parts[1])
		r := netipx.IPRangeFrom(lo, hi)
		if err1 != nil || err2 != nil || !r.IsValid() {
			return fmt.Errorf("%s:%d: %q-%q is not an address range", name, n, parts[0], parts[1])
		}
		b.AddRange(r)
	}
	return sc.Err()
}

var versionDateRe = regexp.MustCompile(`\.(\d{10})$`)

// versionDate reads the build hour at the end of the package's version
// (2.3.2026061719 is 2026-06-17 19:00 UTC).
func versionDate(v string) (time.Time, bool) {
	m := versionDateRe.FindStringSubmatch(v)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.Parse("2006010215", m[1])
	return t, err == nil
}

// write writes the list to a temporary file beside out and renames it.
func write(out string, nets []netip.Prefix, res Result, asns map[uint32]bool) error {
	var buf bytes.Buffer
	list := make([]uint32, 0, len(asns))
	for a := range asns {
		list = append(list, a)
	}
	slices.Sort(list)
	fmt.Fprintf(&buf, "# Datacenter networks for the Tally bot filter, written by tally-agent datacenter-refresh.\n")
	fmt.Fprintf(&buf, "# Source: npm %s %s: IP to ASN data by RouteViews (routeviews.org), the NRO (nro.net)\n", Package, res.Version)
	fmt.Fprintf(&buf, "# and DB-IP (db-ip.com), licensed CC BY 4.0, merged by sapics/ip-location-db.\n")
	fmt.Fprintf(&buf, "# Autonomous systems: %s\n", joinASNs(list))
	fmt.Fprintf(&buf, "# %s %s\n", botfilter.DataDateComment, res.DataDate.UTC().Format(time.RFC3339))
	for _, p := range nets {
		buf.WriteString(p.String())
		buf.WriteByte('\n')
	}
	dir := filepath.Dir(out)
	f, err := os.CreateTemp(dir, filepath.Base(out)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, there is nothing to remove
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}

func joinASNs(list []uint32) string {
	s := make([]string, len(list))
	for i, a := range list {
		s[i] = "AS" + strconv.FormatUint(uint64(a), 10)
	}
	return strings.Join(s, " ")
}

// ParseASNs reads a comma-separated list of AS numbers ("16509,AS14618").
func ParseASNs(s string) ([]uint32, error) {
	var out []uint32
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(part)), "AS")
		if part == "" {
			continue
		}
		n, err := strconv.ParseUint(part, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("AS number %q: %w", part, err)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

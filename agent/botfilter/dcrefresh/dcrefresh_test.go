package dcrefresh

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/botfilter"
)

const chromeUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// tarball builds a package tarball shaped like @ip-location-db/asn's.
func tarball(t *testing.T, version string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range []struct{ name, body string }{
		{"package/package.json", `{"name":"@ip-location-db/asn","version":"` + version + `"}`},
		{"package/asn-ipv4.csv", "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n" +
			"3.0.0.0,3.0.0.255,16509,\"Amazon.com, Inc.\"\n" +
			"3.0.1.0,3.0.1.255,16509,\"Amazon.com, Inc.\"\n" + // adjacent: merged
			"5.9.0.0,5.9.0.9,24940,Hetzner Online GmbH\n" + // not a CIDR: split
			"8.8.8.0,8.8.8.255,15169,Google LLC\n"},
		{"package/asn-ipv6.csv", "2600:1f00::,2600:1fff:ffff:ffff:ffff:ffff:ffff:ffff,16509,\"Amazon.com, Inc.\"\n" +
			"2606:4700::,2606:4700:ffff:ffff:ffff:ffff:ffff:ffff,13335,\"Cloudflare, Inc.\"\n"},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// registry serves a package document and tarball on loopback, as npm's
// registry does.
func registry(t *testing.T, version string, tgz []byte, integrity string) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.EscapedPath() {
		case "/@ip-location-db%2Fasn":
			doc := map[string]any{
				"dist-tags": map[string]string{"latest": version},
				"versions": map[string]any{version: map[string]any{"dist": map[string]string{
					"tarball": srv.URL + "/asn.tgz", "integrity": integrity}}},
				"time": map[string]string{version: "2026-09-16T07:11:09Z"},
			}
			json.NewEncoder(w).Encode(doc)
		case "/asn.tgz":
			w.Write(tgz)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sri(b []byte) string {
	sum := sha512.Sum512(b)
	return "sha512-" + base64.StdEncoding.EncodeToString(sum[:])
}

func TestRefresh(t *testing.T) {
	const version = "2.3.2026061719"
	tgz := tarball(t, version)
	srv := registry(t, version, tgz, sri(tgz))
	out := filepath.Join(t.TempDir(), "datacenter.txt")
	res, err := Refresh(context.Background(), Options{Out: out, Registry: srv.URL})
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	wantDate := time.Date(2026, 6, 17, 19, 0, 0, 0, time.UTC)
	if res.Version != version || !res.DataDate.Equal(wantDate) {
		t.Fatalf("result %+v, want version %s and data date %v", res, version, wantDate)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var nets []string
	for _, line := range strings.Split(string(b), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			nets = append(nets, line)
		}
	}
	// Amazon's two /24s merged, Hetzner's ten addresses as CIDRs, Amazon's
	// IPv6; Cloudflare and Google (AS15169) left out.
	want := []string{"3.0.0.0/23", "5.9.0.0/29", "5.9.0.8/31", "2600:1f00::/24"}
	if strings.Join(nets, " ") != strings.Join(want, " ") || res.Networks != len(want) {
		t.Fatalf("networks %v (%d), want %v", nets, res.Networks, want)
	}
	if !strings.Contains(string(b), "# data-date: 2026-06-17T19:00:00Z") || !strings.Contains(string(b), "CC BY 4.0") {
		t.Fatalf("header lacks the data date or the attribution:\n%s", b)
	}

	// The agent loads it and shows the date.
	f, err := botfilter.Open(botfilter.Config{Datacenter: botfilter.Datacenter{Files: []string{out}}})
	if err != nil {
		t.Fatalf("Open with the refreshed list: %v", err)
	}
	if got := f.Check(chromeUA, "3.0.1.7"); got != botfilter.ReasonDatacenter {
		t.Fatalf("Amazon address: %q", got)
	}
	if got := f.Check(chromeUA, "1.0.0.1"); got != "" {
		t.Fatalf("Cloudflare address: %q", got)
	}
	if s := f.Stats(); !s.DatacenterDate.Equal(wantDate) {
		t.Fatalf("datacenter date %v, want %v", s.DatacenterDate, wantDate)
	}

	// Chosen ASNs, and offline from a tarball.
	tgzPath := filepath.Join(t.TempDir(), "asn.tgz")
	os.WriteFile(tgzPath, tgz, 0o644)
	res, err = Refresh(context.Background(), Options{Out: out, From: tgzPath, ASNs: []uint32{15169}})
	if err != nil || res.Networks != 1 || res.Version != version {
		t.Fatalf("offline refresh: %+v, %v", res, err)
	}
}

// TestRefreshKeepsTheOldListOnError: a tarball that does not match its
// integrity, or a registry error, leaves the previous list in place.
func TestRefreshKeepsTheOldListOnError(t *testing.T) {
	const version = "2.3.2026061719"
	tgz := tarball(t, version)
	out := filepath.Join(t.TempDir(), "datacenter.txt")
	os.WriteFile(out, []byte("# old\n192.0.2.0/24\n"), 0o644)
	for name, srv := range map[string]*httptest.Server{
		"tampered tarball": registry(t, version, tgz, sri([]byte("something else"))),
		"no such version":  registry(t, "9.9.9", tgz, sri(tgz)),
	} {
		opts := Options{Out: out, Registry: srv.URL}
		if name == "no such version" {
			opts.Version = version
		}
		if _, err := Refresh(context.Background(), opts); err == nil {
			t.Errorf("%s: no error", name)
		}
		if b, _ := os.ReadFile(out); string(b) != "# old\n192.0.2.0/24\n" {
			t.Fatalf("%s: list replaced with %q", name, b)
		}
	}
	if matches, _ := filepath.Glob(out + ".tmp*"); len(matches) != 0 {
		t.Fatalf("temporary files left: %v", matches)
	}
}

func TestParseASNs(t *testing.T) {
	got, err := ParseASNs("16509, AS14618,as396982")
	if err != nil || len(got) != 3 || got[1] != 14618 {
		t.Fatalf("ParseASNs = %v, %v", got, err)
	}
	if _, err := ParseASNs("16509,amazon"); err == nil {
		t.Fatal("no error for a name")
	}
}

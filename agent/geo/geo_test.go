package geo

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// country is a GeoIP2-style country record; extra fields make the decoder
// skip something, as it does on real databases.
func country(iso string) mmdbtype.Map {
	return mmdbtype.Map{
		"geoname_id": mmdbtype.Uint32(len(iso) * 1000),
		"iso_code":   mmdbtype.String(iso),
		"names":      mmdbtype.Map{"en": mmdbtype.String("Country " + iso), "de": mmdbtype.String("Land " + iso)},
	}
}

// located is the record of a network with a country and a registered
// country, as in GeoLite2-Country.
func located(iso, registered string) mmdbtype.Map {
	return mmdbtype.Map{
		"continent":          mmdbtype.Map{"code": mmdbtype.String("EU")},
		"country":            country(iso),
		"registered_country": country(registered),
	}
}

// writeDB writes a database of the given networks and returns its path.
func writeDB(t testing.TB, opts mmdbwriter.Options, nets map[string]mmdbtype.DataType) string {
	t.Helper()
	tree, err := mmdbwriter.New(opts)
	if err != nil {
		t.Fatalf("mmdbwriter.New: %v", err)
	}
	for cidr, rec := range nets {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatalf("parse %s: %v", cidr, err)
		}
		if err := tree.Insert(n, rec); err != nil {
			t.Fatalf("insert %s: %v", cidr, err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		t.Fatalf("write database: %v", err)
	}
	path := filepath.Join(t.TempDir(), "test.mmdb")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testNetworks cover wide networks, /24s split between countries, IPv6
// networks on both sides of the /48 and /64 cache boundaries, a record
// with only a registered country, and a private range that the database
// knows but Country must not look up.
func testNetworks() map[string]mmdbtype.DataType {
	return map[string]mmdbtype.DataType{
		"1.0.0.0/16":      located("AU", "AU"),
		"2.125.160.0/19":  located("GB", "GB"),
		"81.2.69.0/24":    located("gb", "GB"), // lower case in the data
		"89.160.20.0/28":  located("SE", "SE"),
		"89.160.20.16/28": located("NO", "SE"), // same /24, another country
		"89.160.20.128/32": mmdbtype.Map{
			"country": country("DK"),
		},
		"175.16.199.0/24": mmdbtype.Map{"registered_country": country("CN")}, // no location
		"67.43.156.0/24":  located("ZZ", "BT"),                               // vendor's "unknown": falls back
		"216.160.83.0/24": mmdbtype.Map{"continent": mmdbtype.Map{"code": mmdbtype.String("NA")}},
		"10.0.0.0/8":      located("US", "US"), // private: never answered

		"2001:218::/32":        located("JP", "JP"),
		"2a02:cf40::/29":       located("NO", "NO"),
		"2c0f:f000:1::/56":     located("ZA", "ZA"), // splits 2c0f:f000:1::/48
		"2c0f:f000:2::1/128":   located("KE", "KE"), // longer than /64: never cached
		"2c0f:f000:2::100/120": located("TZ", "TZ"),
	}
}

func openTest(t testing.TB, cached bool) *DB {
	t.Helper()
	path := writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-Country", IncludeReservedNetworks: true}, testNetworks())
	d, err := open(path, cached)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

var countryCases = []struct{ ip, want string }{
	{"1.0.0.1", "AU"},
	{"1.0.255.254", "AU"},
	{"2.125.160.216", "GB"},
	{"81.2.69.160", "GB"},
	{"89.160.20.1", "SE"},
	{"89.160.20.15", "SE"},
	{"89.160.20.16", "NO"},
	{"89.160.20.31", "NO"},
	{"89.160.20.128", "DK"},
	{"89.160.20.200", ""},  // unknown part of a split /24
	{"175.16.199.1", "CN"}, // registered_country only
	{"67.43.156.1", "BT"},  // "ZZ" falls back to the registered country
	{"216.160.83.56", ""},  // a record without any country
	{"8.8.8.8", ""},        // not in the database
	{"1.1.1.1", ""},

	// IPv4-mapped IPv6 is IPv4.
	{"::ffff:81.2.69.160", "GB"},
	{"::ffff:1.0.0.1", "AU"},
	{"::ffff:10.1.2.3", ""},

	{"2001:218::1", "JP"},
	{"2001:218:ffff:ffff::1", "JP"},
	{"2001:0218:0000::0001", "JP"},
	{"2a02:cf40::dead:beef", "NO"},
	{"2c0f:f000:1::1", "ZA"},
	{"2c0f:f000:1:ff::1", "ZA"},
	{"2c0f:f000:1:100::1", ""}, // same /48, outside the /56
	{"2c0f:f000:2::1", "KE"},
	{"2c0f:f000:2::2", ""},
	{"2c0f:f000:2::1ff", "TZ"},
	{"2c0f:f000:3::1", ""},

	// Private, loopback, link-local, multicast and unspecified.
	{"10.1.2.3", ""}, // in the database as US
	{"172.16.0.1", ""},
	{"192.168.1.1", ""},
	{"127.0.0.1", ""},
	{"169.254.1.1", ""},
	{"224.0.0.1", ""},
	{"0.0.0.0", ""},
	{"255.255.255.255", ""},
	{"::1", ""},
	{"::", ""},
	{"fe80::1", ""},
	{"fe80::1%eth0", ""},
	{"fc00::1", ""},
	{"fd12:3456::1", ""},
	{"ff02::1", ""},

	// Not addresses.
	{"", ""},
	{"garbage", ""},
	{"1.2.3", ""},
	{"1.2.3.4.5", ""},
	{"300.1.1.1", ""},
	{"81.2.69.160:443", ""},
	{"[2001:218::1]", ""},
	{" 81.2.69.160", ""},
	{"81.2.69.0/24", ""},
	{"2001:218::1::", ""},
	{"GB", ""},
}

func TestCountry(t *testing.T) {
	for _, cached := range []bool{true, false} {
		d := openTest(t, cached)
		// Twice: the second round answers from the cache.
		for round := range 2 {
			for _, c := range countryCases {
				if got := d.Country(c.ip); got != c.want {
					t.Fatalf("cached=%v round %d: Country(%q) = %q, want %q", cached, round, c.ip, got, c.want)
				}
			}
		}
		if s := d.Stats(); s.Errors != 0 {
			t.Fatalf("cached=%v: %d lookup errors", cached, s.Errors)
		}
	}
}

// TestCacheExact checks the cache against uncached lookups on random
// addresses around the test networks, many more than the cache has slots,
// so that entries are evicted and split /24s and /48s are revisited.
func TestCacheExact(t *testing.T) {
	cached, direct := openTest(t, true), openTest(t, false)
	rng := rand.New(rand.NewPCG(1, 2))
	bases := []netip.Addr{
		netip.MustParseAddr("1.0.0.0"), netip.MustParseAddr("89.160.20.0"),
		netip.MustParseAddr("2c0f:f000:1::"), netip.MustParseAddr("2c0f:f000:2::"),
		netip.MustParseAddr("2001:218::"), netip.MustParseAddr("2.125.160.0"),
	}
	addrs := make([]string, 0, 4096)
	for range 4096 {
		b := bases[rng.IntN(len(bases))].AsSlice()
		// Vary the low bits a little or a lot, so that many addresses
		// share a /24 or /48 and many do not.
		keep := len(b) - 1 - rng.IntN(len(b)/2)
		for i := keep; i < len(b); i++ {
			b[i] = byte(rng.Uint32())
		}
		a, _ := netip.AddrFromSlice(b)
		addrs = append(addrs, a.String())
	}
	for range 3 {
		for _, ip := range addrs {
			if got, want := cached.Country(ip), direct.Country(ip); got != want {
				t.Fatalf("Country(%s) = %q with the cache, %q without", ip, got, want)
			}
		}
	}
	// Now many distinct /24s: far more than the cache holds.
	for i := range 1 << 18 {
		a := netip.AddrFrom4([4]byte{1, 0, byte(i >> 8), byte(i)}) // 1.0/16 then unknown
		if i >= 1<<16 {
			a = netip.AddrFrom4([4]byte{byte(i >> 16), byte(i >> 8), byte(i), 1})
		}
		ip := a.String()
		if got, want := cached.Country(ip), direct.Country(ip); got != want {
			t.Fatalf("Country(%s) = %q with the cache, %q without", ip, got, want)
		}
	}
	for _, c := range countryCases {
		if got := cached.Country(c.ip); got != c.want {
			t.Fatalf("after evictions: Country(%q) = %q, want %q", c.ip, got, c.want)
		}
	}
}

func TestIPv4Database(t *testing.T) {
	path := writeDB(t, mmdbwriter.Options{DatabaseType: "DBIP-Country-Lite", IPVersion: 4, RecordSize: 24},
		map[string]mmdbtype.DataType{"81.2.69.0/24": located("GB", "GB"), "1.0.0.0/16": located("AU", "AU")})
	d, err := Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer d.Close()
	if info := d.Info(); info.IPVersion != 4 || info.Type != "DBIP-Country-Lite" || info.Built.IsZero() {
		t.Fatalf("Info() = %+v", info)
	}
	for ip, want := range map[string]string{"81.2.69.1": "GB", "::ffff:1.0.3.4": "AU", "2001:218::1": "", "8.8.8.8": ""} {
		if got := d.Country(ip); got != want {
			t.Fatalf("Country(%q) = %q, want %q", ip, got, want)
		}
	}
	if s := d.Stats(); s.Errors != 0 {
		t.Fatalf("IPv6 lookups in an IPv4 database counted as errors: %+v", s)
	}
}

func TestCityDatabase(t *testing.T) {
	city := located("DE", "DE")
	city["city"] = mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String("Berlin")}}
	city["location"] = mmdbtype.Map{"latitude": mmdbtype.Float64(52.5), "longitude": mmdbtype.Float64(13.4)}
	city["subdivisions"] = mmdbtype.Slice{mmdbtype.Map{"iso_code": mmdbtype.String("BE")}}
	path := writeDB(t, mmdbwriter.Options{DatabaseType: "GeoIP2-City", RecordSize: 32},
		map[string]mmdbtype.DataType{"5.9.0.0/16": city})
	d, err := Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer d.Close()
	if got := d.Country("5.9.1.2"); got != "DE" {
		t.Fatalf("Country = %q, want DE", got)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-Country"},
		map[string]mmdbtype.DataType{"81.2.69.0/24": located("GB", "GB")}))
	if err != nil {
		t.Fatal(err)
	}
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(good)
	zw.Close()
	// Damage the search tree: every node points past the data section.
	tree := bytes.Clone(good)
	for i := range 64 {
		tree[i] = 0xff
	}

	cases := []struct {
		name    string
		path    string
		is      error
		message string
	}{
		{"missing", filepath.Join(dir, "nope.mmdb"), fs.ErrNotExist, "nope.mmdb"},
		{"directory", dir, nil, "not a regular file"},
		{"empty", file("empty.mmdb", nil), ErrCorrupt, "empty.mmdb"},
		{"text", file("text.mmdb", []byte("<html>403 Forbidden</html>\n")), ErrCorrupt, "not a valid MaxMind DB"},
		{"truncated", file("truncated.mmdb", good[:len(good)/2]), ErrCorrupt, "truncated.mmdb"},
		{"gzip", file("GeoLite2-Country.mmdb.gz", gz.Bytes()), ErrCorrupt, "gzip"},
		{"damaged tree", file("tree.mmdb", tree), ErrCorrupt, "tree.mmdb"},
		{"asn", writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-ASN"}, map[string]mmdbtype.DataType{
			"81.2.69.0/24": mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(20712)}}),
			ErrNotCountry, `"GeoLite2-ASN"`},
		{"country as a string", writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-Country"}, map[string]mmdbtype.DataType{
			"81.2.69.0/24": mmdbtype.Map{"country": mmdbtype.String("GB")}}),
			ErrNotCountry, "no country/iso_code"},
		{"no countries", writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-City"}, map[string]mmdbtype.DataType{
			"81.2.69.0/24": mmdbtype.Map{"city": mmdbtype.Map{"geoname_id": mmdbtype.Uint32(1)}}}),
			ErrNotCountry, "none of its first 1 records"},
		{"not a map", writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-Country"}, map[string]mmdbtype.DataType{
			"81.2.69.0/24": mmdbtype.String("GB")}),
			ErrNotCountry, "no country/iso_code"},
		{"no networks", writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-Country"}, nil),
			ErrNotCountry, "no networks"},
	}
	for _, c := range cases {
		d, err := Open(c.path)
		if err == nil {
			d.Close()
			t.Fatalf("%s: Open succeeded", c.name)
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Fatalf("%s: error %q is not %v", c.name, err, c.is)
		}
		if !strings.Contains(err.Error(), c.message) {
			t.Fatalf("%s: error %q does not mention %q", c.name, err, c.message)
		}
		t.Logf("%s: %v", c.name, err)
	}
}

// TestDamagedRecord damages a record that Open's probe does not read: the
// lookups that reach it return "" and count an error.
func TestDamagedRecord(t *testing.T) {
	nets := map[string]mmdbtype.DataType{"2c0f::/16": located("KE", "KE")}
	for i := range probeRecords + 10 {
		rec := located("AU", "AU")
		rec["n"] = mmdbtype.Uint32(i) // distinct records, stored in address order
		nets[netip.AddrFrom4([4]byte{1, 0, byte(i >> 8), byte(i)}).String()+"/32"] = rec
	}
	path := writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-Country"}, nets)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The last record written, the highest network's, ends where the
	// metadata starts.
	end := bytes.LastIndex(data, []byte(metadataMarker))
	for i := end - 40; i < end; i++ {
		data[i] = 0xff
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer d.Close()
	if got := d.Country("1.0.0.1"); got != "AU" {
		t.Fatalf("Country(1.0.0.1) = %q, want AU", got)
	}
	for range 2 { // errors are not cached
		if got := d.Country("2c0f::1"); got != "" {
			t.Fatalf("Country of a damaged record = %q, want \"\"", got)
		}
	}
	if s := d.Stats(); s.Errors != 2 {
		t.Fatalf("Stats() = %+v, want 2 errors", s)
	}
}

// TestOpenDamagedTree makes the first nodes of the search tree a chain in
// which both branches of every node lead to the next, ending in empty
// records: 2^40 empty networks. Open must give up on them, not walk them.
func TestOpenDamagedTree(t *testing.T) {
	path := writeDB(t, mmdbwriter.Options{DatabaseType: "GeoLite2-Country", RecordSize: 24,
		IncludeReservedNetworks: true}, testNetworks())
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	nodes := r.Metadata.NodeCount
	const depth = 40
	if nodes <= depth {
		t.Fatalf("only %d nodes", nodes)
	}
	for k := range uint(depth + 1) {
		next := k + 1
		if k == depth {
			next = nodes // empty
		}
		n := data[k*6 : k*6+6] // 24-bit records: left, right
		n[0], n[1], n[2] = byte(next>>16), byte(next>>8), byte(next)
		copy(n[3:], n[:3])
	}
	done := make(chan error, 1)
	go func() {
		_, err := load("damaged.mmdb", data, true)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotCountry) || !strings.Contains(err.Error(), "no data in its first") {
			t.Fatalf("load: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("load is still walking the damaged tree after a minute")
	}
}

func TestClose(t *testing.T) {
	d := openTest(t, true)
	if got := d.Country("81.2.69.160"); got != "GB" {
		t.Fatalf("Country = %q, want GB", got)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := d.Country("81.2.69.160"); got != "" {
		t.Fatalf("Country after Close = %q, want \"\"", got)
	}
}

// TestConcurrent runs lookups on several goroutines while the cache fills
// and, at the end, while the database closes; run it with -race.
func TestConcurrent(t *testing.T) {
	d := openTest(t, true)
	errs := make(chan string, 16)
	run := func(closing bool) {
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 2000 {
					c := countryCases[(i+g)%len(countryCases)]
					got := d.Country(c.ip)
					if got != c.want && !(closing && got == "") {
						errs <- c.ip + " gave " + got + ", want " + c.want
						return
					}
				}
			})
		}
		if closing {
			d.Close()
		}
		wg.Wait()
	}
	run(false) // the cache fills from 8 goroutines
	run(true)  // lookups race with Close: the right country or ""
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func TestStatsAndMetrics(t *testing.T) {
	d := openTest(t, true)
	for range 10_000 {
		d.Country("81.2.69.160")
	}
	d.Country("10.0.0.1") // private: not a lookup
	s := d.Stats()
	if s.CacheMisses != 1 || s.CacheHits == 0 || s.Errors != 0 {
		t.Fatalf("Stats() = %+v, want 1 miss, some hits, no errors", s)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(d)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{"tally_agent_geo_lookups_total", "tally_agent_geo_lookup_errors_total",
		"tally_agent_geo_database_build_timestamp_seconds"} {
		if !got[name] {
			t.Fatalf("metric %s missing; have %v", name, got)
		}
	}
}

func TestCountryDoesNotAllocate(t *testing.T) {
	d := openTest(t, true)
	for _, ip := range []string{"81.2.69.160", "89.160.20.17", "2001:218::1", "::ffff:1.0.0.1", "10.0.0.1", "garbage", "-", "fe80::1%eth0"} {
		d.Country(ip)
		if n := testing.AllocsPerRun(100, func() { d.Country(ip) }); n != 0 {
			t.Fatalf("Country(%q) allocates %.1f times", ip, n)
		}
	}
}

func TestCode(t *testing.T) {
	d := &DB{pairs: pairs()}
	for s, want := range map[string]string{"AA": "AA", "gb": "GB", "Zy": "ZY", "ZZ": "", "zz": "", "G": "", "GBR": "",
		"G1": "", "": "", "é": "", "@A": "", "[A": "", "`a": "", "{a": ""} {
		if got := d.name(code(s)); got != want {
			t.Fatalf("name(code(%q)) = %q, want %q", s, got, want)
		}
	}
}

// FuzzCountry checks that any string gives "" or an upper-case code.
func FuzzCountry(f *testing.F) {
	for _, c := range countryCases {
		f.Add(c.ip)
	}
	d := openTest(f, true)
	f.Fuzz(func(t *testing.T, ip string) {
		got := d.Country(ip)
		if got == "" {
			return
		}
		if len(got) != 2 || got[0] < 'A' || got[0] > 'Z' || got[1] < 'A' || got[1] > 'Z' {
			t.Fatalf("Country(%q) = %q", ip, got)
		}
	})
}

// FuzzLoad feeds damaged databases to Open's checks and, when they pass,
// to lookups: neither may panic.
//
//	go test -run '^$' -fuzz FuzzLoad -fuzztime 60s ./agent/geo/
func FuzzLoad(f *testing.F) {
	for _, opts := range []mmdbwriter.Options{
		{DatabaseType: "GeoLite2-Country", RecordSize: 24},
		{DatabaseType: "GeoLite2-Country", RecordSize: 28, IPVersion: 4},
		{DatabaseType: "GeoIP2-City", RecordSize: 32},
	} {
		data, err := os.ReadFile(writeDB(f, opts, map[string]mmdbtype.DataType{
			"81.2.69.0/24": located("GB", "GB"), "89.160.20.16/28": located("NO", "SE"),
			"2001:218::/32": located("JP", "JP"), "175.16.199.0/24": mmdbtype.Map{"registered_country": country("CN")},
		}))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := load("fuzz.mmdb", data, true)
		if err != nil {
			return
		}
		for _, ip := range []string{"81.2.69.1", "89.160.20.17", "2001:218::1", "175.16.199.1", "8.8.8.8", "2c0f::1"} {
			if got := d.Country(ip); got != "" && (len(got) != 2 || got[0] < 'A' || got[0] > 'Z') {
				t.Fatalf("Country(%q) = %q", ip, got)
			}
		}
	})
}

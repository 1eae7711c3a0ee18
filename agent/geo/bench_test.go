package geo

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// benchDB writes a database shaped like GeoLite2-Country: 100,000 IPv4
// networks from /12 to /28 and 30,000 IPv6 networks from /24 to /64 over
// 250 countries, and returns its path and addresses inside its networks.
func benchDB(b *testing.B) (path string, v4, v6 []string) {
	b.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	records := make([]mmdbtype.Map, 250)
	for i := range records {
		iso := string([]byte{'A' + byte(i/26), 'A' + byte(i%26)})
		records[i] = located(iso, iso)
	}
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-Country", RecordSize: 24,
		IncludeReservedNetworks: true})
	if err != nil {
		b.Fatal(err)
	}
	insert := func(ip net.IP, bits, total int) {
		n := &net.IPNet{IP: ip.Mask(net.CIDRMask(bits, total)), Mask: net.CIDRMask(bits, total)}
		if err := tree.Insert(n, records[rng.IntN(len(records))]); err != nil {
			b.Fatalf("insert %v: %v", n, err)
		}
	}
	for range 100_000 {
		ip := net.IPv4(byte(1+rng.IntN(222)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())).To4()
		if netip.AddrFrom4([4]byte(ip)).IsPrivate() {
			continue
		}
		insert(ip, 12+rng.IntN(17), 32)
		if len(v4) < 1<<14 {
			v4 = append(v4, ip.String())
		}
	}
	for range 30_000 {
		ip := make(net.IP, 16)
		ip[0], ip[1] = 0x24+byte(rng.IntN(8)), byte(rng.Uint32()) // clear of 2001::/32 and 2002::/16, aliases of IPv4
		for i := 2; i < 8; i++ {
			ip[i] = byte(rng.Uint32())
		}
		insert(ip, 24+rng.IntN(41), 128)
		ip[15] = 1
		if len(v6) < 1<<14 {
			v6 = append(v6, ip.String())
		}
	}
	path = b.TempDir() + "/bench.mmdb"
	w, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tree.WriteTo(w); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return path, v4, v6
}

// BenchmarkCountry measures Country per event:
//
//   - hit: addresses whose network is cached (the steady state of an edge
//     agent, whose visitors come from a working set of networks);
//   - miss: a new /24 every time, more than the cache holds, so every
//     lookup walks the database and stores its answer;
//   - nocache: the same lookups with the cache off;
//   - skip: private addresses and non-addresses, answered before any
//     lookup.
//
// Reproduce with:
//
//	go test -run '^$' -bench BenchmarkCountry -benchmem ./agent/geo/
func BenchmarkCountry(b *testing.B) {
	path, v4, v6 := benchDB(b)
	cached, err := open(path, true)
	if err != nil {
		b.Fatal(err)
	}
	direct, err := open(path, false)
	if err != nil {
		b.Fatal(err)
	}
	// Fresh /24s: 1<<20 of them cycle through a cache of 1<<16 slots.
	fresh := make([]string, 1<<20)
	for i := range fresh {
		fresh[i] = netip.AddrFrom4([4]byte{byte(1 + i>>16%200), byte(i >> 8), byte(i), 9}).String()
	}
	for _, ip := range v4 {
		cached.Country(ip)
	}
	for _, ip := range v6 {
		cached.Country(ip)
	}

	run := func(name string, d *DB, ips []string) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			known := 0
			i := 0
			for b.Loop() {
				if d.Country(ips[i%len(ips)]) != "" {
					known++
				}
				i++
			}
			b.ReportMetric(float64(known)/float64(i), "known/op")
		})
	}
	// parse is the floor: what Country does before it looks anything up.
	parse := func(name string, ips []string) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				a, _ := netip.ParseAddr(ips[i%len(ips)])
				if a.Unmap().IsPrivate() {
					b.Fatal("private")
				}
				i++
			}
		})
	}
	parse("parse/ipv4", v4[:4096])
	parse("parse/ipv6", v6[:4096])
	run("hit/ipv4", cached, v4[:4096])
	run("hit/ipv6", cached, v6[:4096])
	run("miss/ipv4", cached, fresh)
	run("nocache/ipv4", direct, v4)
	run("nocache/ipv6", direct, v6)
	run("skip/private", cached, []string{"10.1.2.3", "192.168.0.1", "fd00::1", "127.0.0.1"})
	run("skip/invalid", cached, []string{"-", "unknown", ""})
	b.Run("hit/ipv4-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(v4))
			for pb.Next() {
				cached.Country(v4[i%4096])
				i++
			}
		})
	})
}

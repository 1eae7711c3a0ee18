package botfilter

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// Figures for the README come from:
//
//	go test -run '^$' -bench . -benchtime 2s ./agent/botfilter/

// benchMix is a realistic working set: mostly browsers, some crawlers,
// drawn from the evaluation set, with client addresses.
func benchMix(b *testing.B, n int) (uas, ips []string) {
	browsers, crawlers := readEval(b, "browsers.txt"), readEval(b, "crawlers.txt")
	r := rand.New(rand.NewPCG(3, 4))
	for i := range n {
		if i%10 == 9 {
			uas = append(uas, crawlers[r.IntN(len(crawlers))].ua)
		} else {
			uas = append(uas, browsers[r.IntN(len(browsers))].ua)
		}
		ips = append(ips, netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}).String())
	}
	return uas, ips
}

// BenchmarkCheck is the hot path as the agent calls it today: Check on a
// warm verdict cache, default configuration.
func BenchmarkCheck(b *testing.B) {
	uas, ips := benchMix(b, 1000)
	f := New(Config{})
	for i := range uas {
		f.Check(uas[i], ips[i])
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			f.Check(uas[i%len(uas)], ips[i%len(ips)])
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(uas))
			for pb.Next() {
				f.Check(uas[i%len(uas)], ips[i%len(ips)])
				i++
			}
		})
	})
}

// BenchmarkCheckAllLayers is CheckEvent with every layer on: lists, 60,000
// datacenter ranges and both rate limits, user agents cached.
func BenchmarkCheckAllLayers(b *testing.B) {
	uas, ips := benchMix(b, 1000)
	v4, v6 := randomNets(50_000, 10_000)
	var cidrs []string
	for _, p := range append(v4, v6...) {
		cidrs = append(cidrs, p.String())
	}
	f := New(Config{
		Allow:       List{UA: []string{"PartnerApp/"}, CIDRs: []string{"198.51.100.0/24"}},
		Deny:        List{UA: []string{"uptime-kuma"}, UARegex: []string{`^InternalProbe/\d`}, CIDRs: []string{"203.0.113.0/24"}},
		Datacenter:  Datacenter{CIDRs: cidrs},
		RateIP:      IPRate{Rate: Rate{Events: 600}},
		RateVisitor: Rate{Events: 120},
	})
	ms := time.Now().UnixMilli()
	for i := range uas {
		f.CheckEvent(uas[i], ips[i], uint64(i), ms)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f.CheckEvent(uas[i%len(uas)], ips[i%len(ips)], uint64(i%5000), ms+int64(i/100))
		i++
	}
}

// BenchmarkCheckMiss is the cost of a user agent the cache has not seen:
// every evaluation user agent once per fresh filter.
func BenchmarkCheckMiss(b *testing.B) {
	var uas []string
	for _, l := range append(readEval(b, "browsers.txt"), readEval(b, "crawlers.txt")...) {
		uas = append(uas, l.ua)
	}
	rand.New(rand.NewPCG(5, 6)).Shuffle(len(uas), func(i, j int) { uas[i], uas[j] = uas[j], uas[i] })
	b.ReportAllocs()
	var f *Filter
	i := 0
	for b.Loop() {
		if i%len(uas) == 0 {
			b.StopTimer()
			f = New(Config{})
			b.StartTimer()
		}
		f.Check(uas[i%len(uas)], "")
		i++
	}
}

// BenchmarkDatacenterLookup is one lookup among 50,000 IPv4 and 10,000
// IPv6 networks, the order of all public cloud ranges together.
func BenchmarkDatacenterLookup(b *testing.B) {
	v4, v6 := randomNets(50_000, 10_000)
	s := newRangeSet(append(v4, v6...))
	r := rand.New(rand.NewPCG(7, 8))
	for _, fam := range []struct {
		name string
		nets []netip.Prefix
	}{{"v4", v4}, {"v6", v6}} {
		addrs := make([]netip.Addr, 4096)
		for i := range addrs {
			a := fam.nets[r.IntN(len(fam.nets))].Addr() // half inside a range
			if i%2 == 1 {
				a = randomAddr(r, fam.name == "v6")
			}
			addrs[i] = a
		}
		b.Run(fam.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.contains(addrs[i%len(addrs)])
				i++
			}
			b.ReportMetric(float64(s.size()), "ranges")
		})
	}
}

func randomAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var a [16]byte
		a[0], a[1] = 0x2a, byte(r.Uint32())
		for i := 2; i < 16; i++ {
			a[i] = byte(r.Uint32())
		}
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
}

// randomNets returns networks shaped like cloud lists: IPv4 /16 to /28,
// IPv6 /32 to /64.
func randomNets(n4, n6 int) (v4, v6 []netip.Prefix) {
	r := rand.New(rand.NewPCG(9, 10))
	for range n4 {
		v4 = append(v4, netip.PrefixFrom(randomAddr(r, false), 16+r.IntN(13)).Masked())
	}
	for range n6 {
		v6 = append(v6, netip.PrefixFrom(randomAddr(r, true), 32+r.IntN(33)).Masked())
	}
	return v4, v6
}

// BenchmarkCheckRequest is the HTTP ingest path: CheckRequest with the
// request's client hints (every Chromium beacon over HTTPS carries them),
// behavioural signals off as by default, user agents cached.
func BenchmarkCheckRequest(b *testing.B) {
	uas, ips := benchMix(b, 1000)
	f := New(Config{})
	req := &event.BrowserRequest{Page: true, SecCHUA: `"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"`,
		SecCHUAMobile: "?0", SecCHUAPlatform: `"Windows"`}
	ms := time.Now().UnixMilli()
	for i := range uas {
		f.CheckRequest(uas[i], ips[i], uint64(i), ms, "pageview", req)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f.CheckRequest(uas[i%len(uas)], ips[i%len(ips)], uint64(i%5000), ms, "pageview", req)
		i++
	}
}

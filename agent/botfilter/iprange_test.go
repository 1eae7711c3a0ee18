package botfilter

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func mustNets(t *testing.T, list ...string) []netip.Prefix {
	t.Helper()
	nets, err := parseNets(list)
	if err != nil {
		t.Fatalf("parseNets: %v", err)
	}
	return nets
}

func TestRangeSet(t *testing.T) {
	s := newRangeSet(mustNets(t,
		"10.0.0.0/8", "10.1.0.0/16", // nested
		"192.0.2.0/25", "192.0.2.128/25", // adjacent: merged
		"198.51.100.7",             // single address
		"255.255.255.0/24",         // top of the space
		"2001:db8::/32",            // v6
		"2001:db8:ffff::/48",       // nested v6
		"::ffff:203.0.113.0/120",   // v4-mapped: stored as v4
		"ffff:ffff:ffff:ffff::/64", // top of the v6 space
		"fe80::1/10",               // not masked in the input
	))
	if got := s.size(); got != 8 {
		t.Errorf("size %d, want 8 merged ranges", got)
	}
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"10.0.0.0", true}, {"10.255.255.255", true}, {"11.0.0.0", false}, {"9.255.255.255", false},
		{"192.0.2.0", true}, {"192.0.2.127", true}, {"192.0.2.128", true}, {"192.0.2.255", true}, {"192.0.3.0", false},
		{"198.51.100.7", true}, {"198.51.100.8", false}, {"198.51.100.6", false},
		{"255.255.255.255", true}, {"0.0.0.0", false},
		{"203.0.113.9", true}, {"::ffff:203.0.113.9", true}, {"::ffff:10.0.0.1", true},
		{"2001:db8::1", true}, {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"2001:db9::", false}, {"2001:db7:ffff::", false},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"fe80::abcd", true}, {"::1", false}, {"::", false},
	} {
		if got := s.contains(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("contains(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
	if s.contains(netip.Addr{}) {
		t.Error("the zero Addr is in the set")
	}
	var none *rangeSet
	if none.contains(netip.MustParseAddr("10.0.0.1")) || none.size() != 0 {
		t.Error("a nil set is not empty")
	}
	all := newRangeSet(mustNets(t, "0.0.0.0/0", "::/0"))
	if !all.contains(netip.MustParseAddr("1.2.3.4")) || !all.contains(netip.MustParseAddr("2a00::1")) || all.size() != 2 {
		t.Error("/0 networks do not hold everything")
	}
}

// TestRangeSetRandom compares lookups with a linear scan of the networks
// over random networks and addresses, biased to hit edges.
func TestRangeSetRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randAddr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			b[0], b[1], b[2] = 0x20, 0x01, byte(r.IntN(4)) // keep them close together
			for i := 3; i < 16; i++ {
				b[i] = byte(r.Uint32())
			}
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.Uint32()), byte(r.Uint32())})
	}
	for round := range 20 {
		var nets []netip.Prefix
		for range 200 {
			v6 := r.IntN(2) == 0
			bits := 8 + r.IntN(25)
			if v6 {
				bits = 16 + r.IntN(113)
			}
			nets = append(nets, netip.PrefixFrom(randAddr(v6), bits).Masked())
		}
		s := newRangeSet(nets)
		for range 2000 {
			a := randAddr(r.IntN(2) == 0)
			if r.IntN(3) == 0 { // an edge of some network, or next to it
				p := nets[r.IntN(len(nets))]
				a = p.Addr()
				if r.IntN(2) == 0 {
					a = a.Prev()
				}
			}
			want := false
			for _, p := range nets {
				if p.Contains(a) {
					want = true
					break
				}
			}
			if got := s.contains(a); got != want {
				t.Fatalf("round %d: contains(%s) = %v, linear scan says %v", round, a, got, want)
			}
		}
	}
}

func TestReadNetFile(t *testing.T) {
	path := writeFile(t, "ok.txt", "# header\n\n  10.0.0.0/8  \n2001:db8::/32 # trailing comment\n192.0.2.1\n")
	nets, date, err := readNetFile(path)
	if err != nil || len(nets) != 3 || !date.IsZero() {
		t.Fatalf("readNetFile = %v, %v, %v; want 3 networks and no date", nets, date, err)
	}
	_, date, err = readNetFile(writeFile(t, "dated.txt", "# data-date: 2026-06-17T19:00:00Z\n10.0.0.0/8\n"))
	if want := time.Date(2026, 6, 17, 19, 0, 0, 0, time.UTC); err != nil || !date.Equal(want) {
		t.Fatalf("dated list: date %v, %v; want %v", date, err, want)
	}
	for _, tc := range []struct{ content, want string }{
		{"10.0.0.0/8\n10.0.0.0/8 aws\n", "bad.txt:2: \"10.0.0.0/8 aws\": want one network per line"},
		{"10.0.0.0/8,10.1.0.0/16\n", "bad.txt:1:"},
		{"\n\nexample.com\n", "bad.txt:3: \"example.com\" is neither a CIDR network nor an IP address"},
		{"fe80::1%eth0\n", "an address with a zone is not a network"},
		{"# data-date: last week\n", "bad.txt:1: data-date \"last week\""},
	} {
		_, _, err := readNetFile(writeFile(t, "bad.txt", tc.content))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.content, err, tc.want)
		}
	}
}

package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer answers A queries for one name with several addresses over
// UDP on loopback, like a headless service's DNS name; other names get
// NXDOMAIN, AAAA gets no answer. It counts the queries for the name.
func dnsServer(t *testing.T, name string, addrs []net.IP) (*net.Resolver, func() int) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	queries := make(chan struct{}, 1000)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.EnableCompression()
			known := strings.EqualFold(q.Name.String(), name)
			if !known {
				b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RCode: dnsmessage.RCodeNameError})
			}
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			if known && q.Type == dnsmessage.TypeA {
				queries <- struct{}{}
				for _, a := range addrs {
					var v4 [4]byte
					copy(v4[:], a.To4())
					_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: v4})
				}
			}
			if msg, err := b.Finish(); err == nil {
				_, _ = pc.WriteTo(msg, from)
			}
		}
	}()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	return r, func() int { return len(queries) }
}

// TestJoinByDNSName: three nodes on three loopback addresses and one
// port, each given only a DNS name that resolves to all three, find each
// other.
func TestJoinByDNSName(t *testing.T) {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)}
	port := freePort(t)
	for _, ip := range ips[1:] {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), fmt.Sprint(port)))
		if err != nil {
			t.Skipf("loopback address %s is not usable here: %v", ip, err)
		}
		pc.Close()
	}
	resolver, lookups := dnsServer(t, "gossip.tally.test.", ips)
	seeds := []string{fmt.Sprintf("gossip.tally.test:%d", port)}
	var cs []*Cluster
	for i, ip := range ips {
		addr := net.JoinHostPort(ip.String(), fmt.Sprint(port))
		c, err := Start(Config{Name: fmt.Sprintf("agg-%d", i+1), Bind: addr, Seeds: seeds, Resolver: resolver,
			Profile: "local", ProbeInterval: 200 * time.Millisecond, JoinRetry: 200 * time.Millisecond},
			Meta{QUIC: addr, HTTP: addr}, slog.New(slog.DiscardHandler), func([]byte) {})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	all := []string{"agg-1", "agg-2", "agg-3"}
	for _, c := range cs {
		waitFor(t, c.Name()+" to see three members", 10*time.Second, func() bool { return slices.Equal(memberNames(c), all) })
	}
	if lookups() == 0 {
		t.Fatal("the nodes joined without asking the DNS server: the test proves nothing")
	}
	// A name the server does not know joins nothing, and says so only in
	// the log: the node runs alone.
	c, err := Start(Config{Name: "lonely", Bind: fmt.Sprintf("127.0.0.1:%d", freePort(t)), Seeds: []string{fmt.Sprintf("nowhere.tally.test:%d", port)},
		Resolver: resolver, Profile: "local", JoinRetry: 200 * time.Millisecond}, Meta{}, slog.New(slog.DiscardHandler), func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(500 * time.Millisecond)
	if got := memberNames(c); !slices.Equal(got, []string{"lonely"}) {
		t.Fatalf("a node with an unresolvable seed sees %v", got)
	}
}

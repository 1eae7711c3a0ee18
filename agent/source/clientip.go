package source

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// DefaultProxyHeader carries the client address chain behind a proxy.
const DefaultProxyHeader = "X-Forwarded-For"

// Proxies says whose proxy header is believed.
type Proxies struct {
	// Trusted are the peers whose Header is believed for the client IP
	// and whose events' own ip and ua fields are believed. Empty: the TCP
	// peer is always the client.
	Trusted []netip.Prefix
	// Header names the header carrying the client IP chain.
	// Default DefaultProxyHeader.
	Header string
}

// PeerTrusted reports whether the TCP peer of r is a trusted proxy.
func (p *Proxies) PeerTrusted(r *http.Request) bool {
	if len(p.Trusted) == 0 {
		return false
	}
	a, err := netip.ParseAddr(peerHost(r))
	return err == nil && p.contains(a)
}

func (p *Proxies) contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, t := range p.Trusted {
		if t.Contains(a) {
			return true
		}
	}
	return false
}

func peerHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ClientIP returns the client address of r: the TCP peer, or, when the
// peer is a trusted proxy, the right-most address of the proxy header
// that is not itself trusted. Every HTTP source of the agent uses it, so
// they hash visitors alike.
func (p *Proxies) ClientIP(r *http.Request) string {
	host := peerHost(r)
	if len(p.Trusted) == 0 {
		return host
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !p.contains(peer) {
		return host
	}
	header := p.Header
	if header == "" {
		header = DefaultProxyHeader
	}
	hops := strings.Split(strings.Join(r.Header.Values(header), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		if !p.contains(a) {
			return a.String()
		}
		host = a.String()
	}
	return host
}

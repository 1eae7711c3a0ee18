package e2e

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// udpProxy relays UDP from clients to loopback upstreams, one listening
// port per upstream, and can cut every path at once: a partition the test
// controls where it cannot make network namespaces (agentNetns), and the
// relay from a test namespace to the loopback aggregators where it can.
type udpProxy struct {
	cut   atomic.Bool
	addrs []string

	mu    sync.Mutex
	conns []*net.UDPConn
	wg    sync.WaitGroup
}

// listen opens each listening socket (on loopback, or inside a test
// namespace); the sockets towards the upstreams are this process's own.
func newUDPProxy(t *testing.T, listen func() (*net.UDPConn, error), upstreams []string) *udpProxy {
	t.Helper()
	p := &udpProxy{}
	for _, up := range upstreams {
		upAddr, err := net.ResolveUDPAddr("udp", up)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := listen()
		if err != nil {
			t.Fatal(err)
		}
		p.track(ln)
		p.addrs = append(p.addrs, ln.LocalAddr().String())
		p.wg.Go(func() { p.serve(ln, upAddr) })
	}
	t.Cleanup(p.close)
	return p
}

func (p *udpProxy) track(c *net.UDPConn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

// serve relays datagrams from clients of ln to up, with one upstream
// socket per client so answers find their way back.
func (p *udpProxy) serve(ln *net.UDPConn, up *net.UDPAddr) {
	sessions := map[string]*net.UDPConn{}
	buf := make([]byte, 64<<10)
	for {
		n, client, err := ln.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if p.cut.Load() {
			continue
		}
		s := sessions[client.String()]
		if s == nil {
			if s, err = net.DialUDP("udp", nil, up); err != nil {
				continue
			}
			p.track(s)
			sessions[client.String()] = s
			p.wg.Go(func() { p.back(s, ln, client) })
		}
		_, _ = s.Write(buf[:n])
	}
}

func (p *udpProxy) back(s, ln *net.UDPConn, client *net.UDPAddr) {
	buf := make([]byte, 64<<10)
	for {
		n, err := s.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if p.cut.Load() {
			continue
		}
		_, _ = ln.WriteToUDP(buf[:n], client)
	}
}

func (p *udpProxy) close() {
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

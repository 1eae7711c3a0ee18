package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// Endpoint is one UDP socket and the QUIC transport that runs on it. A
// process should have one: its Server listens on it and its Clients dial
// from it, so an aggregator that serves agents and forwards to its peers
// uses a single port, a single set of socket buffers and a single
// demultiplexer. (quic-go routes packets by connection ID, so any number of
// connections in both directions share the socket.)
//
// A Server or Client given no Endpoint makes and owns its own. An Endpoint
// passed in stays the caller's: close it after the Server and Clients on it.
// At most one Server may use an Endpoint.
//
// quic-go asks the kernel for 7 MiB socket buffers and logs a warning once
// when it cannot get them (net.core.rmem_max, wmem_max); the protocol works
// either way, throughput suffers a little under loss.
type Endpoint struct {
	udp *net.UDPConn
	tr  *quic.Transport

	// serverHook lets the Server on this endpoint see every incoming
	// connection attempt (to count failed handshakes). The transport's
	// ConnContext must be set before first use, so the endpoint installs a
	// trampoline and the server plugs into it.
	serverHook atomic.Pointer[func(context.Context) context.Context]
	hasServer  atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// NewEndpoint opens a UDP socket on addr ("127.0.0.1:0", "[::]:4433", or
// "" for any address and port) and returns it as an Endpoint.
func NewEndpoint(addr string) (*Endpoint, error) {
	var laddr *net.UDPAddr
	if addr != "" {
		var err error
		if laddr, err = net.ResolveUDPAddr("udp", addr); err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", addr, err)
		}
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", addr, err)
	}
	e := &Endpoint{udp: udp}
	e.tr = &quic.Transport{Conn: udp, ConnContext: e.connContext}
	return e, nil
}

func (e *Endpoint) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	if hook := e.serverHook.Load(); hook != nil {
		return (*hook)(ctx), nil
	}
	return ctx, nil
}

func (e *Endpoint) attachServer(hook func(context.Context) context.Context) error {
	if !e.hasServer.CompareAndSwap(false, true) {
		return errors.New("endpoint already has a server")
	}
	e.serverHook.Store(&hook)
	return nil
}

func (e *Endpoint) detachServer() {
	e.serverHook.Store(nil)
	e.hasServer.Store(false)
}

// Addr returns the local address of the socket.
func (e *Endpoint) Addr() net.Addr { return e.udp.LocalAddr() }

// Close closes the transport and the socket. Connections still open on it
// end abruptly, without telling their peers: close Servers and Clients
// first. Close is safe to call more than once.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		err := e.tr.Close()
		if uerr := e.udp.Close(); err == nil && !errors.Is(uerr, net.ErrClosed) {
			err = uerr
		}
		if err != nil {
			e.closeErr = fmt.Errorf("close endpoint %s: %w", e.Addr(), err)
		}
	})
	return e.closeErr
}

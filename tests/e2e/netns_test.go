package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// agentNetns is a pair of network namespaces of the test's own: the agent
// runs in one ("agent"); the other ("edge") holds the far ends of two
// veth pairs between them:
//
//   - ship carries the agent's QUIC to the cluster; the test brings its
//     edge end down to cut the agent off from every aggregator, and up to
//     heal;
//   - ingest carries the test's HTTP to the agent, and stays up, so events
//     keep arriving (and spooling) during the cut.
//
// Nothing is added to the machine's own namespace: no interface appears
// or changes there, so other programs (a browser test running alongside
// sees address changes as "network changed") notice nothing. The test
// process reaches into the edge namespace with sockets it opens there
// (inNetns): the relay that forwards the agent's datagrams to the
// loopback aggregators listens there, and the HTTP client that talks to
// the agent dials from there. Both namespaces are deleted when the test
// ends.
type agentNetns struct {
	agent, edge string // namespace names
	relayIP     net.IP // the edge end of ship
	agentHTTP   string // the agent's HTTP address, on its end of ingest
	client      *http.Client
}

// newAgentNetns creates the namespaces, or says why the machine does not
// allow it (not root, no iproute2, no CAP_NET_ADMIN), so the caller can
// fall back to a proxy it cuts itself. TALLY_E2E_NETNS=off asks for the
// fallback.
func newAgentNetns(t *testing.T) (*agentNetns, error) {
	t.Helper()
	if os.Getenv("TALLY_E2E_NETNS") == "off" {
		return nil, errors.New("TALLY_E2E_NETNS=off")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, err
	}
	id := os.Getpid()
	n := &agentNetns{agent: fmt.Sprintf("tally-e2e-%d-agent", id), edge: fmt.Sprintf("tally-e2e-%d-edge", id),
		relayIP: net.IPv4(10, 77, 0, 1), agentHTTP: "10.77.0.6:8081"}
	for _, ns := range []string{n.agent, n.edge} {
		if err := ip("netns", "add", ns); err != nil {
			return nil, err
		}
		t.Cleanup(func() { _ = ip("netns", "del", ns) }) // its veth ends, and so the pairs, go with it
	}
	edge := func(args ...string) []string { return append([]string{"-n", n.edge}, args...) }
	agent := func(args ...string) []string { return append([]string{"-n", n.agent}, args...) }
	for _, step := range [][]string{
		// Each pair is created in the edge namespace with its peer
		// straight in the agent's: never in the machine's own.
		edge("link", "add", "ship", "type", "veth", "peer", "name", "ship", "netns", n.agent),
		edge("link", "add", "ingest", "type", "veth", "peer", "name", "ingest", "netns", n.agent),
		edge("addr", "add", "10.77.0.1/30", "dev", "ship"),
		edge("addr", "add", "10.77.0.5/30", "dev", "ingest"),
		agent("addr", "add", "10.77.0.2/30", "dev", "ship"),
		agent("addr", "add", "10.77.0.6/30", "dev", "ingest"),
		edge("link", "set", "lo", "up"), edge("link", "set", "ship", "up"), edge("link", "set", "ingest", "up"),
		agent("link", "set", "lo", "up"), agent("link", "set", "ship", "up"), agent("link", "set", "ingest", "up"),
	} {
		if err := ip(step...); err != nil {
			return nil, err
		}
	}
	n.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = inNetns(n.edge, func() error {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
	// The test reaches the agent as it reaches any other process: by its
	// address, through clientFor.
	setClient(n.agentHTTP, n.client)
	t.Cleanup(func() { setClient(n.agentHTTP, nil) })
	return n, nil
}

// inNetns runs fn on a thread locked to it that has entered the named
// namespace; sockets fn opens belong to that namespace for their life.
// The thread goes back to its own namespace before it is unlocked. It
// must not die instead: a process started from it (harness.Proc) is
// killed with the thread that started it (Pdeathsig), and any thread may
// have started one. Only if the way back fails is it left locked, and so
// discarded, rather than run other goroutines in the test namespace.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		target, err := os.Open("/run/netns/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", name, err)
			return
		}
		err = fn()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// listenRelay opens a UDP socket for the relay on the edge end of ship,
// inside the edge namespace.
func (n *agentNetns) listenRelay() (c *net.UDPConn, err error) {
	err = inNetns(n.edge, func() error {
		c, err = net.ListenUDP("udp", &net.UDPAddr{IP: n.relayIP})
		return err
	})
	return c, err
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// command returns the program and arguments that run bin inside the
// agent's namespace (ip netns exec replaces itself with bin: signals
// reach it).
func (n *agentNetns) command(bin string, args ...string) (string, []string) {
	return "ip", append([]string{"netns", "exec", n.agent, bin}, args...)
}

// setShip brings the edge end of ship up or down: down, the agent's end
// loses its carrier and nothing it sends reaches the relay.
func (n *agentNetns) setShip(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ip("-n", n.edge, "link", "set", "ship", state)
}

// agentClient is the client for an agent's HTTP API, with a timeout.
func agentClient(a *agentProc) *http.Client {
	if c := clientFor(a.http); c != http.DefaultClient {
		return c
	}
	return &http.Client{Timeout: 30 * time.Second}
}

var (
	clientsMu sync.Mutex
	clients   = map[string]*http.Client{}
)

// setClient makes clientFor(hostport) return c (nil: the default).
func setClient(hostport string, c *http.Client) {
	clientsMu.Lock()
	defer clientsMu.Unlock()
	if c == nil {
		delete(clients, hostport)
		return
	}
	clients[hostport] = c
}

// clientFor is the HTTP client that reaches hostport: one that dials from
// a test namespace for an agent inside one, else the default client.
func clientFor(hostport string) *http.Client {
	clientsMu.Lock()
	defer clientsMu.Unlock()
	if c := clients[hostport]; c != nil {
		return c
	}
	return http.DefaultClient
}

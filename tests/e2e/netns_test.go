package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// agentNetns is a network namespace of the test's own for one agent, tied
// to the root namespace by two veth pairs:
//
//   - ship carries the agent's QUIC to the cluster; the test brings it
//     down to cut the agent off from every aggregator, and up to heal;
//   - ingest carries the test's HTTP to the agent, and stays up, so
//     events keep arriving (and spooling) during the cut.
//
// The aggregators listen on loopback, which a namespace cannot reach, so
// a relay in the root namespace on the ship pair's host address forwards
// the agent's datagrams to them (udpProxy, never cut in this mode).
//
// The addresses (10.77.N.0/30 and 10.77.N.4/30) exist only on these
// pairs, and everything is deleted when the test ends.
type agentNetns struct {
	name                 string
	shipHost, ingestHost string // veth ends in the root namespace
	shipHostIP, ingestNS net.IP // the relay's address; the agent's HTTP address
}

// newAgentNetns creates the namespace, or says why the machine does not
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
	octet, err := freeOctet()
	if err != nil {
		return nil, err
	}
	id := os.Getpid() % 100000
	n := &agentNetns{
		name:       fmt.Sprintf("tally-e2e-%d", id),
		shipHost:   fmt.Sprintf("tys%d", id),
		ingestHost: fmt.Sprintf("tyi%d", id),
		shipHostIP: net.IPv4(10, 77, octet, 1),
		ingestNS:   net.IPv4(10, 77, octet, 6),
	}
	shipNS, ingestNS := fmt.Sprintf("tns%d", id), fmt.Sprintf("tni%d", id)
	if err := ip("netns", "add", n.name); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		// Deleting the namespace deletes the veth ends in it, and with
		// them their pairs; the explicit deletes are for a half-built setup.
		_ = ip("netns", "del", n.name)
		_ = ip("link", "del", n.shipHost)
		_ = ip("link", "del", n.ingestHost)
	})
	in := func(args ...string) []string { return append([]string{"-n", n.name}, args...) }
	for _, step := range [][]string{
		{"link", "add", n.shipHost, "type", "veth", "peer", "name", shipNS},
		{"link", "add", n.ingestHost, "type", "veth", "peer", "name", ingestNS},
		{"link", "set", shipNS, "netns", n.name},
		{"link", "set", ingestNS, "netns", n.name},
		{"addr", "add", fmt.Sprintf("10.77.%d.1/30", octet), "dev", n.shipHost},
		{"addr", "add", fmt.Sprintf("10.77.%d.5/30", octet), "dev", n.ingestHost},
		{"link", "set", n.shipHost, "up"},
		{"link", "set", n.ingestHost, "up"},
		in("addr", "add", fmt.Sprintf("10.77.%d.2/30", octet), "dev", shipNS),
		in("addr", "add", fmt.Sprintf("10.77.%d.6/30", octet), "dev", ingestNS),
		in("link", "set", "lo", "up"),
		in("link", "set", shipNS, "up"),
		in("link", "set", ingestNS, "up"),
	} {
		if err := ip(step...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// freeOctet picks N for 10.77.N.0/29 that no interface of this machine
// uses yet.
func freeOctet() (byte, error) {
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ip addr show: %v: %s", err, out)
	}
	for i := range 250 {
		octet := byte((os.Getpid()+i)%250 + 1)
		if !strings.Contains(string(out), fmt.Sprintf(" 10.77.%d.", octet)) {
			return octet, nil
		}
	}
	return 0, errors.New("no free 10.77.N.0/29")
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// command returns the program and arguments that run bin inside the
// namespace (ip netns exec replaces itself with bin: signals reach it).
func (n *agentNetns) command(bin string, args ...string) (string, []string) {
	return "ip", append([]string{"netns", "exec", n.name, bin}, args...)
}

// setShip brings the ship pair's host end up or down: down, the agent's
// side loses its carrier and nothing it sends reaches the cluster.
func (n *agentNetns) setShip(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ip("link", "set", n.shipHost, state)
}

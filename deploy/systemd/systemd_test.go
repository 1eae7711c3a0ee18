// Package systemd_test checks the systemd units Tally ships: systemd's own
// verifier accepts them as installed (binaries at /usr/bin), systemd's
// offline security review rates them at 2.0 or lower, they carry the
// hardening the operations guide promises, and the binaries speak the
// notification protocol the units rely on (Type=notify, WatchdogSec=).
package systemd_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/pki"
)

var units = []string{"tally-agent.service", "tally-aggregator.service"}

// MaxExposure is the highest `systemd-analyze security` exposure level we
// accept (0 = fully locked down, 10 = unprotected; systemd calls ≤ 2 "OK").
const MaxExposure = 2.0

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tally-systemd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := harness.Build(dir, nil, harness.AgentPkg, harness.AggregatorPkg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("TALLY_REQUIRE_OPS_TOOLS") != "" {
			t.Fatal("systemd-analyze not found (make test-deps installs Debian's systemd)")
		}
		t.Skip("systemd-analyze not found; make test-deps installs it")
	}
	return p
}

// installRoot lays out a file system root as the packages install Tally
// (binaries in /usr/bin, units in /usr/lib/systemd/system) next to a copy
// of the machine's own units (targets the units refer to), so the verifier
// checks the files exactly as shipped.
func installRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	sysdir := filepath.Join(root, "usr/lib/systemd/system")
	must(t, os.MkdirAll(sysdir, 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755))
	for _, host := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(host); err == nil {
			out, err := exec.Command("cp", "-a", host+"/.", sysdir+"/").CombinedOutput()
			if err != nil {
				t.Fatalf("copy %s: %v\n%s", host, err, out)
			}
			break
		}
	}
	for _, bin := range []string{"tally-agent", "tally-aggregator"} {
		copyFile(t, filepath.Join(binDir, bin), filepath.Join(root, "usr/bin", bin), 0o755)
	}
	for _, u := range units {
		copyFile(t, u, filepath.Join(sysdir, u), 0o644)
	}
	return root
}

func TestUnitsVerify(t *testing.T) {
	sa := systemdAnalyze(t)
	root := installRoot(t)
	for _, u := range units {
		out, err := exec.Command(sa, "verify", "--root="+root, u).CombinedOutput()
		// verify exits 0 on unknown keys and unparsable values, with a
		// warning: any output at all is a failure.
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

func TestUnitsSecurity(t *testing.T) {
	sa := systemdAnalyze(t)
	for _, u := range units {
		out, _ := exec.Command(sa, "security", "--offline=yes", "--no-pager", u).CombinedOutput()
		m := exposureRE.FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s printed no exposure level:\n%s", u, out)
		}
		level, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: exposure %.1f", u, level)
		if level > MaxExposure {
			t.Errorf("%s: exposure %.1f > %.1f:\n%s", u, level, MaxExposure, out)
		}
	}
}

// The settings the operations guide promises, checked by name so a
// failure says which one went missing (the security score alone would
// only move).
func TestUnitsPromises(t *testing.T) {
	want := map[string]string{
		"Type": "notify", "NotifyAccess": "main", "User": "tally", "Group": "tally",
		"ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
		"CapabilityBoundingSet": "", "AmbientCapabilities": "", "Restart": "on-failure",
		"PrivateTmp": "yes", "KillMode": "mixed",
	}
	for _, u := range units {
		kv := readUnit(t, u)
		for k, v := range want {
			got, ok := kv[k]
			if !ok || got[len(got)-1] != v {
				t.Errorf("%s: %s=%q, want %q", u, k, got, v)
			}
		}
		base := strings.TrimSuffix(u, ".service")
		for _, k := range []string{"StateDirectory", "LogsDirectory"} {
			if got := kv[k]; len(got) == 0 || got[0] != base {
				t.Errorf("%s: %s=%q, want %q", u, k, got, base)
			}
		}
		if got := kv["ExecReload"]; len(got) != 2 || !strings.HasPrefix(got[0], "/usr/bin/"+base+" -check-config ") || got[1] != "/bin/kill -HUP $MAINPID" {
			t.Errorf("%s: ExecReload=%q, want a -check-config and then SIGHUP", u, got)
		}
		if w := kv["WatchdogSec"]; len(w) == 0 || w[0] == "" || w[0] == "0" {
			t.Errorf("%s: no watchdog", u)
		}
		for _, k := range []string{"ExecStart", "ExecStartPre"} {
			if got := kv[k]; len(got) != 1 || !strings.HasPrefix(got[0], "/usr/bin/"+base+" ") ||
				!strings.Contains(got[0], "-config /etc/tally/"+base+".yaml") {
				t.Errorf("%s: %s=%q", u, k, got)
			}
		}
	}
}

// readUnit returns every key's values in file order (comments skipped).
func readUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q", path, line)
		}
		kv[k] = append(kv[k], v)
	}
	return kv
}

// TestNotifyProtocol runs both binaries as systemd would for the units
// (NOTIFY_SOCKET and a watchdog timeout in the environment) and checks
// they say READY=1 once serving, feed the watchdog while healthy, and say
// STOPPING=1 on SIGTERM.
func TestNotifyProtocol(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: []string{"agent-1"}, Aggregators: []string{"agg-1"}}); err != nil {
		t.Fatal(err)
	}
	ports, err := harness.FreeTCP(2)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := harness.FreeUDP(1)
	if err != nil {
		t.Fatal(err)
	}
	aggCfg := filepath.Join(dir, "agg.yaml")
	// No InfluxDB: the node serves (and is alive) but is not ready; the
	// watchdog follows liveness, not readiness.
	must(t, harness.WriteAggregatorConfig(aggCfg, harness.AggregatorOptions{Name: "agg-1", DataDir: filepath.Join(dir, "agg"),
		QUICAddr: fmt.Sprintf("127.0.0.1:%d", udp[0]), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]), CertsDir: certs,
		InfluxURL: "http://127.0.0.1:1"}))
	agentCfg := filepath.Join(dir, "agent.yaml")
	must(t, harness.WriteAgentConfig(agentCfg, harness.AgentOptions{Name: "agent-1", Region: "r", StateDir: filepath.Join(dir, "agent"),
		HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]), Aggregators: []string{fmt.Sprintf("127.0.0.1:%d", udp[0])},
		CertsDir: certs, Secret: "0123456789abcdef0123"}))

	for _, c := range []struct{ bin, cfg string }{{"tally-aggregator", aggCfg}, {"tally-agent", agentCfg}} {
		t.Run(c.bin, func(t *testing.T) {
			sock := filepath.Join(dir, c.bin+".notify")
			conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			proc := &harness.Proc{Name: c.bin, Bin: filepath.Join(binDir, c.bin), Args: []string{"-config", c.cfg},
				LogPath: filepath.Join(dir, c.bin+".log"),
				// 600 ms: a ping every 200 ms.
				Env: []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=600000"}}
			must(t, proc.Start())
			defer proc.Kill()
			msgs := readNotifications(conn)
			expect(t, msgs, proc, "READY=1")
			for range 3 {
				expect(t, msgs, proc, "WATCHDOG=1")
			}
			// systemctl reload (ExecReload's SIGHUP): RELOADING=1 with the
			// monotonic time systemd wants, then READY=1 again; the process
			// goes on.
			must(t, syscall.Kill(proc.Pid(), syscall.SIGHUP))
			expectPrefix(t, msgs, proc, "RELOADING=1", "MONOTONIC_USEC=")
			expect(t, msgs, proc, "READY=1")
			expect(t, msgs, proc, "WATCHDOG=1")
			if !proc.Running() {
				t.Fatal("the process exited on SIGHUP")
			}
			go proc.Stop(30 * time.Second)
			expect(t, msgs, proc, "STOPPING=1")
		})
	}
}

func readNotifications(conn *net.UnixConn) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func expect(t *testing.T, msgs <-chan string, proc *harness.Proc, line string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", line)
			}
			for _, l := range strings.Split(m, "\n") {
				if l == line {
					return
				}
			}
		case <-ctx.Done():
			t.Fatalf("no %s from %s:\n%s", line, proc.Name, proc.LogTail(20))
		}
	}
}

// expectPrefix waits for a notification holding line and a line that
// starts with prefix.
func expectPrefix(t *testing.T, msgs <-chan string, proc *harness.Proc, line, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", line)
			}
			lines := strings.Split(m, "\n")
			if slices.Contains(lines, line) && slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) }) {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no %s with %s… from %s:\n%s", line, prefix, proc.Name, proc.LogTail(20))
		}
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(dst, b, mode))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

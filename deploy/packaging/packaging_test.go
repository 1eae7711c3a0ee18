// Package packaging_test builds Tally's .deb and .rpm with nfpm (pinned in
// deploy/tools/go.mod) and, when allowed, installs the .deb on this very
// machine with dpkg, checks what it installed, and purges it again.
//
// Installing is opt-in (TALLY_PACKAGE_INSTALL_TEST=1, set by `make test`),
// needs root and dpkg, and refuses to run when anything it would touch
// exists already: the package, the user or group "tally", /etc/tally,
// /usr/bin/tally-agent or /usr/bin/tally-aggregator. So it never changes
// or deletes something it did not create; the purge at the end (also run
// when the test fails half way) removes the files, the state directories
// and the system user the package created, and the test checks that.
package packaging_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/tally-edge/tally/internal/harness"
)

// version is stamped into the test binaries and the package alike.
const version = "9.8.7"

// workDir holds the binaries, nfpm and the packages, built once for all
// tests of the package.
var (
	workDir string
	buildMu sync.Mutex
	built   = map[string]string{}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tally-packaging-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles both binaries for this machine's architecture with the
// release stamp, and nfpm from deploy/tools (once), and packages them in
// the given format (once per format).
func build(t *testing.T, format string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries and packages")
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p := built[format]; p != "" {
		return p
	}
	bin := filepath.Join(workDir, "bin")
	nfpm := filepath.Join(workDir, "nfpm")
	if len(built) == 0 {
		ldflags := "-X github.com/tally-edge/tally/internal/buildinfo.version=" + version +
			" -X github.com/tally-edge/tally/internal/buildinfo.revision=0123456789abcdef"
		if err := harness.Build(bin, []string{"-trimpath", "-ldflags", ldflags}, harness.AgentPkg, harness.AggregatorPkg); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("go", "-C", "../tools", "build", "-o", nfpm, "github.com/goreleaser/nfpm/v2/cmd/nfpm")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build nfpm: %v\n%s", err, out)
		}
	}
	out := filepath.Join(workDir, "dist-"+format)
	must(t, os.MkdirAll(out, 0o755))
	// As the Makefile does: ${BIN_DIR} replaced in the description.
	desc, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(workDir, "nfpm-"+format+".yaml")
	must(t, os.WriteFile(cfg, []byte(strings.ReplaceAll(string(desc), "${BIN_DIR}", bin)), 0o644))
	cmd := exec.Command(nfpm, "package", "-f", cfg, "-p", format, "-t", out)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "VERSION="+version, "ARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nfpm package -p %s: %v\n%s", format, err, b)
	}
	matches, _ := filepath.Glob(filepath.Join(out, "*."+format))
	if len(matches) != 1 {
		t.Fatalf("%s packages built: %v", format, matches)
	}
	built[format] = matches[0]
	return matches[0]
}

// The contents every package must carry.
var wantFiles = []string{
	"/usr/bin/tally-agent", "/usr/bin/tally-aggregator",
	"/usr/lib/systemd/system/tally-agent.service", "/usr/lib/systemd/system/tally-aggregator.service",
	"/etc/tally/tally-agent.yaml", "/etc/tally/tally-aggregator.yaml",
	"/etc/default/tally-agent", "/etc/default/tally-aggregator",
	"/usr/share/doc/tally/operations.md", "/usr/share/tally/prometheus/tally-rules.yml",
	"/usr/share/tally/grafana/dashboards/tally-campaigns.json",
}

func TestRPMBuilds(t *testing.T) {
	rpm := build(t, "rpm")
	st, err := os.Stat(rpm)
	if err != nil || st.Size() < 1<<20 {
		t.Fatalf("rpm %s: %v (size %d)", rpm, err, st.Size())
	}
	if !strings.Contains(filepath.Base(rpm), version) {
		t.Errorf("rpm name %s lacks the version", rpm)
	}
}

func TestDebContents(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed")
	}
	deb := build(t, "deb")
	out, err := exec.Command("dpkg-deb", "--contents", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, f := range wantFiles {
		if !strings.Contains(string(out), "."+f+"\n") {
			t.Errorf("%s missing from the .deb:\n%s", f, out)
		}
	}
	info, err := exec.Command("dpkg-deb", "--field", deb, "Package", "Version", "Architecture").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, info)
	}
	if !strings.Contains(string(info), "Version: "+version) {
		t.Errorf("control fields:\n%s", info)
	}
}

// TestDebInstallAndPurge installs the .deb on this machine, checks the
// binaries' version and the shipped configurations with the installed
// binaries, the system user, the units with systemd's verifier, then
// purges and checks that nothing is left.
func TestDebInstallAndPurge(t *testing.T) {
	if os.Getenv("TALLY_PACKAGE_INSTALL_TEST") == "" {
		t.Skip("installs a package on this machine: set TALLY_PACKAGE_INSTALL_TEST=1 (make test does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("not a dpkg system")
	}
	for _, check := range [][]string{{"dpkg-query", "-W", "tally"}, {"getent", "passwd", "tally"}, {"getent", "group", "tally"}} {
		if err := exec.Command(check[0], check[1:]...).Run(); err == nil {
			t.Skipf("%v exists already: not touching it", check)
		}
	}
	for _, p := range []string{"/etc/tally", "/usr/bin/tally-agent", "/usr/bin/tally-aggregator", "/var/lib/tally-agent", "/var/lib/tally-aggregator"} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists already: not touching it", p)
		}
	}
	deb := build(t, "deb")

	run(t, "dpkg", "-i", deb)
	purged := false
	purge := func() {
		if !purged {
			purged = true
			run(t, "dpkg", "--purge", "tally")
		}
	}
	t.Cleanup(purge)

	if err := exec.Command("getent", "passwd", "tally").Run(); err != nil {
		t.Errorf("no system user tally after install")
	}
	shell := strings.TrimSpace(run(t, "getent", "passwd", "tally"))
	if !strings.HasSuffix(shell, ":/nonexistent:/usr/sbin/nologin") {
		t.Errorf("user tally: %s", shell)
	}
	for _, p := range []string{"tally-agent", "tally-aggregator"} {
		out := run(t, "/usr/bin/"+p, "-version")
		if !strings.HasPrefix(out, p+" "+version+" (revision 0123456789ab") {
			t.Errorf("%s -version: %q", p, out)
		}
	}
	st, err := os.Stat("/etc/default/tally-aggregator")
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("/etc/default/tally-aggregator: %v %v", err, st)
	}
	// The shipped configurations, checked by the installed binaries as the
	// service user would run them, with the secrets the operator puts into
	// /etc/default.
	env := []string{"TALLY_SALT_SECRET=package-test-salt-0123456789", "TALLY_ADMIN_TOKEN=package-test-admin-token-0123",
		"TALLY_GOSSIP_KEY=MDEyMzQ1Njc4OWFiY2RlZg==", "PATH=/usr/bin:/bin"}
	for _, p := range []string{"tally-agent", "tally-aggregator"} {
		cmd := exec.Command("setpriv", "--reuid=tally", "--regid=tally", "--clear-groups",
			"/usr/bin/"+p, "-check-config", "-config", "/etc/tally/"+p+".yaml")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "configuration is valid") {
			t.Errorf("%s -check-config as user tally: %v\n%s", p, err, out)
		}
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		for _, u := range []string{"tally-agent.service", "tally-aggregator.service"} {
			out, err := exec.Command(sa, "verify", "/usr/lib/systemd/system/"+u).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify installed %s: %v\n%s", u, err, out)
			}
		}
	}

	purge()
	if err := exec.Command("dpkg-query", "-W", "tally").Run(); err == nil {
		if out, _ := exec.Command("dpkg-query", "-W", "-f", "${Status}", "tally").Output(); !strings.Contains(string(out), "not-installed") {
			t.Errorf("package still known after purge: %s", out)
		}
	}
	for _, check := range [][]string{{"getent", "passwd", "tally"}, {"getent", "group", "tally"}} {
		if err := exec.Command(check[0], check[1:]...).Run(); err == nil {
			t.Errorf("%v still exists after purge", check)
		}
	}
	for _, f := range append(wantFiles, "/etc/tally", "/var/lib/tally-agent") {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s still exists after purge", f)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

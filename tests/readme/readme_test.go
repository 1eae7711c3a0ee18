// Package readme runs README.md's own instructions — the shell blocks of
// "Running it yourself" and of its "Your first events" — as they are
// written, in one bash session, against InfluxDB started the way the
// README says (its default configuration, Flux off, no database), and
// checks that the examples count as the README says: the server sender's
// click and conversion as a click and a conversion, the browser's page
// view as a page view, no bots. A README change that breaks the path
// fails here.
//
// The session runs in a network namespace of its own, so the README's
// fixed ports (8080, 8081, 8086, 7400, 7946 ...) never meet another test,
// a demo, or a user's own InfluxDB. Two things are provided rather than
// run: `make` lines are checked with `make -n` in the repository (the
// targets exist and make would run them), and their results — the two
// binaries in bin/ and InfluxDB in .bin/ — are built and linked by the
// test into the session's working directory, where deploy/ is linked too.
package readme

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/influxtest"
)

// step is one command of the README: its text (continuation lines and
// here-documents included) and the README line it starts on.
type step struct {
	line int
	text string
}

func (s step) String() string { return fmt.Sprintf("README.md:%d: %s", s.line, s.text) }

// Sections whose shell blocks are run: the section itself up to its
// first subsection, and the examples subsection.
const (
	sectionRun      = "## Running it yourself"
	sectionExamples = "### Your first events"
)

func TestReadmeRunsAsWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the README's commands: builds the binaries and starts InfluxDB")
	}
	root := moduleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := extractSteps(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"make ", ".bin/influxd run", "bin/tally-aggregator -config", "bin/tally-agent -config",
		"/v1/events", "/api/v1/kpis"} {
		if !containsStep(steps, want) {
			t.Fatalf("the README's path has no command with %q; the test needs the whole path to run it:\n%s", want, listSteps(steps))
		}
	}
	for _, tool := range []string{"bash", "curl", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the README's commands (make test-deps installs it): %v", tool, err)
		}
	}

	work := t.TempDir()
	prepareWorkdir(t, root, work)
	sh := startShell(t, work)

	var post, kpis *step
	var kpisOut string
	posts := 0
	for i := range steps {
		s := &steps[i]
		if strings.HasPrefix(s.text, "make ") {
			checkMake(t, root, *s, steps)
			continue
		}
		out, err := sh.run(s.text, 2*time.Minute)
		if err != nil {
			t.Fatalf("%s\n%v\noutput:\n%s", s, err, out)
		}
		t.Logf("%s\n%s", s, indent(out))
		switch {
		case strings.Contains(s.text, "/v1/events"):
			post = s
			posts++
			// The server sender's two events, then the browser's page view.
			want := `"accepted":2`
			if posts > 1 {
				want = `"accepted":1`
			}
			if !strings.Contains(out, want) || !strings.Contains(out, `"rejected":0`) {
				t.Fatalf("%s\nanswered %q; want %s and no event rejected", s, out, want)
			}
		case strings.Contains(s.text, "/api/v1/kpis"):
			kpis, kpisOut = s, out
		}
	}
	if post == nil || kpis == nil || posts != 2 {
		t.Fatalf("the README posts %d example requests (want the server sender's and the browser's) or reads no KPIs", posts)
	}

	// The click, the conversion and the page view arrive; the README
	// waits a fixed time, a loaded machine may need longer, so its KPI
	// request is asked again (up to a minute) until all three events are
	// counted one way or the other.
	deadline := time.Now().Add(time.Minute)
	var k map[string]float64
	for {
		k = nil
		if err := json.Unmarshal([]byte(kpisOut), &k); err != nil {
			t.Fatalf("%s\nanswered %q, not the KPI object: %v", kpis, kpisOut, err)
		}
		if k["clicks"]+k["conversions"]+k["pageviews"]+k["bots_filtered"] >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
		out, err := sh.run(kpis.text, time.Minute)
		if err != nil {
			t.Fatalf("%s (asked again)\n%v\n%s", kpis, err, out)
		}
		kpisOut = out
	}
	if k["clicks"] != 1 || k["conversions"] != 1 || k["pageviews"] != 1 || math.Abs(k["revenue"]-49.9) > 1e-9 || k["bots_filtered"] != 0 {
		t.Fatalf("%s\nanswered %s\nthe README says one click, one conversion, one page view and 49.90 of revenue, and no bots", kpis, kpisOut)
	}
	t.Logf("the example's click arrived as a click: %s", kpisOut)
}

// extractSteps returns the commands of the ```sh blocks of the run
// section (before its first subsection) and of the examples subsection,
// in README order.
func extractSteps(readme string) ([]step, error) {
	lines := strings.Split(readme, "\n")
	var (
		steps            []step
		inRun, inExample bool
		block            []string
		blockStart       int
		inBlock          bool
		runBlocks, exBlk int
	)
	for i, l := range lines {
		switch {
		case inBlock && strings.HasPrefix(l, "```"):
			inBlock = false
			more, err := splitCommands(block, blockStart)
			if err != nil {
				return nil, err
			}
			steps = append(steps, more...)
		case inBlock:
			block = append(block, l)
		case strings.HasPrefix(l, "```"):
			if (inRun || inExample) && strings.TrimSpace(strings.TrimPrefix(l, "```")) == "sh" {
				inBlock, block, blockStart = true, nil, i+2
				if inRun {
					runBlocks++
				} else {
					exBlk++
				}
			}
		case strings.HasPrefix(l, "#"):
			inRun = strings.TrimSpace(l) == sectionRun
			inExample = strings.TrimSpace(l) == sectionExamples
		}
	}
	if runBlocks == 0 || exBlk == 0 {
		return nil, fmt.Errorf("README.md: want shell blocks under %q (%d found) and %q (%d found)", sectionRun, runBlocks, sectionExamples, exBlk)
	}
	return steps, nil
}

// heredoc matches the start of a here-document and captures its delimiter.
var heredoc = regexp.MustCompile(`<<-?\s*(['"]?)([A-Za-z_][A-Za-z0-9_]*)['"]?`)

// splitCommands splits a shell block into commands: a command continues
// over lines ending in a backslash and over the body of a here-document;
// blank lines and comment lines are skipped. first is the README line of
// the block's first line.
func splitCommands(block []string, first int) ([]step, error) {
	var steps []step
	for i := 0; i < len(block); i++ {
		l := block[i]
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		start := i
		cmd := []string{l}
		for strings.HasSuffix(strings.TrimRight(block[i], " "), `\`) && i+1 < len(block) {
			i++
			cmd = append(cmd, block[i])
		}
		if m := heredoc.FindStringSubmatch(strings.Join(cmd, "\n")); m != nil {
			closed := false
			for i+1 < len(block) {
				i++
				cmd = append(cmd, block[i])
				if strings.TrimSpace(block[i]) == m[2] {
					closed = true
					break
				}
			}
			if !closed {
				return nil, fmt.Errorf("README.md:%d: here-document %s is not closed in its block", first+start, m[2])
			}
		}
		steps = append(steps, step{line: first + start, text: strings.Join(cmd, "\n")})
	}
	return steps, nil
}

// checkMake checks a `make` line with a dry run in the repository (its
// targets exist and make would build them); the test provides what it
// builds. The influxdb target must also print the README's command that
// starts InfluxDB (issue 17: make influxdb says how to start it).
func checkMake(t *testing.T, root string, s step, steps []step) {
	t.Helper()
	args := strings.Fields(strings.SplitN(s.text, "#", 2)[0])[1:]
	out, err := exec.Command("make", append([]string{"-n", "-C", root}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s\n`make -n` fails in the repository: %v\n%s", s, err, out)
	}
	for _, a := range args {
		if a != "influxdb" {
			continue
		}
		printed := false
		for _, o := range steps {
			if strings.Contains(o.text, ".bin/influxd run") {
				cmd := strings.TrimSpace(strings.SplitN(o.text, ">", 2)[0])
				printed = printed || bytes.Contains(out, []byte(cmd))
			}
		}
		if !printed {
			t.Fatalf("%s\n`make influxdb` does not print the README's command that starts InfluxDB:\n%s", s, out)
		}
	}
}

// prepareWorkdir lays out the session's working directory like a checkout
// after `make build influxdb`: bin/ with the two binaries built from this
// tree, .bin/influxd, and deploy/ (the example configurations).
func prepareWorkdir(t *testing.T, root, work string) {
	t.Helper()
	build := exec.Command("go", "build", "-o", filepath.Join(work, "bin")+"/",
		"./agent/cmd/tally-agent", "./aggregator/cmd/tally-aggregator")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the binaries: %v\n%s", err, out)
	}
	influxd, err := influxtest.FindBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(work, ".bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		filepath.Join(work, ".bin", "influxd"): influxd,
		filepath.Join(work, "deploy"):          filepath.Join(root, "deploy"),
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(work, "home"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// shell is one bash session in a network namespace of its own, fed one
// command at a time on its standard input.
type shell struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	outDir string
	n      int
}

// startShell starts bash in a new network namespace (CLONE_NEWNET: root
// only) with a clean environment, and brings its loopback up. Without
// namespaces it skips, or fails when TALLY_REQUIRE_README is set (make
// test sets it).
func startShell(t *testing.T, work string) *shell {
	t.Helper()
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir = work
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Join(work, "home"), "LANG=C.UTF-8", "TERM=dumb",
		"TMPDIR=" + os.TempDir()}
	// Its own process group, so every daemon it starts can be stopped
	// by the group's id; killed if the test dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Cloneflags: syscall.CLONE_NEWNET}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		msg := fmt.Sprintf("cannot start a shell in a network namespace of its own (needs root): %v", err)
		if os.Getenv("TALLY_REQUIRE_README") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := &shell{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 16), outDir: filepath.Join(work, ".readme-out")}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() { s.stop(work, &stderr) })
	if err := os.MkdirAll(s.outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := s.run("ip link set lo up", 10*time.Second); err != nil {
		t.Fatalf("bring up the namespace's loopback: %v\n%s", err, out)
	}
	return s
}

// run runs one command in the session and returns its output (stdout and
// stderr); a non-zero exit status is an error. Its standard input is
// /dev/null (here-documents bring their own), so no command can read the
// commands that follow it.
func (s *shell) run(text string, timeout time.Duration) (string, error) {
	s.n++
	out := filepath.Join(s.outDir, fmt.Sprintf("%03d", s.n))
	marker := fmt.Sprintf("__tally_readme_step_%d__", s.n)
	if _, err := fmt.Fprintf(s.stdin, "{\n%s\n} >%s 2>&1 </dev/null; echo \"%s $?\"\n", text, shellQuote(out), marker); err != nil {
		return "", fmt.Errorf("the shell is gone: %w", err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				b, _ := os.ReadFile(out)
				return string(b), errors.New("the shell exited")
			}
			rest, found := strings.CutPrefix(l, marker+" ")
			if !found {
				continue
			}
			b, _ := os.ReadFile(out)
			if rest != "0" {
				return string(b), fmt.Errorf("exit status %s", rest)
			}
			return string(b), nil
		case <-timer.C:
			b, _ := os.ReadFile(out)
			return string(b), fmt.Errorf("still running after %s", timeout)
		}
	}
}

// stop ends the session and everything it started: the shell sends
// SIGTERM to its background jobs (the README's daemons), waits for them
// and exits; after 30 s whatever is left of the process group is killed.
// On failure it shows the logs the README's commands wrote under state/.
func (s *shell) stop(work string, stderr *bytes.Buffer) {
	_, _ = io.WriteString(s.stdin, "kill $(jobs -p) 2>/dev/null; wait; exit 0\n")
	s.stdin.Close()
	pgid := s.cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		s.t.Errorf("the README's processes did not stop within 30 s of SIGTERM; killing them")
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	if left := groupMembers(pgid); len(left) > 0 {
		s.t.Errorf("processes %v of the README's session outlived it; killing them", left)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if !s.t.Failed() {
		return
	}
	if stderr.Len() > 0 {
		s.t.Logf("---- bash stderr ----\n%s", stderr.String())
	}
	logs, _ := filepath.Glob(filepath.Join(work, "state", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		s.t.Logf("---- %s (tail) ----\n%s", filepath.Base(l), tail(string(b), 30))
	}
}

// groupMembers lists the live (not zombie) processes of process group
// pgid, from /proc.
func groupMembers(pgid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[2] != strconv.Itoa(pgid) {
			continue
		}
		var pid int
		fmt.Sscanf(string(b), "%d", &pid)
		pids = append(pids, pid)
	}
	return pids
}

// moduleRoot walks up from the working directory to go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func containsStep(steps []step, s string) bool {
	for _, st := range steps {
		if strings.Contains(st.text, s) {
			return true
		}
	}
	return false
}

func listSteps(steps []step) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintln(&b, s)
	}
	return b.String()
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (no output)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// shellQuote quotes a path for bash.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

package bench

// How many events tally-agent takes per second of its own CPU over real
// HTTP connections, NDJSON bodies of 500 events from a backend (a server
// sender), shipping over QUIC with mutual TLS to an in-process server that
// acknowledges every batch. Reproduce with
//
//	go test -run='^$' -bench=BenchmarkHTTPIngest -benchtime=3x ./tests/bench/
//
// and against the agent of another revision, run alternately with this
// tree's (each pair of runs shares the machine's load), with
//
//	TALLY_BENCH_BASELINE=388fe42 go test -run='^$' -bench=BenchmarkHTTPIngest -benchtime=3x ./tests/bench/
//
// TALLY_BENCH_CPUPROFILE=FILE writes a CPU profile of this tree's agent
// process (go tool pprof FILE).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/loadgen"
)

// ingestRequests is the number of bodies of 500 events one measured run
// sends; ingestClients send them at once.
const (
	ingestRequests = 2000
	ingestClients  = 4
)

// agentBinary builds tally-agent from this tree (rev "") or from a git
// revision of this repository, into dir.
func agentBinary(b *testing.B, dir, rev string) string {
	b.Helper()
	out := filepath.Join(dir, "tally-agent")
	src := ""
	if rev != "" {
		src = filepath.Join(dir, "src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			b.Fatal(err)
		}
		// From the repository's top: git archive in a subdirectory
		// archives only that subtree.
		archive := exec.Command("sh", "-c", `git -C "$(git rev-parse --show-toplevel)" archive `+rev+" | tar -x -C "+src)
		if msg, err := archive.CombinedOutput(); err != nil {
			b.Fatalf("git archive %s: %v\n%s", rev, err, msg)
		}
	}
	build := exec.Command("go", "build", "-o", out, "./agent/cmd/tally-agent")
	if src != "" {
		build.Dir = src
	} else {
		build = exec.Command("go", "build", "-o", out, "github.com/tally-edge/tally/agent/cmd/tally-agent")
	}
	if msg, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build tally-agent %s: %v\n%s", rev, err, msg)
	}
	return out
}

// procCPU is the user+system CPU time of process pid so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start after ")".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// ingestRun is one measured run.
type ingestRun struct {
	events    int
	cpu, wall time.Duration
}

// runIngest starts bin with cfg, sends ingestRequests bodies and returns
// what the agent's process spent on them.
func runIngest(b *testing.B, bin, cfg string, bodies [][]byte, token string) ingestRun {
	b.Helper()
	args := []string{"-config", cfg, "-log-format", "json", "-log-level", "info"}
	if prof := os.Getenv("TALLY_BENCH_CPUPROFILE"); prof != "" && token != "" {
		// This tree's agent only: older ones had no -cpuprofile.
		args = append(args, "-cpuprofile", prof)
	}
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	addr := waitStarted(b, stderr)
	url := "http://" + addr + "/v1/events"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: ingestClients}}
	send := func(body []byte) {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-ndjson")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	for i := range 40 { // warm: connections, caches, series
		send(bodies[i%len(bodies)])
	}
	cpu0, err := procCPU(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for range ingestClients {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= ingestRequests {
					return
				}
				send(bodies[i%len(bodies)])
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	cpu1, err := procCPU(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	return ingestRun{events: ingestRequests * 500, cpu: cpu1 - cpu0, wall: wall}
}

// waitStarted reads the agent's JSON log until "agent started" and
// returns its HTTP address; the rest of the log is discarded.
func waitStarted(b *testing.B, r io.Reader) string {
	b.Helper()
	addr := make(chan string, 1)
	var seen strings.Builder
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			mu.Lock()
			if seen.Len() < 8<<10 {
				seen.WriteString(sc.Text() + "\n")
			}
			mu.Unlock()
			var l struct {
				Msg  string `json:"msg"`
				HTTP string `json:"http"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "agent started" {
				addr <- l.HTTP
			}
		}
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		b.Fatalf("agent did not start:\n%s", seen.String())
		return ""
	}
}

// BenchmarkHTTPIngest reports events per second of the agent's CPU
// (events/cpu_s) and per wall second, this tree's agent and, with
// TALLY_BENCH_BASELINE, the baseline's, run alternately, and the ratio.
func BenchmarkHTTPIngest(b *testing.B) {
	if testing.Short() {
		b.Skip("builds tally-agent and runs it as a process")
	}
	dir := b.TempDir()
	srv := startAckServer(b, dir)
	bins := map[string]string{"tree": agentBinary(b, filepath.Join(dir, "tree"), "")}
	names := []string{"tree"}
	if rev := os.Getenv("TALLY_BENCH_BASELINE"); rev != "" {
		bins["baseline"] = agentBinary(b, filepath.Join(dir, "baseline"), rev)
		names = append(names, "baseline")
	}
	gen := loadgen.New(loadgen.Config{Seed: 1})
	bodies := make([][]byte, 64)
	now := time.Now()
	for i := range bodies {
		evs := make([]loadgen.Event, 500)
		for j := range evs {
			evs[j] = gen.Event(now)
		}
		bodies[i] = loadgen.EncodeNDJSON(evs)
	}
	runs := map[string]*ingestRun{}
	for _, n := range names {
		runs[n] = &ingestRun{}
	}
	b.ResetTimer()
	for i := range b.N {
		for _, n := range names {
			b.StopTimer()
			cfg := filepath.Join(dir, fmt.Sprintf("%s-%d.yaml", n, i))
			state := filepath.Join(dir, fmt.Sprintf("state-%s-%d", n, i))
			if err := srv.writeAgentConfig(cfg, state, false); err != nil {
				b.Fatal(err)
			}
			// The backend is believed about its visitors: this tree's
			// agent as a server sender with a token, the baseline (which
			// had no tokens) as a trusted proxy.
			extra := "http:\n  listen: 127.0.0.1:0\n  trusted_proxies: [127.0.0.1/32]\n"
			token := ""
			if n == "tree" {
				extra = "http:\n  listen: 127.0.0.1:0\n  server_tokens: [" + benchServerToken + "]\n"
				token = benchServerToken
			}
			f, _ := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString(extra)
			f.Close()
			b.StartTimer()
			r := runIngest(b, bins[n], cfg, bodies, token)
			runs[n].events += r.events
			runs[n].cpu += r.cpu
			runs[n].wall += r.wall
		}
	}
	b.StopTimer()
	for _, n := range names {
		r := runs[n]
		b.ReportMetric(float64(r.events)/r.cpu.Seconds(), n+"_events/cpu_s")
		b.ReportMetric(float64(r.events)/r.wall.Seconds(), n+"_events/s")
	}
	if base := runs["baseline"]; base != nil {
		tree := runs["tree"]
		b.ReportMetric((float64(tree.events)/tree.cpu.Seconds())/(float64(base.events)/base.cpu.Seconds()), "tree_vs_baseline_per_cpu")
	}
}

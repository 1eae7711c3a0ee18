package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metric reads an unlabelled metric from the agent's /metrics.
func (a *agentProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := httpClient.Get(a.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// heapInuse reads the agent's go_memstats_heap_inuse_bytes.
func (a *agentProc) heapInuse(t *testing.T) float64 {
	t.Helper()
	return a.metric(t, "go_memstats_heap_inuse_bytes")
}

// settledHeap is the smallest heap seen over two seconds of light
// traffic: garbage collected, what stays is what caches hold.
func (a *agentProc) settledHeap(t *testing.T) float64 {
	t.Helper()
	low := a.heapInuse(t)
	for range 10 {
		time.Sleep(200 * time.Millisecond)
		low = min(low, a.heapInuse(t))
	}
	return low
}

// TestMegabyteUserAgentsAreCut: events carrying 1 MiB user agents (from a
// sender whose ua fields are believed) leave no megabytes behind in the
// device and bot caches. Attack of issue 9: "1 MiB UAs grew the heap 49 MiB
// in 48 requests".
func TestMegabyteUserAgentsAreCut(t *testing.T) {
	skipShort(t)
	// A soft memory limit makes the collector return garbage promptly: the
	// heap then measures what the caches keep, not when the last
	// collection happened to run.
	s := startStandin(t, "agent-ua")
	state := t.TempDir()
	a := startAgentEnv(t, "agent-ua", agentConfig(t, s, "agent-ua", state, proxyHTTP, ""), state, []string{"GOMEMLIMIT=24MiB"})
	time.Sleep(time.Second)
	before := a.settledHeap(t)
	b := during(t, a, "", func() error {
		for i := range 48 {
			ua := fmt.Sprintf("Mozilla/5.0 (%d) ", i) + strings.Repeat("x", 1<<20)
			body := fmt.Sprintf(`{"type":"pageview","campaign":"bigua","ua":%q}`, ua)
			// From 127.0.0.1: a trusted proxy, so the ua field is believed.
			if code, answer, err := post(a.url("/v1/events"), []byte(body)); err != nil || code != 202 {
				return fmt.Errorf("%d %s %v", code, answer, err)
			}
		}
		return nil
	})
	after := a.settledHeap(t)
	t.Logf("heap in use: %.1f MiB before, %.1f MiB after 48 one-MiB user agents", before/(1<<20), after/(1<<20))
	// The caches would hold 48 MiB each; the heap may still hold some
	// uncollected garbage.
	if grew := after - before; grew > 32<<20 {
		t.Fatalf("the heap kept %.1f MiB after 48 one-MiB user agents", grew/(1<<20))
	}
	if c := a.metric(t, "tally_agent_device_cache_bytes"); c > 64<<10 {
		t.Fatalf("the device cache holds %.0f bytes of user agents", c)
	}
	checkLegitExact(t, a, s, b)
	if got := s.totals()["bigua"]; got.Events+got.Bots != 48 {
		t.Fatalf("%+v: want all 48 events counted", got)
	}
}

// slowUpload opens a connection that announces a body of size bytes and
// sends one, holding the agent's read of it open until closed.
func slowUpload(addr string, size int) (net.Conn, error) {
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_, err = fmt.Fprintf(c, "POST /v1/events HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n{", addr, size)
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TestSlowUploadsCannotHoldAllMemory: uploads that announce large bodies
// and trickle them hold at most the bound of bytes in flight; beyond it
// the agent answers 503 at once instead of buffering, and once they go,
// everything flows again. Attack of issue 9: "nothing bounds bodies in
// flight".
func TestSlowUploadsCannotHoldAllMemory(t *testing.T) {
	skipShort(t)
	s, a := newAgent(t, "agent-slow", proxyHTTP, "")
	b := during(t, a, "", func() error {
		// Uploads of 512 KiB (less the byte the agent reserves beyond
		// each) until one is refused: the bound (64 MiB by default) is
		// then held but for less than 512 KiB.
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		full := false
		for len(conns) < 400 && !full {
			c, err := slowUpload(a.http, 512<<10-1)
			if err != nil {
				return err
			}
			conns = append(conns, c)
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			line, _ := bufio.NewReader(c).ReadString('\n')
			full = strings.Contains(line, " 503 ")
		}
		if !full {
			return fmt.Errorf("%d uploads of 512 KiB held, none refused", len(conns))
		}
		big := bytes.Repeat([]byte(`{"type":"click","campaign":"big"}`+"\n"), 18_000) // about 600 KiB
		start := time.Now()
		code, body, err := attack(a.url("/v1/events"), big, "User-Agent", browserUAs[0])
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable {
			m, _ := httpClient.Get(a.url("/metrics"))
			var held string
			if m != nil {
				b, _ := io.ReadAll(m.Body)
				m.Body.Close()
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, "tally_agent_http_bytes_in_flight") {
						held = l
					}
				}
			}
			return fmt.Errorf("with the bound held (%s), a 600 KiB body answered %d: %s", held, code, body)
		}
		if d := time.Since(start); d > 2*time.Second {
			return fmt.Errorf("the 503 took %v", d)
		}
		return nil
	})
	checkLegitExact(t, a, s, b)
	if got := s.totals()["big"]; got != (counts{}) {
		t.Fatalf("the refused body was counted: %+v", got)
	}
}

// TestLogsCarryNoInput: hostile requests and malformed log lines carrying
// addresses, user agents and query strings leave none of them in the
// agent's own logs (at debug level); the logs carry reason codes and
// offsets. Attack of issue 9: "Access-log snippets (client IPs, query
// strings) reach the agent's own logs".
func TestLogsCarryNoInput(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	markers := []string{"198.51.100.231", "MarkerAgent/9.9", "XYZSECRET", "victim@example.org"}
	extra := fmt.Sprintf("sources:\n  logs:\n    - paths: [%q]\n      format: combined\n      poll_interval: 50ms\n", logPath)
	s, a := newAgent(t, "agent-logs", proxyHTTP, extra)
	b := during(t, a, "", func() error {
		bodies := []string{
			`{"type":"teleport XYZSECRET","ip":"198.51.100.231","ua":"MarkerAgent/9.9"}`,
			`{"type":"click","ts":"XYZSECRET","url":"https://s.example/?email=victim@example.org"}`,
			`{not json XYZSECRET 198.51.100.231`,
			`{"type":"click","value":"XYZSECRET"}`,
			`{"type":"cost","campaign":"XYZSECRET"}`,
		}
		for _, body := range bodies {
			for range 3 { // past the sampling of rejection logs
				if _, _, err := attack(a.url("/v1/events?token=XYZSECRET"), []byte(body+"\n"+body+"\n{}"), "User-Agent", "MarkerAgent/9.9"); err != nil {
					return err
				}
			}
		}
		f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		for i := range 5 {
			fmt.Fprintf(f, "198.51.100.231 - - [bad time %d] \"GET /?q=XYZSECRET HTTP/1.1\" 200 1 \"-\" \"MarkerAgent/9.9\"\n", i)
			fmt.Fprintf(f, "198.51.100.231 XYZSECRET victim@example.org garbage\n")
		}
		time.Sleep(time.Second) // the tailer reads them
		// Raw junk on the HTTP port.
		c, err := net.Dial("tcp", a.http)
		if err == nil {
			fmt.Fprintf(c, "\x16\x03\x01XYZSECRET 198.51.100.231\r\n\r\n")
			io.Copy(io.Discard, c)
			c.Close()
		}
		return nil
	})
	checkLegitExact(t, a, s, b)
	logs := a.logs.String()
	for _, m := range markers {
		if strings.Contains(logs, m) {
			i := strings.Index(logs, m)
			from := max(0, strings.LastIndex(logs[:i], "\n"))
			t.Fatalf("the agent's log carries %q:\n%s", m, logs[from:min(len(logs), i+200)])
		}
	}
	if !strings.Contains(logs, "reason") {
		t.Fatal("the log has no reason codes: the test saw no rejection logged")
	}
}

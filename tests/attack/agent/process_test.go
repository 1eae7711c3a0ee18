package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/pki"
)

// serverToken is the legitimate backend's token (http.server_tokens).
const serverToken = "attack-test-server-token-0123"

// agentProc is a running tally-agent process.
type agentProc struct {
	t       *testing.T
	name    string
	cfgPath string
	state   string
	cmd     *exec.Cmd
	http    string // the public listener
	logs    *logBuffer
	done    chan struct{}
	exitErr error
}

// logBuffer keeps everything the agent wrote to stderr.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// agentConfig writes the configuration of an agent named name shipping to
// s, with extra YAML appended (top-level keys; the http: section is
// written here, httpExtra goes inside it).
func agentConfig(t *testing.T, s *standin, name, state, httpExtra, extra string) string {
	t.Helper()
	f := pki.DevFiles(s.certs, name)
	y := fmt.Sprintf(`name: %s
region: eu
state_dir: %q
http:
  listen: 127.0.0.1:0
%saggregator:
  addrs: [%q]
  server_name: localhost
  ca: %q
  cert: %q
  key: %q
  backoff_min: 50ms
  backoff_max: 1s
privacy:
  secret: attack-test-secret-0123456789
rollup:
  flush_interval: 500ms
%s`, name, state, httpExtra, s.srv.Addr().String(), f.CA, f.Cert, f.Key, extra)
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// tokenHTTP is the http: section lines that give the agent the legitimate
// backend's token.
const tokenHTTP = "  server_tokens: [\"" + serverToken + "\"]\n"

// proxyHTTP makes 127.0.0.1 a trusted proxy: the legitimate backend, which
// connects from it, is then believed about its visitors' ip and ua without
// a token (a key agents had before tokens, so these tests also run
// against older agents). Attackers connect from 127.0.0.2.
const proxyHTTP = "  trusted_proxies: [127.0.0.1/32]\n"

// startAgent runs the agent of cfgPath and waits until it serves.
func startAgent(t *testing.T, name, cfgPath, state string) *agentProc {
	t.Helper()
	return startAgentEnv(t, name, cfgPath, state, nil)
}

// startAgentEnv is startAgent with env added to the agent's environment.
func startAgentEnv(t *testing.T, name, cfgPath, state string, env []string) *agentProc {
	t.Helper()
	a := &agentProc{t: t, name: name, cfgPath: cfgPath, state: state, logs: &logBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(agentBin, "-config", cfgPath, "-log-format", "json", "-log-level", "debug")
	if env != nil {
		a.cmd.Env = append(os.Environ(), env...)
	}
	pr, pw := io.Pipe()
	a.cmd.Stderr = io.MultiWriter(a.logs, pw)
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.exitErr = a.cmd.Wait()
		pw.Close()
		close(a.done)
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		sent := false
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				HTTP string `json:"http"`
			}
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "agent started" {
				addr <- line.HTTP
				sent = true
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case a.http = <-addr:
	case <-a.done:
		t.Fatalf("agent %s exited at start: %v\n%s", name, a.exitErr, a.logs)
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		t.Fatalf("agent %s did not start\n%s", name, a.logs)
	}
	t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			a.cmd.Process.Kill()
			<-a.done
		}
	})
	return a
}

// stop asks the agent to stop (SIGTERM: final flush, drain) and returns
// its exit error.
func (a *agentProc) stop() error {
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		a.t.Fatalf("agent %s did not stop within 30s\n%s", a.name, a.logs)
	}
	return a.exitErr
}

func (a *agentProc) url(path string) string { return "http://" + a.http + path }

// post sends body to path with the given headers and returns the status
// and answer.
func post(url string, body []byte, hdr ...string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// attacker is an HTTP client connecting from 127.0.0.2, an address the
// agents trust for nothing.
var attacker = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
	DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}

// attack sends body to url from the attacker's address.
func attack(url string, body []byte, hdr ...string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := attacker.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

// readyz returns the agent's /readyz status code.
func (a *agentProc) readyz() int {
	resp, err := httpClient.Get(a.url("/readyz"))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// backend is the legitimate server sender: it posts events of campaign
// "legit" with its token and keeps the truth of what the agent accepted.
type backend struct {
	url   string
	token string // "" when the backend is a trusted proxy instead

	mu     sync.Mutex
	events uint64 // accepted non-bot events
	bots   uint64 // accepted bot events
	n      int
}

var browserUAs = []string{
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
}

const crawlerUA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

// send posts one body of n events and records them once the agent took
// them; a 503 is waited out and the same body sent again.
func (b *backend) send(ctx context.Context, n int) error {
	var buf bytes.Buffer
	var events, bots uint64
	b.mu.Lock()
	start := b.n
	b.n += n
	b.mu.Unlock()
	for i := start; i < start+n; i++ {
		ua, typ := browserUAs[i%len(browserUAs)], []string{"click", "pageview", "impression"}[i%3]
		if i%13 == 0 {
			ua = crawlerUA
			bots++
		} else {
			events++
		}
		fmt.Fprintf(&buf, `{"type":%q,"campaign":"legit","source":"news","medium":"email","visitor":"v-%d","ip":"192.0.2.%d","ua":%q,"country":"DE"}`+"\n",
			typ, i%500, 1+i%200, ua)
	}
	for {
		hdr := []string{"Content-Type", "application/x-ndjson"}
		if b.token != "" {
			hdr = append(hdr, "Authorization", "Bearer "+b.token)
		}
		code, body, err := post(b.url, buf.Bytes(), hdr...)
		if err != nil {
			return err
		}
		switch code {
		case http.StatusAccepted:
			if !strings.Contains(body, fmt.Sprintf(`"accepted":%d`, n)) {
				return fmt.Errorf("legitimate events refused: %s", body)
			}
			b.mu.Lock()
			b.events += events
			b.bots += bots
			b.mu.Unlock()
			return nil
		case http.StatusServiceUnavailable:
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		default:
			return fmt.Errorf("legitimate body: %d %s", code, body)
		}
	}
}

// sendOnce posts one body of n events and records them if the agent
// answered 202; any other answer is returned as an error.
func (b *backend) sendOnce(ctx context.Context, n int) error {
	var buf bytes.Buffer
	var events, bots uint64
	b.mu.Lock()
	start := b.n
	b.n += n
	b.mu.Unlock()
	for i := start; i < start+n; i++ {
		ua := browserUAs[i%len(browserUAs)]
		if i%13 == 0 {
			ua = crawlerUA
			bots++
		} else {
			events++
		}
		fmt.Fprintf(&buf, `{"type":"click","campaign":"legit","visitor":"v-%d","ip":"192.0.2.%d","ua":%q}`+"\n", i%500, 1+i%200, ua)
	}
	code, body, err := post(b.url, buf.Bytes(), "Content-Type", "application/x-ndjson")
	if err != nil {
		return err
	}
	if code != http.StatusAccepted {
		return fmt.Errorf("%d %s", code, body)
	}
	b.mu.Lock()
	b.events += events
	b.bots += bots
	b.mu.Unlock()
	return nil
}

// run sends bodies of 50 events until ctx ends.
func (b *backend) run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := b.send(ctx, 50); err != nil {
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (b *backend) truth() counts {
	b.mu.Lock()
	defer b.mu.Unlock()
	return counts{Events: b.events, Bots: b.bots}
}

// during runs the backend (with token, or as a trusted proxy without)
// while attack runs, and fails the test on an error of either.
func during(t *testing.T, a *agentProc, token string, attack func() error) *backend {
	t.Helper()
	b := &backend{url: a.url("/v1/events"), token: token}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.run(ctx) }()
	// Some legitimate traffic before, during and after.
	time.Sleep(300 * time.Millisecond)
	attackErr := attack()
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("legitimate traffic failed during the attack: %v", err)
	}
	if attackErr != nil {
		t.Fatal(attackErr)
	}
	return b
}

// checkLegitExact stops the agent gracefully and compares what arrived
// for campaign legit with what the backend had accepted.
func checkLegitExact(t *testing.T, a *agentProc, s *standin, b *backend) {
	t.Helper()
	if err := a.stop(); err != nil {
		t.Fatalf("agent exited with %v\n%s", err, a.logs)
	}
	want := b.truth()
	if want.Events == 0 {
		t.Fatal("no legitimate traffic was sent")
	}
	if got := s.totals()["legit"]; got.Events != want.Events || got.Bots != want.Bots {
		t.Fatalf("legitimate traffic: %d events and %d bots arrived, %d and %d were accepted", got.Events, got.Bots, want.Events, want.Bots)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

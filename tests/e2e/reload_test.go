package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/pki"
)

// TestReloadOnSIGHUP sends SIGHUP to a running aggregator and agent (real
// processes) after rewriting their files: a token added works and one
// removed is refused at once, a stream opened with the removed token ends
// while the admin's stream stays open and keeps receiving, the agent's
// QUIC connection is not dropped, a file that fails anywhere (a token,
// or a certificate that names someone else) changes nothing, a changed
// key that needs a restart is named, and a renewed certificate is put in
// force.
func TestReloadOnSIGHUP(t *testing.T) {
	c := startCluster(t, "edge-1")
	a := c.agents[0]
	aggCfg := filepath.Join(c.dir, "agg-1.yaml")
	started, err := os.ReadFile(aggCfg)
	if err != nil {
		t.Fatal(err)
	}
	adminLine := fmt.Sprintf(`    - {token: "%s", subject: admin, role: admin}`, harness.DefaultAdminToken)
	if !strings.Contains(string(started), adminLine+"\n") {
		t.Fatalf("the harness's aggregator file changed shape:\n%s", started)
	}
	// withTokens returns the started file with more auth.tokens lines.
	withTokens := func(extra ...string) string {
		return strings.Replace(string(started), adminLine+"\n", adminLine+"\n"+strings.Join(extra, "\n")+"\n", 1)
	}
	const oldToken, newToken = "reload-old-analyst-0123456789", "reload-new-analyst-0123456789"
	tokenLine := func(tok, subject string) string {
		return fmt.Sprintf(`    - {token: "%s", subject: %s, role: analyst}`, tok, subject)
	}
	hup := func(p *harness.Proc, metricsAt, prefix string, wantReloads float64) {
		t.Helper()
		if err := syscall.Kill(p.Pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for harness.MetricSum(metrics(t, metricsAt), prefix+"_config_reloads_total") < wantReloads {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not finish reload %v within 20s\n%s", p.Name, wantReloads, p.LogTail(20))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !p.Running() {
			t.Fatalf("%s exited on SIGHUP", p.Name)
		}
	}
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	whoami := func(tok string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+c.aggHTTP+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	gen := loadgen.New(loadgen.Config{Seed: 5, Campaigns: 3})
	const botUA = "Mozilla/5.0 (Windows NT 10.0) ReloadShopBrowser/1.0"
	postUA := func(token, ua string) error {
		client := &loadgen.Client{URL: a.eventsURL(), HTTP: agentClient(a), Token: token}
		evs := make([]loadgen.Event, 50)
		for i := range evs {
			evs[i] = gen.Event(time.Now())
			if ua != "" {
				evs[i].UA = ua
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return client.Post(ctx, evs)
	}
	post := func(token string) error { return postUA(token, "") }
	if err := post(harness.DefaultServerToken); err != nil {
		t.Fatal(err)
	}
	aggPid, agentPid := c.agg.Pid(), a.proc.Pid()

	// 1. A token added.
	if whoami(oldToken) != http.StatusUnauthorized {
		t.Fatal("a token not configured yet was accepted")
	}
	write(aggCfg, withTokens(tokenLine(oldToken, "old")))
	hup(c.agg, c.aggHTTP, "tally_aggregator", 1)
	if got := whoami(oldToken); got != http.StatusOK {
		t.Fatalf("a token added by the reload: %d", got)
	}
	// The agent holds two connections: batches, and live counters (opened
	// once it has counters to send). Both must be up before counting.
	for deadline := time.Now().Add(30 * time.Second); harness.MetricSum(metrics(t, c.aggHTTP), "tally_aggregator_quic_live_streams_total") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the agent opened no live-counter stream within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	conns := harness.MetricSum(metrics(t, c.aggHTTP), "tally_aggregator_quic_connections_total")
	if conns == 0 {
		t.Fatal("the agent has no QUIC connection to the aggregator")
	}

	// 2. Streams open with the admin's token and with the one to remove.
	adminStream := openStream(t, c.aggHTTP, harness.DefaultAdminToken)
	oldStream := openStream(t, c.aggHTTP, oldToken)

	// 3. The token removed, another added.
	write(aggCfg, withTokens(tokenLine(newToken, "new")))
	hup(c.agg, c.aggHTTP, "tally_aggregator", 2)
	if got := whoami(oldToken); got != http.StatusUnauthorized {
		t.Fatalf("a token removed by the reload: %d, want 401", got)
	}
	if got := whoami(newToken); got != http.StatusOK {
		t.Fatalf("a token added by the reload: %d", got)
	}
	select {
	case <-oldStream.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of the removed token stayed open")
	}
	// The admin's stream stays open and carries what arrives after the
	// reload.
	adminStream.drain()
	if err := post(harness.DefaultServerToken); err != nil {
		t.Fatal(err)
	}
	if !adminStream.waitEvent("minutes", 30*time.Second) {
		t.Fatal("the admin's stream carried nothing after the reload")
	}
	adminStream.close()

	// 4. All or nothing: a file whose tokens are fine but whose QUIC
	// certificate now names another node changes nothing.
	certFile, keyFile := filepath.Join(c.certs, "agg-1.pem"), filepath.Join(c.certs, "agg-1-key.pem")
	goodCert, _ := os.ReadFile(certFile)
	goodKey, _ := os.ReadFile(keyFile)
	ca, err := pki.LoadCA(filepath.Join(c.certs, "ca.pem"), filepath.Join(c.certs, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	issue := func(cn string) {
		t.Helper()
		kp, err := ca.Issue(pki.IssueOptions{CommonName: cn, Hosts: pki.DefaultHosts(), Server: true, Client: true, Node: true, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		key, err := kp.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		write(keyFile, string(key))
		write(certFile, string(kp.CertPEM()))
	}
	issue("intruder")
	const refusedToken = "reload-refused-analyst-0123456789"
	write(aggCfg, withTokens(tokenLine(newToken, "new"), tokenLine(refusedToken, "refused")))
	hup(c.agg, c.aggHTTP, "tally_aggregator", 3)
	m := metrics(t, c.aggHTTP)
	if harness.MetricSum(m, "tally_aggregator_config_reload_failures_total") != 1 || harness.MetricSum(m, "tally_aggregator_config_last_reload_successful") != 0 {
		t.Fatalf("a failed reload was not counted:\n%s", grepLines(m, "tally_aggregator_config_"))
	}
	if got := whoami(refusedToken); got != http.StatusUnauthorized {
		t.Fatalf("a token of a reload that failed was put in force: %d", got)
	}
	if got := whoami(newToken); got != http.StatusOK {
		t.Fatalf("a failed reload changed the tokens in force: %d", got)
	}
	// A broken file (a token too short) changes nothing either.
	write(certFile, string(goodCert))
	write(keyFile, string(goodKey))
	write(aggCfg, withTokens(tokenLine("short", "x")))
	hup(c.agg, c.aggHTTP, "tally_aggregator", 4)
	if harness.MetricSum(metrics(t, c.aggHTTP), "tally_aggregator_config_reload_failures_total") != 2 || whoami(newToken) != http.StatusOK {
		t.Fatal("a file that does not validate changed the configuration or was not counted")
	}

	// 5. A renewed certificate of the same node and a key that needs a
	// restart: the certificate is put in force, the key named.
	expiry := harness.MetricSum(metrics(t, c.aggHTTP), "tally_aggregator_tls_certificate_expiry_timestamp_seconds", `cert="quic.cert"`)
	issue("agg-1")
	restartOnly := strings.Replace(withTokens(tokenLine(newToken, "new")), "write_interval: 300ms", "write_interval: 400ms", 1)
	write(aggCfg, restartOnly)
	hup(c.agg, c.aggHTTP, "tally_aggregator", 5)
	m = metrics(t, c.aggHTTP)
	if harness.MetricSum(m, "tally_aggregator_config_last_reload_successful") != 1 || harness.MetricSum(m, "tally_aggregator_config_restart_pending") != 1 {
		t.Fatalf("after a reload changing merge.write_interval:\n%s", grepLines(m, "tally_aggregator_config_"))
	}
	if harness.MetricSum(m, "tally_aggregator_tls_certificate_reloads_total", `cert="quic.cert"`) != 1 ||
		harness.MetricSum(m, "tally_aggregator_tls_certificate_expiry_timestamp_seconds", `cert="quic.cert"`) == expiry {
		t.Fatalf("the renewed certificate was not put in force:\n%s", grepLines(m, "tally_aggregator_tls_"))
	}
	if !strings.Contains(c.agg.LogTail(40), "merge.write_interval") {
		t.Fatalf("the log does not name the key that waits for a restart:\n%s", c.agg.LogTail(40))
	}

	// 6. The agent: its server senders' token replaced, a user agent
	// denied by the bot filter.
	const agentToken = "reload-agent-server-token-0123456789"
	agentCfg := filepath.Join(c.dir, "edge-1.yaml")
	text, err := os.ReadFile(agentCfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(text), "\nbots:") {
		t.Fatalf("the harness's agent file has a bots section already:\n%s", text)
	}
	denied := func() float64 {
		return harness.MetricSum(metrics(t, a.http), "tally_agent_bots_filtered_total", `reason="deny_list"`)
	}
	if err := postUA(harness.DefaultServerToken, botUA); err != nil || denied() != 0 {
		t.Fatalf("before the reload: %v, %v events denied", err, denied())
	}
	write(agentCfg, strings.Replace(string(text), harness.DefaultServerToken, agentToken, 1)+
		"\nbots:\n  deny:\n    ua: [reloadshopbrowser]\n")
	// and its client certificate renewed.
	renewed, err := ca.IssueClient("edge-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	renewedKey, err := renewed.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(c.certs, "edge-1-key.pem"), string(renewedKey))
	write(filepath.Join(c.certs, "edge-1.pem"), string(renewed.CertPEM()))
	hup(a.proc, a.http, "tally_agent", 1)
	if err := post(harness.DefaultServerToken); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("the agent took a server token removed by the reload: %v", err)
	}
	if err := post(agentToken); err != nil {
		t.Fatalf("the agent refused the server token added by the reload: %v", err)
	}
	if err := postUA(agentToken, botUA); err != nil {
		t.Fatal(err)
	}
	if got := denied(); got != 50 {
		t.Fatalf("after the reload %v events of a denied user agent were filtered, want 50", got)
	}
	if m := metrics(t, a.http); harness.MetricSum(m, "tally_agent_config_last_reload_successful") != 1 || harness.MetricSum(m, "tally_agent_config_restart_pending") != 0 ||
		harness.MetricSum(m, "tally_agent_tls_certificate_reloads_total", `cert="aggregator.cert"`) != 1 ||
		harness.MetricSum(m, "tally_agent_tls_certificate_expiry_timestamp_seconds", `cert="aggregator.cert"`) != float64(renewed.Cert.NotAfter.Unix()) {
		t.Fatalf("agent reload metrics:\n%s\n%s", grepLines(m, "tally_agent_config_"), grepLines(m, "tally_agent_tls_"))
	}

	// Nothing restarted, no connection was dropped.
	if c.agg.Pid() != aggPid || a.proc.Pid() != agentPid {
		t.Fatal("a process restarted")
	}
	if got := harness.MetricSum(metrics(t, c.aggHTTP), "tally_aggregator_quic_connections_total"); got != conns {
		t.Fatalf("QUIC connections accepted went from %v to %v across the reloads: the agent reconnected", conns, got)
	}
}

// sseStream is an open /api/v1/stream, read in the background.
type sseStream struct {
	events chan string // event names
	done   chan struct{}
	cancel context.CancelFunc
}

func openStream(t *testing.T, hostport, token string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostport+"/api/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		t.Fatalf("stream: %s", resp.Status)
	}
	s := &sseStream{events: make(chan string, 1024), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				select {
				case s.events <- ev:
				default:
				}
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

// drain forgets the events read so far.
func (s *sseStream) drain() {
	for {
		select {
		case <-s.events:
		default:
			return
		}
	}
}

// waitEvent waits for an event of this name while the stream is open.
func (s *sseStream) waitEvent(name string, d time.Duration) bool {
	timeout := time.After(d)
	for {
		select {
		case ev := <-s.events:
			if ev == name {
				return true
			}
		case <-s.done:
			return false
		case <-timeout:
			return false
		}
	}
}

func (s *sseStream) close() {
	s.cancel()
	<-s.done
}

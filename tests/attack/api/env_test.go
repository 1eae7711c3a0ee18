package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tally-edge/tally/agent/browser/browsertest"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
)

// The callers of the API. ann reads legitimately while bob, a valid but
// greedy analyst, floods; vera is a viewer of legit_a.
const (
	adminToken  = harness.DefaultAdminToken
	annToken    = "attack-ann-analyst-0123456789"
	bobToken    = "attack-bob-analyst-0123456789"
	veraToken   = "attack-vera-viewer-0123456789"
	jwtSecret   = "attack-suite-hs256-secret-0123456789abcdef"
	jwtIssuer   = "https://idp.attack.test"
	jwtAudience = "tally-attack"
	linkSecret  = "attack-suite-links-secret-0123456789abcdef"
	testSecret  = "attack-deployment-secret-0123456789"
)

// legitCampaigns carry the legitimate traffic whose numbers every check
// compares with the truth.
var legitCampaigns = []string{"legit_a", "legit_b"}

// authLines are the callers every node knows (harness AuthExtra).
const authLines = `  - {token: "` + annToken + `", subject: ann, role: analyst}
  - {token: "` + bobToken + `", subject: bob, role: analyst}
  - {token: "` + veraToken + `", subject: vera, role: viewer, campaigns: [legit_a]}
jwt:
  hs256_secret: "` + jwtSecret + `"
  issuer: "` + jwtIssuer + `"
  audience: "` + jwtAudience + `"
  leeway: 1s
`

// deployment is one aggregator node and one agent on their own InfluxDB
// database, with the truth of the legitimate events sent to the agent.
type deployment struct {
	name       string
	dir        string
	cfgPath    string
	aggHTTP    string
	metrics    string // the metrics listener; "" when on aggHTTP
	audit      string
	agg, agent *harness.Proc
	agentHTTP  string
	since      time.Time

	mu    sync.Mutex
	truth map[string]counts // campaign → what the agent accepted
}

// counts are the exact numbers of one campaign.
type counts struct{ Clicks, Impressions float64 }

var shared struct {
	once   sync.Once
	err    error
	dir    string
	certs  string
	influx *influxtest.Server

	plain, hardened deploymentOnce
}

// deploymentOnce starts one deployment on first use.
type deploymentOnce struct {
	once sync.Once
	d    *deployment
	err  error
}

// plainDeployment is the node configured with main's keys only.
func plainDeployment(t *testing.T) *deployment { return startOnce(t, &shared.plain, "plain") }

// hardenedDeployment is the node with the keys this suite adds.
func hardenedDeployment(t *testing.T) *deployment { return startOnce(t, &shared.hardened, "hardened") }

func startOnce(t *testing.T, o *deploymentOnce, name string) *deployment {
	t.Helper()
	if testing.Short() {
		t.Skip("attack suite: needs built binaries and InfluxDB")
	}
	shared.once.Do(func() { shared.err = startInfra() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	o.once.Do(func() { o.d, o.err = startDeployment(name) })
	if o.err != nil {
		t.Fatalf("start the %s deployment: %v", name, o.err)
	}
	return o.d
}

// startInfra starts InfluxDB and makes the certificates.
func startInfra() error {
	dir, err := os.MkdirTemp("", "tally-attack-")
	if err != nil {
		return err
	}
	shared.dir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if shared.influx, err = influxtest.Launch(ctx, influxtest.Options{Dir: filepath.Join(dir, "influxdb")}); err != nil {
		return err
	}
	if err := shared.influx.CreateDatabase(ctx, "hardened", shared.influx.RetentionPolicy()); err != nil {
		return err
	}
	shared.certs = filepath.Join(dir, "certs")
	_, err = pki.GenerateDev(shared.certs, pki.DevOptions{Agents: []string{"agent-plain", "agent-hardened"},
		Aggregators: []string{"agg-plain", "agg-hardened"}})
	return err
}

// startDeployment starts a node and its agent, sends the legitimate
// traffic and waits until the API shows it exactly.
func startDeployment(name string) (*deployment, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tcp, err := harness.FreeTCP(3)
	if err != nil {
		return nil, err
	}
	udp, err := harness.FreeUDP(1)
	if err != nil {
		return nil, err
	}
	d := &deployment{name: name, aggHTTP: fmt.Sprintf("127.0.0.1:%d", tcp[0]), agentHTTP: fmt.Sprintf("127.0.0.1:%d", tcp[1]),
		dir: filepath.Join(shared.dir, name), truth: map[string]counts{}}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return nil, err
	}
	d.audit = filepath.Join(d.dir, "audit.jsonl")
	httpExtra := "audit_log: " + d.audit + "\n"
	auth, bucket := authLines, shared.influx.Bucket()
	if name == "hardened" {
		// The keys this suite adds: audit rotation, a metrics listener,
		// sign-in links.
		d.metrics = fmt.Sprintf("127.0.0.1:%d", tcp[2])
		httpExtra += "audit_max_bytes: 64KiB\naudit_max_files: 2\nmetrics_listen: " + d.metrics + "\n"
		auth += "links: {secret: \"" + linkSecret + "\", link_ttl: 1m}\n"
		bucket = "hardened/" + shared.influx.RetentionPolicy()
	}
	extra := ""
	if name == "plain" {
		extra = gqlAlertsConfig(time.Now())
	}
	aggName, quic := "agg-"+name, fmt.Sprintf("127.0.0.1:%d", udp[0])
	d.cfgPath = filepath.Join(d.dir, aggName+".yaml")
	if err := harness.WriteAggregatorConfig(d.cfgPath, harness.AggregatorOptions{Name: aggName, DataDir: filepath.Join(d.dir, "data"),
		QUICAddr: quic, HTTPAddr: d.aggHTTP, CertsDir: shared.certs, InfluxURL: shared.influx.URL(), InfluxBucket: bucket,
		WriteInterval: 300 * time.Millisecond, HTTPExtra: httpExtra, AuthExtra: auth, Extra: extra}); err != nil {
		return d, err
	}
	d.agg = &harness.Proc{Name: aggName, Bin: filepath.Join(binDir, "tally-aggregator"), Args: []string{"-config", d.cfgPath},
		LogPath: filepath.Join(d.dir, aggName+".log")}
	if err := d.agg.Start(); err != nil {
		return d, err
	}
	if err := harness.WaitHTTP(ctx, "http://"+d.aggHTTP+"/readyz", d.agg); err != nil {
		return d, err
	}
	agentName := "agent-" + name
	agentCfg := filepath.Join(d.dir, agentName+".yaml")
	if err := harness.WriteAgentConfig(agentCfg, harness.AgentOptions{Name: agentName, Region: "attack", StateDir: filepath.Join(d.dir, agentName),
		HTTPAddr: d.agentHTTP, Aggregators: []string{quic}, CertsDir: shared.certs, Secret: testSecret, FlushInterval: time.Second}); err != nil {
		return d, err
	}
	d.agent = &harness.Proc{Name: agentName, Bin: filepath.Join(binDir, "tally-agent"), Args: []string{"-config", agentCfg},
		LogPath: filepath.Join(d.dir, agentName+".log")}
	if err := d.agent.Start(); err != nil {
		return d, err
	}
	if err := harness.WaitHTTP(ctx, "http://"+d.agentHTTP+"/healthz", d.agent); err != nil {
		return d, err
	}
	d.since = time.Now().Add(-2 * time.Minute).Truncate(time.Minute)
	if err := d.sendLegit(ctx, 600); err != nil {
		return d, err
	}
	if err := d.waitExact(ctx); err != nil {
		return d, fmt.Errorf("%w\n%s", err, d.logTails())
	}
	return d, nil
}

func stopDeployments() {
	for _, d := range []*deployment{shared.plain.d, shared.hardened.d} {
		if d == nil {
			continue
		}
		if d.agent != nil {
			_ = d.agent.Stop(20 * time.Second)
		}
		if d.agg != nil {
			_ = d.agg.Stop(30 * time.Second)
		}
	}
	if shared.influx != nil {
		_ = shared.influx.Close()
	}
	if shared.dir != "" {
		if os.Getenv("TALLY_ATTACK_KEEP") != "" {
			fmt.Fprintln(os.Stderr, "attack suite state kept in", shared.dir)
			return
		}
		os.RemoveAll(shared.dir)
	}
}

// logTails returns the end of the deployment's logs (for a failed test).
func (d *deployment) logTails() string {
	return fmt.Sprintf("---- %s ----\n%s\n---- %s ----\n%s", d.agg.Name, d.agg.LogTail(30), d.agent.Name, d.agent.LogTail(10))
}

// sendLegit posts n legitimate events (clicks and impressions over the
// legit campaigns) to the agent, as a browser-like client, and adds what
// the agent accepted to the truth.
func (d *deployment) sendLegit(ctx context.Context, n int) error {
	var body bytes.Buffer
	add := map[string]counts{}
	for i := range n {
		c := legitCampaigns[i%len(legitCampaigns)]
		typ := "impression"
		cs := add[c]
		if i%3 == 0 {
			typ = "click"
			cs.Clicks++
		} else {
			cs.Impressions++
		}
		add[c] = cs
		fmt.Fprintf(&body, `{"type":%q,"campaign":%q,"source":"web","medium":"cpc","visitor":"v-%d"}`+"\n", typ, c, i%97)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+d.agentHTTP+"/v1/events", &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("User-Agent", browsertest.UserAgent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct{ Accepted, Rejected int }
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 202 || r.Accepted != n {
		return fmt.Errorf("legit events: %d %+v %v", resp.StatusCode, r, err)
	}
	d.mu.Lock()
	for c, v := range add {
		t := d.truth[c]
		t.Clicks += v.Clicks
		t.Impressions += v.Impressions
		d.truth[c] = t
	}
	d.mu.Unlock()
	return nil
}

// kpisURL is the KPI query of campaign over everything sent.
func (d *deployment) kpisURL(campaign string) string {
	q := url.Values{"campaign": {campaign}, "from": {d.since.Format(time.RFC3339)},
		"to": {time.Now().Add(2 * time.Minute).Truncate(time.Second).Format(time.RFC3339)}}
	return "http://" + d.aggHTTP + "/api/v1/kpis?" + q.Encode()
}

// legitRead asks for every legit campaign's KPIs as ann and compares
// them with the truth; errNotYet when they trail it (data in flight).
func (d *deployment) legitRead(ctx context.Context, token string, campaigns ...string) error {
	if len(campaigns) == 0 {
		campaigns = legitCampaigns
	}
	for _, c := range campaigns {
		code, body, err := get(ctx, d.kpisURL(c), token)
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("legit KPIs of %s: %d %s", c, code, body)
		}
		var got counts
		if err := json.Unmarshal(body, &got); err != nil {
			return err
		}
		d.mu.Lock()
		want := d.truth[c]
		d.mu.Unlock()
		switch {
		case got == want:
		case got.Clicks <= want.Clicks && got.Impressions <= want.Impressions:
			return fmt.Errorf("%w: %s %+v, truth %+v", errNotYet, c, got, want)
		default:
			return fmt.Errorf("legit KPIs of %s: %+v, more than the truth %+v", c, got, want)
		}
	}
	return nil
}

var errNotYet = fmt.Errorf("not yet")

// waitExact waits until every legit campaign's KPIs equal the truth.
func (d *deployment) waitExact(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		err := d.legitRead(ctx, annToken)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("legit numbers never matched the truth: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// duringAttack runs attack while ann keeps reading: every read during it
// must answer 200 with exactly the truth (nothing is sent meanwhile).
func (d *deployment) duringAttack(t *testing.T, attack func(ctx context.Context)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	reads, failures := 0, []string{}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
			err := d.legitRead(rctx, annToken)
			rcancel()
			if ctx.Err() != nil {
				return
			}
			reads++
			if err != nil {
				failures = append(failures, err.Error())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	attack(ctx)
	// One more read once the attack's own requests are done.
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	if err := d.legitRead(context.Background(), annToken); err != nil {
		failures = append(failures, "after: "+err.Error())
	}
	if len(failures) > 0 {
		t.Errorf("legitimate reads during the attack: %d of %d failed, e.g. %s", len(failures), reads, failures[0])
	}
	if reads == 0 {
		t.Errorf("no legitimate read completed during the attack")
	}
	t.Logf("legitimate reads during the attack: %d, all exact", reads)
}

// get does one GET with a bearer token and returns status and body.
func get(ctx context.Context, u, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b, err
}

// sseEvent is one event (or comment) of a stream.
type sseEvent struct {
	name, data, comment string
	at                  time.Time
}

// stream is one open /api/v1/stream.
type stream struct {
	code   int
	resp   *http.Response
	events chan sseEvent // closed when the server ends the stream
}

// openStream opens a stream with token; code is the status, -1 when the
// request failed (events is nil unless 200). It may be called from any
// goroutine.
func openStream(ctx context.Context, t *testing.T, base, query, token string) *stream {
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/stream"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			t.Logf("stream: %v", err)
		}
		return &stream{code: -1}
	}
	s := &stream{code: resp.StatusCode, resp: resp}
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return s
	}
	s.events = make(chan sseEvent, 1024)
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.comment != "" {
					ev.at = time.Now()
					select {
					case s.events <- ev:
					default: // a reader that stopped reading keeps the stream draining
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ": "):
				ev.comment = line[2:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return s
}

func (s *stream) close() {
	if s.resp != nil {
		s.resp.Body.Close()
	}
}

// waitEvent waits for an event named name.
func (s *stream) waitEvent(t *testing.T, name string, d time.Duration) sseEvent {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("the stream ended before a %q event", name)
			}
			if ev.name == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %q event within %v", name, d)
		}
	}
}

// signJWT signs an HS256 token with the deployment's key.
func signJWT(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwtClaims are valid claims of subject with role, expiring in ttl.
func jwtClaims(subject, role string, ttl time.Duration) jwt.MapClaims {
	return jwt.MapClaims{"sub": subject, "role": role, "exp": time.Now().Add(ttl).Unix(), "iss": jwtIssuer, "aud": jwtAudience}
}

// auditLines reads the audit files given (missing ones are empty).
func auditLines(t *testing.T, paths ...string) (lines []map[string]any, longest int) {
	t.Helper()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for l := range bytes.SplitSeq(bytes.TrimSpace(b), []byte("\n")) {
			if len(l) == 0 {
				continue
			}
			longest = max(longest, len(l))
			var m map[string]any
			if err := json.Unmarshal(l, &m); err != nil {
				t.Fatalf("%s: a line that is not JSON (%d bytes): %v", p, len(l), err)
			}
			lines = append(lines, m)
		}
	}
	return lines, longest
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

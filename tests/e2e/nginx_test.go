package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/pki"
)

// TestNginxAccessLogIsCountedExactly puts a real nginx in front of a real
// agent: the agent tails nginx's combined access log (sources.logs) and
// ships to a real aggregator writing InfluxDB. The test sends 3,000 HTTP
// requests to nginx — UTM landings, clicks (302), pages without a
// campaign, a static stylesheet, 404s, HEADs, about 8 % from crawlers —
// and rotates the log the logrotate way mid-stream (rename, then SIGUSR1
// to the master) while requests are in flight. The ground truth is what
// was sent; InfluxDB must hold exactly that.
//
// Minutes: a line's minute is nginx's $time_local, which nginx takes from
// its cached clock, refreshed each time its event loop wakes. That wake-up
// comes after the client started the request and before the response
// reached it, so $time_local lies between the two on the same wall clock.
// A request whose send and answer fall in one minute has a known minute;
// the few in flight across a minute boundary could be in either. The
// check is therefore exact per (campaign, type) over the run, and per
// minute within those brackets (exact when no request straddled a
// boundary). Waiting for a quiet minute would cost up to a minute of test
// time and still not prove the bucketing; comparing totals alone would
// not check minutes at all.
//
// Skipped when /usr/sbin/nginx is absent, unless TALLY_REQUIRE_NGINX is
// set (make test sets it, and installs Debian's nginx).
func TestNginxAccessLogIsCountedExactly(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: needs built binaries, InfluxDB and nginx")
	}
	if _, err := os.Stat(nginxBin); err != nil {
		if os.Getenv("TALLY_REQUIRE_NGINX") == "" {
			t.Skipf("%s not found (apt-get install nginx; set TALLY_REQUIRE_NGINX=1 to make this a failure)", nginxBin)
		}
		t.Fatalf("TALLY_REQUIRE_NGINX is set but %s is missing: %v", nginxBin, err)
	}

	c := startCluster(t) // InfluxDB and the aggregator; the agent is ours
	ports, err := harness.FreeTCP(2)
	if err != nil {
		t.Fatal(err)
	}
	ngx := startNginx(t, ports[0])
	agent := startLogAgent(t, c, "agent-nginx", fmt.Sprintf("127.0.0.1:%d", ports[1]), ngx.accessLog)

	const total = 3000
	reqs := plannedRequests(total, 42)
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 8},
		// A /click answers 302; following it would log a page view the
		// truth does not hold.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range jobs {
				if err := reqs[i].do(client, ngx.base); err != nil {
					t.Error(err)
				}
				// About 1,000 requests/s: the agent reads while nginx
				// writes, across the rotation, rather than after a
				// burst.
				time.Sleep(4 * time.Millisecond)
			}
		})
	}
	for i := range reqs {
		if i == total/2 {
			// Requests are still in flight while the log moves: some
			// land in access.log.1 after the rename.
			ngx.rotate(t)
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	truth := truthOf(reqs)
	first, last := reqs[0].start, reqs[0].done
	for _, r := range reqs {
		first, last = minTime(first, r.start), maxTime(last, r.done)
	}
	from, to := first.Truncate(time.Minute).Add(-time.Minute), last.Truncate(time.Minute).Add(2*time.Minute)
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := queryCells(t, c, from, to)
		diff := truth.check(got)
		if diff == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("InfluxDB never matched what was sent to nginx: %s", diff)
		}
		time.Sleep(time.Second)
	}
	t.Logf("InfluxDB matches what nginx served: %d requests from %s to %s → %d events and %d bots in %d (campaign, type) pairs; %d requests straddled a minute",
		total, first.Format("15:04:05.000"), last.Format("15:04:05.000"), truth.events, truth.bots, len(truth.totals), truth.straddled)

	// Every line nginx wrote, in both files, was read exactly once and the
	// rotation was seen.
	before, after := countLines(t, ngx.accessLog+".1"), countLines(t, ngx.accessLog)
	lines := before + after
	if lines < total || before < total/3 || after < total/3 {
		t.Fatalf("nginx logged %d lines before the rotation and %d after, for %d requests", before, after, total)
	}
	m := metrics(t, agent.http)
	if got := harness.MetricSum(m, "tally_agent_log_lines_total"); got != float64(lines) {
		t.Fatalf("agent read %v lines, nginx wrote %d", got, lines)
	}
	if got := harness.MetricSum(m, "tally_agent_log_lines_malformed_total"); got != 0 {
		t.Fatalf("agent found %v malformed lines in nginx's log", got)
	}
	if got := harness.MetricSum(m, "tally_agent_log_rotations_total"); got < 1 {
		t.Fatal("agent saw no rotation")
	}
	if got := harness.MetricSum(m, "tally_agent_log_rotations_unrecovered_total"); got != 0 {
		t.Fatalf("%v unrecovered rotations", got)
	}
}

// nginxBin is Debian's nginx.
const nginxBin = "/usr/sbin/nginx"

type nginx struct {
	proc      *harness.Proc
	dir       string
	base      string // http://127.0.0.1:port
	accessLog string
}

var nginxConf = template.Must(template.New("nginx").Parse(`# written by TestNginxAccessLogIsCountedExactly
daemon off;
master_process on;
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log info;
{{if .Root}}# The test runs as root and its temp dirs are 0700: workers must be root
# too to reopen the log on USR1 and to read the stylesheet.
user root;
{{end}}
events {
    worker_connections 256;
}

http {
    access_log {{.Dir}}/access.log combined;
    # Debian's build points these at /var/lib/nginx, which nginx creates as
    # root at start: keep everything in the test's directory.
    client_body_temp_path {{.Dir}}/tmp/client_body;
    proxy_temp_path {{.Dir}}/tmp/proxy;
    fastcgi_temp_path {{.Dir}}/tmp/fastcgi;
    uwsgi_temp_path {{.Dir}}/tmp/uwsgi;
    scgi_temp_path {{.Dir}}/tmp/scgi;
    types {
        text/html html;
        text/css  css;
    }
    default_type text/html;

    server {
        listen {{.Listen}};
        root {{.Dir}}/www;

        location / {
            return 200 "ok\n";
        }
        location = /click {
            return 302 /;
        }
        location = /style.css {
        }
        location /gone/ {
            return 404;
        }
        location = /healthz {
            return 200 "healthy\n";
        }
    }
}
`))

// startNginx runs nginx in the foreground as a child of the test, on port.
// Its readiness probe, GET /healthz, is logged like any request and
// skipped by the agent's default rule (skip_paths), as in production.
func startNginx(t *testing.T, port int) *nginx {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"tmp", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "style.css"), []byte("body { margin: 0 }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var conf bytes.Buffer
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	if err := nginxConf.Execute(&conf, map[string]any{"Dir": dir, "Listen": listen, "Root": os.Geteuid() == 0}); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &nginx{dir: dir, base: "http://" + listen, accessLog: filepath.Join(dir, "access.log"),
		// -e: the error log before the configuration is read (Debian's
		// default is stderr, which is fine, but keep it all in one place).
		proc: &harness.Proc{Name: "nginx", Bin: nginxBin, Args: []string{"-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log")},
			LogPath: filepath.Join(dir, "nginx.out")}}
	if err := n.proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.proc.Stop(10 * time.Second); err != nil {
			t.Errorf("stopping nginx: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("---- nginx error.log ----\n%s", tailLines(string(b), 30))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := harness.WaitHTTP(ctx, n.base+"/healthz", n.proc); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		t.Fatalf("%v\nnginx error.log:\n%s", err, b)
	}
	return n
}

// rotate does what logrotate's default (create) mode does for nginx:
// rename the live log, then SIGUSR1 the master (found through its pid
// file) so that it opens a new one. It returns once the new file exists.
func (n *nginx) rotate(t *testing.T) {
	t.Helper()
	if err := os.Rename(n.accessLog, n.accessLog+".1"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(n.dir, "nginx.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("nginx.pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(n.accessLog); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx did not reopen its access log after SIGUSR1")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logSource is the agent configuration's sources section for nginx's log.
const logSource = `sources:
  logs:
    - paths: [%q]
      format: combined
      site: shop.example.com
      rules:
        - {name: ad click, match: /click, type: click}
      poll_interval: 100ms
      # nginx reopens within milliseconds of USR1; the 10 s default only
      # makes the test wait.
      rotate_wait: 2s
`

// startLogAgent adds an agent that tails accessLog to the cluster, with a
// certificate from the cluster's CA; the cluster's cleanup stops it.
func startLogAgent(t *testing.T, c *cluster, name, httpAddr, accessLog string) *agentProc {
	t.Helper()
	// GenerateDev keeps the cluster's CA and aggregator certificate and
	// only issues the missing agent certificate.
	if _, err := pki.GenerateDev(c.certs, pki.DevOptions{Agents: []string{name}, Aggregators: []string{"agg-1"}}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(c.dir, name+".yaml")
	if err := harness.WriteAgentConfig(cfg, harness.AgentOptions{Name: name, Region: "region-nginx", StateDir: filepath.Join(c.dir, name),
		HTTPAddr: httpAddr, Aggregators: []string{c.aggQUIC}, CertsDir: c.certs, Secret: testSecret, FlushInterval: time.Second,
		Extra: fmt.Sprintf(logSource, accessLog)}); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{name: name, http: httpAddr,
		proc: &harness.Proc{Name: name, Bin: filepath.Join(binDir, "tally-agent"), Args: []string{"-config", cfg}, LogPath: filepath.Join(c.dir, name+".log")}}
	c.agents = append(c.agents, a)
	c.startAgent(a)
	return a
}

// nginxRequest is one planned request and what the agent must make of it.
type nginxRequest struct {
	method, path, ua, referrer string
	status                     int
	// campaign and typ are the expected event; typ "" means the line is
	// skipped (asset, 404, HEAD). bot: the user agent is a crawler.
	campaign, typ string
	bot           bool

	start, done time.Time
}

var (
	nginxCampaigns = []string{"spring_sale", "black_friday", "newsletter_nov", "summer sale", "rentrée_2026"}
	nginxChannels  = [][2]string{{"google", "cpc"}, {"facebook", "paid_social"}, {"newsletter", "email"}, {"bing", "cpc"}}
	nginxReferrers = []string{"", "https://www.google.com/", "https://l.facebook.com/", "https://shop.example.com/"}
)

// plannedRequests draws n requests from a fixed seed. Campaign names with
// a space and non-ASCII letters go through the query the way browsers
// encode them ("+", %C3%A9).
func plannedRequests(n int, seed uint64) []nginxRequest {
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	reqs := make([]nginxRequest, n)
	for i := range reqs {
		r := &reqs[i]
		r.method, r.status = http.MethodGet, http.StatusOK
		r.ua = loadgen.BrowserUAs[rng.IntN(len(loadgen.BrowserUAs))]
		if rng.IntN(100) < 8 {
			r.ua, r.bot = loadgen.CrawlerUAs[rng.IntN(len(loadgen.CrawlerUAs))], true
		}
		r.referrer = nginxReferrers[rng.IntN(len(nginxReferrers))]
		campaign := nginxCampaigns[rng.IntN(len(nginxCampaigns))]
		ch := nginxChannels[rng.IntN(len(nginxChannels))]
		utm := "?" + url.Values{"utm_campaign": {campaign}, "utm_source": {ch[0]}, "utm_medium": {ch[1]}}.Encode()
		pages := []string{"/", "/p/" + strconv.Itoa(rng.IntN(40)), "/p/" + strconv.Itoa(rng.IntN(40)) + ".html", "/landing/" + strconv.Itoa(rng.IntN(5)) + "/"}
		page := pages[rng.IntN(len(pages))]
		switch k := rng.IntN(100); {
		case k < 55: // landing page with UTM parameters
			r.path, r.campaign, r.typ = page+utm, campaign, "pageview"
		case k < 63: // page without a campaign
			r.path, r.campaign, r.typ = page, "(none)", "pageview"
		case k < 78: // ad click, redirected
			r.path, r.status, r.campaign, r.typ = "/click"+utm, http.StatusFound, campaign, "click"
		case k < 88: // asset: default rule, skip_asset
			r.path = "/style.css?v=" + strconv.Itoa(rng.IntN(3))
		case k < 95: // not found: skip_status, even with UTM parameters
			r.path, r.status = "/gone/"+strconv.Itoa(rng.IntN(100))+utm, http.StatusNotFound
		default: // HEAD: skip_method
			r.method, r.path = http.MethodHead, page+utm
		}
	}
	return reqs
}

// do sends the request, checks nginx answered as planned, and records
// when it was sent and answered.
func (r *nginxRequest) do(c *http.Client, base string) error {
	req, err := http.NewRequest(r.method, base+r.path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", r.ua)
	if r.referrer != "" {
		req.Header.Set("Referer", r.referrer)
	}
	r.start = time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r.done = time.Now()
	if err != nil {
		return err
	}
	if resp.StatusCode != r.status {
		return fmt.Errorf("%s %s: nginx answered %d, want %d", r.method, r.path, resp.StatusCode, r.status)
	}
	return nil
}

// nginxTruth is the ground truth of a run.
type nginxTruth struct {
	// totals are exact per (campaign, type), Minute 0.
	totals map[loadgen.Key]loadgen.Cell
	// sure holds the requests whose minute is known; maybe, per minute,
	// those that may fall in it (each is counted under both candidates).
	sure, maybe             map[loadgen.Key]loadgen.Cell
	events, bots, straddled int
}

// clockSlack widens every request's interval; nginx and the test read the
// same wall clock, so this is caution, not a correction.
const clockSlack = 20 * time.Millisecond

func truthOf(reqs []nginxRequest) *nginxTruth {
	tr := &nginxTruth{totals: map[loadgen.Key]loadgen.Cell{}, sure: map[loadgen.Key]loadgen.Cell{}, maybe: map[loadgen.Key]loadgen.Cell{}}
	add := func(m map[loadgen.Key]loadgen.Cell, k loadgen.Key, bot bool) {
		c := m[k]
		if bot {
			c.Bots++
		} else {
			c.Count++
		}
		m[k] = c
	}
	for _, r := range reqs {
		if r.typ == "" {
			continue
		}
		if r.bot {
			tr.bots++
		} else {
			tr.events++
		}
		add(tr.totals, loadgen.Key{Campaign: r.campaign, Type: r.typ}, r.bot)
		lo := r.start.Add(-clockSlack).Truncate(time.Minute)
		hi := r.done.Add(clockSlack).Truncate(time.Minute)
		if lo.Equal(hi) {
			add(tr.sure, loadgen.Key{Campaign: r.campaign, Type: r.typ, Minute: lo.Unix()}, r.bot)
			continue
		}
		tr.straddled++
		for m := lo; !m.After(hi); m = m.Add(time.Minute) {
			add(tr.maybe, loadgen.Key{Campaign: r.campaign, Type: r.typ, Minute: m.Unix()}, r.bot)
		}
	}
	return tr
}

// check compares InfluxDB's cells with the truth: exact totals per
// (campaign, type), and every minute within its bracket. It describes the
// first difference, or returns "".
func (tr *nginxTruth) check(got map[loadgen.Key]loadgen.Cell) string {
	if got == nil {
		return "no answer from InfluxDB"
	}
	sums := map[loadgen.Key]loadgen.Cell{}
	keys := map[loadgen.Key]bool{}
	for _, m := range []map[loadgen.Key]loadgen.Cell{got, tr.sure, tr.maybe} {
		for k := range m {
			keys[k] = true
		}
	}
	for k := range keys {
		g := got[k]
		if g.ValueMicros != 0 || g.CostMicros != 0 {
			return fmt.Sprintf("%s/%s: value or cost %+v from page views and clicks", k.Campaign, k.Type, g)
		}
		sk := loadgen.Key{Campaign: k.Campaign, Type: k.Type}
		s := sums[sk]
		s.Count += g.Count
		s.Bots += g.Bots
		sums[sk] = s
		lo, hi := tr.sure[k], tr.sure[k]
		hi.Count += tr.maybe[k].Count
		hi.Bots += tr.maybe[k].Bots
		if g.Count < lo.Count || g.Count > hi.Count || g.Bots < lo.Bots || g.Bots > hi.Bots {
			return fmt.Sprintf("%s/%s@%s: got %d events and %d bots, want %d..%d and %d..%d", k.Campaign, k.Type,
				time.Unix(k.Minute, 0).UTC().Format("15:04"), g.Count, g.Bots, lo.Count, hi.Count, lo.Bots, hi.Bots)
		}
	}
	for k, s := range sums {
		if w := tr.totals[k]; s != w {
			return fmt.Sprintf("%s/%s: got %d events and %d bots in all, want %d and %d", k.Campaign, k.Type, s.Count, s.Bots, w.Count, w.Bots)
		}
	}
	return ""
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte{'\n'})
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

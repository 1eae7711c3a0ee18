package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tally-edge/tally/internal/harness"
)

func prometheusBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("TALLY_REQUIRE_OPS_TOOLS") != "" {
			t.Fatal("prometheus not found (make test-deps installs Debian's prometheus package)")
		}
		t.Skip("prometheus not found; make test-deps installs it")
	}
	return p
}

// promAPI is a Prometheus HTTP API client.
type promAPI struct{ base string }

func (p promAPI) get(ctx context.Context, path string, q url.Values, out any) error {
	u := p.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

// query runs an instant query and returns the number of samples.
func (p promAPI) query(ctx context.Context, expr string) (int, error) {
	var data struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	}
	if err := p.get(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return 0, err
	}
	return len(data.Result), nil
}

// testPrometheus runs a real Prometheus with deploy/prometheus's
// configuration and rules (only the intervals shortened, and the target
// files naming this cluster): every target is up, every rule evaluates
// without error, every metric the rules and the operations dashboard name
// exists, every dashboard query runs, the alerts are quiet on a healthy
// cluster, and a node stopped makes the node alerts' conditions true.
func testPrometheus(t *testing.T, c *cluster) {
	bin := prometheusBin(t)
	dir := t.TempDir()
	cfgPath := preparePrometheus(t, dir, c)
	ports, err := harness.FreeTCP(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	proc := &harness.Proc{Name: "prometheus", Bin: bin, LogPath: filepath.Join(dir, "prometheus.log"),
		Args: []string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr, "--log.level=warn"}}
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := proc.Stop(15 * time.Second); err != nil {
			t.Errorf("stopping prometheus: %v", err)
		}
		if t.Failed() {
			t.Logf("---- prometheus log ----\n%s", proc.LogTail(30))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := harness.WaitHTTP(ctx, "http://"+addr+"/-/ready", proc); err != nil {
		t.Fatal(err)
	}
	prom := promAPI{base: "http://" + addr}

	// Every target up.
	want := len(c.nodes) + 1
	waitFor(t, ctx, "every target up", func() (bool, string) {
		var targets struct {
			Active []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := prom.get(ctx, "/api/v1/targets", nil, &targets); err != nil {
			return false, err.Error()
		}
		up := 0
		var state []string
		for _, tg := range targets.Active {
			if tg.Health == "up" {
				up++
			}
			state = append(state, fmt.Sprintf("%s %s %s %s", tg.Labels["job"], tg.Labels["instance"], tg.Health, tg.LastError))
		}
		return len(targets.Active) == want && up == want, strings.Join(state, "; ")
	})

	// Every rule loaded and evaluated without error.
	ruleExprs := map[string]string{}
	waitFor(t, ctx, "every rule evaluated", func() (bool, string) {
		var rules struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name           string `json:"name"`
					Query          string `json:"query"`
					Type           string `json:"type"`
					Health         string `json:"health"`
					LastError      string `json:"lastError"`
					LastEvaluation string `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := prom.get(ctx, "/api/v1/rules", nil, &rules); err != nil {
			return false, err.Error()
		}
		n, ok := 0, true
		var bad []string
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				n++
				ruleExprs[r.Name] = r.Query
				if r.Health != "ok" {
					ok = false
					bad = append(bad, fmt.Sprintf("%s: %s %s", r.Name, r.Health, r.LastError))
				}
			}
		}
		return ok && n >= 14, fmt.Sprintf("%d rules; %v", n, bad)
	})

	// Every metric the rules and the operations dashboard name is one the
	// processes expose. Label vectors without a child yet (no 503 so far,
	// say) have no series: those must at least be registered in the code.
	ops := readDashboard(t, "tally-operations.json")
	var exprs []string
	for _, e := range ruleExprs {
		exprs = append(exprs, e)
	}
	for _, p := range ops.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, strings.ReplaceAll(tg.Expr, "$__rate_interval", "1m"))
		}
	}
	// Give rates a minute of samples.
	time.Sleep(5 * time.Second)
	observed := map[string]bool{}
	for _, name := range metricNames(exprs) {
		n, err := prom.query(ctx, fmt.Sprintf(`count({__name__=~"%s(_bucket|_count|_sum)?"})`, name))
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			observed[name] = true
			continue
		}
		if !registeredInCode(t, name) {
			t.Errorf("metric %s is named by a rule or panel but neither scraped nor registered in the code", name)
		} else {
			t.Logf("metric %s: registered in the code, no series yet (a label vector not used so far)", name)
		}
	}
	if len(observed) < 15 {
		t.Errorf("only %d metrics observed: %v", len(observed), observed)
	}

	// Every operations panel's query runs; those over observed metrics
	// return data.
	for _, p := range ops.Panels {
		for _, tg := range p.Targets {
			expr := strings.ReplaceAll(tg.Expr, "$__rate_interval", "1m")
			n, err := prom.query(ctx, expr)
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
				continue
			}
			all := true
			for _, m := range metricNames([]string{expr}) {
				all = all && observed[m]
			}
			if all && n == 0 && !strings.Contains(expr, ":ratio_rate") {
				t.Errorf("panel %q: no data from %s", p.Title, expr)
			}
		}
	}

	// A healthy cluster: no alert condition holds.
	alerts := map[string]string{}
	for name, e := range ruleExprs {
		if strings.HasPrefix(name, "Tally") {
			alerts[name] = e
		}
	}
	for name, e := range alerts {
		if n, err := prom.query(ctx, e); err != nil || n != 0 {
			t.Errorf("healthy cluster: alert %s condition holds (%d samples, %v)", name, n, err)
		}
	}

	// Stop one node: Prometheus cannot scrape it, and the two others see
	// fewer alive members than there are aggregator targets.
	if err := c.nodes[2].proc.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"TallyNodeDown", "TallyClusterMemberMissing"} {
		waitFor(t, ctx, name+" condition after a node stops", func() (bool, string) {
			n, err := prom.query(ctx, alerts[name])
			if err != nil {
				return false, err.Error()
			}
			return n > 0, fmt.Sprintf("%d samples", n)
		})
	}
}

var metricRE = regexp.MustCompile(`(?:^|[^:a-zA-Z0-9_])(tally_(?:agent|aggregator)_[a-z0-9_]+)(?:[^:a-zA-Z0-9_]|$)`)

// metricNames returns the tally metrics named in expressions (histogram
// series folded to their family), excluding recording-rule names.
func metricNames(exprs []string) []string {
	set := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricRE.FindAllStringSubmatch(e, -1) {
			name := m[1]
			for _, suf := range []string{"_bucket", "_count", "_sum"} {
				if strings.HasSuffix(name, "_seconds"+suf) {
					name = strings.TrimSuffix(name, suf)
				}
			}
			set[name] = true
		}
	}
	var out []string
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// registeredInCode reports whether a metric name appears as a string
// literal in the agent's or aggregator's non-test sources.
func registeredInCode(t *testing.T, name string) bool {
	t.Helper()
	found := false
	for _, root := range []string{"../../agent", "../../aggregator"} {
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || found || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(path)
			if err == nil && strings.Contains(string(b), `"`+name+`"`) {
				found = true
			}
			return nil
		})
	}
	return found
}

// preparePrometheus copies the shipped configuration and rules into dir
// with 1 s intervals and target files naming the test's processes.
func preparePrometheus(t *testing.T, dir string, c *cluster) string {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	global := cfg["global"].(map[string]any)
	global["scrape_interval"], global["evaluation_interval"] = "1s", "1s"
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	must(t, os.WriteFile(cfgPath, out, 0o644))
	rules, err := os.ReadFile("../../deploy/prometheus/tally-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "tally-rules.yml"), rules, 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "targets"), 0o755))
	var aggs []string
	for _, n := range c.nodes {
		aggs = append(aggs, n.http)
	}
	writeTargets := func(name string, targets []string) {
		b, _ := yaml.Marshal([]map[string]any{{"targets": targets}})
		must(t, os.WriteFile(filepath.Join(dir, "targets", name), b, 0o644))
	}
	writeTargets("tally-aggregator.yml", aggs)
	writeTargets("tally-agent.yml", []string{c.agent.http})
	return cfgPath
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		select {
		case <-ctx.Done():
			t.Fatalf("%s: never happened; last: %s", what, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/reload"
)

// TestReloadLogRules runs a real agent tailing a log, reloads it with a
// rule that makes /signup a conversion, and checks that lines written
// after the reload count as conversions and those before as page views,
// with no line lost or counted twice by the switch. A reload whose rule
// does not compile changes nothing; a new log path is named as waiting
// for a restart.
func TestReloadLogRules(t *testing.T) {
	cfg, cap := captureSetup(t)
	path := filepath.Join(t.TempDir(), "access.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spec := logparse.DefaultSpec()
	spec.Format, spec.Site = "combined", "shop.example.com"
	cfg.Sources.Logs = []config.LogSource{{Paths: []string{path}, PollInterval: 50 * time.Millisecond, Spec: spec}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	// The reload source: the test hands each reload its configuration.
	requests, trigger := reload.Requests()
	var mu sync.Mutex
	var next config.Config
	load := func() (config.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return next, next.Validate()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- agent.RunWith(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), agent.Options{
			Ready:  func(l agent.Listeners) { ready <- l.HTTP },
			Reload: reload.Source[config.Config]{Requests: requests, Load: load}})
	}()
	addr := <-ready
	waitFollowing(t, addr, 1)
	reloadWith := func(c config.Config, wantReloads int) string {
		t.Helper()
		mu.Lock()
		next = c
		mu.Unlock()
		trigger()
		want := fmt.Sprintf("\ntally_agent_config_reloads_total %d\n", wantReloads)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if strings.Contains(agentMetrics(t, addr), want) {
				// The count is the last thing a reload sets: a scrape
				// after the one that saw it sees the whole outcome.
				return agentMetrics(t, addr)
			}
			if time.Now().After(deadline) {
				t.Fatalf("reload %d not done after 10 s", wantReloads)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	write := func(n int) {
		now := time.Now().Format("02/Jan/2006:15:04:05 -0700")
		for i := range n {
			fmt.Fprintf(f, "198.51.100.%d - - [%s] \"GET /signup?utm_campaign=spring&utm_source=google&utm_medium=cpc HTTP/1.1\" 200 512 \"-\" \"%s\"\n",
				i%200+1, now, loadgen.BrowserUAs[i%len(loadgen.BrowserUAs)])
		}
	}
	counts := func() map[string]uint64 {
		out := map[string]uint64{}
		for _, c := range cap.latest() {
			out[c.Series.Type] += c.State.Count
		}
		return out
	}
	waitCounts := func(pageviews, conversions uint64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := counts()
			if got["pageview"] == pageviews && got["conversion"] == conversions {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("shipped %v, want %d pageviews and %d conversions", got, pageviews, conversions)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	write(300)
	waitCounts(300, 0)

	// A rule that does not compile: nothing changes, the failure counted.
	bad := cfg
	bad.Sources.Logs = []config.LogSource{cfg.Sources.Logs[0]}
	bad.Sources.Logs[0].Rules = []logparse.Rule{{Regex: "(", Type: "conversion"}}
	if m := reloadWith(bad, 1); !strings.Contains(m, "\ntally_agent_config_reload_failures_total 1\n") {
		t.Fatal("a reload with a broken rule was not counted as failed")
	}
	write(100)
	waitCounts(400, 0)

	// /signup becomes a conversion.
	good := cfg
	good.Sources.Logs = []config.LogSource{cfg.Sources.Logs[0]}
	good.Sources.Logs[0].Rules = []logparse.Rule{{Name: "signup", Match: "/signup", Type: "conversion"}}
	if m := reloadWith(good, 2); !strings.Contains(m, "\ntally_agent_config_restart_pending 0\n") {
		t.Fatal("a change of rules alone was reported as waiting for a restart")
	}
	write(200)
	waitCounts(400, 200)

	// Another file: waits for a restart, and the rules stay.
	moved := good
	moved.Sources.Logs = []config.LogSource{good.Sources.Logs[0]}
	moved.Sources.Logs[0].Paths = []string{path + ".other"}
	if m := reloadWith(moved, 3); !strings.Contains(m, "\ntally_agent_config_restart_pending 1\n") {
		t.Fatal("a new log path was not reported as waiting for a restart")
	}
	write(50)
	waitCounts(400, 250)

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func agentMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

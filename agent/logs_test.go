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
	"testing"
	"time"

	"github.com/tally-edge/tally/agent"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/internal/loadgen"
)

// TestTailedLogsAreCountedExactly runs a real agent with a log source,
// writes combined lines (page views, clicks by rule, crawlers, garbage)
// while it runs, rotates the file by rename-and-create mid-way, and checks
// the shipped counts against what was written.
func TestTailedLogsAreCountedExactly(t *testing.T) {
	cfg, cap := captureSetup(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	spec := logparse.DefaultSpec()
	spec.Format, spec.Site = "combined", "shop.example.com"
	spec.Rules = []logparse.Rule{{Name: "ad click", Match: "/click", Type: "click"}}
	cfg.Sources.Logs = []config.LogSource{{Paths: []string{path}, PollInterval: 50 * time.Millisecond, RotateWait: 300 * time.Millisecond, Spec: spec}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- agent.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(l agent.Listeners) { ready <- l.HTTP })
	}()
	// The tailer starts on its own goroutine: rotating before it has
	// opened the file would hide the first file from it.
	waitFollowing(t, <-ready, 1)

	var pageviews, clicks, bots int
	write := func(w io.Writer, n, from int) {
		now := time.Now()
		for i := from; i < from+n; i++ {
			ua := loadgen.BrowserUAs[i%len(loadgen.BrowserUAs)]
			isBot := i%17 == 0
			if isBot {
				ua = loadgen.CrawlerUAs[i%len(loadgen.CrawlerUAs)]
				bots++
			}
			req := fmt.Sprintf("/p/%d?utm_campaign=spring&utm_source=google&utm_medium=cpc", i%50)
			if i%5 == 0 {
				req = "/click?utm_campaign=spring&utm_source=google&utm_medium=cpc"
				if !isBot {
					clicks++
				}
			} else if !isBot {
				pageviews++
			}
			if i%97 == 0 {
				fmt.Fprintf(w, "not a log line %d\n", i)
				if isBot {
					bots--
				} else if i%5 == 0 {
					clicks--
				} else {
					pageviews--
				}
				continue
			}
			fmt.Fprintf(w, "198.51.100.%d - - [%s] \"GET %s HTTP/1.1\" 200 512 \"-\" \"%s\"\n", i%200+1,
				now.Format("02/Jan/2006:15:04:05 -0700"), req, ua)
		}
	}
	write(f, 3000, 0)
	// Rotate: rename, keep writing the old file briefly (as nginx does
	// until it reopens), then create the new one.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	write(f, 500, 3000)
	f.Close()
	f, err = os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	write(f, 2000, 3500)
	f.Close()

	want := uint64(pageviews + clicks)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var events, botsShipped uint64
		for _, c := range cap.latest() {
			events += c.State.Count
			for _, n := range c.State.Bots {
				botsShipped += n
			}
		}
		if events == want && botsShipped == uint64(bots) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shipped %d events and %d bots, want %d (%d pageviews, %d clicks) and %d", events, botsShipped, want, pageviews, clicks, bots)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// waitFollowing waits until the agent at addr follows n log files, as its
// metrics say.
func waitFollowing(t *testing.T, addr string, n int) {
	t.Helper()
	want := fmt.Sprintf("\ntally_agent_log_files %d\n", n)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(body), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent does not follow %d log file(s) after 10 s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

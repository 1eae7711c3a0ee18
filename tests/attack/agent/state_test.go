package agent

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/wire"
)

// hasCampaign reports whether a batch holds a contribution of campaign.
func hasCampaign(b *wire.Batch, campaign string) bool {
	for _, c := range b.Contributions {
		if c.Series.Campaign == campaign {
			return true
		}
	}
	return false
}

// TestRefusedBatchesAreKeptAndReplayed: batches an aggregator refuses as
// malformed become dead letters (listed by `tally-agent dead-letters
// list`), the others keep flowing, and once the cause is fixed `replay`
// ships them, exactly once. Attack of issue 9: dead letters "are not
// fsynced or bounded, have no replay".
func TestRefusedBatchesAreKeptAndReplayed(t *testing.T) {
	skipShort(t)
	s := startStandin(t, "agent-dl")
	state := t.TempDir()
	// One contribution per batch, so the poisoned campaign's batches
	// carry nothing else.
	cfg := agentConfig(t, s, "agent-dl", state, proxyHTTP, "")
	cfgBytes, _ := os.ReadFile(cfg)
	cfgBytes = bytes.Replace(cfgBytes, []byte("  backoff_min: 50ms\n"), []byte("  backoff_min: 50ms\n  max_batch_contributions: 1\n"), 1)
	os.WriteFile(cfg, cfgBytes, 0o644)
	s.setReject(func(b *wire.Batch) *wire.Ack {
		if hasCampaign(b, "poison") {
			return &wire.Ack{Status: wire.AckRejected, Reason: "invalid message: poison", Code: wire.RejectMalformed}
		}
		return nil
	})
	a := startAgent(t, "agent-dl", cfg, state)
	b := during(t, a, "", func() error {
		body := []byte(`{"type":"click","campaign":"poison"}` + "\n" + `{"type":"click","campaign":"poison"}`)
		code, answer, err := attack(a.url("/v1/events"), body, "User-Agent", browserUAs[0])
		if err != nil || code != 202 {
			return fmt.Errorf("%d %s %v", code, answer, err)
		}
		time.Sleep(2 * time.Second) // flushed and refused
		return nil
	})
	checkLegitExact(t, a, s, b)
	if got := s.totals()["poison"]; got != (counts{}) {
		t.Fatalf("refused batches counted: %+v", got)
	}
	out, err := exec.Command(agentBin, "dead-letters", "list", "-config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "invalid message: poison") {
		t.Fatalf("dead-letters list: %v\n%s", err, out)
	}
	// Fixed: the aggregator takes them now. Replay with the agent stopped.
	s.setReject(nil)
	out, err = exec.Command(agentBin, "dead-letters", "replay", "-config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "replayed") {
		t.Fatalf("dead-letters replay: %v\n%s", err, out)
	}
	a = startAgent(t, "agent-dl", cfg, state)
	deadline := time.Now().Add(20 * time.Second)
	for s.totals()["poison"].Events != 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if got := s.totals()["poison"]; got.Events != 2 {
		t.Fatalf("after replay: %+v, want the 2 events", got)
	}
	if got := s.totals()["legit"]; got.Events != b.truth().Events {
		t.Fatalf("legit changed after replay: %+v", got)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "dead-letter", "*")); len(left) != 0 {
		t.Fatalf("dead letters left after replay: %v", left)
	}
}

// TestIdentityRejectionStopsShipping: an aggregator that refuses the agent
// itself (its name and certificate disagree) stops the shipping with one
// error and a failing /readyz, instead of dead-lettering batch after
// batch; once fixed, everything kept arrives. Attack of issue 9: "a
// certificate/name mismatch dead-letters the whole stream batch by batch".
func TestIdentityRejectionStopsShipping(t *testing.T) {
	skipShort(t)
	s := startStandin(t, "agent-id")
	state := t.TempDir()
	s.setReject(func(*wire.Batch) *wire.Ack {
		return &wire.Ack{Status: wire.AckRejected, Code: wire.RejectIdentity, Reason: `agent name "agent-id" does not match its certificate`}
	})
	cfg := agentConfig(t, s, "agent-id", state, proxyHTTP, "")
	a := startAgent(t, "agent-id", cfg, state)
	b := during(t, a, "", func() error {
		time.Sleep(3 * time.Second) // several flushes
		return nil
	})
	if n := s.batches(); n == 0 || n > 8 {
		t.Fatalf("%d batches were sent to an aggregator that refuses the agent; want the first few only", n)
	}
	if code := a.readyz(); code != 503 {
		t.Fatalf("/readyz %d while shipping is stopped", code)
	}
	if letters, _ := filepath.Glob(filepath.Join(state, "dead-letter", "*")); len(letters) != 0 {
		t.Fatalf("%d dead letters: identity rejections must not dead-letter", len(letters))
	}
	if got := strings.Count(a.logs.String(), `"msg":"shipping stopped"`); got != 1 {
		t.Fatalf("%d \"shipping stopped\" errors logged, want one", got)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	s.setReject(nil)
	a = startAgent(t, "agent-id", cfg, state)
	deadline := time.Now().Add(20 * time.Second)
	for s.totals()["legit"].Events != b.truth().Events && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	checkLegitExact(t, a, s, b)
}

// TestManyImportedFilesNeverFailFlushes: a backfill of 600 files keeps a
// position per file; they never make a flush too large to commit, and
// every line counts once. Attack of issue 9: "source positions are never
// pruned (about 500 files and every flush fails)".
func TestManyImportedFilesNeverFailFlushes(t *testing.T) {
	skipShort(t)
	s := startStandin(t, "agent-many")
	state := t.TempDir()
	cfg := agentConfig(t, s, "agent-many", state, "", "")
	dir := filepath.Join(t.TempDir(), strings.Repeat("a-rather-long-directory-name-", 3))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 600
	var paths []string
	ts := time.Now().Add(-time.Hour).UTC().Format("02/Jan/2006:15:04:05 -0700")
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("access-%04d.log", i))
		line := fmt.Sprintf("192.0.2.%d - - [%s] \"GET /p?utm_campaign=many&utm_source=s HTTP/1.1\" 200 10 \"-\" %q\n", 1+i%200, ts, browserUAs[0])
		if err := os.WriteFile(p, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command(agentBin, append([]string{"import-log", "-config", cfg, "-progress", "never"}, paths...)...)
	done := make(chan error, 1)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("import-log: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("import-log of %d files did not finish in 2 minutes\n%s", files, out.String())
	}
	if got := s.totals()["many"]; got.Events != files {
		t.Fatalf("%d events arrived from %d one-line files\n%s", got.Events, files, out.String())
	}
}

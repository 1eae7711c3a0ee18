package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
)

// storageNode is one aggregator configured for an InfluxDB of the test's.
type storageNode struct {
	t        *testing.T
	dir, cfg string
	http     string
	proc     *harness.Proc
}

// newStorageNode writes the configuration of one aggregator against
// influxURL with extra keys under influx:.
func newStorageNode(t *testing.T, influxURL, influxExtra string) *storageNode {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: needs built binaries and InfluxDB")
	}
	n := &storageNode{t: t, dir: t.TempDir()}
	certs := filepath.Join(n.dir, "certs")
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Aggregators: []string{"agg-1"}}); err != nil {
		t.Fatal(err)
	}
	tcp, err := harness.FreeTCP(1)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := harness.FreeUDP(1)
	if err != nil {
		t.Fatal(err)
	}
	n.http = fmt.Sprintf("127.0.0.1:%d", tcp[0])
	n.cfg = filepath.Join(n.dir, "agg-1.yaml")
	if err := harness.WriteAggregatorConfig(n.cfg, harness.AggregatorOptions{Name: "agg-1", DataDir: filepath.Join(n.dir, "agg-1"),
		QUICAddr: fmt.Sprintf("127.0.0.1:%d", udp[0]), HTTPAddr: n.http, CertsDir: certs, InfluxURL: influxURL,
		InfluxBucket: "tally/minutes", InfluxExtra: influxExtra}); err != nil {
		t.Fatal(err)
	}
	n.proc = &harness.Proc{Name: "agg-1", Bin: filepath.Join(binDir, "tally-aggregator"), Args: []string{"-config", n.cfg},
		LogPath: filepath.Join(n.dir, "agg-1.log")}
	t.Cleanup(func() {
		if err := n.proc.Stop(30 * time.Second); err != nil {
			t.Errorf("stopping aggregator: %v", err)
		}
		if t.Failed() {
			t.Logf("---- aggregator log tail ----\n%s", n.proc.LogTail(40))
		}
	})
	return n
}

// readyz returns /readyz's status and body.
func (n *storageNode) readyz() (int, string) {
	resp, err := http.Get("http://" + n.http + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// status runs `tally-aggregator status` against the node.
func (n *storageNode) status() (string, error) {
	out, err := exec.Command(filepath.Join(binDir, "tally-aggregator"), "status", "-url", "http://"+n.http).CombinedOutput()
	return string(out), err
}

// TestStorageSetUpOnStockInfluxDB starts an aggregator against InfluxDB
// 1.8 as it ships (Flux off) holding no database: the node creates the
// database and retention policy of influx.bucket, reads with InfluxQL,
// and is ready within seconds; /readyz and `status` say what they wait
// for while InfluxDB is down, in the same words.
func TestStorageSetUpOnStockInfluxDB(t *testing.T) {
	influx := influxtest.StartWith(t, influxtest.Options{DisableFlux: true, NoDatabase: true})
	n := newStorageNode(t, influx.URL(), "")

	// InfluxDB down at the node's start: not ready, and it says why.
	if err := influx.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.proc.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := harness.WaitHTTP(ctx, "http://"+n.http+"/healthz", n.proc); err != nil {
		t.Fatal(err)
	}
	wantWords := "cannot reach InfluxDB at " + influx.URL() + " (check influx.url"
	var body string
	for {
		var code int
		if code, body = n.readyz(); code == http.StatusServiceUnavailable && strings.Contains(body, wantWords) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("/readyz while InfluxDB is down = %q; want 503 saying %q", body, wantWords)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := n.status()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, wantWords) {
		t.Fatalf("status while InfluxDB is down (%v):\n%s\nwant exit 1 and %q", err, out, wantWords)
	}

	// InfluxDB back: ready within seconds, the bucket created.
	if err := influx.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := harness.WaitHTTP(ctx, "http://"+n.http+"/readyz", n.proc); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// The node retries once a second at first, growing to 10 s; it has
	// waited for InfluxDB for a few attempts only.
	if took > 15*time.Second {
		t.Fatalf("ready %s after InfluxDB came back; want seconds", took)
	}
	t.Logf("ready %s after InfluxDB came back", took.Round(time.Millisecond))
	ans, err := influx.Query(ctx, "", `SHOW RETENTION POLICIES ON "tally"`)
	if err != nil || !bytes.Contains(ans, []byte(`["minutes","0s"`)) {
		t.Fatalf("retention policies of the created database: %s, %v; want minutes with infinite duration", ans, err)
	}
	out, err = n.status()
	if err != nil || !strings.Contains(out, "reading with influxql, bucket tally/minutes") {
		t.Fatalf("status once ready (%v):\n%s", err, out)
	}
	if !strings.Contains(n.proc.LogTail(40), `created="database \"tally\" with retention policy \"minutes\""`) {
		t.Fatalf("the log does not say what was created:\n%s", n.proc.LogTail(40))
	}
}

// TestStorageCreationForbidden: with influx.create_bucket false and no
// database, the node exits non-zero at once with one message naming the
// setting and the statement that creates the bucket by hand.
func TestStorageCreationForbidden(t *testing.T) {
	influx := influxtest.StartWith(t, influxtest.Options{DisableFlux: true, NoDatabase: true})
	n := newStorageNode(t, influx.URL(), "create_bucket: false")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "tally-aggregator"), "-config", n.cfg).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("aggregator with creation forbidden: %v; want exit status 1\n%s", err, out)
	}
	for _, want := range []string{
		`has no database \"tally\" and influx.create_bucket is false`,
		`CREATE DATABASE \"tally\" WITH DURATION INF NAME \"minutes\"`,
		"set influx.create_bucket: true",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the exit message lacks %q:\n%s", want, out)
		}
	}
	t.Logf("exited after %s: %s", time.Since(start).Round(time.Millisecond), lastLine(out))
	if ans, err := influx.Query(ctx, "", "SHOW DATABASES"); err != nil || bytes.Contains(ans, []byte(`"tally"`)) {
		t.Fatalf("databases after a forbidden start: %s, %v; want no tally", ans, err)
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

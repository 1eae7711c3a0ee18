package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
)

// alertmanagerBinary finds Alertmanager: $TALLY_ALERTMANAGER, Debian's
// prometheus-alertmanager, or alertmanager on the PATH. Without it the test
// skips, unless TALLY_REQUIRE_ALERTMANAGER is set (make test sets it).
func alertmanagerBinary(t *testing.T) string {
	t.Helper()
	for _, c := range []string{os.Getenv("TALLY_ALERTMANAGER"), "prometheus-alertmanager", "alertmanager"} {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if os.Getenv("TALLY_REQUIRE_ALERTMANAGER") != "" {
		t.Fatal("Alertmanager not found (make test-deps installs Debian's prometheus-alertmanager)")
	}
	t.Skip("Alertmanager not found: install prometheus-alertmanager (make test-deps) or set TALLY_ALERTMANAGER")
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// amNotification is the part of Alertmanager's webhook message we check.
type amNotification struct {
	Status string `json:"status"`
	Alerts []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
}

// startAlertmanager runs a real Alertmanager on loopback that routes every
// alert, resolved ones too, to hook, and returns its base URL.
func startAlertmanager(t *testing.T, hook string) string {
	bin := alertmanagerBinary(t)
	dir := t.TempDir()
	conf := fmt.Sprintf(`route:
  receiver: tally-test
  group_by: [alert_id]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: tally-test
    webhook_configs:
      - url: %s
        send_resolved: true
`, hook)
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var base string
	for try := 0; ; try++ {
		port := freePort(t)
		base = fmt.Sprintf("http://127.0.0.1:%d", port)
		var logs bytes.Buffer
		cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "alertmanager.yml"),
			"--storage.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
			"--cluster.listen-address=", "--log.level=warn")
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		ready, gone := false, false
		deadline := time.Now().Add(30 * time.Second)
		for !ready && !gone && time.Now().Before(deadline) {
			select {
			case err := <-exited:
				if try < 3 && strings.Contains(logs.String(), "address already in use") {
					gone = true // another process took the port: try another
					continue
				}
				t.Fatalf("alertmanager exited: %v\n%s", err, logs.String())
			case <-time.After(100 * time.Millisecond):
			}
			if resp, err := http.Get(base + "/-/ready"); err == nil {
				resp.Body.Close()
				ready = resp.StatusCode == http.StatusOK
			}
		}
		if ready {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return base
		}
		if !gone {
			cmd.Process.Kill()
			<-exited
		}
		if try >= 3 {
			t.Fatalf("alertmanager not ready:\n%s", logs.String())
		}
	}
}

// TestAlertmanager pushes a firing and then a resolved alert to a real
// Alertmanager, which holds it with our labels and notifies its own
// webhook receiver of both.
func TestAlertmanager(t *testing.T) {
	hook := newReceiver(t, nil)
	base := startAlertmanager(t, hook.URL+"/am")

	cfg := testConfig(t)
	cfg.Alertmanagers = []Alertmanager{{Name: "am", URL: base}}
	cfg.ResendInterval = time.Second
	cfg.DashboardURL = "https://tally.example.com"
	n, _ := start(t, cfg)

	a := testAlert(1)
	a.Start = time.Now().Add(-time.Minute).Truncate(time.Minute)
	a.At = time.Now()
	a.ID = alert.ID(a.Campaign, a.Metric, a.Rule, a.Start)
	n.Send(a)

	// Alertmanager holds it, active, with our labels.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []struct {
			Labels       map[string]string      `json:"labels"`
			Status       struct{ State string } `json:"status"`
			GeneratorURL string                 `json:"generatorURL"`
		}
		resp, err := http.Get(base + "/api/v2/alerts?filter=alert_id%3D%22" + a.ID + "%22")
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
		}
		if len(got) == 1 && got[0].Status.State == "active" {
			l := got[0].Labels
			if l["alertname"] != "tally_anomaly" || l["campaign"] != "spring" || l["metric"] != "conversions" ||
				l["severity"] != "warning" || l["direction"] != "drop" || !strings.Contains(got[0].GeneratorURL, "alert="+a.ID) {
				t.Fatalf("alert in Alertmanager: %+v", got[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alert not active in Alertmanager: %+v (%v)", got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Alertmanager notifies its receiver: firing, then resolved.
	waitFor := func(status string) {
		t.Helper()
		for {
			var msg amNotification
			if err := json.Unmarshal(hook.wait(t).body, &msg); err != nil {
				t.Fatal(err)
			}
			if msg.Status == status && len(msg.Alerts) == 1 && msg.Alerts[0].Labels["alert_id"] == a.ID {
				if !strings.Contains(msg.Alerts[0].Annotations["summary"], "conversions is far below") {
					t.Fatalf("annotations %+v", msg.Alerts[0].Annotations)
				}
				return
			}
		}
	}
	waitFor("firing")

	res := a
	res.State = alert.StateResolved
	end := time.Now()
	res.At, res.End = end, &end
	n.Send(res)
	waitFor("resolved")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v2/alerts?active=true&filter=alert_id%3D%22"+a.ID+"%22", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var active []any
	json.NewDecoder(resp.Body).Decode(&active)
	resp.Body.Close()
	if len(active) != 0 {
		t.Fatalf("resolved alert still active: %+v", active)
	}
}

// TestAlertmanagerDown: pushes to an Alertmanager that is not there are
// retried, then the transitions become dead letters.
func TestAlertmanagerDown(t *testing.T) {
	cfg := testConfig(t)
	cfg.Attempts = 3
	cfg.Alertmanagers = []Alertmanager{{Name: "gone", URL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}}
	n, _ := start(t, cfg)
	n.Send(testAlert(1))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if dls := readDead(t, cfg.DeadLetterDir); len(dls) == 1 {
			if dls[0].Target != "gone" || !strings.HasPrefix(dls[0].Reason, ReasonAttempts) || dls[0].Attempts != 3 {
				t.Fatalf("dead letter %+v", dls[0])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead letter for an unreachable Alertmanager")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

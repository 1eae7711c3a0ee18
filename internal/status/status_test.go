package status

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const aggregatorMetrics = `# TYPE tally_aggregator_cluster_member gauge
tally_aggregator_cluster_member{member="agg-1",state="alive"} 1
tally_aggregator_cluster_member{member="agg-2",state="alive"} 1
tally_aggregator_cluster_member{member="agg-3",state="suspect"} 1
# TYPE tally_aggregator_cluster_epoch gauge
tally_aggregator_cluster_epoch 42
# TYPE tally_aggregator_campaign_owner gauge
tally_aggregator_campaign_owner{campaign="a",member="agg-1"} 1
tally_aggregator_campaign_owner{campaign="b",member="agg-1"} 1
tally_aggregator_campaign_owner{campaign="c",member="agg-2"} 1
# TYPE tally_aggregator_wal_bytes gauge
tally_aggregator_wal_bytes 2097152
# TYPE tally_aggregator_storage_info gauge
tally_aggregator_storage_info{bucket="db/rp",query_language="influxql",version="1.8.10"} 1
# TYPE tally_aggregator_influx_writes_total counter
tally_aggregator_influx_writes_total{result="ok"} 10
tally_aggregator_influx_writes_total{result="error"} 2
# TYPE tally_aggregator_influx_write_duration_seconds histogram
tally_aggregator_influx_write_duration_seconds_bucket{le="+Inf"} 10
tally_aggregator_influx_write_duration_seconds_sum 0.5
tally_aggregator_influx_write_duration_seconds_count 10
`

// fakeProcess serves the three endpoints; the status tests check the
// summary logic, the e2e tests in deploy/opstest run it against real
// processes.
func fakeProcess(t *testing.T, ready bool, metrics, token string) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"influxdb writes failing"}`))
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write([]byte(metrics))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestAggregatorReport(t *testing.T) {
	url := fakeProcess(t, false, aggregatorMetrics, "")
	rep := Aggregator(Fetch(context.Background(), Target{URL: url}))
	if rep.OK {
		t.Fatal("a node that is not ready with a suspect member reported OK")
	}
	text := report(t, rep)
	for _, want := range []string{
		"ready", "influxdb writes failing",
		"2 alive (agg-1, agg-2); 1 suspect (agg-3)",
		"agg-1 2, agg-2 1",
		"2.0 MiB",
		"InfluxDB 1.8.10, reading with influxql, bucket db/rp",
		"error 2, ok 10; mean round 50ms",
		"members suspect: agg-3",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}

func TestAgentReportHealthy(t *testing.T) {
	metrics := `tally_agent_connected 1
tally_agent_spool_pending_batches 3
tally_agent_events_accepted_total 100
tally_agent_bots_filtered_total{reason="crawler"} 4
tally_agent_events_rejected_total{reason="bad_ts"} 1
tally_agent_events_rejected_total{reason="unknown_type"} 2
`
	rep := Agent(Fetch(context.Background(), Target{URL: fakeProcess(t, true, metrics, "")}))
	text := report(t, rep)
	if !rep.OK {
		t.Fatalf("healthy agent not OK:\n%s", text)
	}
	if !strings.Contains(text, "100 accepted (4 bots), 3 rejected") || !strings.Contains(text, "3 batches awaiting") {
		t.Fatalf("counts missing:\n%s", text)
	}
}

func TestAgentDisconnectedAndToken(t *testing.T) {
	url := fakeProcess(t, true, "tally_agent_connected 0\n", "secret-metrics-token")
	rep := Agent(Fetch(context.Background(), Target{URL: url}))
	if rep.OK || !strings.Contains(strings.Join(rep.Problems, "\n"), "metrics unavailable: 401") {
		t.Fatalf("metrics without the token should be a problem: %+v", rep)
	}
	rep = Agent(Fetch(context.Background(), Target{URL: url, MetricsToken: "secret-metrics-token"}))
	if rep.OK || !strings.Contains(strings.Join(rep.Problems, "\n"), "not connected") {
		t.Fatalf("disconnected agent: %+v", rep)
	}
}

func TestCommandExitCodes(t *testing.T) {
	url := fakeProcess(t, true, "tally_agent_connected 1\n", "")
	var out, errb bytes.Buffer
	if code := Command("tally-agent", url, []string{"-format", "json"}, &out, &errb, Agent); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || !rep.OK {
		t.Fatalf("json output %q: %v", out.String(), err)
	}
	if code := Command("tally-agent", "http://127.0.0.1:1", nil, &out, &errb, Agent); code != 1 {
		t.Fatalf("unreachable: exit %d", code)
	}
	if code := Command("tally-agent", url, []string{"-format", "yaml"}, &out, &errb, Agent); code != 2 {
		t.Fatalf("bad format: exit %d", code)
	}
}

func report(t *testing.T, r Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

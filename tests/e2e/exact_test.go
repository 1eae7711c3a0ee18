package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/loadgen"
)

// TestExactEndToEndUnderFaults is the spine's acceptance test: ≥100k
// generated events over 6 minutes of event time, out of order, to two
// agents; one agent SIGKILLed and restarted, the aggregator SIGKILLed and
// restarted, InfluxDB stopped for a while, all mid-stream. Every
// (campaign, type, minute) count and sum in InfluxDB must equal the
// ground truth exactly, uniques must be within 2 %, and the KPI endpoint
// must agree.
//
// It runs once per read path, since the aggregator reads InfluxDB to
// rebuild after its restart and to answer the KPIs: InfluxQL against
// InfluxDB 1.8 as it ships (Flux off, no database: the node creates it
// and chooses InfluxQL by itself) with the full load and every fault, and
// Flux (forced, on a server with Flux on) on a fifth of the load without
// the InfluxDB outage. The outage tests the writer, which both runs share;
// and an influxd with Flux on takes 5-20 s to start here (it builds
// Flux's standard library), which the restart would add to make test.
func TestExactEndToEndUnderFaults(t *testing.T) {
	for _, tc := range []struct {
		name, lang string
		opts       clusterOptions
		total      int
		outage     bool
	}{
		{"influxql", "influxql", clusterOptions{influx: influxtest.Options{DisableFlux: true, NoDatabase: true}}, 120_000, true},
		{"flux", "flux", clusterOptions{influxExtra: "query_language: flux"}, 24_000, false},
	} {
		t.Run(tc.name, func(t *testing.T) { testExact(t, tc.opts, tc.lang, tc.total, tc.outage) })
	}
}

// testExact is TestExactEndToEndUnderFaults with total events, checking
// that the aggregator reads with lang; outage stops InfluxDB mid-stream.
func testExact(t *testing.T, opts clusterOptions, lang string, total int, outage bool) {
	c := startClusterWith(t, opts, "agent-eu", "agent-us")
	eu, us := c.agents[0], c.agents[1]
	if m := metrics(t, c.aggHTTP); harness.MetricSum(m, "tally_aggregator_storage_info", `query_language="`+lang+`"`) != 1 {
		t.Fatalf("the aggregator does not read with %s:\n%s", lang, grepLines(m, "tally_aggregator_storage_info"))
	}
	now := time.Now().UTC()
	t0 := now.Truncate(time.Minute).Add(-8 * time.Minute)
	span := 6 * time.Minute
	// Visitor hashes use a daily salt; keep the window inside one UTC day
	// so one visitor is one unique, as the truth counts them.
	if day := now.Truncate(24 * time.Hour); t0.Before(day) {
		t0 = day.Add(-span - time.Minute)
	}
	gen := loadgen.New(loadgen.Config{Seed: 7, Countries: 3, Channels: 4})
	var perAgent [2][]loadgen.Event
	for i := range total {
		// Timestamps are spread over the span in a scrambled order, so
		// minutes arrive out of order and interleaved.
		off := time.Duration((uint64(i)*0x9E3779B97F4A7C15)%uint64(span.Milliseconds())) * time.Millisecond
		perAgent[i%2] = append(perAgent[i%2], gen.Event(t0.Add(off)))
	}
	truth := loadgen.NewTruth()

	// Four phases; each agent's share of a phase goes out in batches of
	// 500, paced so faults land mid-stream.
	const phases, batch = 4, 500
	send := func(phase int, during func()) {
		var wg sync.WaitGroup
		for ai, a := range []*agentProc{eu, us} {
			evs := perAgent[ai]
			lo, hi := len(evs)*phase/phases, len(evs)*(phase+1)/phases
			wg.Go(func() {
				client := &loadgen.Client{URL: a.eventsURL(), HTTP: &http.Client{Timeout: 30 * time.Second}, Token: harness.DefaultServerToken}
				for i := lo; i < hi; i += batch {
					part := evs[i:min(i+batch, hi)]
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					err := client.Post(ctx, part)
					cancel()
					if err != nil {
						t.Errorf("%s: post: %v", a.name, err)
						return
					}
					truth.Add(part)
					time.Sleep(100 * time.Millisecond)
				}
			})
		}
		if during != nil {
			wg.Go(during)
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}

	// Phase 1, then SIGKILL agent-eu right away: it holds accepted events
	// only in its journal and unacknowledged batches in its spool.
	send(0, nil)
	if err := eu.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	c.startAgent(eu)

	// Phase 2 with the aggregator SIGKILLed and restarted mid-stream.
	send(1, func() {
		time.Sleep(1500 * time.Millisecond)
		if err := c.agg.Kill(); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(2 * time.Second)
		c.startAggregator()
	})

	// Phase 3 with InfluxDB down for 8 s mid-stream.
	send(2, func() {
		if !outage {
			return
		}
		time.Sleep(1 * time.Second)
		if err := c.influx.Stop(); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(8 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := c.influx.Restart(ctx); err != nil {
			t.Error(err)
		}
	})

	// Phase 4 plus a body with bad lines among good ones.
	send(3, func() { sendBadInput(t, us, gen, t0, truth) })

	if truth.Total() < uint64(total*5/6) {
		t.Fatalf("only %d of %d events accepted", truth.Total(), total)
	}
	want := truth.Cells()
	from, to := t0.Add(-time.Minute), t0.Add(span+time.Minute)

	// Converge: every agent spool drained and InfluxDB holding all events.
	deadline := time.Now().Add(120 * time.Second)
	var got map[loadgen.Key]loadgen.Cell
	for {
		got = queryCells(t, c, from, to)
		if cellsEqual(got, want) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("InfluxDB never matched ground truth: %s", cellsEqual(got, want))
		}
		time.Sleep(time.Second)
	}
	t.Logf("InfluxDB matches ground truth exactly: %d events (incl. bots) in %d (campaign, type, minute) cells", truth.Total(), len(want))

	// The KPI endpoint agrees, and uniques are within 2 %.
	for _, campaign := range gen.Campaigns() {
		var wantK struct {
			impressions, clicks, conversions, pageviews, bots uint64
			value, cost                                       int64
		}
		for k, cell := range want {
			if k.Campaign != campaign {
				continue
			}
			switch k.Type {
			case "impression":
				wantK.impressions += cell.Count
			case "click":
				wantK.clicks += cell.Count
			case "conversion":
				wantK.conversions += cell.Count
			case "pageview":
				wantK.pageviews += cell.Count
			}
			wantK.bots += cell.Bots
			wantK.value += cell.ValueMicros
			wantK.cost += cell.CostMicros
		}
		k := kpis(t, c.aggHTTP, campaign, from, to)
		if uint64(k["impressions"]) != wantK.impressions || uint64(k["clicks"]) != wantK.clicks ||
			uint64(k["conversions"]) != wantK.conversions || uint64(k["pageviews"]) != wantK.pageviews ||
			uint64(k["bots_filtered"]) != wantK.bots {
			t.Fatalf("%s: KPIs %v disagree with truth %+v", campaign, k, wantK)
		}
		if math.Abs(k["revenue"]-float64(wantK.value)/1e6) > 1e-6 || math.Abs(k["cost"]-float64(wantK.cost)/1e6) > 1e-6 {
			t.Fatalf("%s: revenue %v cost %v, want %v %v", campaign, k["revenue"], k["cost"], float64(wantK.value)/1e6, float64(wantK.cost)/1e6)
		}
		trueU := float64(truth.Uniques(campaign))
		if rel := math.Abs(k["uniques"]-trueU) / trueU; rel > 0.02 {
			t.Fatalf("%s: uniques %v vs truth %v (%.2f%% off)", campaign, k["uniques"], trueU, 100*rel)
		}
		t.Logf("%s: impressions=%d clicks=%d conversions=%d uniques=%v (truth %v) revenue=%.2f cost=%.2f", campaign,
			wantK.impressions, wantK.clicks, wantK.conversions, k["uniques"], trueU, k["revenue"], k["cost"])
	}

	checkAPIRoutes(t, c.aggHTTP, gen.Campaigns(), from, to)
	checkPolls(t, c.aggHTTP, truth, gen.Campaigns(), from, to)
	checkTotalUniques(t, c.aggHTTP, truth, from, to)

	// Nothing is left behind: spools drained.
	for _, a := range c.agents {
		m := metrics(t, a.http)
		if p := harness.MetricSum(m, "tally_agent_spool_pending_batches"); p != 0 {
			t.Fatalf("%s still has %v batches spooled", a.name, p)
		}
		if r := harness.MetricSum(m, "tally_agent_journal_replayed_events_total"); a == eu {
			t.Logf("%s replayed %v journaled events after SIGKILL", a.name, r)
		}
	}
}

// postAsServer posts an NDJSON body as the backend the load generator
// plays: a server sender, whose events' ip and ua the agent believes.
func postAsServer(url string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Authorization", "Bearer "+harness.DefaultServerToken)
	return http.DefaultClient.Do(req)
}

// sendBadInput posts a body mixing valid events with malformed and unknown
// lines, and an oversized body; the valid events must count, the rest be
// rejected and counted in /metrics.
func sendBadInput(t *testing.T, a *agentProc, gen *loadgen.Generator, t0 time.Time, truth *loadgen.Truth) {
	good := []loadgen.Event{gen.Event(t0.Add(time.Minute)), gen.Event(t0.Add(2 * time.Minute))}
	body := string(loadgen.EncodeNDJSON(good[:1])) + "{this is not json\n" + `{"type":"teleport","campaign":"x"}` + "\n" + string(loadgen.EncodeNDJSON(good[1:]))
	resp, err := postAsServer(a.eventsURL(), stringsReader(body))
	if err != nil {
		t.Error(err)
		return
	}
	var r loadgen.Response
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	if resp.StatusCode != 202 || r.Accepted != 2 || r.Rejected != 2 {
		t.Errorf("mixed body: %d %+v", resp.StatusCode, r)
		return
	}
	truth.Add(good)
	big := make([]byte, 9<<20)
	for i := range big {
		big[i] = ' '
	}
	resp, err = postAsServer(a.eventsURL(), bytesReader(big))
	if err != nil {
		t.Error(err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body answered %d", resp.StatusCode)
	}
	m := metrics(t, a.http)
	for _, reason := range []string{"malformed_json", "unknown_type", "body_too_large"} {
		if harness.MetricSum(m, "tally_agent_events_rejected_total", `reason="`+reason+`"`) < 1 {
			t.Errorf("rejection %q not counted in /metrics", reason)
		}
	}
}

// queryCells reads counts and sums per (campaign, type, minute) straight
// from InfluxDB with InfluxQL (which InfluxDB 1.8 answers with Flux on or
// off), bypassing Tally's own reader.
func queryCells(t *testing.T, c *cluster, from, to time.Time) map[loadgen.Key]loadgen.Cell {
	t.Helper()
	return queryInflux(t, c.influx, from, to)
}

// queryInflux is queryCells against one InfluxDB server: minutes in
// [from, to).
func queryInflux(t *testing.T, influx *influxtest.Server, from, to time.Time) map[loadgen.Key]loadgen.Cell {
	t.Helper()
	stmt := fmt.Sprintf(`SELECT sum("count") AS "count", sum("value_micros") AS "value_micros", sum("cost_micros") AS "cost_micros", sum("bots") AS "bots"
  FROM %q.%q."tally" WHERE time >= '%s' AND time < '%s' GROUP BY "campaign", "type", time(1m) fill(none)`,
		influx.Database(), influx.RetentionPolicy(), from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	body, err := influx.Query(ctx, "", stmt)
	if err != nil {
		t.Logf("query InfluxDB: %v", err)
		return nil
	}
	var ans struct {
		Results []struct {
			Error  string `json:"error"`
			Series []struct {
				Tags    map[string]string `json:"tags"`
				Columns []string          `json:"columns"`
				Values  [][]json.Number   `json:"values"`
			} `json:"series"`
		} `json:"results"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&ans); err != nil || len(ans.Results) != 1 || ans.Results[0].Error != "" {
		t.Logf("query InfluxDB: %v %s", err, body)
		return nil
	}
	out := map[loadgen.Key]loadgen.Cell{}
	for _, s := range ans.Results[0].Series {
		for _, row := range s.Values {
			var cell loadgen.Cell
			var minute int64
			for i, col := range s.Columns {
				if i >= len(row) || row[i] == "" {
					continue // null: the field is absent from the minute
				}
				v, err := row[i].Int64()
				if err != nil {
					t.Logf("query InfluxDB: %s = %s is not an integer", col, row[i])
					return nil
				}
				switch col {
				case "time":
					minute = v
				case "count":
					cell.Count = uint64(v)
				case "bots":
					cell.Bots = uint64(v)
				case "value_micros":
					cell.ValueMicros = v
				case "cost_micros":
					cell.CostMicros = v
				}
			}
			out[loadgen.Key{Campaign: s.Tags["campaign"], Type: s.Tags["type"], Minute: minute}] = cell
		}
	}
	return out
}

// cellsEqual describes the first difference, or returns "".
func cellsEqual(got, want map[loadgen.Key]loadgen.Cell) string {
	if got == nil {
		return "no answer from InfluxDB"
	}
	diffs, first := 0, ""
	for k, w := range want {
		if g := got[k]; g != w {
			if diffs == 0 {
				first = fmt.Sprintf("%s/%s@%s: got %+v, want %+v", k.Campaign, k.Type, time.Unix(k.Minute, 0).UTC().Format("15:04"), g, w)
			}
			diffs++
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok && g != (loadgen.Cell{}) {
			if diffs == 0 {
				first = fmt.Sprintf("unexpected cell %+v: %+v", k, g)
			}
			diffs++
		}
	}
	if diffs == 0 {
		return ""
	}
	return fmt.Sprintf("%d cells differ; first: %s", diffs, first)
}

// checkAPIRoutes checks on the real stack that the campaign list, the
// series (summed over steps) and the CSV export agree with the flat KPIs,
// and that nothing is served without a token.
func checkAPIRoutes(t *testing.T, hostport string, campaigns []string, from, to time.Time) {
	t.Helper()
	base := "http://" + hostport + "/api/v1/"
	win := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	if code, _ := apiGet(t, base+"kpis?campaign="+url.QueryEscape(campaigns[0]), ""); code != http.StatusUnauthorized {
		t.Fatalf("kpis without a token: %d, want 401", code)
	}
	var list api.CampaignsResponse
	if code, body := apiGet(t, base+"campaigns?"+win.Encode(), harness.DefaultAdminToken); code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("campaigns: %d %s", code, body)
	}
	for _, campaign := range campaigns {
		k := kpis(t, hostport, campaign, from, to)
		i := slices.IndexFunc(list.Campaigns, func(c api.CampaignKPIs) bool { return c.Campaign == campaign })
		if i < 0 || float64(list.Campaigns[i].KPIs.Clicks) != k["clicks"] || float64(list.Campaigns[i].KPIs.Impressions) != k["impressions"] {
			t.Fatalf("campaigns list %+v disagrees with kpis %v", list.Campaigns, k)
		}
		q := url.Values{"campaign": {campaign}, "metric": {"clicks,impressions"}, "step": {"1h"}, "from": win["from"], "to": win["to"]}
		var series api.SeriesResponse
		if code, body := apiGet(t, base+"series?"+q.Encode(), harness.DefaultAdminToken); code != 200 || json.Unmarshal(body, &series) != nil {
			t.Fatalf("series: %d %s", code, body)
		}
		var clicks, impressions float64
		for _, p := range series.Series[0].Points {
			clicks += p.Values["clicks"]
			impressions += p.Values["impressions"]
		}
		if clicks != k["clicks"] || impressions != k["impressions"] {
			t.Fatalf("%s: series sums clicks %v impressions %v, kpis %v", campaign, clicks, impressions, k)
		}
		q.Del("metric")
		code, body := apiGet(t, base+"export.csv?"+q.Encode(), harness.DefaultAdminToken)
		rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
		if code != 200 || err != nil || len(rows) < 2 || slices.Index(rows[0], "clicks") < 0 {
			t.Fatalf("export: %d %v %s", code, err, body)
		}
		col := slices.Index(rows[0], "clicks")
		clicks = 0
		for _, row := range rows[1:] {
			v, _ := strconv.ParseFloat(row[col], 64)
			clicks += v
		}
		if clicks != k["clicks"] {
			t.Fatalf("%s: export sums %v clicks, kpis %v", campaign, clicks, k["clicks"])
		}
	}
}

// checkPolls checks that the polls endpoint gives every campaign's votes
// by poll and answer exactly as generated.
func checkPolls(t *testing.T, hostport string, truth *loadgen.Truth, campaigns []string, from, to time.Time) {
	t.Helper()
	var votes uint64
	for _, campaign := range campaigns {
		q := url.Values{"campaign": {campaign}, "from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
		var resp api.PollsResponse
		if code, body := apiGet(t, "http://"+hostport+"/api/v1/polls?"+q.Encode(), harness.DefaultAdminToken); code != 200 || json.Unmarshal(body, &resp) != nil {
			t.Fatalf("polls: %d %s", code, body)
		}
		got := map[loadgen.Vote]uint64{}
		for _, p := range resp.Polls {
			for _, a := range p.Answers {
				got[loadgen.Vote{Poll: p.Poll, Answer: a.Answer}] = a.Votes
			}
		}
		want := truth.Votes(campaign)
		if !maps.Equal(got, want) {
			t.Fatalf("%s on %s: votes %v, want %v", campaign, hostport, got, want)
		}
		for _, n := range want {
			votes += n
		}
	}
	if votes == 0 {
		t.Fatal("no votes were generated: the poll check proves nothing")
	}
}

// checkTotalUniques checks the campaign list's total: uniques within 2 %
// of the distinct visitors over every campaign, which is well below the
// campaigns' sum (the generator's visitors visit several campaigns).
func checkTotalUniques(t *testing.T, hostport string, truth *loadgen.Truth, from, to time.Time) {
	t.Helper()
	win := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	var list api.CampaignsResponse
	if code, body := apiGet(t, "http://"+hostport+"/api/v1/campaigns?"+win.Encode(), harness.DefaultAdminToken); code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("campaigns: %d %s", code, body)
	}
	var sum uint64
	for _, c := range list.Campaigns {
		sum += c.KPIs.Uniques
	}
	got, want := float64(list.Total.KPIs.Uniques), float64(truth.UniquesAll())
	if rel := math.Abs(got-want) / want; rel > 0.02 {
		t.Fatalf("total uniques %v, truth %v (%.2f%% off; the campaigns' sum is %d)", got, want, 100*rel, sum)
	}
	if float64(sum) < 1.1*want {
		t.Fatalf("the campaigns' uniques sum to %d, truth over all is %v: the test cannot tell a merge from a sum", sum, want)
	}
	t.Logf("uniques over all campaigns: %v (truth %v; the campaigns' sum %d)", got, want, sum)
}

// apiGet gets url with the bearer token (none when "").
func apiGet(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// adminRequest is a GET of url with the harness's admin token.
func adminRequest(ctx context.Context, url string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+harness.DefaultAdminToken)
	return req, nil
}

// kpis calls the KPI endpoint.
func kpis(t *testing.T, hostport, campaign string, from, to time.Time) map[string]float64 {
	t.Helper()
	q := url.Values{"campaign": {campaign}, "from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	req, err := adminRequest(context.Background(), "http://"+hostport+"/api/v1/kpis?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var k map[string]float64
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil || resp.StatusCode != 200 {
		t.Fatalf("kpis %s: %d %v", campaign, resp.StatusCode, err)
	}
	return k
}

package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/collector"
	"github.com/tally-edge/tally/agent/edge"
	"github.com/tally-edge/tally/agent/imports"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/ship"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// importAgent is the part of an agent the import endpoints need: spool,
// collector (journal + rollup) and the handlers mounted as agent.Run is to
// mount them, on a state directory that outlives a crash.
type importAgent struct {
	sp     *spool.Spool
	col    *collector.Collector
	srv    *httptest.Server
	closed bool
}

func openImportAgent(t *testing.T, dir string, epoch uint32) *importAgent {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Config{MaxBytes: 64 << 20}, logger)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	col, err := collector.Open(collector.Config{Dir: dir, Epoch: epoch, FlushInterval: time.Second,
		Rollup: rollup.DefaultConfig(), JournalMaxBytes: 64 << 20, Batcher: ship.NewBatcher(0, nil)}, sp, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	hasher, err := privacy.NewHasher("privacy-test-secret-0123456789", privacy.Day)
	if err != nil {
		t.Fatal(err)
	}
	icfg := imports.DefaultConfig()
	icfg.Tokens = edge.NewTokens(serverToken)
	h, err := imports.New(icfg, &source.Env{Region: "eu", Hasher: hasher}, col, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/import/cost", h.Cost())
	mux.Handle("POST /v1/webhooks/email", h.EmailWebhook())
	mux.Handle("POST /v1/import/polls", h.Polls())
	a := &importAgent{sp: sp, col: col, srv: httptest.NewServer(mux)}
	t.Cleanup(a.crash)
	return a
}

func (a *importAgent) flush(t *testing.T) {
	t.Helper()
	if err := a.col.Flush(); err != nil {
		t.Fatal(err)
	}
}

// crash stops without the final flush: what was accepted since the last
// flush is only in the journal.
func (a *importAgent) crash() {
	if a.closed {
		return
	}
	a.closed = true
	a.srv.Close()
	a.col.Close()
	a.sp.Close()
}

// drain takes every batch from the spool, as the shipper would, and acks
// it.
func (a *importAgent) drain(t *testing.T) (contribs []wire.Contribution, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range a.sp.Stats().PendingBatches {
		it, err := a.sp.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := rollup.DecodeBatch(it.Payload)
		if err != nil {
			t.Fatal(err)
		}
		contribs = append(contribs, cs...)
		payload = append(payload, it.Payload...)
		if err := a.sp.Ack(it.Seq); err != nil {
			t.Fatal(err)
		}
	}
	return contribs, payload
}

func (a *importAgent) postWebhook(t *testing.T, body string) imports.Result {
	t.Helper()
	resp, err := postAsServer(a.srv.URL+"/v1/webhooks/email", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", resp.StatusCode, b)
	}
	var res imports.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// importTotal is what the aggregator would hold for one campaign and type.
type importTotal struct {
	count      uint64
	costMicros int64
}

type importKey struct{ campaign, typ string }

// importTotals applies the receivers' rule (per series-minute and CID, the
// highest version wins) and sums per campaign and type. naive sums every
// contribution instead, as if rows had no ids.
func importTotals(cs []wire.Contribution) (merged, naive map[importKey]importTotal) {
	type cid struct {
		key sketch.Key
		id  uint64
	}
	latest := map[cid]wire.Contribution{}
	naive = map[importKey]importTotal{}
	for _, c := range cs {
		k := cid{sketch.Key{Series: c.Series, Minute: c.Minute}, c.CID}
		if c.Version > latest[k].Version {
			latest[k] = c
		}
		n := naive[importKey{c.Series.Campaign, c.Series.Type}]
		naive[importKey{c.Series.Campaign, c.Series.Type}] = importTotal{n.count + c.State.Count, n.costMicros + c.State.CostMicros}
	}
	merged = map[importKey]importTotal{}
	for _, c := range latest {
		k := importKey{c.Series.Campaign, c.Series.Type}
		m := merged[k]
		merged[k] = importTotal{m.count + c.State.Count, m.costMicros + c.State.CostMicros}
	}
	return merged, naive
}

// TestImportCostAndEmailExactlyOnce is the acceptance test of the imports:
// a spend report imported twice and then corrected, SendGrid retrying a
// batch, a generic webhook with a duplicate, and a crash between accepting
// a webhook and flushing it, followed by the provider's retry. What
// reaches the spool, merged by the receivers' rule, is the report's and
// the webhooks' truth exactly once, and holds no email address.
func TestImportCostAndEmailExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	a := openImportAgent(t, dir, 1)
	ctx := context.Background()

	d1 := time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	d2 := time.Now().UTC().AddDate(0, 0, -2).Format(time.DateOnly)
	report := filepath.Join(t.TempDir(), "spend.csv")
	csv := "\ufeffDay;Campaign;Ad group;Source;Medium;Country;Spend;Impressions;Clicks\r\n" +
		d1 + ";spring_sale;Shoes;google;cpc;DE;100,10;10000;500\r\n" +
		d1 + ";spring_sale;Boots;google;cpc;DE;50,05;5000;250\r\n" + // same key: summed with Shoes
		d1 + ";spring_sale;All;facebook;paid_social;FR;20;4000;0\r\n" +
		d2 + ";spring_sale;Shoes;google;cpc;DE;80;8000;400\r\n" +
		d1 + ";\"winter\";All;google;cpc;DE;12,345678;1000;\r\n" +
		d1 + ";;broken;google;cpc;DE;1;1;1\r\n" // no campaign: rejected
	if err := os.WriteFile(report, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the same file twice: a marketer re-runs the import
		res, err := imports.PostFile(ctx, a.srv.URL, serverToken, report, "cost")
		if err != nil || res.Accepted != 5 || res.Rejected != 1 || res.Summed != 1 || res.Events != 10 {
			t.Fatalf("import %d: %+v, %v", i+1, res, err)
		}
		a.flush(t)
	}
	// The network corrects the spend of d2: a one-row re-import replaces
	// that row only.
	correction := filepath.Join(t.TempDir(), "correction.ndjson")
	row := fmt.Sprintf(`{"date":%q,"campaign":"spring_sale","source":"google","medium":"cpc","country":"DE","cost":"90","impressions":8000,"clicks":400}`, d2)
	if err := os.WriteFile(correction, []byte(row+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := imports.PostFile(ctx, a.srv.URL, serverToken, correction, "cost"); err != nil || res.Accepted != 1 {
		t.Fatalf("correction: %+v, %v", res, err)
	}

	// SendGrid posts a batch, gets no answer in time and posts it again.
	now := time.Now().Add(-30 * time.Minute).Unix()
	sendgrid := fmt.Sprintf(`[
  {"email":"alice@example.com","timestamp":%[1]d,"event":"delivered","response":"250 OK","sg_event_id":"ZGVsaXZlcmVkLTE","sg_message_id":"m1.filter0001.0","campaign":"black_friday"},
  {"email":"Alice@Example.com","timestamp":%[1]d,"event":"open","useragent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148","sg_event_id":"b3Blbi0x","sg_message_id":"m1.filter0001.0","campaign":"black_friday"},
  {"email":"bob@example.org","timestamp":%[1]d,"event":"click","url":"https://shop.example.com/?utm_campaign=black_friday&utm_source=newsletter&utm_medium=email","sg_event_id":"Y2xpY2stMQ","sg_message_id":"m2.filter0001.0"},
  {"email":"carol@example.net","timestamp":%[1]d,"event":"bounce","type":"bounce","reason":"550 5.1.1 unknown user","category":["winter","newsletter"],"sg_event_id":"Ym91bmNlLTE","sg_message_id":"m3.filter0001.0"}
]`, now)
	for range 2 {
		if res := a.postWebhook(t, sendgrid); res.Accepted != 3 || res.Ignored != 1 {
			t.Fatalf("sendgrid: %+v", res)
		}
	}
	a.flush(t)
	generic := fmt.Sprintf(`{"event":"open","campaign":"spring_sale","email":"dan@example.com","timestamp":%[1]d,"id":"g-1"}
{"event":"open","campaign":"spring_sale","email":"dan@example.com","timestamp":%[1]d,"id":"g-1"}
{"event":"click","campaign":"spring_sale","email":"dan@example.com","timestamp":%[1]d,"id":"g-2"}
`, now)
	if res := a.postWebhook(t, generic); res.Accepted != 3 {
		t.Fatalf("generic: %+v", res)
	}
	a.flush(t)

	// Accepted and journaled, then the agent dies before flushing; the
	// tool, which may not have seen the 202, retries after the restart.
	late := fmt.Sprintf(`{"event":"open","campaign":"spring_sale","email":"erin@example.com","timestamp":%d,"id":"g-3"}`, now)
	a.postWebhook(t, late)
	a.crash()
	a = openImportAgent(t, dir, 2) // replays the journal
	a.postWebhook(t, late)
	a.flush(t)

	contribs, payload := a.drain(t)
	merged, naive := importTotals(contribs)
	want := map[importKey]importTotal{
		{"spring_sale", "cost"}:         {3, 260_150_000}, // 100.10 + 50.05 + 20 + 90 (corrected from 80)
		{"spring_sale", "impression"}:   {27_000, 0},
		{"spring_sale", "click"}:        {1150, 0},
		{"winter", "cost"}:              {1, 12_345_678},
		{"winter", "impression"}:        {1000, 0},
		{"black_friday", "email_open"}:  {1, 0},
		{"black_friday", "email_click"}: {1, 0},
		{"winter", "bounce"}:            {1, 0},
		{"spring_sale", "email_open"}:   {2, 0},
		{"spring_sale", "email_click"}:  {1, 0},
	}
	for k, w := range want {
		if merged[k] != w {
			t.Errorf("%s/%s: merged %+v, want %+v (naive sum %+v)", k.campaign, k.typ, merged[k], w, naive[k])
		}
	}
	if len(merged) != len(want) {
		t.Errorf("merged totals %+v, want only %+v", merged, want)
	}
	// The test must be able to fail: without row ids the re-imports and
	// retries would have counted again.
	if n := naive[importKey{"spring_sale", "cost"}]; n.costMicros < 2*260_150_000 {
		t.Errorf("naive spring_sale cost %d: the imports did not repeat, the test proves nothing", n.costMicros)
	}
	for _, addr := range []string{"alice@", "Alice@", "bob@", "carol@", "dan@", "erin@", "example.com", "example.org", "example.net"} {
		if bytes.Contains(payload, []byte(addr)) {
			t.Fatalf("%q left the agent", addr)
		}
	}
}

// TestImportPollsExactlyOnce: a poll tool's export (one row per vote,
// with voters' addresses) and a summary report (votes per answer) are
// imported, re-imported and corrected; the votes that reach the spool,
// merged by the receivers' rule, are the reports' truth once, answers
// apart, and no voter's address leaves the agent.
func TestImportPollsExactlyOnce(t *testing.T) {
	a := openImportAgent(t, t.TempDir(), 1)
	ctx := context.Background()
	ts := time.Now().UTC().Add(-20 * time.Minute).Truncate(time.Minute)
	at := func(sec int) string { return ts.Add(time.Duration(sec) * time.Second).Format(time.RFC3339) }
	write := func(name, body string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	perVote := write("votes.csv", "Timestamp,Campaign,Question,Answer,Respondent\n"+
		at(1)+",launch,Which colour?,Red,ann@example.com\n"+
		at(2)+",launch,Which colour?,Blue,bob@example.com\n"+
		at(3)+",launch,Which colour?,Red,cy@example.com\n"+
		at(4)+",launch,Which colour?,,dee@example.com\n"+ // no answer: rejected
		at(5)+",launch,Ship it?,Yes,ann@example.com\n")
	summary := write("summary.json", fmt.Sprintf(`[
 {"date":%[1]q,"campaign":"newsletter","poll":"Rate us","answer":"5","votes":40},
 {"date":%[1]q,"campaign":"newsletter","poll":"Rate us","answer":"4","votes":"12"},
 {"date":%[1]q,"campaign":"newsletter","poll":"Rate us","answer":"1","votes":3}
]`, ts.Format(time.DateOnly)))
	for i := range 2 { // each file twice
		if res, err := imports.PostFile(ctx, a.srv.URL, serverToken, perVote, "polls"); err != nil || res.Accepted != 4 || res.Rejected != 1 || res.Events != 4 {
			t.Fatalf("votes import %d: %+v, %v", i+1, res, err)
		}
		if res, err := imports.PostFile(ctx, a.srv.URL, serverToken, summary, "polls"); err != nil || res.Accepted != 3 || res.Events != 3 {
			t.Fatalf("summary import %d: %+v, %v", i+1, res, err)
		}
		a.flush(t)
	}
	// The tool recounts one answer of the summary.
	fix := write("fix.ndjson", fmt.Sprintf(`{"date":%q,"campaign":"newsletter","poll":"Rate us","answer":"4","votes":13}`+"\n", ts.Format(time.DateOnly)))
	if res, err := imports.PostFile(ctx, a.srv.URL, serverToken, fix, "polls"); err != nil || res.Accepted != 1 {
		t.Fatalf("correction: %+v, %v", res, err)
	}
	a.flush(t)

	contribs, payload := a.drain(t)
	type cid struct {
		key sketch.Key
		id  uint64
	}
	latest := map[cid]wire.Contribution{}
	var naive uint64
	for _, c := range contribs {
		k := cid{sketch.Key{Series: c.Series, Minute: c.Minute}, c.CID}
		if c.Version > latest[k].Version {
			latest[k] = c
		}
		for _, n := range c.State.Votes {
			naive += n
		}
	}
	type vote struct{ campaign, poll, answer string }
	got := map[vote]uint64{}
	for _, c := range latest {
		var sum uint64
		for key, n := range c.State.Votes {
			p, ans := sketch.SplitVote(key)
			got[vote{c.Series.Campaign, p, ans}] += n
			sum += n
		}
		if c.Series.Type != "poll_vote" || sum != c.State.Count {
			t.Errorf("%s: %d votes in a state counting %d", c.Series, sum, c.State.Count)
		}
	}
	want := map[vote]uint64{
		{"launch", "Which colour?", "Red"}: 2, {"launch", "Which colour?", "Blue"}: 1, {"launch", "Ship it?", "Yes"}: 1,
		{"newsletter", "Rate us", "5"}: 40, {"newsletter", "Rate us", "4"}: 13, {"newsletter", "Rate us", "1"}: 3,
	}
	if !maps.Equal(got, want) {
		t.Errorf("merged votes %v, want %v", got, want)
	}
	if naive < 2*60 {
		t.Errorf("naive vote sum %d: the imports did not repeat, the test proves nothing", naive)
	}
	for _, addr := range []string{"ann@", "bob@", "cy@", "example.com"} {
		if bytes.Contains(payload, []byte(addr)) {
			t.Fatalf("%q left the agent", addr)
		}
	}
}

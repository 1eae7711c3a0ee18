package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/browser/browsertest"
)

// The GraphQL tests: the same questions answered alike by REST and
// GraphQL against the real aggregator and InfluxDB, and GraphQL attacked
// as a viewer probing other campaigns and as a greedy caller sending the
// costliest queries the language allows would. On main there is no
// /api/v1/graphql (404), so each of them fails there.

// gqlCampaigns carry the events of the GraphQL tests: several sources and
// event types, conversions with value, poll votes and bots.
var gqlCampaigns = []string{"gql_a", "gql_b"}

// gqlTruth is what the agent accepted for the GraphQL campaigns, counted
// here from the events sent.
type gqlTruth struct {
	// byType counts campaign → source → event type.
	byType map[string]map[string]map[string]uint64
	// revenueMicros is campaign → the sum of conversion values.
	revenueMicros map[string]int64
	// votes is campaign → answer → votes (one poll, "color").
	votes map[string]map[string]uint64
	// bots is campaign → reason → bot events.
	bots map[string]map[string]uint64
}

var gqlData struct {
	once  sync.Once
	err   error
	truth gqlTruth
	// from and to bound every question of the tests: they hold every
	// event sent to the deployment.
	from, to time.Time
}

// Bot user agents and the layer of the agent's filter that catches each.
var gqlBots = map[string]string{
	"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)":                                      "crawler",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36": "headless",
}

// gqlEvents sends the GraphQL campaigns' events to the plain deployment
// once, and waits until REST shows exactly the truth.
func gqlEvents(t *testing.T) (*deployment, gqlTruth) {
	t.Helper()
	d := plainDeployment(t)
	gqlData.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		gqlData.truth, gqlData.err = sendGQLEvents(ctx, d)
		if gqlData.err == nil {
			gqlData.err = waitGQLExact(ctx, d, gqlData.truth)
		}
		if gqlData.err != nil {
			gqlData.err = fmt.Errorf("%w\n%s", gqlData.err, d.logTails())
		}
	})
	if gqlData.err != nil {
		t.Fatal(gqlData.err)
	}
	return d, gqlData.truth
}

func sendGQLEvents(ctx context.Context, d *deployment) (gqlTruth, error) {
	tr := gqlTruth{byType: map[string]map[string]map[string]uint64{}, revenueMicros: map[string]int64{},
		votes: map[string]map[string]uint64{}, bots: map[string]map[string]uint64{}}
	for _, c := range gqlCampaigns {
		tr.byType[c] = map[string]map[string]uint64{}
		tr.votes[c] = map[string]uint64{}
		tr.bots[c] = map[string]uint64{}
	}
	sources := []string{"web", "mail", "social"}
	types := []string{"impression", "impression", "click", "pageview", "conversion"}
	answers := []string{"red", "blue", "green"}
	var body bytes.Buffer
	for i := range 900 {
		c, src, typ := gqlCampaigns[i%3/2], sources[i/2%len(sources)], types[i%len(types)]
		ev := map[string]any{"type": typ, "campaign": c, "source": src, "medium": "cpc", "visitor": fmt.Sprintf("g-%d", i%113)}
		if typ == "conversion" {
			cents := int64(100 + i%700)
			ev["value"] = float64(cents) / 100
			tr.revenueMicros[c] += cents * 10_000
		}
		if tr.byType[c][src] == nil {
			tr.byType[c][src] = map[string]uint64{}
		}
		tr.byType[c][src][typ]++
		line, _ := json.Marshal(ev)
		body.Write(append(line, '\n'))
		if i%7 == 0 {
			a := answers[i%len(answers)]
			line, _ := json.Marshal(map[string]any{"type": "poll_vote", "campaign": c, "source": src, "poll": "color", "answer": a,
				"visitor": fmt.Sprintf("g-%d", i%113)})
			body.Write(append(line, '\n'))
			tr.votes[c][a]++
			tr.byType[c][src]["poll_vote"]++
		}
	}
	if err := postEvents(ctx, d, browsertest.UserAgent, body.Bytes()); err != nil {
		return tr, err
	}
	n := 0
	for ua, reason := range gqlBots {
		body.Reset()
		for i := range 20 + 10*n {
			c := gqlCampaigns[i%2]
			fmt.Fprintf(&body, `{"type":"pageview","campaign":%q,"source":"web","medium":"cpc","visitor":"bot-%d"}`+"\n", c, i)
			tr.bots[c][reason]++
			if tr.byType[c]["web"] == nil { // a group of bots only: no traffic
				tr.byType[c]["web"] = map[string]uint64{}
			}
		}
		if err := postEvents(ctx, d, ua, body.Bytes()); err != nil {
			return tr, err
		}
		n++
	}
	return tr, nil
}

// postEvents posts NDJSON to the agent as a client with user agent ua;
// every event must be accepted (bots are accepted and filtered).
func postEvents(ctx context.Context, d *deployment, ua string, body []byte) error {
	want := bytes.Count(body, []byte("\n"))
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+d.agentHTTP+"/v1/events", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("User-Agent", ua)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct{ Accepted, Rejected int }
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 202 || r.Accepted != want {
		return fmt.Errorf("events: %d %+v %v, want %d accepted", resp.StatusCode, r, err, want)
	}
	return nil
}

// window is the range of every question: everything sent so far.
func (d *deployment) gqlWindow() (from, to string) {
	return d.since.Format(time.RFC3339), time.Now().Add(2 * time.Minute).Truncate(time.Minute).Format(time.RFC3339)
}

// waitGQLExact waits until REST's numbers of the GraphQL campaigns equal
// the truth: counts by source and type, revenue, votes and bots.
func waitGQLExact(ctx context.Context, d *deployment, tr gqlTruth) error {
	var last string
	for {
		err := checkRESTTruth(ctx, d, tr)
		if err == nil {
			return nil
		}
		last = err.Error()
		select {
		case <-ctx.Done():
			return fmt.Errorf("REST never showed the GraphQL campaigns' truth: %s", last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func checkRESTTruth(ctx context.Context, d *deployment, tr gqlTruth) error {
	from, to := d.gqlWindow()
	for _, c := range gqlCampaigns {
		q := url.Values{"campaign": {c}, "from": {from}, "to": {to}, "by": {"source"}}
		var br struct {
			Groups []struct {
				Key  string
				KPIs map[string]float64 `json:"kpis"`
			}
			Total map[string]float64
		}
		if err := getJSON(ctx, d, "/api/v1/kpis", q, annToken, &br); err != nil {
			return err
		}
		got := map[string]map[string]uint64{}
		for _, g := range br.Groups {
			got[g.Key] = map[string]uint64{"impression": uint64(g.KPIs["impressions"]), "click": uint64(g.KPIs["clicks"]),
				"pageview": uint64(g.KPIs["pageviews"]), "conversion": uint64(g.KPIs["conversions"])}
		}
		want := map[string]map[string]uint64{}
		for src, byType := range tr.byType[c] {
			want[src] = map[string]uint64{}
			for _, typ := range []string{"impression", "click", "pageview", "conversion"} {
				want[src][typ] = byType[typ]
			}
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("%s by source: %v, truth %v", c, got, want)
		}
		if rev := int64(br.Total["revenue"]*1e6 + 0.5); rev != tr.revenueMicros[c] {
			return fmt.Errorf("%s revenue: %d micros, truth %d", c, rev, tr.revenueMicros[c])
		}
		delete(q, "by")
		var bots struct {
			ByReason map[string]uint64 `json:"by_reason"`
		}
		if err := getJSON(ctx, d, "/api/v1/bots", q, annToken, &bots); err != nil {
			return err
		}
		if !reflect.DeepEqual(bots.ByReason, tr.bots[c]) {
			return fmt.Errorf("%s bots: %v, truth %v", c, bots.ByReason, tr.bots[c])
		}
		var polls struct {
			Polls []struct {
				Poll    string
				Answers []struct {
					Answer string
					Votes  uint64
				}
			}
		}
		if err := getJSON(ctx, d, "/api/v1/polls", q, annToken, &polls); err != nil {
			return err
		}
		votes := map[string]uint64{}
		for _, p := range polls.Polls {
			for _, a := range p.Answers {
				votes[p.Poll+"/"+a.Answer] = a.Votes
			}
		}
		wantVotes := map[string]uint64{}
		for a, n := range tr.votes[c] {
			wantVotes["color/"+a] = n
		}
		if !reflect.DeepEqual(votes, wantVotes) {
			return fmt.Errorf("%s votes: %v, truth %v", c, votes, wantVotes)
		}
	}
	return nil
}

func getJSON(ctx context.Context, d *deployment, path string, q url.Values, token string, v any) error {
	code, body, err := get(ctx, "http://"+d.aggHTTP+path+"?"+q.Encode(), token)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("%s?%s: %d %s", path, q.Encode(), code, body)
	}
	return json.Unmarshal(body, v)
}

// gqlAnswer is a GraphQL answer.
type gqlAnswer struct {
	Data   map[string]json.RawMessage `json:"data"`
	Errors []struct {
		Message    string
		Extensions map[string]any
	} `json:"errors"`
}

// gql posts a GraphQL query; code is -1 when the request failed.
func gql(ctx context.Context, d *deployment, token, query string, vars map[string]any) (int, string, gqlAnswer) {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return gqlBody(ctx, d, token, body)
}

func gqlBody(ctx context.Context, d *deployment, token string, body []byte) (int, string, gqlAnswer) {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+d.aggHTTP+"/api/v1/graphql", bytes.NewReader(body))
	if err != nil {
		return -1, err.Error(), gqlAnswer{}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1, err.Error(), gqlAnswer{}
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	var a gqlAnswer
	_ = json.Unmarshal(b.Bytes(), &a)
	return resp.StatusCode, b.String(), a
}

// canonical decodes JSON into generic values, so that two documents
// compare by content.
func canonical(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%v in %s", err, raw)
	}
	return v
}

const gqlKPIs = `impressions clicks conversions pageviews uniques revenue cost ctr cvr cpa roas bots_filtered`

// TestGraphQLAnswersEqualREST asks REST and GraphQL the same questions,
// as an analyst and as a viewer, against the real aggregator and
// InfluxDB: campaigns, KPIs by source, series with a step and by, bots
// and polls. The answers must be equal, and the exact numbers equal to
// the truth of the events sent through the agent.
func TestGraphQLAnswersEqualREST(t *testing.T) {
	d, tr := gqlEvents(t)
	ctx := context.Background()
	from, to := d.gqlWindow()
	window := url.Values{"from": {from}, "to": {to}}
	rest := func(token, path string, kv ...string) any {
		q := url.Values{"from": window["from"], "to": window["to"]}
		for i := 0; i < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		var v json.RawMessage
		if err := getJSON(ctx, d, path, q, token, &v); err != nil {
			t.Fatal(err)
		}
		return canonical(t, v)
	}
	for _, caller := range []struct {
		name, token, campaign string
	}{{"analyst", annToken, "gql_a"}, {"viewer", veraToken, "legit_a"}} {
		vars := map[string]any{"from": from, "to": to, "c": caller.campaign}
		code, body, a := gql(ctx, d, caller.token, `query($from: Time, $to: Time, $c: String!) {
			campaigns(range: {from: $from, to: $to}) { from to campaigns { campaign kpis { `+gqlKPIs+` } previous { `+gqlKPIs+` } }
				total { kpis { `+gqlKPIs+` } previous { `+gqlKPIs+` } } }
			bySource: kpis(campaign: $c, range: {from: $from, to: $to}, by: source) { campaign by total { `+gqlKPIs+` } groups { key kpis { `+gqlKPIs+` } } }
			flat: kpis(campaign: $c, range: {from: $from, to: $to}, filter: {source: "web"}) { total { `+gqlKPIs+` } }
			series(campaign: $c, metrics: [clicks, impressions, uniques, revenue, ctr], step: "1m", range: {from: $from, to: $to}, by: source) {
				campaign step from to by metrics series { key points { t values { metric value } } } }
			all: series(metrics: [clicks, uniques, bots_filtered], step: "5m", range: {from: $from, to: $to}, by: campaign) {
				step from to by metrics series { key points { t values { metric value } } } }
			bots(campaign: $c, range: {from: $from, to: $to}) { total share by_reason { reason events } }
			polls(campaign: $c, range: {from: $from, to: $to}) { poll total answers { answer votes share } }
		}`, vars)
		if code != 200 || len(a.Errors) > 0 {
			t.Fatalf("%s: GraphQL %d %s", caller.name, code, body)
		}
		c := caller.campaign
		for _, q := range []struct {
			field string
			want  any
		}{
			{"campaigns", rest(caller.token, "/api/v1/campaigns")},
			{"bySource", rest(caller.token, "/api/v1/kpis", "campaign", c, "by", "source")},
			{"flat", map[string]any{"total": rest(caller.token, "/api/v1/kpis", "campaign", c, "source", "web")}},
			{"series", seriesAsGraphQL(rest(caller.token, "/api/v1/series", "campaign", c, "metric", "clicks,impressions,uniques,revenue,ctr", "step", "1m", "by", "source"))},
			{"all", seriesAsGraphQL(rest(caller.token, "/api/v1/series", "metric", "clicks,uniques,bots_filtered", "step", "5m", "by", "campaign"))},
			{"bots", botsAsGraphQL(rest(caller.token, "/api/v1/bots", "campaign", c))},
			{"polls", rest(caller.token, "/api/v1/polls", "campaign", c).(map[string]any)["polls"]},
		} {
			got := canonical(t, a.Data[q.field])
			if q.field == "all" { // asked without campaign: REST writes "", GraphQL leaves it out
				q.want.(map[string]any)["campaign"] = nil
				got.(map[string]any)["campaign"] = nil
			}
			if !reflect.DeepEqual(got, q.want) {
				t.Errorf("%s, %s:\nGraphQL %s\nREST    %s", caller.name, q.field, a.Data[q.field], mustMarshal(q.want))
			}
		}
		if caller.name == "viewer" && (strings.Contains(string(a.Data["campaigns"]), "gql_") || strings.Contains(string(a.Data["all"]), "legit_b")) {
			t.Errorf("the viewer of legit_a sees other campaigns: %s", a.Data["campaigns"])
		}
		if caller.name != "analyst" {
			continue
		}
		// The exact numbers are the truth, not only REST's.
		var bd struct {
			Groups []struct {
				Key  string
				KPIs struct{ Impressions, Clicks, Pageviews, Conversions uint64 }
			}
		}
		_ = json.Unmarshal(a.Data["bySource"], &bd)
		for _, g := range bd.Groups {
			want := tr.byType[c][g.Key]
			if g.KPIs.Clicks != want["click"] || g.KPIs.Impressions != want["impression"] || g.KPIs.Pageviews != want["pageview"] ||
				g.KPIs.Conversions != want["conversion"] {
				t.Errorf("GraphQL %s %s: %+v, truth %v", c, g.Key, g.KPIs, want)
			}
		}
		if len(bd.Groups) != 3 {
			t.Errorf("GraphQL %s by source: %d groups, want 3", c, len(bd.Groups))
		}
		var bots struct{ Total uint64 }
		_ = json.Unmarshal(a.Data["bots"], &bots)
		var botTruth uint64
		for _, n := range tr.bots[c] {
			botTruth += n
		}
		if bots.Total != botTruth || botTruth == 0 {
			t.Errorf("GraphQL bots of %s: %d, truth %d", c, bots.Total, botTruth)
		}
	}

	// Introspection is on, the playground is off.
	code, body, a := gql(ctx, d, veraToken, `{ __schema { queryType { fields { name } } } }`, nil)
	if code != 200 || !strings.Contains(string(a.Data["__schema"]), `"kpis"`) {
		t.Errorf("introspection: %d %s", code, body)
	}
	code, page, err := get(ctx, "http://"+d.aggHTTP+"/api/v1/graphql", "")
	if err != nil || code != 405 || bytes.Contains(bytes.ToLower(page), []byte("<script")) {
		t.Errorf("the playground without http.graphql.playground: %d %v", code, err)
	}
}

// seriesAsGraphQL turns REST's series answer into GraphQL's shape: each
// point's values as a list in the order of the metrics.
func seriesAsGraphQL(v any) any {
	m := v.(map[string]any)
	metrics := m["metrics"].([]any)
	for _, s := range m["series"].([]any) {
		for _, p := range s.(map[string]any)["points"].([]any) {
			pm := p.(map[string]any)
			vals := pm["values"].(map[string]any)
			list := []any{}
			for _, name := range metrics {
				list = append(list, map[string]any{"metric": name, "value": vals[name.(string)]})
			}
			pm["values"] = list
		}
	}
	return m
}

// botsAsGraphQL turns REST's bots answer into GraphQL's shape: reasons as
// a list sorted by reason.
func botsAsGraphQL(v any) any {
	m := v.(map[string]any)
	reasons, _ := m["by_reason"].(map[string]any) // null without bots
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	list := []any{}
	for _, k := range keys {
		list = append(list, map[string]any{"reason": k, "events": reasons[k]})
	}
	m["by_reason"] = list
	return m
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestGraphQLReadmeExample runs the README's GraphQL request, as written
// but for the campaign, against the real aggregator.
func TestGraphQLReadmeExample(t *testing.T) {
	d, tr := gqlEvents(t)
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme[bytes.Index(readme, []byte("### GraphQL")):])
	m := regexp.MustCompile(`(?m)^  -d '(.*)'$`).FindStringSubmatch(section)
	if m == nil {
		t.Fatal("no curl -d '…' line in the README's GraphQL section")
	}
	var req map[string]any
	if err := json.Unmarshal([]byte(m[1]), &req); err != nil {
		t.Fatalf("the README's request is not JSON: %v", err)
	}
	req["variables"].(map[string]any)["c"] = "gql_a" // the demo's spring_sale is not here
	body, _ := json.Marshal(req)
	code, text, a := gqlBody(context.Background(), d, annToken, body)
	if code != 200 || len(a.Errors) > 0 {
		t.Fatalf("the README's query: %d %s", code, text)
	}
	var k struct{ Total struct{ Clicks uint64 } }
	_ = json.Unmarshal(a.Data["kpis"], &k)
	var clicks uint64
	for _, byType := range tr.byType["gql_a"] {
		clicks += byType["click"]
	}
	if k.Total.Clicks != clicks || !strings.Contains(string(a.Data["polls"]), `"color"`) {
		t.Fatalf("the README's query: %s; want %d clicks and the color poll", text, clicks)
	}
}

// TestAttackGraphQLViewerProbes: vera, a viewer of legit_a, asks about
// other campaigns in every way GraphQL allows: each field that names one
// is refused (FORBIDDEN) while the fields about legit_a answer, no number
// of another campaign reaches her, and the audit names only legit_a.
func TestAttackGraphQLViewerProbes(t *testing.T) {
	d, _ := gqlEvents(t)
	from, to := d.gqlWindow()
	rng := fmt.Sprintf(`range: {from: %q, to: %q}`, from, to)
	auditBefore, _ := auditLines(t, d.audit)
	var refused, answered int
	d.duringAttack(t, func(ctx context.Context) {
		for _, other := range []string{"legit_b", "gql_a", "gql_b", "", "legit_a ", "LEGIT_A", "legit_a\x00"} {
			q := fmt.Sprintf(`query($o: String!) {
				a: kpis(campaign: $o, %[1]s, by: source) { total { clicks } groups { key } }
				b: series(campaign: $o, metrics: [clicks], %[1]s) { series { points { values { value } } } }
				c: bots(campaign: $o, %[1]s) { total }
				d: polls(campaign: $o, %[1]s) { poll total }
				mine: kpis(campaign: "legit_a", %[1]s) { total { clicks } }
			}`, rng)
			code, body, a := gql(ctx, d, veraToken, q, map[string]any{"o": other})
			if code != 200 || len(a.Errors) != 4 || !strings.Contains(string(a.Data["mine"]), `"clicks":`) {
				t.Errorf("vera's probe of %q: %d %s", other, code, body)
				continue
			}
			for _, e := range a.Errors {
				want := "FORBIDDEN"
				if other == "" {
					want = "BAD_REQUEST" // campaign= empty is "required", as on REST
				}
				if e.Extensions["code"] != want {
					t.Errorf("vera's probe of %q: %s", other, body)
				}
			}
			for _, f := range []string{"a", "b", "c", "d"} {
				if string(a.Data[f]) != "null" {
					t.Errorf("vera's probe of %q answered %s: %s", other, f, a.Data[f])
				}
			}
			refused += 4
			answered++
		}
		// Lists and series of every campaign hold hers only.
		code, body, a := gql(ctx, d, veraToken, `{ campaigns { campaigns { campaign } }
			series(metrics: [clicks], by: campaign, range: {window: "1h"}) { series { key } } }`, nil)
		if code != 200 || string(a.Data["campaigns"]) != `{"campaigns":[{"campaign":"legit_a"}]}` ||
			string(a.Data["series"]) != `{"series":[{"key":"legit_a"}]}` {
			t.Errorf("vera's lists: %d %s", code, body)
		}
	})
	lines, _ := auditLines(t, d.audit)
	var vera int
	for _, l := range lines[len(auditBefore):] {
		if l["subject"] != "vera" || l["route"] != "graphql" {
			continue
		}
		vera++
		cs, _ := l["campaigns"].([]any)
		if len(cs) != 1 {
			t.Errorf("vera's audit line names %v, want legit_a once", cs)
		}
		for _, c := range cs {
			if c != "legit_a" {
				t.Errorf("vera's audit line names %v: %v", c, l)
			}
		}
	}
	if vera != answered+1 {
		t.Errorf("%d audit lines for vera's %d GraphQL requests", vera, answered+1)
	}
	t.Logf("vera: %d fields about other campaigns refused in %d requests; her own answered", refused, answered)
}

// TestAttackGraphQLCostlyQueries: bob sends the costliest queries
// GraphQL allows, many at once: introspection nested 200 deep, fragments
// that expand to 2^40 fields, ten 31-day series at once, a thousand
// copies of one field, a megabyte of query. Each is refused before it
// runs, with its reason, and ann's reads stay exact meanwhile.
func TestAttackGraphQLCostlyQueries(t *testing.T) {
	d := plainDeployment(t)
	var bomb strings.Builder
	bomb.WriteString("query { ...F40 }\nfragment F0 on Query { whoami { role } }\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&bomb, "fragment F%d on Query { ...F%d ...F%d }\n", i, i-1, i-1)
	}
	var ten strings.Builder
	ten.WriteString("{")
	for i := range 10 {
		fmt.Fprintf(&ten, ` s%d: series(metrics: [clicks, uniques], step: "1h", range: {window: "744h"}, by: campaign) { series { key } }`, i)
	}
	ten.WriteString(" }")
	attacks := []struct {
		name, query string
		code        int
		errCode     string
	}{
		{"nested 200 deep", "{ __schema { types { fields { type " + strings.Repeat("{ ofType ", 200) + "{ name }" + strings.Repeat(" }", 200) + " } } } }",
			422, "DEPTH_LIMIT_EXCEEDED"},
		{"2^40 fields by fragments", bomb.String(), 422, "COMPLEXITY_LIMIT_EXCEEDED"},
		{"ten 31-day series", ten.String(), 422, "COMPLEXITY_LIMIT_EXCEEDED"},
		{"1,000 copies of a field", "{" + strings.Repeat(" whoami { role }", 1000) + " }", 422, "GRAPHQL_PARSE_FAILED"},
		{"a megabyte", "{ whoami { role } }" + strings.Repeat(" ", 1<<20), 413, "QUERY_TOO_LARGE"},
	}
	var mu sync.Mutex
	got := map[string]map[string]int{}
	start := time.Now()
	d.duringAttack(t, func(ctx context.Context) {
		var wg sync.WaitGroup
		for w := range 8 { // bob's share of concurrent requests
			wg.Go(func() {
				for i := range 25 {
					at := attacks[(w+i)%len(attacks)]
					code, body, a := gql(ctx, d, bobToken, at.query, nil)
					outcome := fmt.Sprint(code)
					if len(a.Errors) > 0 {
						outcome += " " + fmt.Sprint(a.Errors[0].Extensions["code"])
					}
					mu.Lock()
					if got[at.name] == nil {
						got[at.name] = map[string]int{}
					}
					got[at.name][outcome]++
					mu.Unlock()
					if code != at.code || len(a.Errors) == 0 || a.Errors[0].Extensions["code"] != at.errCode || a.Data != nil {
						t.Errorf("%s: %d %.300s; want %d %s", at.name, code, body, at.code, at.errCode)
						return
					}
				}
			})
		}
		wg.Wait()
	})
	t.Logf("bob's 200 costly queries in %v: %v", time.Since(start).Round(time.Millisecond), got)
}

// TestAttackGraphQLQueryFlood: bob fires 300 concurrent GraphQL requests,
// each with nine 31-day series (the most one request may ask). Beyond his
// share (8 admitted) they are refused at once with 429, as his REST
// queries are; each admitted request runs its nine queries one at a time;
// ann's reads stay exact.
func TestAttackGraphQLQueryFlood(t *testing.T) {
	d := plainDeployment(t)
	var nine strings.Builder
	nine.WriteString("{")
	for i := range 9 {
		fmt.Fprintf(&nine, ` s%d: series(metrics: [clicks, uniques], step: "1h", range: {window: "744h"}, by: campaign) { series { key } }`, i)
	}
	nine.WriteString(" }")
	var mu sync.Mutex
	codes := map[int]int{}
	d.duringAttack(t, func(ctx context.Context) {
		var wg sync.WaitGroup
		for range 300 {
			wg.Go(func() {
				code, body, a := gql(ctx, d, bobToken, nine.String(), nil)
				if code == 200 && len(a.Errors) > 0 {
					t.Errorf("an admitted flood request: %.300s", body)
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			})
		}
		wg.Wait()
	})
	t.Logf("bob's 300 concurrent GraphQL requests of nine 31-day series: %v", codes)
	if codes[429] == 0 || codes[200]+codes[429]+codes[503] != 300 {
		t.Errorf("bob's 300 concurrent GraphQL requests: %v; want the excess refused with 429", codes)
	}
}

package ops

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dashboardJSON is the subset of a Grafana dashboard the checks read.
type dashboardJSON struct {
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Query      string `json:"query"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			RefID      string `json:"refId"`
			Query      string `json:"query"`
			Expr       string `json:"expr"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T, name string) dashboardJSON {
	t.Helper()
	b, err := os.ReadFile("../../deploy/grafana/dashboards/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboardJSON
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// kpis is the API's flat KPI object.
type kpis struct {
	Impressions, Clicks, Conversions, Pageviews, BotsFiltered float64
	Revenue, Cost, CTR, CVR, CPA, ROAS                        float64
}

func (k *kpis) UnmarshalJSON(b []byte) error {
	var m map[string]float64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*k = kpis{Impressions: m["impressions"], Clicks: m["clicks"], Conversions: m["conversions"], Pageviews: m["pageviews"],
		BotsFiltered: m["bots_filtered"], Revenue: m["revenue"], Cost: m["cost"], CTR: m["ctr"], CVR: m["cvr"], CPA: m["cpa"], ROAS: m["roas"]}
	return nil
}

// grafanaMacros replaces Grafana's macros and the $campaign variable the
// way Grafana does before it sends a query: $timeFilter becomes an
// inclusive millisecond range (InfluxQL), v.timeRangeStart/Stop time
// literals and v.windowPeriod a duration (Flux), $__interval the interval.
func grafanaMacros(q, campaign string, from, to time.Time, interval string) string {
	r := strings.NewReplacer(
		"$timeFilter", fmt.Sprintf("time >= %dms and time <= %dms", from.UnixMilli(), to.UnixMilli()),
		"$__interval", interval,
		"v.timeRangeStart", from.UTC().Format(time.RFC3339),
		"v.timeRangeStop", to.UTC().Format(time.RFC3339),
		"v.windowPeriod", interval,
		"${campaign}", campaign,
		"$campaign", campaign,
	)
	return r.Replace(q)
}

// influxQL runs an InfluxQL query (as the InfluxQL datasource does, on
// /query of the database) and returns each series' tags and rows of
// column → value.
type qlSeries struct {
	Tags map[string]string
	Rows []map[string]any
}

func (c *cluster) influxQL(t *testing.T, q string) []qlSeries {
	t.Helper()
	v := url.Values{"db": {c.influx.Database()}, "q": {q}, "epoch": {"ms"}}
	resp, err := http.Get(c.influx.URL() + "/query?" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct {
			Error  string `json:"error"`
			Series []struct {
				Tags    map[string]string `json:"tags"`
				Columns []string          `json:"columns"`
				Values  [][]any           `json:"values"`
			} `json:"series"`
		} `json:"results"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Error != "" || len(out.Results) != 1 || out.Results[0].Error != "" {
		t.Fatalf("InfluxQL %q: %+v", q, out)
	}
	var series []qlSeries
	for _, s := range out.Results[0].Series {
		qs := qlSeries{Tags: s.Tags}
		for _, vals := range s.Values {
			row := map[string]any{}
			for i, col := range s.Columns {
				row[col] = vals[i]
			}
			qs.Rows = append(qs.Rows, row)
		}
		series = append(series, qs)
	}
	return series
}

// flux runs a Flux query (as the Flux datasource does, on /api/v2/query)
// and returns its rows as column → text.
func (c *cluster) flux(t *testing.T, q string) []map[string]string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.influx.URL()+"/api/v2/query", strings.NewReader(q))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Token "+c.influx.Token())
	req.Header.Set("Content-Type", "application/vnd.flux")
	req.Header.Set("Accept", "application/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Flux %s: %s\n%s", resp.Status, body, q)
	}
	var rows []map[string]string
	// Annotated CSV: tables separated by blank lines, each with a header.
	for _, table := range bytes.Split(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")), []byte("\n\n")) {
		if len(bytes.TrimSpace(table)) == 0 {
			continue
		}
		recs, err := csv.NewReader(bytes.NewReader(table)).ReadAll()
		if err != nil {
			t.Fatalf("Flux CSV: %v\n%s", err, table)
		}
		if len(recs) > 0 && len(recs[0]) > 0 && recs[0][0] == "error" {
			t.Fatalf("Flux error: %v\n%s", recs, q)
		}
		var header []string
		for _, rec := range recs {
			if len(rec) > 0 && strings.HasPrefix(rec[0], "#") {
				continue
			}
			if header == nil {
				header = rec
				continue
			}
			row := map[string]string{}
			for i, col := range header {
				row[col] = rec[i]
			}
			rows = append(rows, row)
		}
	}
	return rows
}

func num(t *testing.T, v any) float64 {
	t.Helper()
	switch x := v.(type) {
	case float64:
		return x
	case json.Number:
		f, _ := x.Float64()
		return f
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			t.Fatalf("number %q: %v", x, err)
		}
		return f
	case nil:
		return 0
	}
	t.Fatalf("not a number: %T %v", v, v)
	return 0
}

func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// series answers /api/v1/series for one campaign at a 1-minute step: time
// (unix ms of the step start) → metric → value.
func (c *cluster) series(t *testing.T, ctx context.Context, campaign, metrics string) map[int64]map[string]float64 {
	t.Helper()
	var resp struct {
		Series []struct {
			Points []struct {
				T      time.Time          `json:"t"`
				Values map[string]float64 `json:"values"`
			} `json:"points"`
		} `json:"series"`
	}
	if err := c.api(ctx, "/api/v1/series", url.Values{"campaign": {campaign}, "metric": {metrics}, "step": {"1m"},
		"from": {rfc(c.from)}, "to": {rfc(c.to)}}, &resp); err != nil {
		t.Fatal(err)
	}
	out := map[int64]map[string]float64{}
	for _, s := range resp.Series {
		for _, p := range s.Points {
			out[p.T.UnixMilli()] = p.Values
		}
	}
	return out
}

// testGrafana runs every query of the campaigns dashboard, for every
// campaign, against the real InfluxDB and compares each number with what
// the API answers for the same campaign and window (and the counts with
// the generator's ground truth). A panel the test does not know fails it,
// so a new panel must come with its check.
func testGrafana(t *testing.T, c *cluster) {
	d := readDashboard(t, "tally-campaigns.json")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var list struct {
		Campaigns []struct {
			Campaign string `json:"campaign"`
		} `json:"campaigns"`
	}
	if err := c.api(ctx, "/api/v1/campaigns", url.Values{"from": {rfc(c.from)}, "to": {rfc(c.to)}}, &list); err != nil {
		t.Fatal(err)
	}
	var campaigns []string
	for _, cp := range list.Campaigns {
		campaigns = append(campaigns, cp.Campaign)
	}
	if len(campaigns) < 3 {
		t.Fatalf("API lists %d campaigns", len(campaigns))
	}

	// The campaign variable offers exactly the campaigns the API knows.
	if len(d.Templating.List) != 1 || d.Templating.List[0].Name != "campaign" {
		t.Fatalf("variables: %+v", d.Templating.List)
	}
	var offered []string
	for _, s := range c.influxQL(t, d.Templating.List[0].Query) {
		for _, r := range s.Rows {
			offered = append(offered, r["value"].(string))
		}
	}
	sort.Strings(offered)
	if strings.Join(offered, ",") != strings.Join(campaigns, ",") {
		t.Errorf("variable offers %v, API lists %v", offered, campaigns)
	}

	interval := "1m"
	checked := map[string]int{}
	for _, campaign := range campaigns {
		var k kpis
		if err := c.api(ctx, "/api/v1/kpis", url.Values{"campaign": {campaign}, "from": {rfc(c.from)}, "to": {rfc(c.to)}}, &k); err != nil {
			t.Fatal(err)
		}
		truth := map[string]float64{}
		for key, cell := range c.truth.Cells() {
			if key.Campaign == campaign {
				truth[key.Type] += float64(cell.Count)
				truth["bots"] += float64(cell.Bots)
			}
		}
		if k.Impressions != truth["impression"] || k.Clicks != truth["click"] || k.BotsFiltered != truth["bots"] {
			t.Fatalf("%s: API %+v disagrees with the ground truth %v", campaign, k, truth)
		}
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) != 1 {
				t.Fatalf("panel %q: %d targets", p.Title, len(p.Targets))
			}
			q := grafanaMacros(p.Targets[0].Query, campaign, c.from, c.to, interval)
			if strings.Contains(q, "$") {
				t.Fatalf("panel %q: unreplaced variable in %s", p.Title, q)
			}
			scalar := func() float64 {
				s := c.influxQL(t, q)
				if len(s) == 0 {
					return 0
				}
				if len(s) != 1 || len(s[0].Rows) != 1 {
					t.Fatalf("panel %q: %d series for a single value", p.Title, len(s))
				}
				for col, v := range s[0].Rows[0] {
					if col != "time" {
						return num(t, v)
					}
				}
				return 0
			}
			want := func(name string, got, want float64) {
				t.Helper()
				if !near(got, want) {
					t.Errorf("%s: panel %q %s = %v, API says %v", campaign, p.Title, name, got, want)
				}
			}
			switch p.Title {
			case "Impressions":
				want("value", scalar(), k.Impressions)
			case "Clicks":
				want("value", scalar(), k.Clicks)
			case "Conversions":
				want("value", scalar(), k.Conversions)
			case "Page views":
				want("value", scalar(), k.Pageviews)
			case "Revenue":
				want("value", scalar(), k.Revenue)
			case "Cost":
				want("value", scalar(), k.Cost)
			case "Bots filtered":
				want("value", scalar(), k.BotsFiltered)
			case "Ratios":
				rows := c.flux(t, q)
				if len(rows) != 1 {
					t.Fatalf("panel %q: %d rows", p.Title, len(rows))
				}
				want("ctr", num(t, rows[0]["ctr"]), k.CTR)
				want("cvr", num(t, rows[0]["cvr"]), k.CVR)
				want("cpa", num(t, rows[0]["cpa"]), k.CPA)
				want("roas", num(t, rows[0]["roas"]), k.ROAS)
			case "Traffic":
				api := c.series(t, ctx, campaign, "impressions,clicks,conversions")
				names := map[string]string{"impression": "impressions", "click": "clicks", "conversion": "conversions"}
				got := map[int64]map[string]float64{}
				for _, r := range c.flux(t, q) {
					stop, err := time.Parse(time.RFC3339, r["_time"])
					if err != nil {
						t.Fatal(err)
					}
					// aggregateWindow stamps a window with its end.
					start := stop.Add(-time.Minute).UnixMilli()
					if got[start] == nil {
						got[start] = map[string]float64{}
					}
					got[start][names[r["type"]]] += num(t, r["_value"])
				}
				compareSeries(t, campaign, p.Title, got, api, "impressions", "clicks", "conversions")
			case "Revenue and cost", "Bots filtered over time":
				metrics, cols := "revenue,cost", map[string]string{"revenue": "revenue", "cost": "cost"}
				if p.Title == "Bots filtered over time" {
					metrics, cols = "bots_filtered", map[string]string{"bots filtered": "bots_filtered"}
				}
				api := c.series(t, ctx, campaign, metrics)
				got := map[int64]map[string]float64{}
				for _, s := range c.influxQL(t, q) {
					for _, r := range s.Rows {
						ts := int64(num(t, r["time"]))
						got[ts] = map[string]float64{}
						for col, name := range cols {
							got[ts][name] = num(t, r[col])
						}
					}
				}
				compareSeries(t, campaign, p.Title, got, api, strings.Split(metrics, ",")...)
			case "Clicks by source":
				var by struct {
					Groups []struct {
						Key  string `json:"key"`
						KPIs kpis   `json:"kpis"`
					} `json:"groups"`
				}
				if err := c.api(ctx, "/api/v1/kpis", url.Values{"campaign": {campaign}, "by": {"source"},
					"from": {rfc(c.from)}, "to": {rfc(c.to)}}, &by); err != nil {
					t.Fatal(err)
				}
				apiBy := map[string]float64{}
				for _, g := range by.Groups {
					if g.KPIs.Clicks > 0 {
						apiBy[g.Key] = g.KPIs.Clicks
					}
				}
				gotBy := map[string]float64{}
				for _, s := range c.influxQL(t, q) {
					for _, r := range s.Rows {
						gotBy[s.Tags["source"]] += num(t, r["clicks"])
					}
				}
				if fmt.Sprint(gotBy) != fmt.Sprint(apiBy) {
					t.Errorf("%s: panel %q %v, API says %v", campaign, p.Title, gotBy, apiBy)
				}
			default:
				t.Fatalf("panel %q of the campaigns dashboard has no check here: add one", p.Title)
			}
			checked[p.Title]++
		}
	}
	t.Logf("checked %d panels × %d campaigns: %v", len(checked), len(campaigns), checked)
}

// compareSeries compares per-minute values (only minutes with data; the
// API fills the others with zeros, Grafana leaves them empty). Only
// organicCampaign may have nothing but zeros.
func compareSeries(t *testing.T, campaign, title string, got, api map[int64]map[string]float64, metrics ...string) {
	t.Helper()
	nonzero := 0
	for ts, vals := range api {
		for _, m := range metrics {
			if vals[m] == 0 && got[ts][m] == 0 {
				continue
			}
			nonzero++
			if !near(got[ts][m], vals[m]) {
				t.Errorf("%s: panel %q at %s: %s = %v, API says %v", campaign, title, time.UnixMilli(ts).UTC().Format(time.TimeOnly), m, got[ts][m], vals[m])
			}
		}
	}
	for ts := range got {
		if _, ok := api[ts]; !ok {
			t.Errorf("%s: panel %q has a point at %s outside the API's steps", campaign, title, time.UnixMilli(ts).UTC())
		}
	}
	if nonzero == 0 && campaign != organicCampaign {
		t.Errorf("%s: panel %q: no data to compare", campaign, title)
	}
}

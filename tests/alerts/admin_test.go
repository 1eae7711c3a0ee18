package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// do sends a request to node n with token ("" for none) and returns the
// status and body.
func do(t *testing.T, n *node, method, path, token string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.http+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// objectsView is GET /api/v1/alerts/config, names and sources only.
type objectsView struct {
	Rules []struct {
		Object struct {
			Name        string `json:"name"`
			Sensitivity string `json:"sensitivity"`
		} `json:"object"`
		Source string `json:"source"`
	} `json:"rules"`
	Budgets []struct {
		Object struct {
			Campaign string  `json:"campaign"`
			Daily    float64 `json:"daily"`
		} `json:"object"`
		Source string `json:"source"`
	} `json:"budgets"`
	Silences []struct {
		Object struct {
			ID string `json:"id"`
		} `json:"object"`
		Source string `json:"source"`
	} `json:"silences"`
}

func (v objectsView) names() string {
	var out []string
	for _, r := range v.Rules {
		out = append(out, "rule/"+r.Object.Name+"@"+r.Source)
	}
	for _, b := range v.Budgets {
		out = append(out, fmt.Sprintf("budget/%s=%g@%s", b.Object.Campaign, b.Object.Daily, b.Source))
	}
	for _, s := range v.Silences {
		out = append(out, "silence/"+s.Object.ID+"@"+s.Source)
	}
	return strings.Join(out, " ")
}

func objectsOf(t *testing.T, n *node) objectsView {
	t.Helper()
	code, body := do(t, n, http.MethodGet, "/api/v1/alerts/config", adminToken, nil)
	if code != 200 {
		t.Fatalf("GET /api/v1/alerts/config on %s: %d %s", n.name, code, body)
	}
	var v objectsView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAdminAPI: the alerting objects' admin API on a two-node cluster
// over one InfluxDB. Admins write on either node and both nodes apply the
// edit; analysts read; viewers neither read nor write objects and see
// only their campaigns' alerts and forecasts; no credential writes
// nothing. Hostile bodies (too large, unknown fields, bad values, names
// that disagree, objects of the configuration file, silences that never
// end) are refused with 4xx, change nothing, and the nodes go on
// answering.
func TestAdminAPI(t *testing.T) {
	s := startStack(t, stackOptions{nodes: 2, alertsExtra: `rules:
  - {name: from-file, kind: threshold, metric: clicks, op: "<", value: 1, window: 10m}
`})
	a, b := s.nodes[0], s.nodes[1]
	waitFor(t, "the two nodes to see each other", 60*time.Second, func() error {
		for _, n := range s.nodes {
			var cv struct {
				Members []struct{ Name string } `json:"members"`
			}
			if err := api(n, "/api/v1/cluster", &cv); err != nil {
				return err
			}
			if len(cv.Members) != 2 {
				return fmt.Errorf("%s sees %d members", n.name, len(cv.Members))
			}
		}
		return nil
	})

	rule := []byte(`{"kind":"anomaly","campaigns":["shop"],"sensitivity":"high","metrics":["clicks","conversions"]}`)
	budget := []byte(`{"daily":250.5,"time_zone":"Europe/Berlin","target_cpa":12}`)
	silence := []byte(fmt.Sprintf(`{"campaign":"shop","metric":"clicks","ends":%q,"comment":"planned outage"}`,
		time.Now().Add(2*time.Hour).UTC().Format(time.RFC3339)))

	// Who may do what.
	for _, c := range []struct {
		who, token, method, path string
		body                     []byte
		want                     int
	}{
		{"nobody", "", "PUT", "/api/v1/alerts/rules/shop-watch", rule, 401},
		{"nobody", "", "DELETE", "/api/v1/alerts/rules/from-file", nil, 401},
		{"nobody", "", "GET", "/api/v1/alerts/config", nil, 401},
		{"nobody", "", "GET", "/api/v1/alerts", nil, 401},
		{"a wrong token", "not-a-token-of-this-cluster", "PUT", "/api/v1/alerts/budgets/shop", budget, 401},
		{"the viewer", viewerToken, "PUT", "/api/v1/alerts/rules/shop-watch", rule, 403},
		{"the viewer", viewerToken, "PUT", "/api/v1/alerts/silences/quiet", silence, 403},
		{"the viewer", viewerToken, "GET", "/api/v1/alerts/config", nil, 403},
		{"the viewer", viewerToken, "GET", "/api/v1/alerts?campaign=other", nil, 403},
		{"the viewer", viewerToken, "GET", "/api/v1/forecast?campaign=other", nil, 403},
		{"the viewer", viewerToken, "GET", "/api/v1/alerts?campaign=shop", nil, 200},
		{"the viewer", viewerToken, "GET", "/api/v1/alerts", nil, 200},
		{"the analyst", analystToken, "PUT", "/api/v1/alerts/budgets/shop", budget, 403},
		{"the analyst", analystToken, "DELETE", "/api/v1/alerts/rules/from-file", nil, 403},
		{"the analyst", analystToken, "GET", "/api/v1/alerts/config", nil, 200},
		{"the analyst", analystToken, "GET", "/api/v1/alerts?campaign=other", nil, 200},
	} {
		for _, n := range s.nodes {
			if code, body := do(t, n, c.method, c.path, c.token, c.body); code != c.want {
				t.Errorf("%s: %s %s on %s: %d %s, want %d", c.who, c.method, c.path, n.name, code, body, c.want)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if got := objectsOf(t, a).names(); got != "rule/from-file@file" {
		t.Fatalf("refused writes changed the objects: %s", got)
	}

	// Hostile bodies and names, as the admin.
	big := []byte(`{"kind":"anomaly","sensitivity":"high","campaigns":["` + strings.Repeat("x", 70<<10) + `"]}`)
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("c%d", i))
	}
	for _, c := range []struct {
		what, method, path string
		body               []byte
		want               int
		says               string
	}{
		{"a body over 64 KiB", "PUT", "/api/v1/alerts/rules/big", big, 400, "larger than"},
		{"not JSON", "PUT", "/api/v1/alerts/rules/x", []byte(`{"kind":`), 400, "JSON"},
		{"an unknown field", "PUT", "/api/v1/alerts/rules/x", []byte(`{"kind":"anomaly","sensitivity":"high","sensitivty":"low"}`), 400, "sensitivty"},
		{"a bad sensitivity", "PUT", "/api/v1/alerts/rules/x", []byte(`{"kind":"anomaly","sensitivity":"extreme"}`), 400, "sensitivity"},
		{"a bad operator", "PUT", "/api/v1/alerts/rules/x", []byte(`{"kind":"threshold","metric":"clicks","op":"==","value":1}`), 400, "op"},
		{"an unknown metric", "PUT", "/api/v1/alerts/rules/x", []byte(`{"kind":"threshold","metric":"dwell","op":">","value":1}`), 400, "dwell"},
		{"a value that is not a number", "PUT", "/api/v1/alerts/rules/x", []byte(`{"kind":"threshold","metric":"clicks","op":">","value":"1e999"}`), 400, ""},
		{"a duration that is not one", "PUT", "/api/v1/alerts/rules/x", []byte(`{"kind":"threshold","metric":"clicks","op":">","value":1,"window":"forever"}`), 400, "forever"},
		{"too many campaigns", "PUT", "/api/v1/alerts/rules/x", []byte(`{"kind":"anomaly","sensitivity":"high","campaigns":[` + strings.Join(many, ",") + `]}`), 400, "at most 1000"},
		{"a name the path does not give", "PUT", "/api/v1/alerts/rules/x", []byte(`{"name":"y","kind":"anomaly","sensitivity":"high"}`), 400, "the path"},
		{"a name out of the set", "PUT", "/api/v1/alerts/rules/Bad%20Name%21", rule, 400, "name"},
		{"a name too long", "PUT", "/api/v1/alerts/rules/" + strings.Repeat("a", 65), rule, 400, "name"},
		{"a reserved name", "PUT", "/api/v1/alerts/rules/budget_daily_exhausted", rule, 400, "reserved"},
		{"a rule of the file", "PUT", "/api/v1/alerts/rules/from-file", rule, 403, "configuration file"},
		{"deleting a rule of the file", "DELETE", "/api/v1/alerts/rules/from-file", nil, 403, "configuration file"},
		{"deleting what is not there", "DELETE", "/api/v1/alerts/silences/nothing", nil, 404, ""},
		{"a negative budget", "PUT", "/api/v1/alerts/budgets/shop", []byte(`{"daily":-5}`), 400, "daily"},
		{"a budget in an unknown zone", "PUT", "/api/v1/alerts/budgets/shop", []byte(`{"daily":5,"time_zone":"Mars/Olympus"}`), 400, "Mars"},
		{"a budget of another campaign", "PUT", "/api/v1/alerts/budgets/shop", []byte(`{"campaign":"other","daily":5}`), 400, "the path"},
		{"a silence without an end", "PUT", "/api/v1/alerts/silences/forever", []byte(`{"campaign":"shop"}`), 400, "ends"},
		{"a silence of a year", "PUT", "/api/v1/alerts/silences/year", []byte(fmt.Sprintf(`{"campaign":"shop","starts":%q,"ends":%q}`,
			time.Now().UTC().Format(time.RFC3339), time.Now().Add(365*24*time.Hour).UTC().Format(time.RFC3339))), 400, "at most"},
		{"a silence that matches everything", "PUT", "/api/v1/alerts/silences/all", []byte(fmt.Sprintf(`{"ends":%q}`,
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339))), 400, ""},
	} {
		code, body := do(t, a, c.method, c.path, adminToken, c.body)
		if code != c.want || !strings.Contains(body, c.says) {
			t.Errorf("%s: %s %s: %d %.300s, want %d saying %q", c.what, c.method, c.path, code, body, c.want, c.says)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if got := objectsOf(t, a).names(); got != "rule/from-file@file" {
		t.Fatalf("refused writes changed the objects: %s", got)
	}

	// The admin's edits, on either node, apply on both (through InfluxDB).
	for _, c := range []struct {
		n    *node
		path string
		body []byte
	}{
		{a, "/api/v1/alerts/rules/shop-watch", rule},
		{b, "/api/v1/alerts/budgets/shop", budget},
		{a, "/api/v1/alerts/silences/quiet", silence},
	} {
		if code, body := do(t, c.n, http.MethodPut, c.path, adminToken, c.body); code != 200 {
			t.Fatalf("PUT %s on %s: %d %s", c.path, c.n.name, code, body)
		}
	}
	want := "rule/from-file@file rule/shop-watch@api budget/shop=250.5@api silence/quiet@api"
	waitFor(t, "both nodes to apply the edits", 30*time.Second, func() error {
		for _, n := range s.nodes {
			if got := objectsOf(t, n).names(); got != want {
				return fmt.Errorf("%s has %s", n.name, got)
			}
		}
		return nil
	})
	// An edit replaces, a delete removes, on every node.
	if code, body := do(t, b, http.MethodPut, "/api/v1/alerts/budgets/shop", adminToken, []byte(`{"daily":99}`)); code != 200 {
		t.Fatalf("PUT budget again: %d %s", code, body)
	}
	if code, body := do(t, b, http.MethodDelete, "/api/v1/alerts/silences/quiet", adminToken, nil); code != 204 {
		t.Fatalf("DELETE silence: %d %s", code, body)
	}
	want = "rule/from-file@file rule/shop-watch@api budget/shop=99@api"
	waitFor(t, "both nodes to apply the change and the delete", 30*time.Second, func() error {
		for _, n := range s.nodes {
			if got := objectsOf(t, n).names(); got != want {
				return fmt.Errorf("%s has %s", n.name, got)
			}
		}
		return nil
	})
	if code, _ := do(t, a, http.MethodDelete, "/api/v1/alerts/silences/quiet", adminToken, nil); code != 404 {
		t.Fatalf("DELETE a deleted silence: %d, want 404", code)
	}
	// The analyst reads what the admin wrote; nothing above stalled the
	// nodes.
	code, body := do(t, b, http.MethodGet, "/api/v1/alerts/config", analystToken, nil)
	if code != 200 || !strings.Contains(body, `"shop-watch"`) {
		t.Fatalf("the analyst's GET /api/v1/alerts/config: %d %s", code, body)
	}
	for _, n := range s.nodes {
		if code, body := do(t, n, http.MethodGet, "/readyz", "", nil); code != 200 {
			t.Fatalf("%s not ready after the abuse: %d %s", n.name, code, body)
		}
	}
}

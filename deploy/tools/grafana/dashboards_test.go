package grafana

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const dir = "../../grafana/dashboards"

// The committed JSON is what this code generates: a change to one
// without the other fails here (run go run ./cmd/gen-dashboards).
func TestCommittedJSONIsGenerated(t *testing.T) {
	files, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(files) {
		t.Errorf("%s holds %d files, the generator makes %d", dir, len(entries), len(files))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generated dashboard: run `cd deploy/tools && go run ./cmd/gen-dashboards`", name)
		}
	}
}

// Every committed dashboard decodes strictly against Grafana's dashboard
// schema (the foundation SDK's generated types refuse unknown fields),
// every panel's targets decode strictly against their datasource's query
// type, and the schema's validation passes.
func TestCommittedJSONMatchesGrafanaSchema(t *testing.T) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		panels, err := Check(raw)
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		if len(panels) < 10 {
			t.Errorf("%s: %d panels decoded", e.Name(), len(panels))
		}
		ids := map[uint32]bool{}
		for _, p := range panels {
			var id uint32
			switch {
			case p.Panel != nil && p.Panel.Id != nil:
				id = *p.Panel.Id
				if len(p.Panel.Targets) == 0 {
					t.Errorf("%s: panel %q has no query", e.Name(), deref(p.Panel.Title))
				}
			case p.RowPanel != nil:
				id = p.RowPanel.Id
			default:
				t.Errorf("%s: panel without id", e.Name())
			}
			if ids[id] {
				t.Errorf("%s: duplicate panel id %d", e.Name(), id)
			}
			ids[id] = true
		}
	}
}

// The strict decoding above is not a formality: an unknown field in a
// panel, in the dashboard or in an InfluxDB target is refused.
func TestSchemaRefusesUnknownFields(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(dir, "tally-campaigns.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(m map[string]any){
		"dashboard": func(m map[string]any) { m["refreshh"] = "1m" },
		"panel":     func(m map[string]any) { panel(m, 1)["titel"] = "x" },
		"influx target": func(m map[string]any) {
			panel(m, 1)["targets"].([]any)[0].(map[string]any)["querry"] = "x"
		},
		"influx target without query": func(m map[string]any) {
			delete(panel(m, 1)["targets"].([]any)[0].(map[string]any), "query")
		},
	} {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		b, _ := json.Marshal(m)
		if _, err := Check(b); err == nil {
			t.Errorf("%s: unknown field accepted", name)
		} else if !strings.Contains(err.Error(), "unknown") && !strings.Contains(err.Error(), "not allowed") {
			t.Logf("%s: %v", name, err)
		}
	}
}

func panel(m map[string]any, i int) map[string]any { return m["panels"].([]any)[i].(map[string]any) }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

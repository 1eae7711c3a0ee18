package grafana

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// Check decodes a dashboard's JSON strictly against Grafana's dashboard
// schema (the foundation SDK's generated types, which refuse unknown
// fields), each panel and its targets too, and runs the schema's
// validation. It returns the panels it decoded.
//
// Panels are decoded one by one rather than through Dashboard's decoder:
// in SDK v0.0.22 PanelOrRowPanel.UnmarshalJSONStrict returns the typed-nil
// error of a successful Panel decode as an error, and Dashboard then drops
// the panel without a word — a schema check that checked no panel.
func Check(raw []byte) ([]dashboard.PanelOrRowPanel, error) {
	plugins.RegisterDefaultPlugins()
	RegisterInfluxQuery()
	var errs []error
	var d dashboard.Dashboard
	if err := Strict(d.UnmarshalJSONStrict(raw)); err != nil {
		errs = append(errs, err)
	}
	var top struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	var panels []dashboard.PanelOrRowPanel
	for i, rp := range top.Panels {
		var kind struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(rp, &kind); err != nil {
			errs = append(errs, fmt.Errorf("panels[%d]: %w", i, err))
			continue
		}
		if kind.Type == "row" {
			var r dashboard.RowPanel
			if err := Strict(r.UnmarshalJSONStrict(rp)); err != nil {
				errs = append(errs, fmt.Errorf("panels[%d] (row): %w", i, err))
				continue
			}
			if err := Strict(r.Validate()); err != nil {
				errs = append(errs, fmt.Errorf("panels[%d] (row): %w", i, err))
			}
			panels = append(panels, dashboard.PanelOrRowPanel{RowPanel: &r})
			continue
		}
		var p dashboard.Panel
		if err := Strict(p.UnmarshalJSONStrict(rp)); err != nil {
			errs = append(errs, fmt.Errorf("panels[%d]: %w", i, err))
			continue
		}
		targets, err := checkTargets(rp)
		if err != nil {
			errs = append(errs, fmt.Errorf("panels[%d]: %w", i, err))
		}
		p.Targets = targets
		if err := Strict(p.Validate()); err != nil {
			errs = append(errs, fmt.Errorf("panels[%d]: %w", i, err))
		}
		panels = append(panels, dashboard.PanelOrRowPanel{Panel: &p})
	}
	d.Panels = panels
	if err := Strict(d.Validate()); err != nil {
		errs = append(errs, err)
	}
	return panels, errors.Join(errs...)
}

// queryTypes are the datasources our dashboards use, with their strict
// target decoders.
var queryTypes = map[string]func([]byte) (variants.Dataquery, error){
	"prometheus": strictUnmarshalPrometheus,
	InfluxDBType: strictUnmarshalInflux,
}

// checkTargets decodes a panel's targets strictly by their datasource's
// type (the same SDK typed-nil problem makes Panel's own decoder drop
// them) and validates each.
func checkTargets(rawPanel []byte) ([]variants.Dataquery, error) {
	var p struct {
		Datasource struct {
			Type string `json:"type"`
		} `json:"datasource"`
		Targets []json.RawMessage `json:"targets"`
	}
	if err := json.Unmarshal(rawPanel, &p); err != nil {
		return nil, err
	}
	var out []variants.Dataquery
	var errs []error
	for i, rt := range p.Targets {
		var t struct {
			Datasource struct {
				Type string `json:"type"`
			} `json:"datasource"`
		}
		_ = json.Unmarshal(rt, &t)
		typ := t.Datasource.Type
		if typ == "" {
			typ = p.Datasource.Type
		}
		decode := queryTypes[typ]
		if decode == nil {
			errs = append(errs, fmt.Errorf("targets[%d]: datasource type %q is not one we check", i, typ))
			continue
		}
		dq, err := decode(rt)
		if err = Strict(err); err != nil {
			errs = append(errs, fmt.Errorf("targets[%d]: %w", i, err))
			continue
		}
		if err := Strict(dq.Validate()); err != nil {
			errs = append(errs, fmt.Errorf("targets[%d]: %w", i, err))
		}
		out = append(out, dq)
	}
	return out, errors.Join(errs...)
}

// strictUnmarshalPrometheus decodes a Prometheus target with the SDK's
// strict decoder (its VariantConfig wrapper has the typed-nil problem too).
func strictUnmarshalPrometheus(raw []byte) (variants.Dataquery, error) {
	q := &prometheus.Dataquery{}
	if err := Strict(q.UnmarshalJSONStrict(raw)); err != nil {
		return nil, err
	}
	return q, nil
}

package alert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// JSON of rules and budgets (the admin API and the stored documents)
// writes durations as Go duration strings ("15m", "1h30m"), as the YAML
// does, and decodes strictly: an unknown key is an error.

// duration is a time.Duration in JSON as "15m".
type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(time.Duration(d).String())
}

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"15m\": %w", err)
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the object")
	}
	return nil
}

type ruleJSON struct {
	Name        string   `json:"name"`
	Kind        string   `json:"kind"`
	Campaigns   []string `json:"campaigns,omitempty"`
	Severity    string   `json:"severity,omitempty"`
	Metric      string   `json:"metric,omitempty"`
	Op          string   `json:"op,omitempty"`
	Value       float64  `json:"value,omitempty"`
	Window      duration `json:"window,omitzero"`
	For         duration `json:"for,omitzero"`
	MinVolume   float64  `json:"min_volume,omitempty"`
	Sensitivity string   `json:"sensitivity,omitempty"`
	Metrics     []string `json:"metrics,omitempty"`
}

// MarshalJSON writes the rule with duration strings.
func (r Rule) MarshalJSON() ([]byte, error) {
	return json.Marshal(ruleJSON{r.Name, r.Kind, r.Campaigns, r.Severity, r.Metric, r.Op, r.Value, duration(r.Window),
		duration(r.For), r.MinVolume, r.Sensitivity, r.Metrics})
}

// UnmarshalJSON reads a rule strictly.
func (r *Rule) UnmarshalJSON(b []byte) error {
	var j ruleJSON
	if err := strict(b, &j); err != nil {
		return err
	}
	*r = Rule{j.Name, j.Kind, j.Campaigns, j.Severity, j.Metric, j.Op, j.Value, time.Duration(j.Window), time.Duration(j.For),
		j.MinVolume, j.Sensitivity, j.Metrics}
	return nil
}

type budgetJSON struct {
	Campaign       string    `json:"campaign"`
	Daily          float64   `json:"daily,omitempty"`
	Total          float64   `json:"total,omitempty"`
	Start          time.Time `json:"start,omitzero"`
	End            time.Time `json:"end,omitzero"`
	TimeZone       string    `json:"time_zone,omitempty"`
	TargetCPA      float64   `json:"target_cpa,omitempty"`
	TargetROAS     float64   `json:"target_roas,omitempty"`
	TargetWindow   duration  `json:"target_window,omitzero"`
	Tolerance      *float64  `json:"tolerance,omitempty"`
	MinConversions float64   `json:"min_conversions,omitempty"`
}

// MarshalJSON writes the budget with a duration string.
func (b Budget) MarshalJSON() ([]byte, error) {
	return json.Marshal(budgetJSON{b.Campaign, b.Daily, b.Total, b.Start, b.End, b.TimeZone, b.TargetCPA, b.TargetROAS,
		duration(b.TargetWindow), b.Tolerance, b.MinConversions})
}

// UnmarshalJSON reads a budget strictly.
func (b *Budget) UnmarshalJSON(data []byte) error {
	var j budgetJSON
	if err := strict(data, &j); err != nil {
		return err
	}
	*b = Budget{j.Campaign, j.Daily, j.Total, j.Start, j.End, j.TimeZone, j.TargetCPA, j.TargetROAS, time.Duration(j.TargetWindow),
		j.Tolerance, j.MinConversions}
	return nil
}

type silenceJSON Silence

// UnmarshalJSON reads a silence strictly.
func (s *Silence) UnmarshalJSON(b []byte) error {
	var j silenceJSON
	if err := strict(b, &j); err != nil {
		return err
	}
	*s = Silence(j)
	return nil
}

package grafana

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
)

// InfluxQuery is a target of Grafana's InfluxDB datasource in raw mode:
// InfluxQL (RawQuery true, with ResultFormat) or Flux (the datasource
// decides the language). The foundation SDK has no InfluxDB query type, so
// this one is ours; StrictUnmarshal refuses unknown fields the way the
// SDK's own types do, so a hand edit of the JSON cannot slip a field the
// checks do not know about.
type InfluxQuery struct {
	RefID        string                `json:"refId"`
	Datasource   *common.DataSourceRef `json:"datasource,omitempty"`
	Query        string                `json:"query"`
	RawQuery     bool                  `json:"rawQuery,omitempty"`
	ResultFormat string                `json:"resultFormat,omitempty"`
	Alias        string                `json:"alias,omitempty"`
	Hide         bool                  `json:"hide,omitempty"`
}

// InfluxDBType is the plugin id of Grafana's InfluxDB datasource.
const InfluxDBType = "influxdb"

// ImplementsDataqueryVariant marks InfluxQuery as a panel target.
func (InfluxQuery) ImplementsDataqueryVariant() {}

// DataqueryType names the datasource plugin.
func (InfluxQuery) DataqueryType() string { return InfluxDBType }

// Equals compares two targets.
func (q InfluxQuery) Equals(other variants.Dataquery) bool {
	o, ok := other.(InfluxQuery)
	if !ok {
		return false
	}
	a, _ := json.Marshal(q)
	b, _ := json.Marshal(o)
	return bytes.Equal(a, b)
}

// Validate checks what Grafana needs to run the target.
func (q InfluxQuery) Validate() error {
	var errs []error
	if q.RefID == "" {
		errs = append(errs, errors.New("refId: required"))
	}
	if q.Query == "" {
		errs = append(errs, errors.New("query: required"))
	}
	switch q.ResultFormat {
	case "", "time_series", "table":
	default:
		errs = append(errs, fmt.Errorf("resultFormat %q: want time_series or table", q.ResultFormat))
	}
	return errors.Join(errs...)
}

// strictUnmarshalInflux decodes a target, refusing unknown fields.
func strictUnmarshalInflux(raw []byte) (variants.Dataquery, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var q InfluxQuery
	if err := dec.Decode(&q); err != nil {
		return nil, fmt.Errorf("influxdb target: %w", err)
	}
	return q, q.Validate()
}

func unmarshalInflux(raw []byte) (variants.Dataquery, error) {
	var q InfluxQuery
	err := json.Unmarshal(raw, &q)
	return q, err
}

// RegisterInfluxQuery teaches the SDK's runtime to decode InfluxDB targets
// (strictly, in UnmarshalJSONStrict).
func RegisterInfluxQuery() {
	cog.NewRuntime().RegisterDataqueryVariant(variants.DataqueryConfig{
		Identifier:                 InfluxDBType,
		DataqueryUnmarshaler:       unmarshalInflux,
		StrictDataqueryUnmarshaler: strictUnmarshalInflux,
	})
}

// influxTarget builds an InfluxQuery for a panel.
type influxTarget struct{ q InfluxQuery }

func (b influxTarget) Build() (variants.Dataquery, error) { return b.q, b.q.Validate() }

// Strict turns the SDK's typed-nil error (an empty cog.BuildErrors, which
// its decoders return on success) into nil.
func Strict(err error) error {
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

package harness

import (
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tally-edge/tally/internal/status"
)

// MetricSum adds up the samples of the counter, gauge or untyped family
// name in text (Prometheus' text format, as /metrics answers) whose
// labels include every given pair, each written as in that format, such
// as `reason="malformed_json"`. It sums as `tally-* status` does
// (status.Snapshot.Sum), so tests read metrics the way operators do. A
// family that is absent, or text that does not parse, sums to 0; a label
// pair not of the form name="value" matches nothing.
func MetricSum(text, name string, labels ...string) float64 {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return 0
	}
	match := make(map[string]string, len(labels))
	for _, l := range labels {
		k, quoted, ok := strings.Cut(l, "=")
		v, err := strconv.Unquote(quoted)
		if !ok || err != nil {
			return 0
		}
		match[k] = v
	}
	sum, _ := status.Snapshot{Metrics: families}.Sum(name, match)
	return sum
}

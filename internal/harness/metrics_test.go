package harness

import "testing"

func TestMetricSum(t *testing.T) {
	text := `# HELP tally_x_total Things.
# TYPE tally_x_total counter
tally_x_total{reason="a",node="n1"} 2
tally_x_total{reason="b",node="n1"} 3
tally_x_total{reason="a",node="n2"} 5
tally_x_total_other{reason="a"} 100
tally_x 7
tally_x_seconds_bucket{le="1"} 9
`
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tally_x_total", nil, 10},
		{"tally_x_total", []string{`reason="a"`}, 7},
		{"tally_x_total", []string{`reason="a"`, `node="n2"`}, 5},
		{"tally_x_total", []string{`reason="c"`}, 0},
		{"tally_x", nil, 7}, // neither tally_x_total nor tally_x_seconds_bucket
		{"tally_missing", nil, 0},
		{"tally_x_total", []string{"reason"}, 0}, // not name="value"
	} {
		if got := MetricSum(text, c.name, c.labels...); got != c.want {
			t.Errorf("MetricSum(%s, %v) = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

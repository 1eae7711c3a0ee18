package harness

import (
	"bufio"
	"strconv"
	"strings"
)

// MetricSum adds up every sample of the metric name in text (Prometheus'
// text format) whose line contains all of the given label pairs, such as
// `reason="malformed_json"`. Samples of other metrics that merely start
// with name (name_total, name_bucket) are not counted.
func MetricSum(text, name string, labels ...string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) == len(name) || (line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		matches := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				matches = false
				break
			}
		}
		if !matches {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

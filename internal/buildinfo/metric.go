package buildinfo

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns the <prefix>_build_info gauge: always 1, labelled with
// the build (version, revision, go version, goos, goarch, modified), as
// Prometheus and its exporters do, so that a dashboard or an alert can
// tell which version each process runs (during a rolling upgrade, say)
// with `count by (version) (tally_aggregator_build_info)`.
func Collector(prefix string) prometheus.Collector {
	i := Get()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: prefix + "_build_info",
		Help: "Always 1; the labels say which build of Tally this process runs.",
		ConstLabels: prometheus.Labels{"version": i.Version, "revision": i.Revision, "goversion": i.GoVersion,
			"goos": i.OS, "goarch": i.Arch, "modified": strconv.FormatBool(i.Modified)},
	}, func() float64 { return 1 })
}

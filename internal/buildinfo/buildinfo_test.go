package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFillPrefersLinkerValues(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v0.9.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "fromtoolchain"}, {Key: "vcs.time", Value: "2020-01-01T00:00:00Z"},
		{Key: "vcs.modified", Value: "true"}}}
	info := Info{Version: "1.2.3", Revision: "fromlinker"}
	fill(&info, bi)
	if info.Version != "1.2.3" || info.Revision != "fromlinker" {
		t.Fatalf("linker values replaced: %+v", info)
	}
	if info.Date != "2020-01-01T00:00:00Z" || !info.Modified {
		t.Fatalf("toolchain values not used where the linker left gaps: %+v", info)
	}
}

func TestFillFromToolchain(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}}}
	var info Info
	fill(&info, bi)
	if info.Version != "" {
		t.Fatalf("(devel) taken as a version: %q", info.Version)
	}
	info.Version, info.GoVersion, info.OS, info.Arch = "devel", "go1.26", "linux", "arm64"
	if got, want := info.String("tally-agent"), "tally-agent devel (revision 0123456789ab, go1.26 linux/arm64)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

func TestGetTrimsV(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v2.0.1"
	if got := Get().Version; got != "2.0.1" {
		t.Fatalf("Version = %q, want 2.0.1", got)
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector("tally_test"))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "tally_test_build_info" || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v", mfs)
	}
	m := mfs[0].GetMetric()[0]
	if m.GetGauge().GetValue() != 1 {
		t.Fatalf("build_info = %v, want 1", m.GetGauge().GetValue())
	}
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	i := Get()
	if labels["version"] != i.Version || labels["goversion"] != runtime.Version() || labels["goarch"] != runtime.GOARCH {
		t.Fatalf("labels %v, build %+v", labels, i)
	}
}

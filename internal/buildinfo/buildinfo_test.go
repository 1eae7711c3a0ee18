package buildinfo

import (
	"runtime/debug"
	"testing"
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

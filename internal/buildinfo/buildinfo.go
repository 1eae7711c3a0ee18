// Package buildinfo says which build of Tally a binary is: the release
// version stamped by `make release` (-ldflags -X), else what the Go
// toolchain recorded (module version, VCS revision and time), so that
// `-version` answers something useful even for a plain `go build`.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at link time by the Makefile's release and package targets:
//
//	-ldflags "-X github.com/tally-edge/tally/internal/buildinfo.version=1.2.3
//	          -X github.com/tally-edge/tally/internal/buildinfo.revision=<git sha>
//	          -X github.com/tally-edge/tally/internal/buildinfo.date=<RFC 3339>"
//
// They are unexported variables (not constants) because -X can only set
// string variables; Get is the way to read them.
var (
	version  string
	revision string
	date     string
)

// Info describes one build.
type Info struct {
	// Version is the release version (without a leading "v"), or "devel"
	// for a build that was not stamped and has no module version.
	Version string
	// Revision is the VCS commit the binary was built from, or "".
	Revision string
	// Modified reports uncommitted changes in the tree at build time
	// (known only from the Go toolchain's VCS stamp).
	Modified bool
	// Date is the commit time (from the VCS stamp) or the release time
	// (from the Makefile), RFC 3339, or "".
	Date string
	// GoVersion, OS and Arch are the toolchain and target of the binary.
	GoVersion, OS, Arch string
}

// Get returns the build information of the running binary.
func Get() Info {
	info := Info{Version: version, Revision: revision, Date: date,
		GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		fill(&info, bi)
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	info.Version = strings.TrimPrefix(info.Version, "v")
	return info
}

// fill completes what the linker flags left empty from the toolchain's
// record of the build.
func fill(info *Info, bi *debug.BuildInfo) {
	if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		info.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if info.Revision == "" {
				info.Revision = s.Value
			}
		case "vcs.time":
			if info.Date == "" {
				info.Date = s.Value
			}
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
}

// String is the one line `-version` prints, for example
//
//	tally-agent 1.2.3 (revision 0123abcd, 2026-03-01T10:00:00Z, go1.26.8 linux/amd64)
func (i Info) String(program string) string {
	var parts []string
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if i.Modified {
			rev += "+modified"
		}
		parts = append(parts, "revision "+rev)
	}
	if i.Date != "" {
		parts = append(parts, i.Date)
	}
	parts = append(parts, fmt.Sprintf("%s %s/%s", i.GoVersion, i.OS, i.Arch))
	return fmt.Sprintf("%s %s (%s)", program, i.Version, strings.Join(parts, ", "))
}

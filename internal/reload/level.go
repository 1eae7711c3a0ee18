package reload

import (
	"fmt"
	"log/slog"
	"strings"
)

// Level is a daemon's log level. The -log-level flag, when given on the
// command line, decides it for the life of the process; otherwise the
// configuration file's log_level does (at start and at every reload), and
// a file that sets none means the default, info. A nil *Level does
// nothing and reads as info.
type Level struct {
	v      slog.LevelVar
	start  slog.Level
	pinned bool
}

// NewLevel returns the level start; pinned says the operator chose it
// with the flag, so that the file cannot change it.
func NewLevel(start slog.Level, pinned bool) *Level {
	l := &Level{start: start, pinned: pinned}
	l.v.Set(start)
	return l
}

// Level implements slog.Leveler: give it to the logger's handler.
func (l *Level) Level() slog.Level {
	if l == nil {
		return slog.LevelInfo
	}
	return l.v.Level()
}

// Pinned reports whether the flag decides the level.
func (l *Level) Pinned() bool { return l != nil && l.pinned }

// Set puts the file's log_level in force: name, or the start level when
// name is empty; nothing when the level is pinned. name must be valid
// (ParseLevel); an invalid one is ignored.
func (l *Level) Set(name string) {
	if l == nil || l.pinned {
		return
	}
	if name == "" {
		l.v.Set(l.start)
		return
	}
	if lvl, err := ParseLevel(name); err == nil {
		l.v.Set(lvl)
	}
}

// String names the level in force.
func (l *Level) String() string { return strings.ToLower(l.Level().String()) }

// ParseLevel checks a log_level value: "" (none), debug, info, warn or
// error.
func ParseLevel(name string) (slog.Level, error) {
	switch strings.ToLower(name) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", name)
}

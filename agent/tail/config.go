package tail

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Config tunes a Tailer. A zero field means its default (DefaultConfig);
// negative values are errors.
type Config struct {
	// Paths are absolute file paths or globs (filepath.Match syntax, e.g.
	// /var/log/nginx/*.access.log). Every match is followed as its own
	// source, "tail:" + the matched path. Patterns should match live logs
	// only: a match that is a rotated name of another match (see
	// RotatedSuffixes) is never followed on its own.
	Paths []string
	// PollInterval is how often the globs are expanded and idle files are
	// checked for new lines, rotation and truncation. It is the latency of
	// a line written to an idle file and the resolution of IdleFlush and
	// RotateWait. Default 1s.
	PollInterval time.Duration
	// MaxLineBytes is the longest line handed to the decoder, without its
	// newline. Longer lines are skipped up to their newline and counted as
	// malformed ("too_long"); they are never buffered. Default 64 KiB.
	MaxLineBytes int
	// BatchLines is the most lines in one AcceptAt. Default 1000.
	BatchLines int
	// BatchBytes is the size of one read call, and so (plus at most one line
	// carried over from the previous read) the most bytes of lines in one
	// AcceptAt. Default 64 KiB.
	BatchBytes int
	// IdleFlush is how long a file may end in a torn line (no newline yet)
	// without growing before that fragment is taken to be a whole line: the
	// writer is gone. Shorter means a crashed writer's last line is counted
	// sooner; too short splits a line whose writer is merely slow into two
	// malformed fragments. Default 5m.
	IdleFlush time.Duration
	// RotateWait is how long a file that was rotated away (renamed,
	// removed, or the copy left by copytruncate) keeps being read after it
	// last grew, before the tailer moves on to the file now at its path. It
	// covers writers that reopen their log some time after the rename
	// (nginx on USR1, Apache's graceful restart). Lines written to the old
	// file later than that are lost. Longer only delays the new file.
	// Default 10s.
	RotateWait time.Duration
	// RotatedSuffixes are globs that, appended to a followed path, name
	// where that file goes when rotated: "access.log" + ".1" or
	// "-20240101". They serve to find the unread rest of a file rotated
	// while the agent was stopped, the copy left by copytruncate, and to
	// keep rotated names matched by a broad pattern from being followed
	// twice. nil means the default {".[0-9]*", "-[0-9]*"}; an empty
	// non-nil slice disables all three.
	RotatedSuffixes []string
}

// DefaultConfig returns the defaults. Paths is empty and must be set.
func DefaultConfig() Config {
	return Config{
		PollInterval:    time.Second,
		MaxLineBytes:    64 << 10,
		BatchLines:      1000,
		BatchBytes:      64 << 10,
		IdleFlush:       5 * time.Minute,
		RotateWait:      10 * time.Second,
		RotatedSuffixes: []string{".[0-9]*", "-[0-9]*"},
	}
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = d.MaxLineBytes
	}
	if c.BatchLines == 0 {
		c.BatchLines = d.BatchLines
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = d.BatchBytes
	}
	if c.IdleFlush == 0 {
		c.IdleFlush = d.IdleFlush
	}
	if c.RotateWait == 0 {
		c.RotateWait = d.RotateWait
	}
	if c.RotatedSuffixes == nil {
		c.RotatedSuffixes = d.RotatedSuffixes
	}
	return c
}

// maxLineLimit bounds MaxLineBytes: one line is held in memory per file.
const maxLineLimit = 16 << 20

// Validate reports every problem at once. Zero fields are valid (they mean
// the default).
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Paths) == 0 {
		bad("paths: at least one path or glob required")
	}
	for _, p := range c.Paths {
		switch {
		case !filepath.IsAbs(p):
			// The source name is derived from the path, so it must not
			// depend on the working directory.
			bad("paths: %q is not absolute", p)
		case strings.HasSuffix(p, string(filepath.Separator)):
			bad("paths: %q names a directory; add a file pattern", p)
		default:
			if _, err := filepath.Match(p, ""); err != nil {
				bad("paths: %q: %w", p, err)
			}
		}
	}
	if c.PollInterval < 0 {
		bad("poll_interval: %v is negative", c.PollInterval)
	}
	if c.MaxLineBytes < 0 || c.MaxLineBytes > maxLineLimit {
		bad("max_line_bytes: %d is outside 1..%d", c.MaxLineBytes, maxLineLimit)
	}
	if c.BatchLines < 0 {
		bad("batch_lines: %d is negative", c.BatchLines)
	}
	if c.BatchBytes < 0 || (c.BatchBytes > 0 && c.BatchBytes < 512) || c.BatchBytes > 16<<20 {
		bad("batch_bytes: %d is outside 512..%d", c.BatchBytes, 16<<20)
	}
	if c.IdleFlush < 0 {
		bad("idle_flush: %v is negative", c.IdleFlush)
	}
	if c.RotateWait < 0 {
		bad("rotate_wait: %v is negative", c.RotateWait)
	}
	for _, s := range c.RotatedSuffixes {
		if s == "" || strings.ContainsRune(s, filepath.Separator) {
			bad("rotated_suffixes: %q must be non-empty and within the file name", s)
			continue
		}
		if _, err := filepath.Match(s, ""); err != nil {
			bad("rotated_suffixes: %q: %w", s, err)
		}
	}
	return errors.Join(errs...)
}

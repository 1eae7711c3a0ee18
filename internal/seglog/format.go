package seglog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FormatVersion is the version of the segment and record framing this
// package reads and writes (see the package doc). Open records it in
// <dir>/seglog.format ("seglog 1"); a directory without the file was
// written before the file existed, by version 1. A directory naming a
// version this build does not know is refused, never misread: framing
// changes bump the version and keep reading the older ones.
const FormatVersion = 1

const formatFile = "seglog.format"

// checkFormat reads dir's format file, or writes it when missing (a new
// directory, or one written before it existed), and refuses versions it
// does not know.
func checkFormat(dir string) error {
	path := filepath.Join(dir, formatFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return writeFormat(dir)
	case err != nil:
		return fmt.Errorf("read %s: %w", formatFile, err)
	}
	v, ok := parseFormat(string(b))
	if !ok {
		return &CorruptError{Segment: path, Reason: fmt.Sprintf("format file holds %q, want \"seglog N\"", strings.TrimSpace(string(b)))}
	}
	if v != FormatVersion {
		return fmt.Errorf("log format version %d (%s); this build reads version %d: %w", v, path, FormatVersion, ErrFormat)
	}
	return nil
}

func parseFormat(s string) (int, bool) {
	name, v, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok || name != "seglog" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n > 0
}

// writeFormat writes the format file durably (temporary file, fsync,
// rename, fsync of the directory).
func writeFormat(dir string) error {
	path := filepath.Join(dir, formatFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", formatFile, err)
	}
	_, err = fmt.Fprintf(f, "seglog %d\n", FormatVersion)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", formatFile, err)
	}
	return nil
}

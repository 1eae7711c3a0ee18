package collector

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// NextEpoch reads the restart epoch stored in dir, increments it, stores it
// durably and returns the new value. Every process start gets a fresh
// epoch, so the contribution ids it creates never collide with those of an
// earlier run whose batches may still be in flight.
func NextEpoch(dir string) (uint32, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return 0, fmt.Errorf("create state dir: %w", err)
	}
	path := filepath.Join(dir, "epoch")
	var cur uint64
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		cur, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return 0, fmt.Errorf("epoch file %q is corrupt (%q); refusing to guess", path, b)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return 0, fmt.Errorf("read epoch: %w", err)
	}
	if cur >= math.MaxUint32 {
		return 0, fmt.Errorf("epoch %d exhausted", cur)
	}
	next := uint32(cur + 1)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return 0, fmt.Errorf("write epoch: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%d\n", next)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return 0, fmt.Errorf("write epoch: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("write epoch: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return next, nil
}

//go:build !unix

package seglog

import (
	"os"
	"path/filepath"
)

// lockDir only creates the lock file where flock(2) is not available: the
// caller must make sure a directory is opened by one Log at a time.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
}

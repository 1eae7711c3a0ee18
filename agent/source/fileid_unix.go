//go:build unix

package source

import (
	"errors"
	"os"
	"strconv"
	"syscall"
)

// FileID returns the identity of an open file, "dev:inode": the form kept
// in Position.File. Names change with rotation; the identity does not.
func FileID(f *os.File) (string, error) {
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "", errors.New("no device and inode for this file")
	}
	// The conversions matter off Linux: Dev is an int32 on darwin.
	return strconv.FormatUint(uint64(s.Dev), 10) + ":" + strconv.FormatUint(uint64(s.Ino), 10), nil
}

//go:build unix

package tail

import (
	"io/fs"
	"syscall"
)

// identityOf returns the device and inode of the file fi describes.
func identityOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	// The conversions matter off Linux: Dev is an int32 on darwin.
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}, true
}

//go:build !unix

package tail

import "io/fs"

// identityOf is unavailable: files are told apart by device and inode,
// which only Unix systems expose. New fails on these platforms.
func identityOf(fs.FileInfo) (fileID, bool) { return fileID{}, false }

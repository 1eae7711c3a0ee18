//go:build !unix

package source

import (
	"errors"
	"os"
)

// FileID is unavailable: files are told apart by device and inode, which
// only Unix systems expose. Sources that resume files refuse to run here.
func FileID(*os.File) (string, error) {
	return "", errors.New("files cannot be identified by device and inode on this platform")
}

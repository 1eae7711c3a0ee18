// Package dashboard holds the static dashboard assets that every
// aggregator node embeds and serves at /.
package dashboard

import (
	"embed"
	"io/fs"
)

//go:embed static
var files embed.FS

// Assets returns the dashboard's files, rooted at the site root.
func Assets() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

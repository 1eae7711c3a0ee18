// Command gen-dashboards writes Tally's Grafana dashboards (package
// grafana) as JSON files into -out.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tally-edge/tally/deploy/tools/grafana"
)

func main() {
	out := flag.String("out", "../grafana/dashboards", "directory to write the dashboards to")
	flag.Parse()
	files, err := grafana.Render()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen-dashboards:", err)
		os.Exit(1)
	}
	if err := grafana.WriteFiles(*out, files); err != nil {
		fmt.Fprintln(os.Stderr, "gen-dashboards:", err)
		os.Exit(1)
	}
}

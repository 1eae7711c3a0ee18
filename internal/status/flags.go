package status

import (
	"flag"
	"fmt"
	"io"
	"os"
)

func flagSet(program string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(program+" status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s status [-url URL] [-format text|json]\n", program)
		fmt.Fprintln(stderr, "Summarises health, readiness and key metrics of a running process.")
		fmt.Fprintln(stderr, "When /metrics needs a token (http.metrics_token), set TALLY_METRICS_TOKEN.")
		fs.PrintDefaults()
	}
	return fs
}

func getenv(k string) string { return os.Getenv(k) }

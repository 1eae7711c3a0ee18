package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/tally-edge/tally/agent/botfilter/dcrefresh"
	"github.com/tally-edge/tally/internal/cli"
)

// datacenterRefresh writes the bot filter's datacenter list from the
// registry package of dcrefresh (see agent/botfilter/README.md).
func datacenterRefresh(args []string) int {
	fs := flag.NewFlagSet("tally-agent datacenter-refresh", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: tally-agent datacenter-refresh -out FILE [flags]")
		fmt.Fprintf(fs.Output(), "writes the networks of cloud and hosting providers from npm's %s for bots.datacenter.files\n", dcrefresh.Package)
		fs.PrintDefaults()
	}
	out := fs.String("out", "", "CIDR list to write (replaced atomically); list it in bots.datacenter.files")
	registry := fs.String("registry", dcrefresh.DefaultRegistry, "npm registry to fetch the package from")
	version := fs.String("version", "", "package version (default: the latest)")
	from := fs.String("from", "", "read the package tarball from this file (npm pack output) instead of the registry")
	asns := fs.String("asn", "", "comma-separated AS numbers to keep (default: the cloud and hosting providers listed in the README)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	list, err := dcrefresh.ParseASNs(*asns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent datacenter-refresh:", err)
		return 2
	}
	logger, _ := cli.NewLogger(os.Stderr, "text", "warn")
	ctx, stop := cli.SignalContext(logger)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := dcrefresh.Refresh(ctx, dcrefresh.Options{Out: *out, Registry: *registry, Version: *version, From: *from, ASNs: list})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent datacenter-refresh:", err)
		return 1
	}
	fmt.Printf("%s: %d networks from %s %s (data of %s); restart the agent to load them\n",
		*out, res.Networks, dcrefresh.Package, res.Version, res.DataDate.Format(time.RFC3339))
	return 0
}

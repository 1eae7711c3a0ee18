// Command tally-aggregator merges the sketches of every agent into one
// global view, writes it to InfluxDB and serves the API and dashboard.
//
// Subcommands:
//
//	tally-aggregator [flags]        run (default)
//	tally-aggregator certs [flags]  create a development CA and certificates
//	tally-aggregator token          print a new API token and its SHA-256
//	tally-aggregator anomaly-eval -csv FILE
//	                                replay a timestamp,value CSV through the
//	                                anomaly detector; one JSON line per alert
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/tally-edge/tally/aggregator"
	"github.com/tally-edge/tally/aggregator/anomaly"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/internal/cli"
	"github.com/tally-edge/tally/internal/pki"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "certs" {
		return certs(args[1:])
	}
	if len(args) > 0 && args[0] == "token" {
		return token(args[1:])
	}
	if len(args) > 0 && args[0] == "anomaly-eval" {
		return anomalyEval(args[1:], os.Stdin, os.Stdout, os.Stderr)
	}
	return cli.Main("tally-aggregator", "tally-aggregator.yaml", args, config.Load,
		func(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
			return aggregator.Run(ctx, cfg, logger, nil)
		})
}

// token prints a new random API token and the SHA-256 that auth.tokens
// can hold instead of it.
func token(args []string) int {
	if len(args) > 0 {
		fmt.Fprintln(os.Stderr, "usage: tally-aggregator token")
		return 2
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		fmt.Fprintln(os.Stderr, "tally-aggregator token:", err)
		return 1
	}
	t := hex.EncodeToString(b)
	fmt.Printf("token: %s\ntoken_sha256: %s\n", t, auth.HashToken(t))
	return 0
}

// anomalyEval replays a CSV through the live detector (default
// configuration, the series taken as event counts) and prints each alert
// as a JSON line.
func anomalyEval(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally-aggregator anomaly-eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("csv", "", "CSV file of timestamp,value rows (- for standard input)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: tally-aggregator anomaly-eval -csv FILE")
		return 2
	}
	in := stdin
	if *path != "-" {
		f, err := os.Open(*path)
		if err != nil {
			fmt.Fprintln(stderr, "tally-aggregator anomaly-eval:", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	if _, err := anomaly.Replay(anomaly.DefaultConfig(), in, stdout); err != nil {
		fmt.Fprintf(stderr, "tally-aggregator anomaly-eval: %s: %v\n", *path, err)
		return 1
	}
	return 0
}

// certs creates a development CA and certificates for agents and nodes.
func certs(args []string) int {
	fs := flag.NewFlagSet("tally-aggregator certs", flag.ContinueOnError)
	dir := fs.String("dir", "certs", "directory to write PEM files to")
	hosts := fs.String("hosts", strings.Join(pki.DefaultHosts(), ","), "comma-separated DNS names and IPs for aggregator certificates")
	agents := fs.String("agents", "", "comma-separated agent names (one client certificate each; CN = name)")
	aggs := fs.String("aggregators", "agg-1", "comma-separated aggregator node names (one server+client certificate each)")
	force := fs.Bool("force", false, "replace an existing CA and certificates")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	written, err := pki.GenerateDev(*dir, pki.DevOptions{Hosts: split(*hosts), Agents: split(*agents),
		Aggregators: split(*aggs), Force: *force})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-aggregator certs:", err)
		return 1
	}
	if len(written) == 0 {
		fmt.Printf("certificates in %s are up to date\n", *dir)
	}
	for _, f := range written {
		fmt.Println("wrote", f)
	}
	return 0
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

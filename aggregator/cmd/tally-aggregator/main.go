// Command tally-aggregator merges the sketches of every agent into one
// global view, writes it to InfluxDB and serves the API and dashboard.
//
// Subcommands:
//
//	tally-aggregator [flags]        run (default)
//	tally-aggregator certs [flags]  create a development CA and certificates
//	tally-aggregator token          print a new API token and its SHA-256
//	tally-aggregator quarantine list|replay -config FILE
//	                                show, or send back to the node, what InfluxDB refused
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/tally-edge/tally/aggregator"
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
	if len(args) > 0 && args[0] == "quarantine" {
		return quarantineCmd(args[1:])
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

// quarantineCmd lists the node's quarantine or replays it to the node.
func quarantineCmd(args []string) int {
	usage := "usage: tally-aggregator quarantine list|replay -config FILE [-addr HOST:PORT]"
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("tally-aggregator quarantine "+args[0], flag.ContinueOnError)
	configPath := fs.String("config", "tally-aggregator.yaml", "the node's configuration file (YAML)")
	addr := fs.String("addr", "", "replay: the node's QUIC address (default quic.advertise, else quic.listen)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-aggregator quarantine:", err)
		return 2
	}
	if args[0] == "list" {
		err = aggregator.QuarantineList(os.Stdout, cfg)
	} else {
		logger, _ := cli.NewLogger(os.Stderr, "text", "warn")
		ctx, stop := cli.SignalContext(logger)
		defer stop()
		err = aggregator.QuarantineReplay(ctx, os.Stdout, cfg, *addr, logger)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-aggregator quarantine:", err)
		return 1
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

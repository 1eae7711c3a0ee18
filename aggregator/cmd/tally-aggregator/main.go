// Command tally-aggregator merges the sketches of every agent into one
// global view, writes it to InfluxDB and serves the API and dashboard.
//
// Subcommands:
//
//	tally-aggregator [flags]        run (default; -version prints the build)
//	tally-aggregator status         summarise the health of a running node
//	tally-aggregator certs [flags]  create a development CA and certificates
//	tally-aggregator token          print a new API token and its SHA-256
//	tally-aggregator link [flags]   print a short-lived, single-use dashboard sign-in link
//	tally-aggregator anomaly-eval -csv FILE
//	                                replay a timestamp,value CSV through the
//	                                anomaly detector; one JSON line per alert
//	tally-aggregator quarantine list|replay -config FILE
//	                                show, or send back to the node, what InfluxDB refused
//	tally-aggregator archive export|verify|restore|list -from DAY -to DAY
//	                                the Parquet archive of settled days (docs/archive.md)
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/tally-edge/tally/aggregator"
	"github.com/tally-edge/tally/aggregator/anomaly"
	"github.com/tally-edge/tally/aggregator/auth"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/internal/cli"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/internal/status"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "certs" {
		return certs(args[1:])
	}
	if len(args) > 0 && args[0] == "status" {
		return status.Command("tally-aggregator", "http://127.0.0.1:8080", args[1:], os.Stdout, os.Stderr, status.Aggregator)
	}
	if len(args) > 0 && args[0] == "token" {
		return token(args[1:])
	}
	if len(args) > 0 && args[0] == "archive" {
		return archiveCmd(args[1:], os.Stdout, os.Stderr)
	}
	if len(args) > 0 && args[0] == "link" {
		return link(args[1:], os.Stdout, os.Stderr)
	}
	if len(args) > 0 && args[0] == "anomaly-eval" {
		return anomalyEval(args[1:], os.Stdin, os.Stdout, os.Stderr)
	}
	if len(args) > 0 && args[0] == "quarantine" {
		return quarantineCmd(args[1:])
	}
	return cli.Main("tally-aggregator", "tally-aggregator.yaml", args, config.Load,
		func(ctx context.Context, cfg config.Config, logger *slog.Logger, svc *cli.Service) error {
			// SIGHUP reads the file again: see aggregator.ReloadableKeys.
			src := cli.ReloadSource(svc, config.Load)
			src.Level.Set(cfg.LogLevel)
			return aggregator.RunWith(ctx, cfg, logger, aggregator.Options{Reload: src, Ready: func(a aggregator.Addrs) {
				// Ready once both listeners are up; /readyz says when the
				// node has also rebuilt its open minutes.
				svc.Ready(ctx, "serving API on "+a.HTTP+", QUIC on "+a.QUIC, cli.HealthzCheck(a.HTTP, cfg.HTTP.TLSCert != ""))
			}})
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

// link prints a dashboard sign-in link: the node's address with a link
// token that opens one session (of the role and scope asked for) and
// expires soon. It signs with auth.links.secret of the configuration, so
// every node sharing that secret accepts it; without the secret it fails
// (a node would not accept the link).
func link(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally-aggregator link", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "tally-aggregator.yaml", "the node's configuration (for auth.links and http.listen)")
	role := fs.String("role", "admin", "role of the session: admin, analyst or viewer")
	subject := fs.String("subject", "", "subject of the session (default: link-<role>)")
	campaigns := fs.String("campaigns", "", "comma-separated campaigns of a viewer")
	ttl := fs.Duration("ttl", 0, "lifetime of the link (default auth.links.link_ttl, 15m; at most 24h)")
	base := fs.String("url", "", "the dashboard's address (default from http.listen)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "tally-aggregator link:", err)
		return 1
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fail(err)
	}
	authCfg, err := cfg.Auth.AuthConfig()
	if err != nil {
		return fail(err)
	}
	authn, err := auth.New(authCfg)
	if err != nil {
		return fail(err)
	}
	links := authn.Links()
	if !links.Shared() {
		return fail(errors.New("auth.links.secret is not set in " + *cfgPath + ": the nodes would not accept a link minted here " +
			"(set it on every node, or mint a link with POST /api/v1/links)"))
	}
	who := auth.Principal{Subject: *subject, Role: auth.Role(*role), Campaigns: split(*campaigns)}
	if who.Subject == "" {
		who.Subject = "link-" + *role
	}
	token, exp, err := links.MintLink(who, *ttl)
	if err != nil {
		return fail(err)
	}
	u := *base
	if u == "" {
		u = dashboardURL(cfg.HTTP)
	}
	fmt.Fprintf(stdout, "%s/?link=%s\n", strings.TrimRight(u, "/"), token)
	fmt.Fprintf(stderr, "opens one %s session for %s; valid until %s\n", who.Role, who.Subject, exp.Local().Format(time.DateTime))
	return 0
}

// dashboardURL is the address http.listen serves at (localhost when it
// listens on every interface).
func dashboardURL(h config.HTTP) string {
	scheme := "http"
	if h.TLSCert != "" {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(h.Listen)
	if err != nil {
		return scheme + "://" + h.Listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
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

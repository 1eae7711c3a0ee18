// Command tally-agent collects campaign events next to web servers,
// pre-aggregates them into per-minute sketches and ships them to the
// aggregator cluster. See the README for the configuration file.
//
// Subcommands:
//
//	tally-agent [flags]                     run (default; -version prints the build)
//	tally-agent status [-url URL]           summarise the health of a running agent
//	tally-agent import-log [flags] FILE...  backfill historical access logs
//	tally-agent import-cost [-agent URL] [-token T] FILE...   post spend reports to a running agent
//	tally-agent import-email [-agent URL] [-token T] FILE...  post email event files to a running agent
//	tally-agent import-polls [-agent URL] [-token T] FILE...  post poll results to a running agent
//	tally-agent dead-letters list|replay [flags]   inspect or re-send batches aggregators refused
//	tally-agent datacenter-refresh -out FILE       write the bot filter's datacenter list
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/tally-edge/tally/agent"
	"github.com/tally-edge/tally/agent/backfill"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/imports"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/internal/cli"
	"github.com/tally-edge/tally/internal/status"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "status" {
		return status.Command("tally-agent", "http://127.0.0.1:8081", args[1:], os.Stdout, os.Stderr, status.Agent)
	}
	if len(args) > 0 && args[0] == "import-log" {
		return importLog(args[1:])
	}
	if len(args) > 0 && args[0] == "datacenter-refresh" {
		return datacenterRefresh(args[1:])
	}
	if len(args) > 0 && (args[0] == "import-cost" || args[0] == "import-email" || args[0] == "import-polls") {
		return importFiles(args[0], args[1:])
	}
	if len(args) > 0 && args[0] == "dead-letters" {
		return deadLetters(args[1:])
	}
	return cli.Main("tally-agent", "tally-agent.yaml", args, config.Load,
		func(ctx context.Context, cfg config.Config, logger *slog.Logger, svc *cli.Service) error {
			return agent.Run(ctx, cfg, logger, func(l agent.Listeners) {
				what := "serving on " + l.HTTP
				if l.Server != "" {
					what += ", server senders on " + l.Server
				}
				svc.Ready(ctx, what, cli.HealthzCheck(l.HTTP, false))
			})
		})
}

// importLog backfills access logs through the agent's pipeline.
func importLog(args []string) int {
	fs := flag.NewFlagSet("tally-agent import-log", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: tally-agent import-log [flags] FILE... (plain or gzip)")
		fs.PrintDefaults()
	}
	configPath := fs.String("config", "tally-agent.yaml", "agent configuration file (aggregator, certificates, privacy)")
	source := fs.Int("source", -1, "use the parsing rules of sources.logs[N] in the configuration (instead of -format and friends)")
	format := fs.String("format", "combined", "log format: combined, common, nginx or json")
	nginxFormat := fs.String("nginx-format", "", "nginx log_format string (with -format nginx)")
	site := fs.String("site", "", "host to build page URLs with when lines carry none (e.g. www.example.com)")
	maxAge := fs.Duration("max-age", 10*365*24*time.Hour, "reject events older than this")
	progress := fs.String("progress", "auto", "progress display: auto (on a terminal), always or never")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the import to this file (for go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	logger, err := cli.NewLogger(os.Stderr, "text", *logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent import-log:", err)
		return 2
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent import-log:", err)
		return 2
	}
	spec := logparse.DefaultSpec()
	spec.Format, spec.NginxFormat, spec.Site = *format, *nginxFormat, *site
	if *source >= 0 {
		if *source >= len(cfg.Sources.Logs) {
			fmt.Fprintf(os.Stderr, "tally-agent import-log: -source %d: the configuration has %d log sources\n", *source, len(cfg.Sources.Logs))
			return 2
		}
		// The same rules as the live tailer, so a backfill counts what
		// tailing the same log would have counted.
		spec = cfg.Sources.Logs[*source].Spec
	}
	if err := spec.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent import-log:", err)
		return 2
	}
	opts := backfill.ImportOptions{Files: fs.Args(), Parse: spec, MaxAge: *maxAge}
	terminal := isTerminal(os.Stderr)
	switch *progress {
	case "always":
		opts.Progress, opts.Interactive = os.Stderr, terminal
	case "auto":
		if terminal {
			opts.Progress, opts.Interactive = os.Stderr, true
		}
	case "never":
	default:
		fmt.Fprintln(os.Stderr, "tally-agent import-log: -progress must be auto, always or never")
		return 2
	}
	if *cpuProfile != "" {
		stopProfile, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tally-agent import-log:", err)
			return 2
		}
		defer stopProfile()
	}
	ctx, stop := cli.SignalContext(logger)
	defer stop()
	sum, err := backfill.Import(ctx, cfg, opts, logger)
	fmt.Print(backfill.FormatSummary(&sum))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent import-log:", err)
		return 1
	}
	return 0
}

// importFiles posts spend reports (import-cost), email event files
// (import-email) or poll results (import-polls) to a running agent and prints its answers. It exits 1
// when a file failed or had rejected rows, so a cron job notices.
func importFiles(cmd string, args []string) int {
	fs := flag.NewFlagSet("tally-agent "+cmd, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tally-agent %s [-agent URL] [-token TOKEN] FILE... (CSV, JSON or NDJSON)\n", cmd)
		fs.PrintDefaults()
	}
	agentURL := fs.String("agent", "http://127.0.0.1:8081", "the running agent's HTTP address (its http.server_listen when it has one)")
	token := fs.String("token", os.Getenv("TALLY_SERVER_TOKEN"), "a server sender's token (http.server_tokens); default $TALLY_SERVER_TOKEN")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	logger, _ := cli.NewLogger(os.Stderr, "text", "warn")
	ctx, stop := cli.SignalContext(logger)
	defer stop()
	code := 0
	for _, path := range fs.Args() {
		res, err := imports.PostFile(ctx, *agentURL, *token, path, strings.TrimPrefix(cmd, "import-"))
		if err != nil {
			fmt.Fprintf(os.Stderr, "tally-agent %s: %s: %v\n", cmd, path, err)
			code = 1
			continue
		}
		fmt.Printf("%s: %s", path, res)
		if res.Rejected > 0 {
			code = 1
		}
	}
	return code
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// startCPUProfile profiles the process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "tally-agent import-log: cpu profile:", err)
		}
	}, nil
}

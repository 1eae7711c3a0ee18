// Command tally-agent collects campaign events next to web servers,
// pre-aggregates them into per-minute sketches and ships them to the
// aggregator cluster. See the README for the configuration file.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tally-edge/tally/agent"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/internal/cli"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("tally-agent", flag.ContinueOnError)
	configPath := fs.String("config", "tally-agent.yaml", "configuration file (YAML)")
	checkConfig := fs.Bool("check-config", false, "validate the configuration file and exit")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger, err := cli.NewLogger(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent:", err)
		return 2
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent:", err)
		return 2
	}
	if *checkConfig {
		fmt.Printf("%s: configuration is valid\n", *configPath)
		return 0
	}
	ctx, stop := cli.SignalContext(logger)
	defer stop()
	if err := agent.Run(ctx, cfg, logger, nil); err != nil {
		logger.Error("agent failed", "err", err)
		return 1
	}
	return 0
}

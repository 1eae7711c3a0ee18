// Package cli holds the process plumbing both binaries share: logger
// setup and signal handling with a hard stop on the second signal.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/tally-edge/tally/internal/buildinfo"
)

// NewLogger returns a logger writing to w in format "text" or "json" at
// the given level (debug, info, warn, error).
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// SignalContext is cancelled by the first SIGINT or SIGTERM; a second one
// exits the process at once with status 130, for when a graceful shutdown
// takes longer than the operator wants to wait.
func SignalContext(logger *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		first := time.Now()
		logger.Info("signal received; shutting down gracefully (send again to abort)", "signal", s.String())
		cancel()
		// A signal sent to a whole process group can arrive twice at
		// once; only a later one is the operator insisting.
		for s = <-sig; time.Since(first) < time.Second; s = <-sig {
		}
		logger.Error("second signal; aborting without a clean shutdown", "signal", s.String())
		os.Exit(130)
	}()
	return ctx, func() { signal.Stop(sig); cancel() }
}

// Main is the common body of both daemons' main: flags -config,
// -check-config, -version, -log-format and -log-level, strict
// configuration loading, signals, systemd notification, and exit codes (0
// ok, 1 failed, 2 bad usage or configuration). load reads and validates
// the file; run runs until its context ends and calls svc.Ready once it
// serves.
func Main[C any](name, defaultConfig string, args []string, load func(path string) (C, error),
	run func(ctx context.Context, cfg C, logger *slog.Logger, svc *Service) error) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	configPath := fs.String("config", defaultConfig, "configuration file (YAML)")
	checkConfig := fs.Bool("check-config", false, "validate the configuration file and exit")
	showVersion := fs.Bool("version", false, "print the version and build information and exit")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (for go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println(buildinfo.Get().String(name))
		return 0
	}
	logger, err := NewLogger(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	cfg, err := load(*configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	if *checkConfig {
		fmt.Printf("%s: configuration is valid\n", *configPath)
		return 0
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: -cpuprofile: %v\n", name, err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx, stop := SignalContext(logger)
	defer stop()
	logger.Info("starting", "version", buildinfo.Get().String(name))
	svc := newService(logger)
	defer svc.close()
	if err := run(ctx, cfg, logger, svc); err != nil {
		logger.Error(name+" failed", "err", err)
		return 1
	}
	return 0
}

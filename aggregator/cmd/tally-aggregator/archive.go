package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/tally-edge/tally/aggregator/archive"
	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/internal/cli"
)

const archiveUsage = `usage: tally-aggregator archive export|verify|restore|list [flags]

  export   write the days' merged minutes to the archive as Parquet (skips
           days already archived and unchanged; -force rewrites them)
  verify   compare archived days with InfluxDB, object by object and minute by minute
  restore  write archived days back into InfluxDB (refuses a day InfluxDB
           holds differently; -overwrite replaces its minutes)
  list     print the archived days

-from and -to are UTC days (YYYY-MM-DD), both included; -to defaults to -from.
The archive and InfluxDB come from the node's configuration (archive.*, influx.*).
`

// archiveCmd runs `tally-aggregator archive ...`: one line per day on
// stdout as it finishes, logs on stderr. Exit 0 when every day succeeded
// (and verified), 1 when one did not, 2 for bad usage.
func archiveCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "export" && args[0] != "verify" && args[0] != "restore" && args[0] != "list") {
		fmt.Fprint(stderr, archiveUsage)
		return 2
	}
	verb := args[0]
	fs := flag.NewFlagSet("tally-aggregator archive "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "tally-aggregator.yaml", "the node's configuration (archive.* and influx.*)")
	fromS := fs.String("from", "", "first UTC day, YYYY-MM-DD")
	toS := fs.String("to", "", "last UTC day, YYYY-MM-DD (default: -from)")
	target := fs.String("target", "", "archive target overriding archive.target (s3://bucket/prefix or a directory)")
	force := fs.Bool("force", false, "export: rewrite days that are archived and unchanged")
	overwrite := fs.Bool("overwrite", false, "restore: replace the minutes of a day InfluxDB holds differently")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	logger, err := cli.NewLogger(stderr, "text", *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "tally-aggregator archive %s: %v\n", verb, err)
		return 1
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fail(err)
	}
	if *target != "" {
		cfg.Archive.Target = *target
	}
	if cfg.Archive.Target == "" {
		return fail(errors.New("no archive: set archive.target in " + *cfgPath + " or pass -target"))
	}
	var days []time.Time
	if verb != "list" {
		if days, err = dayRange(*fromS, *toS); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
	}
	ctx, stop := cli.SignalContext(logger)
	defer stop()

	store, err := archive.OpenStore(ctx, cfg.Archive)
	if err != nil {
		return fail(err)
	}
	icfg := influx.DefaultConfig()
	icfg.URL, icfg.Token, icfg.Org, icfg.Bucket, icfg.Timeout = cfg.Influx.URL, cfg.Influx.Token, cfg.Influx.Org, cfg.Influx.Bucket, cfg.Influx.Timeout
	icfg.QueryLanguage = cfg.Influx.QueryLanguage // InfluxQL or Flux, as the node reads
	icfg.QueryTimeout = 10 * time.Minute          // a whole day of a campaign is one query
	reader, err := influx.NewReader(icfg, logger)
	if err != nil {
		return fail(err)
	}
	defer reader.Close()
	opts := archive.Options{Store: store, Source: archive.InfluxSource{Reader: reader}, Node: "cli",
		TempDir: cfg.Archive.TempDir, Logger: logger}
	if verb == "restore" {
		writer, err := influx.NewWriter(icfg, logger)
		if err != nil {
			return fail(err)
		}
		defer writer.Close()
		opts.Sink = archive.InfluxSink{Writer: writer}
	}
	a, err := archive.New(opts)
	if err != nil {
		return fail(err)
	}
	if verb == "list" {
		list, err := a.Days(ctx)
		if err != nil {
			return fail(err)
		}
		for _, d := range list {
			fmt.Fprintln(stdout, d)
		}
		return 0
	}
	switch verb {
	case "export":
		if err := reader.CheckBucket(ctx); err != nil {
			return fail(err)
		}
	case "restore":
		// As the node does at start: settle the query language and, when
		// influx.create_bucket allows, create the database of an empty
		// InfluxDB 1.x.
		info, err := reader.Setup(ctx, cfg.Influx.CreateBucket)
		if err != nil {
			return fail(err)
		}
		logger.Info("storage ready", "influxdb", info.String(), "query_language", info.QueryLanguage, "bucket", info.Bucket)
	}
	return runDays(ctx, a, verb, days, *force, *overwrite, stdout, stderr)
}

// runDays runs verb over days, printing a line per day, and a summary.
func runDays(ctx context.Context, a *archive.Archiver, verb string, days []time.Time, force, overwrite bool, stdout, stderr io.Writer) int {
	start := time.Now()
	var failed, rows, bytes int64
	for i, day := range days {
		if ctx.Err() != nil {
			break
		}
		head := fmt.Sprintf("[%d/%d] %s", i+1, len(days), day.Format(time.DateOnly))
		switch verb {
		case "export":
			r, err := a.Export(ctx, day, force)
			if err != nil {
				failed++
				fmt.Fprintf(stdout, "%s failed: %v\n", head, err)
				continue
			}
			rows, bytes = rows+r.Rows, bytes+r.Bytes
			fmt.Fprintf(stdout, "%s %s: %d rows, %d campaigns, %d parts, %d bytes in %s (%.0f rows/s)\n", head, r.Outcome,
				r.Rows, r.Campaigns, r.Parts, r.Bytes, r.Duration.Round(time.Millisecond), float64(r.Rows)/r.Duration.Seconds())
		case "verify":
			r, err := a.Verify(ctx, day)
			if err != nil || !r.OK() {
				failed++
			}
			if err != nil {
				fmt.Fprintf(stdout, "%s failed: %v\n", head, err)
				continue
			}
			rows += r.Rows
			if r.OK() {
				fmt.Fprintf(stdout, "%s ok: %d rows of %d campaigns match InfluxDB (%s)\n", head, r.Rows, r.Campaigns, r.Duration.Round(time.Millisecond))
				continue
			}
			fmt.Fprintf(stdout, "%s DIFFERS:\n", head)
			for _, p := range r.Problems {
				fmt.Fprintf(stdout, "    %s\n", p)
			}
		case "restore":
			r, err := a.Restore(ctx, day, overwrite)
			if err != nil {
				failed++
				fmt.Fprintf(stdout, "%s failed: %v\n", head, err)
				continue
			}
			rows += r.Rows
			if r.Skipped {
				fmt.Fprintf(stdout, "%s already in InfluxDB as archived (%d rows); skipped\n", head, r.Rows)
			} else {
				fmt.Fprintf(stdout, "%s restored: %d rows in %s\n", head, r.Rows, r.Duration.Round(time.Millisecond))
			}
		}
	}
	took := time.Since(start)
	fmt.Fprintf(stdout, "%s: %d days, %d failed, %d rows, %d bytes, %s\n", verb, len(days), failed, rows, bytes, took.Round(time.Millisecond))
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "interrupted; run the same command again to resume")
		return 1
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// maxDays bounds one command's range.
const maxDays = 3660

// dayRange parses -from and -to (inclusive).
func dayRange(fromS, toS string) ([]time.Time, error) {
	if fromS == "" {
		return nil, errors.New("-from is required (YYYY-MM-DD)")
	}
	if toS == "" {
		toS = fromS
	}
	from, err := archive.ParseDay(fromS)
	if err != nil {
		return nil, fmt.Errorf("-from: %w", err)
	}
	to, err := archive.ParseDay(toS)
	if err != nil {
		return nil, fmt.Errorf("-to: %w", err)
	}
	if to.Before(from) {
		return nil, fmt.Errorf("-to %s is before -from %s", toS, fromS)
	}
	var days []time.Time
	for d := from; !d.After(to); d = d.Add(24 * time.Hour) {
		if len(days) == maxDays {
			return nil, fmt.Errorf("more than %d days; split the range", maxDays)
		}
		days = append(days, d)
	}
	return days, nil
}

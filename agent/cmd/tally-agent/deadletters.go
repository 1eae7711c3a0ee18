package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/deadletter"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/internal/cli"
)

// deadLetters implements `tally-agent dead-letters list|replay`.
func deadLetters(args []string) int {
	usage := func() {
		fmt.Fprintln(os.Stderr, `usage: tally-agent dead-letters list [-config FILE]
       tally-agent dead-letters replay [-config FILE] [-spool live|import] [-all]

list    shows the batches aggregators refused for good, kept in <state_dir>/dead-letter.
replay  puts the dead letters of one spool back into it, to be shipped again, and
        removes them. Run it with the agent (or import-log) stopped: it opens the
        spool itself. Letters written before dead letters named their spool are
        replayed into -spool (default live) only with -all.`)
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		usage()
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("tally-agent dead-letters "+cmd, flag.ContinueOnError)
	configPath := fs.String("config", "tally-agent.yaml", "agent configuration file (state_dir)")
	spoolName := fs.String("spool", "live", "replay: the spool to replay into, live or import")
	all := fs.Bool("all", false, "replay: also replay letters that do not name their spool (written by older agents)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent dead-letters:", err)
		return 2
	}
	dir := filepath.Join(cfg.StateDir, "dead-letter")
	letters, err := deadletter.List(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent dead-letters:", err)
		return 1
	}
	if cmd == "list" {
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "SPOOL\tSEQ\tBYTES\tTIME\tOWNER\tCODE\tREASON")
		for _, l := range letters {
			sp := l.Spool
			if sp == "" {
				sp = "(v1)"
			}
			fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", sp, l.Seq, l.Size, l.Time.Format("2006-01-02T15:04:05Z"), l.Owner, l.Code, l.Reason)
		}
		w.Flush()
		fmt.Printf("%d dead letter(s) in %s\n", len(letters), dir)
		return 0
	}
	if *spoolName != "live" && *spoolName != "import" {
		fmt.Fprintln(os.Stderr, "tally-agent dead-letters replay: -spool must be live or import")
		return 2
	}
	n, err := replay(cfg, dir, *spoolName, *all, letters)
	fmt.Printf("replayed %d dead letter(s) into the %s spool\n", n, *spoolName)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally-agent dead-letters replay:", err)
		return 1
	}
	return 0
}

// replay commits the chosen letters to the spool as new batches, in one
// commit that keeps the spool's last commit meta (journal position and
// source positions: replaying changes neither), then removes them. A
// crash between the two replays them again, which aggregators absorb:
// contributions carry their ids and versions.
func replay(cfg config.Config, dir, spoolName string, all bool, letters []deadletter.Letter) (int, error) {
	var chosen []deadletter.Letter
	var batches []spool.Batch
	for _, l := range letters {
		if l.Spool != spoolName && !(all && l.Spool == "") {
			continue
		}
		_, payload, err := deadletter.Read(l.Path)
		if err != nil {
			return 0, err
		}
		chosen = append(chosen, l)
		batches = append(batches, spool.Batch{Owner: l.Owner, Payload: payload})
	}
	if len(chosen) == 0 {
		return 0, nil
	}
	spoolDir := filepath.Join(cfg.StateDir, "spool")
	if spoolName == "import" {
		spoolDir = filepath.Join(cfg.StateDir, "import", "spool")
	}
	logger, _ := cli.NewLogger(os.Stderr, "text", "warn")
	sp, err := spool.Open(spoolDir, spool.Config{MaxBytes: int64(cfg.Spool.MaxBytes)}, logger)
	if err != nil {
		return 0, fmt.Errorf("%w (is the agent still running? stop it first)", err)
	}
	meta, _ := sp.LastCommitMeta()
	_, err = sp.Commit(batches, meta)
	if cerr := sp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	store, err := deadletter.Open(deadletter.Config{Dir: dir, MaxBatches: cfg.DeadLetters.MaxBatches, MaxBytes: int64(cfg.DeadLetters.MaxBytes)})
	if err != nil {
		return len(chosen), err
	}
	var errs []error
	for _, l := range chosen {
		errs = append(errs, store.Remove(l))
	}
	return len(chosen), errors.Join(errs...)
}

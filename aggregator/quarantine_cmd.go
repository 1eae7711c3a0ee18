package aggregator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/aggregator/forward"
	"github.com/tally-edge/tally/aggregator/quarantine"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// openQuarantine opens the quarantine of the node cfg describes.
func openQuarantine(cfg config.Config) (*quarantine.Dir, error) {
	return quarantine.Open(filepath.Join(cfg.DataDir, "quarantine"), int64(cfg.Merge.QuarantineMaxBytes))
}

// QuarantineList writes one line per record in the node's quarantine:
// what InfluxDB refused, why, and how many events wait in it.
func QuarantineList(w io.Writer, cfg config.Config) error {
	q, err := openQuarantine(cfg)
	if err != nil {
		return err
	}
	entries, err := q.List()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECORD\tSET ASIDE\tREASON\tPOINT\tCAMPAIGN\tMINUTE\tEVENTS\tSERVER SAID")
	var events uint64
	for _, e := range entries {
		if e.Err != nil {
			fmt.Fprintf(tw, "%s\t-\tunreadable\t-\t-\t-\t-\t%v\n", e.Name, e.Err)
			continue
		}
		r := e.Record
		point := r.Measurement
		if r.Agent != "" {
			point += " agent=" + r.Agent
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.120s\n", e.Name, r.Time.UTC().Format(time.RFC3339), r.Reason, point,
			r.Series.Campaign, time.Unix(r.Minute, 0).UTC().Format("2006-01-02T15:04Z"), r.Count(), r.Error)
		events += r.Count()
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d records, %d events\n", len(entries), events)
	return nil
}

// QuarantineReplay sends every record of the node's quarantine back to
// the node (addr, or the node's own QUIC address) as forwarded batches,
// signed in with the node's certificate: the node merges them with what
// it holds and writes them again. Records the node acknowledged are
// removed; the others stay. It returns an error when any record failed.
func QuarantineReplay(ctx context.Context, w io.Writer, cfg config.Config, addr string, logger *slog.Logger) error {
	q, err := openQuarantine(cfg)
	if err != nil {
		return err
	}
	if addr == "" {
		addr = cfg.QUIC.Advertise
	}
	if addr == "" {
		addr = cfg.QUIC.Listen
	}
	files := pki.Files{CA: cfg.QUIC.CA, Cert: cfg.QUIC.Cert, Key: cfg.QUIC.Key}
	if _, err := pki.LoadNodeSigner(files); err != nil {
		return fmt.Errorf("replay needs the node's own certificate: %w", err)
	}
	clientTLS, err := pki.ClientTLS(files, "", wire.ALPNForward)
	if err != nil {
		return err
	}
	ep, err := wire.NewEndpoint("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ep.Close()
	fwd := forward.New(cfg.Name, ep, clientTLS, prometheus.NewRegistry(), logger)
	defer fwd.Close()
	send := func(ctx context.Context, agent string, cs []wire.Contribution) error {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return fwd.Forward(sctx, addr, agent, cs)
	}
	replayed, failed, err := q.Replay(ctx, send, func(e quarantine.Entry, err error) {
		if err != nil {
			fmt.Fprintf(w, "%s: not replayed: %v\n", e.Name, err)
			return
		}
		fmt.Fprintf(w, "%s: replayed (%s, campaign %s, %d events)\n", e.Name, e.Record.Reason, e.Record.Series.Campaign, e.Record.Count())
	})
	fmt.Fprintf(w, "%d records replayed to %s, %d failed\n", replayed, addr, failed)
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d records not replayed (they stay in the quarantine)", failed)
	}
	return nil
}

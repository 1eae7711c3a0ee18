package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/merge"
	"github.com/tally-edge/tally/aggregator/wal"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Recover rebuilds the open window from storage and replays the
// write-ahead log on top. It retries storage until ctx is done, because
// serving without the rebuilt state would write partial minutes over
// complete ones. Batches are answered busy until it returns.
func (p *Pipeline) Recover(ctx context.Context) error {
	now := time.Now()
	from := now.Add(-p.cfg.Lateness).Truncate(time.Minute)
	var points []influx.ContribPoint
	for attempt := 0; ; attempt++ {
		var err error
		points, err = p.storage.LoadContributions(ctx, from, now.Add(24*time.Hour))
		var corrupt *influx.CorruptPointError
		if errors.As(err, &corrupt) {
			p.log.Error("some stored contribution points cannot be read; rebuilding from the others", "reason", "corrupt_points", "skipped", corrupt.Skipped, "first", corrupt.First)
			err = nil
		}
		if err == nil {
			break
		}
		p.log.Warn("rebuilding open minutes from InfluxDB failed; retrying", "reason", "storage_unavailable", "err", err, "attempt", attempt+1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("rebuild open minutes: %w", err)
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 10*time.Second)):
		}
	}
	ds, err := decodePoints(points)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.store.Load(ds); err != nil {
		return err
	}
	p.store.Rebuilt(from.Unix())
	var batches, contribs, skipped, late int
	err = p.wal.Replay(func(pos wal.Pos, b *wire.Batch) error {
		ds, err := decodeAll(b.Agent, b.Contributions)
		if err == nil {
			// Replay, not Apply: every minute the log holds is written
			// again, even where storage holds its contributions already.
			var res merge.Applied
			res, err = p.store.Replay(ds, uint64(pos))
			late += len(res.Late)
		}
		if err != nil {
			// It failed the same way when received, and was refused then.
			p.log.Error("skipping a write-ahead log record that cannot be applied", "reason", "wal_record_unusable", "pos", pos, "agent", b.Agent, "err", err)
			p.m.replaySkipped.Inc()
			skipped++
			return nil
		}
		batches++
		contribs += len(ds)
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay write-ahead log: %w", err)
	}
	p.log.Info("recovered", "rebuilt_contribution_points", len(points), "window_from", from.UTC().Format(time.RFC3339),
		"wal_batches", batches, "wal_contributions", contribs, "wal_records_skipped", skipped, "late_campaign_minutes", late)
	if late > 0 {
		p.kickLoader()
	}
	p.ready.Store(true)
	return nil
}

func decodePoints(points []influx.ContribPoint) ([]merge.Decoded, error) {
	var ds []merge.Decoded
	for _, pt := range points {
		more, err := decodeAll(pt.Agent, pt.Contribs)
		if err != nil {
			return nil, fmt.Errorf("rebuild %s@%d from storage: %w", pt.Series, pt.Minute, err)
		}
		ds = append(ds, more...)
	}
	return ds, nil
}

// TakeOver rebuilds the open minutes of the campaigns that owns selects
// (those this node just became the owner of) from every node's
// contribution points in storage, and marks them to be written again: a
// merged value another node wrote while it held the campaign may lack
// contributions this node has. Merging is idempotent, so loading what the
// store already holds is harmless.
func (p *Pipeline) TakeOver(ctx context.Context, owns func(campaign string) bool) (int, error) {
	now := time.Now()
	pts, err := p.storage.LoadContributionsFunc(ctx, now.Add(-p.cfg.Lateness).Truncate(time.Minute), now.Add(24*time.Hour),
		func(s sketch.Series) bool { return owns(s.Campaign) })
	var corrupt *influx.CorruptPointError
	if errors.As(err, &corrupt) {
		p.log.Error("some stored contribution points cannot be read; taking over from the others", "reason", "corrupt_points", "skipped", corrupt.Skipped, "first", corrupt.First)
		err = nil
	}
	if err != nil {
		return 0, fmt.Errorf("take over campaigns: %w", err)
	}
	ds, err := decodePoints(pts)
	if err != nil {
		return 0, fmt.Errorf("take over: %w", err)
	}
	if err := p.store.Load(ds); err != nil {
		return 0, err
	}
	p.store.MarkDirty(func(k sketch.Key) bool { return owns(k.Series.Campaign) })
	p.m.takeovers.Add(float64(len(pts)))
	return len(pts), nil
}

// DropForeign forgets the clean minutes of campaigns another node owns
// (foreign selects them) and returns how many it dropped.
func (p *Pipeline) DropForeign(foreign func(campaign string) bool) int {
	return p.store.DropClean(func(k sketch.Key) bool { return foreign(k.Series.Campaign) })
}

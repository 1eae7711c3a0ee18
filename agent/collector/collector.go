// Package collector is the agent's path from accepted events to durable
// batches: it journals events, folds them into the minute rollup, and at
// every flush commits the changed minutes to the spool together with the
// journal position they cover.
//
// The exactness argument, in order:
//
//  1. Accept appends the events to the journal and applies them to the
//     rollup under one lock (rollup.Add), before the HTTP 202.
//  2. Flush takes the journal's end position under that same lock while it
//     cuts the rollup, so "events before the position" are exactly "events
//     in this flush".
//  3. The spool commits the flush's batches and the position atomically
//     (a commit record); only then is the journal released up to it.
//  4. On start, the journal is replayed from the last committed position
//     into a rollup with a new epoch (new CIDs), so replayed events are
//     counted once: never in a committed flush and again in the replay.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/cardinality"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/ingest"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/internal/seglog"
)

// Config tunes a Collector.
type Config struct {
	// Dir holds the journal (Dir/journal) and the epoch file.
	Dir string
	// Epoch is this process's restart epoch (see NextEpoch).
	Epoch uint32
	// FlushInterval is the period of Run's flushes, aligned to wall-clock
	// multiples of it so every agent buckets alike.
	FlushInterval time.Duration
	// Rollup tunes the in-memory aggregation.
	Rollup rollup.Config
	// JournalMaxBytes bounds the journal; when full Accept is busy.
	JournalMaxBytes int64
	// JournalFsync fsyncs the journal on every Accept.
	JournalFsync bool
	// NoJournal runs without a journal, for sources that can read their
	// input again (log backfill): after a crash they resume from the
	// positions of the last committed flush, and events read after it were
	// never shipped, so reading them again counts each once. Accept
	// without a position is refused in this mode.
	NoJournal bool
	// MaxBatchContributions splits a flush into batches.
	MaxBatchContributions int
	// Cardinality bounds distinct campaign, source and medium values per
	// minute; beyond the limits values fold into "(other)".
	Cardinality cardinality.Config
}

// Collector implements ingest.Sink. It is safe for concurrent use.
type Collector struct {
	cfg     Config
	log     *slog.Logger
	rollup  *rollup.Rollup
	guard   *cardinality.Guard // used only under the rollup's lock
	journal *seglog.Log
	spool   *spool.Spool

	flushMu sync.Mutex
	pending *pendingFlush // cut but not yet committed

	// positions are the sources' read positions. They change only inside
	// rollup.Add's critical section, so a flush's cut sees exactly the
	// positions of the events it holds.
	posMu     sync.Mutex
	positions map[string]Position

	bufPool sync.Pool

	m metrics
}

type pendingFlush struct {
	batches    [][]byte
	journalPos uint64
	positions  []byte
	contribs   int
}

type metrics struct {
	flushes       *prometheus.CounterVec
	flushSeconds  prometheus.Histogram
	contributions prometheus.Counter
	replayed      prometheus.Counter
	busy          *prometheus.CounterVec
}

// Open opens the journal, replays what the spool has not covered and
// returns a ready Collector. The spool must already be open.
func Open(cfg Config, sp *spool.Spool, reg prometheus.Registerer, logger *slog.Logger) (*Collector, error) {
	if cfg.MaxBatchContributions <= 0 {
		cfg.MaxBatchContributions = 2000
	}
	if cfg.Rollup.Lateness <= 0 {
		cfg.Rollup.Lateness = rollup.DefaultConfig().Lateness
	}
	logger = logger.With("component", "collector")
	// Disk is given back a whole segment at a time, so a segment must be
	// well below the bound or the journal could fill its only segment.
	segment := int64(8 << 20)
	if cfg.JournalMaxBytes > 0 {
		segment = min(segment, cfg.JournalMaxBytes/4)
	}
	var j *seglog.Log
	if !cfg.NoJournal {
		var err error
		j, err = seglog.Open(filepath.Join(cfg.Dir, "journal"), seglog.Options{SegmentSize: segment, MaxBytes: cfg.JournalMaxBytes})
		if err != nil {
			return nil, fmt.Errorf("open journal: %w", err)
		}
		if rec := j.Recovered(); rec.Dropped > 0 {
			logger.Warn("journal had a torn tail from a crash; dropped the partial record", "bytes", rec.Dropped)
		}
	}
	cfg.Rollup.BatchContributions = cfg.MaxBatchContributions
	c := &Collector{cfg: cfg, log: logger, rollup: rollup.New(cfg.Epoch, cfg.Rollup), journal: j, spool: sp,
		positions: map[string]Position{}, guard: cardinality.New(cfg.Cardinality)}
	c.bufPool.New = func() any { b := make([]byte, 0, 32<<10); return &b }
	c.m = metrics{
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_flushes_total",
			Help: "Flushes by result (ok, empty, retry)."}, []string{"result"}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_agent_flush_duration_seconds",
			Help: "Time to cut, encode and commit one flush.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)}),
		contributions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_contributions_total",
			Help: "Series-minute contributions committed to the spool."}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_journal_replayed_events_total",
			Help: "Events replayed from the journal at start (accepted before a crash, not yet flushed)."}),
		busy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_backpressure_total",
			Help: "Requests refused with 503, by cause."}, []string{"cause"}),
	}
	reg.MustRegister(c.m.flushes, c.m.flushSeconds, c.m.contributions, c.m.replayed, c.m.busy)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_agent_open_series_minutes",
		Help: "Series-minutes open in memory."}, func() float64 { return float64(c.rollup.Stats().Open) }))
	for i, dim := range cardinality.Dimensions {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_agent_cardinality_folded_total",
			Help:        "Dimension values folded into (other) because a minute had too many distinct values.",
			ConstLabels: prometheus.Labels{"dimension": dim}}, func() float64 { return float64(c.guard.Folded()[i]) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_agent_journal_bytes",
		Help: "Bytes in the event journal."}, func() float64 {
		if c.journal == nil {
			return 0
		}
		return float64(c.journal.Size())
	}))

	if err := c.replay(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// replay feeds journal records after the last committed position into the
// rollup.
func (c *Collector) replay() error {
	meta, _ := c.spool.LastCommitMeta()
	positions, err := decodePositions(meta.Data)
	if err != nil {
		return err
	}
	c.positions = positions
	if c.journal == nil {
		return nil
	}
	from := seglog.Pos(meta.JournalPos)
	if start := c.journal.Start(); from < start {
		// Released segments are older than the commit; nothing is lost.
		from = start
	}
	var n int
	var evs []event.Event
	err = c.journal.Read(from, func(_ seglog.Pos, rec []byte) error {
		pos, body, err := splitRecord(rec)
		if err != nil {
			return err
		}
		if pos != nil {
			c.positions[pos.Source] = *pos
		}
		evs, err = event.DecodeEvents(body, evs[:0])
		if err != nil {
			return err
		}
		n += len(evs)
		return c.rollup.Add(evs, func() error {
			c.guard.Observe(evs, time.Now().Unix())
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("replay journal from %d: %w", from, err)
	}
	if n > 0 {
		c.log.Info("replayed journal", "events", n, "from", uint64(from), "to", uint64(c.journal.End()))
		c.m.replayed.Add(float64(n))
	}
	return nil
}

// Accept journals and applies events (ingest.Sink).
func (c *Collector) Accept(events []event.Event) error { return c.accept(events, nil) }

// AcceptAt journals and applies events read by a source up to pos, and
// records pos in the same journal record. events may be empty (lines that
// held no event still move the position). It returns *ingest.BusyError
// when the agent cannot take events now; the source must then wait and
// offer the same events again, never skip them.
func (c *Collector) AcceptAt(events []event.Event, pos Position) error { return c.accept(events, &pos) }

func (c *Collector) accept(events []event.Event, pos *Position) error {
	if c.journal == nil && pos == nil {
		return errors.New("collector without a journal takes only events with a source position")
	}
	if c.spool.Full() {
		c.m.busy.WithLabelValues("spool_full").Inc()
		return &ingest.BusyError{Reason: "spool full: the aggregator is unreachable or slow", RetryAfter: c.cfg.FlushInterval}
	}
	bp := c.bufPool.Get().(*[]byte)
	rec := (*bp)[:0]
	err := c.rollup.Add(events, func() error {
		// Fold before journaling, under the rollup's lock: the journal
		// holds folded events, so a replay needs no folding decisions.
		c.guard.Fold(events, time.Now().Unix())
		if c.journal != nil {
			rec = event.AppendEvents(appendRecordHeader(rec, pos), events)
			if _, _, err := c.journal.Append(rec); err != nil {
				return err
			}
		}
		if pos != nil {
			c.posMu.Lock()
			c.positions[pos.Source] = *pos
			c.posMu.Unlock()
		}
		if c.cfg.JournalFsync && c.journal != nil {
			return c.journal.Sync()
		}
		return nil
	})
	if cap(rec) <= 1<<20 {
		*bp = rec[:0]
		c.bufPool.Put(bp)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rollup.ErrFull):
		c.m.busy.WithLabelValues("rollup_full").Inc()
		return &ingest.BusyError{Reason: err.Error(), RetryAfter: c.cfg.FlushInterval}
	case errors.Is(err, seglog.ErrFull):
		c.m.busy.WithLabelValues("journal_full").Inc()
		return &ingest.BusyError{Reason: "journal full: events arrive faster than flushes commit them", RetryAfter: c.cfg.FlushInterval}
	}
	return fmt.Errorf("journal events: %w", err)
}

// Flush cuts the rollup and commits it to the spool. A flush that cannot
// be committed (spool full, disk error) is kept and committed first next
// time; nothing new is cut meanwhile, so versions stay in order.
func (c *Collector) Flush() error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	start := time.Now()
	if c.pending == nil {
		var positions []byte
		var posErr error
		batches, contribs, pos, err := c.rollup.Flush(func() uint64 {
			c.guard.Evict(time.Now().Add(-c.cfg.Rollup.Lateness).Unix())
			c.posMu.Lock()
			positions, posErr = encodePositions(c.positions)
			c.posMu.Unlock()
			if c.journal == nil {
				return 0
			}
			return uint64(c.journal.End())
		})
		if err != nil {
			return fmt.Errorf("cut rollup: %w", err)
		}
		if posErr != nil {
			return posErr
		}
		if contribs == 0 {
			c.m.flushes.WithLabelValues("empty").Inc()
			return nil
		}
		c.pending = &pendingFlush{batches: batches, journalPos: pos, positions: positions, contribs: contribs}
	}
	// The journal must be on disk before the spool says it is covered:
	// otherwise a power loss could leave a commit pointing past records
	// that never reached the disk (harmless) — but it would also lose the
	// events of this flush if the spool write survived and the journal
	// did not. Syncing first keeps both in step.
	if err := c.syncJournal(); err != nil {
		c.m.flushes.WithLabelValues("retry").Inc()
		return fmt.Errorf("sync journal: %w", err)
	}
	p := c.pending
	if _, err := c.spool.Commit(p.batches, spool.CommitMeta{JournalPos: p.journalPos, Data: p.positions}); err != nil {
		c.m.flushes.WithLabelValues("retry").Inc()
		return fmt.Errorf("commit flush of %d contributions: %w", p.contribs, err)
	}
	c.pending = nil
	c.releaseJournal(seglog.Pos(p.journalPos))
	c.m.flushes.WithLabelValues("ok").Inc()
	c.m.contributions.Add(float64(p.contribs))
	c.m.flushSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// releaseJournal gives back the journal segments a committed flush
// covers. When the flush covers everything and the journal is past half
// its bound, it seals the active segment first (Release never deletes the
// active one), so a busy journal cannot stay full of covered records.
func (c *Collector) releaseJournal(covered seglog.Pos) {
	if c.journal == nil {
		return
	}
	if covered == c.journal.End() && c.journal.Start() < covered && c.journal.Size()*2 >= c.cfg.JournalMaxBytes {
		if err := c.journal.Roll(); err != nil {
			c.log.Warn("sealing the journal segment failed", "err", err)
		}
	}
	if err := c.journal.Release(covered); err != nil {
		c.log.Warn("releasing journal segments failed; they will be released later", "err", err)
	}
}

// Run flushes at every multiple of the flush interval until ctx is done,
// then flushes once more so nothing accepted stays only in the journal.
func (c *Collector) Run(ctx context.Context) error {
	iv := c.cfg.FlushInterval
	for {
		next := time.Now().Truncate(iv).Add(iv)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			if err := c.Flush(); err != nil {
				return fmt.Errorf("final flush: %w", err)
			}
			return nil
		case <-t.C:
			if err := c.Flush(); err != nil {
				c.log.Warn("flush failed; will retry", "err", err)
			}
		}
	}
}

// ResendOpen makes the next flush carry the complete state of every open
// series-minute (see rollup.Rollup.ResendOpen).
func (c *Collector) ResendOpen() int { return c.rollup.ResendOpen() }

// SetRouter makes flushes group contributions by ownerOf(campaign) (the
// aggregator node that owns it, "" when unknown) so that every batch
// holds contributions of one owner and can be sent straight to it.
func (c *Collector) SetRouter(ownerOf func(campaign string) string) { c.rollup.SetRouter(ownerOf) }

// Stats returns the rollup's counters.
func (c *Collector) Stats() rollup.Stats { return c.rollup.Stats() }

func (c *Collector) syncJournal() error {
	if c.journal == nil {
		return nil
	}
	return c.journal.Sync()
}

// Close closes the journal. Call it after Run has returned.
func (c *Collector) Close() error {
	if c.journal == nil {
		return nil
	}
	return c.journal.Close()
}

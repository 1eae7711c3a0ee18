// Package collector is the agent's path from accepted events to durable
// batches: it journals events, folds them into the minute rollup, and at
// every flush commits the changed minutes to the spool together with the
// journal position they cover.
//
// The exactness argument, in order:
//
//  1. Accept appends the events to the journal and applies them to the
//     rollup under one lock, the collector's mu, before the HTTP 202. The
//     rollup has no lock of its own and never calls back: the collector
//     decides what happens under mu, in this order: check the rollup has
//     room, journal, apply.
//  2. Flush takes the journal's end position under that same lock while it
//     cuts the rollup, so "events before the position" are exactly "events
//     in this flush".
//  3. The spool commits the flush's batches and the position atomically
//     (a commit record); only then is the journal released up to it.
//  4. On start, the journal is replayed from the last committed position
//     into a rollup with a new epoch (new CIDs), so replayed events are
//     counted once: never in a committed flush and again in the replay.
//
// Batches are made by the Batcher the pipeline gives (the shipper's, which
// groups contributions by owner); the collector only cuts and commits.
package collector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/cardinality"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/internal/seglog"
	"github.com/tally-edge/tally/wire"
)

// Batcher turns the contributions a flush cuts into spool batches
// (ship.Batcher). The collector calls it only under its lock.
type Batcher interface {
	rollup.Output
	// Take returns the batches made since the last Take and how many
	// contributions they hold.
	Take() ([]spool.Batch, int)
}

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
	// JournalMaxAge bounds how long journaled events stay on disk once a
	// flush covers them: Release never deletes the active segment, so a
	// quiet agent would keep covered events until 8 MiB of later ones
	// filled it. A flush seals the active segment once it is this old;
	// the next flush that covers it deletes it. Default
	// DefaultJournalMaxAge.
	JournalMaxAge time.Duration
	// NoJournal runs without a journal, for sources that can read their
	// input again (log backfill): after a crash they resume from the
	// positions of the last committed flush, and events read after it were
	// never shipped, so reading them again counts each once. Accept
	// without a position is refused in this mode.
	NoJournal bool
	// Batcher groups each flush into spool batches. Required.
	Batcher Batcher
	// ForgetPositions drops a source's position once Forget says its
	// file is gone and it has not moved for this long, so positions do
	// not pile up in every commit. 0: never.
	ForgetPositions time.Duration
	// Forget reports whether a position's file is gone; default
	// source.FileGone.
	Forget func(source.Position) bool
	// Cardinality bounds distinct campaign, source and medium values per
	// minute; beyond the limits values fold into "(other)".
	Cardinality cardinality.Config
	// Behind, when set, reports that the link is behind: batches of
	// earlier flushes still wait to be sent. A flush that comes due
	// meanwhile waits, looking again every second, until Behind turns
	// false or it has waited MaxFlushDelay, and the events of the wait
	// fold into the same open series-minutes: one version of each crosses
	// the link instead of several, and it would have queued behind the
	// others anyway. A flush that happens still cuts every change, so the
	// exactness argument is that of a longer interval. It does not wait
	// while the journal is half full or half of the rollup's open
	// series-minutes are taken. Nil: flushes never wait.
	Behind func() bool
	// MaxFlushDelay bounds how long past its time a flush waits for
	// Behind; 0: flushes never wait.
	MaxFlushDelay time.Duration
}

// DefaultJournalMaxAge is Config.JournalMaxAge's default: events (salted
// visitor hashes with their time and series) leave the journal's disk
// within about 10 minutes and two flush intervals of their acceptance.
const DefaultJournalMaxAge = 10 * time.Minute

// Collector implements source.Sink and source.PositionSink. It is safe
// for concurrent use.
type Collector struct {
	cfg     Config
	log     *slog.Logger
	journal *seglog.Log
	spool   *spool.Spool

	// guardMu serialises the cardinality guard, which folds events before
	// they are encoded for the journal (outside mu, so encoding does not
	// hold up other requests). Folding order need not match journal
	// order: the journal holds folded events, and a replay folds nothing.
	guardMu sync.Mutex
	guard   *cardinality.Guard

	// mu is the lock of the exactness argument: the journal's order, the
	// rollup, the batcher and the positions change only under it.
	mu        sync.Mutex
	rollup    *rollup.Rollup
	batcher   Batcher
	positions map[string]trackedPosition

	flushMu sync.Mutex
	pending *pendingFlush // cut but not yet committed
	// sealedAt is when the journal's active segment was last sealed (or
	// the collector opened), and committed the journal position the
	// spool's last commit covers; both guarded by flushMu.
	sealedAt  time.Time
	committed seglog.Pos

	bufPool sync.Pool

	closeOnce sync.Once
	closeErr  error

	// broken is set (once) when the journal or the spool can no longer
	// be trusted with writes (a failed fsync): see Failed.
	brokenOnce sync.Once
	broken     chan struct{}
	brokenErr  error

	m metrics
}

type pendingFlush struct {
	batches    []spool.Batch
	journalPos uint64
	positions  []byte
	contribs   int
}

type metrics struct {
	flushes       *prometheus.CounterVec
	flushSeconds  prometheus.Histogram
	delayed       prometheus.Counter
	delaySeconds  prometheus.Counter
	contributions prometheus.Counter
	replayed      prometheus.Counter
	busy          *prometheus.CounterVec
	forgotten     prometheus.Counter
}

// Open opens the journal, replays what the spool has not covered and
// returns a ready Collector. The spool must already be open.
func Open(cfg Config, sp *spool.Spool, reg prometheus.Registerer, logger *slog.Logger) (*Collector, error) {
	if cfg.Batcher == nil {
		return nil, errors.New("collector: no Batcher")
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
	if cfg.Forget == nil {
		cfg.Forget = source.FileGone
	}
	if cfg.JournalMaxAge <= 0 {
		cfg.JournalMaxAge = DefaultJournalMaxAge
	}
	c := &Collector{cfg: cfg, log: logger, rollup: rollup.New(cfg.Epoch, cfg.Rollup), batcher: cfg.Batcher, journal: j, spool: sp,
		positions: map[string]trackedPosition{}, guard: cardinality.New(cfg.Cardinality), broken: make(chan struct{}),
		sealedAt: time.Now()}
	c.bufPool.New = func() any { b := make([]byte, 0, 32<<10); return &b }
	c.m = metrics{
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_flushes_total",
			Help: "Flushes by result (ok, empty, retry)."}, []string{"result"}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tally_agent_flush_duration_seconds",
			Help: "Time to cut, encode and commit one flush.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)}),
		delayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_flushes_delayed_total",
			Help: "Flushes that waited past their time because the link was behind (earlier batches still waiting to be sent)."}),
		delaySeconds: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_flush_delay_seconds_total",
			Help: "Time flushes waited past their time for the link, summed."}),
		contributions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_contributions_total",
			Help: "Series-minute contributions committed to the spool."}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_journal_replayed_events_total",
			Help: "Events replayed from the journal at start (accepted before a crash, not yet flushed)."}),
		busy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_agent_backpressure_total",
			Help: "Requests refused with 503, by cause."}, []string{"cause"}),
		forgotten: prometheus.NewCounter(prometheus.CounterOpts{Name: "tally_agent_source_positions_forgotten_total",
			Help: "Read positions of files dropped: gone for sources.forget_positions, or beyond what one commit holds."}),
	}
	reg.MustRegister(c.m.flushes, c.m.flushSeconds, c.m.delayed, c.m.delaySeconds, c.m.contributions, c.m.replayed, c.m.busy, c.m.forgotten)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_agent_open_series_minutes",
		Help: "Series-minutes open in memory."}, func() float64 { return float64(c.Stats().Open) }))
	for i, dim := range cardinality.Dimensions {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_agent_cardinality_folded_total",
			Help:        "Dimension values folded into (other) because a minute had too many distinct values (dimension series: whole series over the per-minute series budget).",
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
	c.committed = seglog.Pos(meta.JournalPos)
	positions, err := decodePositions(meta.Data)
	if err != nil {
		return err
	}
	now := time.Now().Unix()
	for k, p := range positions {
		if p.Seen == 0 {
			p.Seen = now // a version 1 commit kept no time
			positions[k] = p
		}
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
			c.positions[pos.Source] = trackedPosition{Position: *pos, Seen: now}
		}
		evs, err = event.DecodeEvents(body, evs[:0])
		if err != nil {
			return err
		}
		n += len(evs)
		c.guard.Observe(evs, now)
		// Replay ignores MaxOpen: these events were accepted already.
		return c.rollup.AddUnbounded(evs, c.batcher)
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

// Accept journals and applies events (source.Sink).
func (c *Collector) Accept(events []event.Event) error { return c.accept(events, nil) }

// AcceptAt journals and applies events read by a source up to pos, and
// records pos in the same journal record (source.PositionSink). It
// returns *source.BusyError when the agent cannot take events now.
func (c *Collector) AcceptAt(events []event.Event, pos source.Position) error {
	return c.accept(events, &pos)
}

func (c *Collector) busy(cause, reason string) error {
	c.m.busy.WithLabelValues(cause).Inc()
	return &source.BusyError{Cause: cause, Reason: reason, RetryAfter: c.cfg.FlushInterval}
}

func (c *Collector) accept(events []event.Event, pos *source.Position) error {
	if c.journal == nil && pos == nil {
		return errors.New("collector without a journal takes only events with a source position")
	}
	if c.spool.Full() {
		return c.busy("spool_full", "spool full: the aggregator is unreachable or slow")
	}
	now := time.Now().Unix()
	// Fold, then encode, before taking mu: the journal holds folded
	// events, so a replay needs no folding decisions.
	c.guardMu.Lock()
	c.guard.Fold(events, now)
	c.guardMu.Unlock()
	bp := c.bufPool.Get().(*[]byte)
	rec := (*bp)[:0]
	if c.journal != nil {
		rec = event.AppendEvents(appendRecordHeader(rec, pos), events)
	}
	err := c.apply(events, pos, rec, now)
	if cap(rec) <= 1<<20 {
		*bp = rec[:0]
		c.bufPool.Put(bp)
	}
	switch {
	case err == nil:
	case errors.Is(err, rollup.ErrFull):
		return c.busy("rollup_full", err.Error())
	case errors.Is(err, seglog.ErrFull):
		return c.busy("journal_full", "journal full: events arrive faster than flushes commit them")
	default:
		return c.check(fmt.Errorf("journal events: %w", err))
	}
	if c.cfg.JournalFsync && c.journal != nil {
		// Outside mu: Sync covers every record appended before it.
		if err := c.journal.Sync(); err != nil {
			return c.check(fmt.Errorf("sync journal: %w", err))
		}
	}
	return nil
}

// check notes an error that leaves the journal or the spool broken (a
// write or fsync that failed for good) and returns err.
func (c *Collector) check(err error) error {
	if errors.Is(err, seglog.ErrBroken) || errors.Is(err, spool.ErrBroken) || isSyncError(err) {
		c.brokenOnce.Do(func() {
			c.brokenErr = err
			close(c.broken)
			c.log.Error("storage failed; the agent must stop (nothing more can be made durable)", "err", err)
		})
	}
	return err
}

// isSyncError reports an fsync failure: seglog marks the log broken and
// returns the cause, which the next write reports as ErrBroken.
func isSyncError(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Op == "sync"
}

// Failed is closed once the journal or the spool has failed for good (a
// failed fsync): no event can be made durable any more. The agent then
// reports not ready, saves what it can and exits; Err says why.
func (c *Collector) Failed() <-chan struct{} { return c.broken }

// Err returns the failure that closed Failed, or nil.
func (c *Collector) Err() error {
	select {
	case <-c.broken:
		return c.brokenErr
	default:
		return nil
	}
}

// apply is step 1 of the exactness argument: under mu, check the rollup
// has room, journal rec, apply the events, move the position.
func (c *Collector) apply(events []event.Event, pos *source.Position, rec []byte, now int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.rollup.Fits(events) {
		return rollup.ErrFull
	}
	if c.journal != nil {
		if _, _, err := c.journal.Append(rec); err != nil {
			return err
		}
	}
	if err := c.rollup.Add(events, c.batcher); err != nil {
		// Fits said yes under the same lock; the journal now holds
		// events the rollup lacks, so only a restart (replay) fixes it.
		return fmt.Errorf("rollup refused journaled events: %w", err)
	}
	if pos != nil {
		c.positions[pos.Source] = trackedPosition{Position: *pos, Seen: now}
	}
	return nil
}

// Flush cuts the rollup and commits it to the spool. A flush that cannot
// be committed (spool full, disk error) is kept and committed first next
// time; nothing new is cut meanwhile, so versions stay in order.
func (c *Collector) Flush() error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	start := time.Now()
	if c.pending == nil {
		c.mu.Lock()
		closed := c.rollup.ClosedBefore()
		c.mu.Unlock()
		c.guardMu.Lock()
		c.guard.Evict(time.Now().Add(-c.cfg.Rollup.Lateness).Unix())
		if closed > 0 {
			c.guard.EvictMinutes(closed)
		}
		c.guardMu.Unlock()
		c.prunePositions(time.Now())
		p, err := c.cut()
		if err != nil {
			return err
		}
		if p.contribs == 0 {
			// Nothing new, but a quiet journal may still hold covered
			// events past JournalMaxAge.
			c.releaseJournal(c.committed)
			c.m.flushes.WithLabelValues("empty").Inc()
			return nil
		}
		c.pending = p
	}
	// The journal must be on disk before the spool says it is covered:
	// otherwise a power loss could leave a commit pointing past records
	// that never reached the disk (harmless) — but it would also lose the
	// events of this flush if the spool write survived and the journal
	// did not. Syncing first keeps both in step.
	if err := c.syncJournal(); err != nil {
		c.m.flushes.WithLabelValues("retry").Inc()
		return c.check(fmt.Errorf("sync journal: %w", err))
	}
	p := c.pending
	if _, err := c.spool.Commit(p.batches, spool.CommitMeta{JournalPos: p.journalPos, Data: p.positions}); err != nil {
		c.m.flushes.WithLabelValues("retry").Inc()
		return c.check(fmt.Errorf("commit flush of %d contributions: %w", p.contribs, err))
	}
	c.pending = nil
	c.committed = seglog.Pos(p.journalPos)
	c.releaseJournal(c.committed)
	c.m.flushes.WithLabelValues("ok").Inc()
	c.m.contributions.Add(float64(p.contribs))
	c.m.flushSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// cut is step 2 of the exactness argument: under mu, the journal position,
// the sources' positions and the rollup's changes are taken together.
func (c *Collector) cut() (*pendingFlush, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var journalPos uint64
	if c.journal != nil {
		journalPos = uint64(c.journal.End())
	}
	positions, err := encodePositions(c.positions)
	if err != nil {
		return nil, err
	}
	if len(positions) > maxPositionBytes {
		// Too many sources to commit with one flush: drop the least
		// recently moved. A dropped file that is read again is read from
		// where its source starts (tail: the end; import: the start).
		positions, err = c.shedPositions()
		if err != nil {
			return nil, err
		}
	}
	if err := c.rollup.Cut(c.batcher); err != nil {
		// What was cut stays in the batcher for the next flush, whose
		// journal position covers it too.
		return nil, fmt.Errorf("cut rollup: %w", err)
	}
	batches, n := c.batcher.Take()
	return &pendingFlush{batches: batches, journalPos: journalPos, positions: positions, contribs: n}, nil
}

// maxPositionBytes bounds the encoded positions of one commit, below the
// spool's MaxMetaData: beyond it the least recently moved are dropped.
const maxPositionBytes = spool.MaxMetaData * 3 / 4

// shedPositions drops the least recently moved positions until the rest
// encode within maxPositionBytes. Callers hold mu.
func (c *Collector) shedPositions() ([]byte, error) {
	list := slices.SortedFunc(maps.Values(c.positions), func(a, b trackedPosition) int { return cmp.Compare(a.Seen, b.Seen) })
	dropped := 0
	for {
		b, err := encodePositions(c.positions)
		if err != nil || len(b) <= maxPositionBytes || dropped == len(list) {
			if dropped > 0 {
				c.m.forgotten.Add(float64(dropped))
				c.log.Warn("too many source positions to commit; forgot the least recently moved", "forgotten", dropped, "kept", len(c.positions))
			}
			return b, err
		}
		step := max(1, (len(list)-dropped)/10)
		for _, p := range list[dropped : dropped+step] {
			delete(c.positions, p.Source)
		}
		dropped += step
	}
}

// prunePositions forgets the positions of gone files that have not moved
// for ForgetPositions. Files are looked at outside mu; a position that
// moved meanwhile is kept.
func (c *Collector) prunePositions(now time.Time) {
	if c.cfg.ForgetPositions <= 0 {
		return
	}
	before := now.Add(-c.cfg.ForgetPositions).Unix()
	var idle []trackedPosition
	c.mu.Lock()
	for _, p := range c.positions {
		if p.Seen < before {
			idle = append(idle, p)
		}
	}
	c.mu.Unlock()
	var gone []trackedPosition
	for _, p := range idle {
		if c.cfg.Forget(p.Position) {
			gone = append(gone, p)
		}
	}
	if len(gone) == 0 {
		return
	}
	c.mu.Lock()
	n := 0
	for _, p := range gone {
		if cur, ok := c.positions[p.Source]; ok && cur == p {
			delete(c.positions, p.Source)
			n++
		}
	}
	c.mu.Unlock()
	if n > 0 {
		c.m.forgotten.Add(float64(n))
		c.log.Info("forgot the read positions of files that are gone", "positions", n)
	}
}

// releaseJournal gives back the journal segments a committed flush
// covers. Release never deletes the active segment, so it seals that
// segment first when the flush covers everything and the journal is past
// half its bound (a busy journal cannot stay full of covered records), and
// when the segment is older than JournalMaxAge (a quiet journal does not
// keep covered events for days; the next flush deletes it).
func (c *Collector) releaseJournal(covered seglog.Pos) {
	if c.journal == nil {
		return
	}
	full := covered == c.journal.End() && c.journal.Start() < covered && c.journal.Size()*2 >= c.cfg.JournalMaxBytes
	if old := time.Since(c.sealedAt) >= c.cfg.JournalMaxAge; full || old {
		if err := c.journal.Roll(); err != nil {
			c.log.Warn("sealing the journal segment failed", "err", err)
		} else {
			c.sealedAt = time.Now()
		}
	}
	if err := c.journal.Release(covered); err != nil {
		c.log.Warn("releasing journal segments failed; they will be released later", "err", err)
	}
}

// Run flushes at every multiple of the flush interval until ctx is done,
// then flushes once more so nothing accepted stays only in the journal.
// While Config.Behind says the link is behind, a flush that comes due
// waits for it (see Config.Behind).
func (c *Collector) Run(ctx context.Context) error {
	iv := c.cfg.FlushInterval
	poll := min(iv, time.Second)
	var due time.Time // when the flush now waiting came due; zero when none waits
	for {
		wait := time.Until(time.Now().Truncate(iv).Add(iv))
		if !due.IsZero() {
			wait = poll
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if err := c.Flush(); err != nil {
				return fmt.Errorf("final flush: %w", err)
			}
			return nil
		case <-t.C:
			now := time.Now()
			if due.IsZero() {
				due = now
			}
			waited := now.Sub(due)
			if c.shouldWait(waited) {
				continue
			}
			due = time.Time{}
			if waited > 0 {
				c.m.delayed.Inc()
				c.m.delaySeconds.Add(waited.Seconds())
			}
			if err := c.Flush(); err != nil {
				c.log.Warn("flush failed; will retry", "err", err)
			}
		}
	}
}

// shouldWait reports whether a flush that has waited waited so far
// should wait longer for the link (Config.Behind).
func (c *Collector) shouldWait(waited time.Duration) bool {
	if c.cfg.Behind == nil || waited >= c.cfg.MaxFlushDelay {
		return false
	}
	if c.journal != nil && c.journal.Size()*2 >= c.cfg.JournalMaxBytes {
		return false
	}
	c.mu.Lock()
	open := c.rollup.Stats().Open
	c.mu.Unlock()
	if maxOpen := c.cfg.Rollup.MaxOpen; maxOpen > 0 && open*2 >= uint64(maxOpen) {
		return false
	}
	return c.cfg.Behind()
}

// ResendOpen makes the next flush carry the complete state of every open
// series-minute (see rollup.Rollup.ResendOpen).
func (c *Collector) ResendOpen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rollup.ResendOpen()
}

// TakeLive appends the live counters of the campaign-minutes that changed
// since the last call, and those that left the live window (see
// rollup.Rollup.TakeLive). Taken under the lock of the exactness
// argument, so they count exactly the events applied so far.
func (c *Collector) TakeLive(changed []wire.LiveRecord, retired []rollup.CampaignMinute) ([]wire.LiveRecord, []rollup.CampaignMinute) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rollup.TakeLive(changed, retired)
}

// Stats returns the rollup's counters.
func (c *Collector) Stats() rollup.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rollup.Stats()
}

func (c *Collector) syncJournal() error {
	if c.journal == nil {
		return nil
	}
	return c.journal.Sync()
}

// Close closes the journal. Call it after Run has returned; calling it
// again does nothing and returns the first call's error.
func (c *Collector) Close() error {
	c.closeOnce.Do(func() {
		if c.journal != nil {
			c.closeErr = c.journal.Close()
		}
	})
	return c.closeErr
}

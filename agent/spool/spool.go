// Package spool is the agent's durable outbound queue: the batches of each
// flush stay on disk until the aggregator has acknowledged them.
//
// A flush is committed as one group (Commit): its batch records followed by
// a commit record that carries CommitMeta, the position of the agent's
// event journal the flush covers, then one fsync. After a crash, batches
// not followed by their commit record are discarded, because the journal
// replays the events they were made of; see README.md for the protocol.
//
// Every batch gets a sequence number, monotonic for the life of the spool
// directory, to be used as the wire Batch.Seq. Next hands batches out for
// shipping (several may be in flight), Ack and Nack settle them in any
// order, and the acked cursor (every seq at or below it is acked) is
// persisted on a bounded cadence; segments wholly below it are deleted.
package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tally-edge/tally/internal/seglog"
)

var (
	// ErrFull is returned by Commit when the flush would take the spool
	// beyond Config.MaxBytes. Nothing is written. It wraps seglog.ErrFull.
	ErrFull = fmt.Errorf("spool: full: %w", seglog.ErrFull)

	// ErrTooLarge is returned by Commit for a batch over
	// Config.MaxBatchSize, meta data over MaxMetaData, or a flush that
	// would not fit even in an empty spool. Retrying cannot succeed. It
	// wraps seglog.ErrTooLarge.
	ErrTooLarge = fmt.Errorf("spool: flush too large: %w", seglog.ErrTooLarge)

	// ErrClosed is returned by operations on a closed Spool, including a
	// Next that was waiting when Close was called.
	ErrClosed = errors.New("spool: closed")

	// ErrBroken is returned by Commit after a write or fsync failed in a
	// way that leaves the on-disk state unknown. Next, Ack and Nack keep
	// working; close the Spool and reopen it (restart the agent) to
	// continue committing from what is really on disk.
	ErrBroken = errors.New("spool: broken by an earlier I/O error")

	// ErrUnknownSeq is returned by Ack and Nack for a sequence number that
	// was never committed.
	ErrUnknownSeq = errors.New("spool: unknown sequence number")

	// ErrCorrupt is returned by Open when the log and the state file
	// disagree in a way no crash can produce (for example committed,
	// unacked batches are missing).
	ErrCorrupt = errors.New("spool: inconsistent spool directory")
)

// CommitMeta is stored with each flush group. The spool does not interpret
// it.
type CommitMeta struct {
	// JournalPos is the position of the agent's event journal up to which
	// the flush covers the events: after a crash, replay the journal from
	// LastCommitMeta().JournalPos.
	JournalPos uint64
	// Data is optional application data (at most MaxMetaData bytes), for
	// example the flush's version counter. Commit copies it.
	Data []byte
}

// Batch is one batch of a flush.
type Batch struct {
	// Owner names the node the batch was grouped for (the owner of its
	// campaigns when the flush was cut), so the shipper can send it there
	// without decoding it; "" when unknown. At most MaxOwner bytes.
	Owner string
	// Payload is the batch itself; the spool does not interpret it.
	Payload []byte
}

// Item is a batch handed out by Next.
type Item struct {
	// Seq is the batch's sequence number, to be sent as the wire
	// Batch.Seq and passed to Ack or Nack.
	Seq uint64
	// Owner is the batch's Batch.Owner ("" for batches written before
	// spools recorded owners).
	Owner string
	// Payload is the batch as committed. It belongs to the caller.
	Payload []byte
}

// Stats is a snapshot of the spool's counters.
type Stats struct {
	// PendingBatches is the number of committed batches not yet acked,
	// in flight or not.
	PendingBatches int
	// PendingBytes is the payload bytes of PendingBatches.
	PendingBytes int64
	// InflightBatches is the number handed out by Next and neither acked
	// nor nacked (nor reset by ResendUnacked).
	InflightBatches int
	// CommittedTotal is the number of batches committed since Open.
	CommittedTotal uint64
	// AckedTotal is the number of batches acked since Open, each once.
	AckedTotal uint64
	// AckedThrough is the acked cursor: every seq at or below it is acked.
	AckedThrough uint64
	// NextSeq is the sequence number the next committed batch gets.
	NextSeq uint64
	// DiscardedRecords is the number of batch records of incomplete
	// flushes that Open discarded.
	DiscardedRecords int
	// RecoveredTornBytes is the number of bytes of torn or corrupt log
	// tail that Open truncated.
	RecoveredTornBytes int64
	// DiskBytes is the size of the spool's segment files; MaxBytes its
	// bound.
	DiskBytes, MaxBytes int64
	// CheckpointErrors counts failed background checkpoints (the cursor
	// could not be persisted or segments not deleted).
	CheckpointErrors uint64
}

// entry states.
const (
	stReady    uint8 = iota // waiting to be handed out
	stInflight              // handed out, not settled
	stAcked
)

// entry is a committed, unacked (or out-of-order acked) batch.
type entry struct {
	pos   seglog.Pos // position of the batch record
	size  int        // payload bytes
	state uint8
}

// Spool is an open spool directory. All methods are safe for concurrent
// use. Commit calls are serialised; Next, Ack, Nack and ResendUnacked do
// not wait for a Commit's fsync.
type Spool struct {
	dir    string
	cfg    Config
	log    *seglog.Log
	logger *slog.Logger

	commitMu sync.Mutex // serialises Commit (and Close against it)
	ckMu     sync.Mutex // serialises checkpoint
	// persistedGen is the gen of the state last written; guarded by ckMu.
	persistedGen uint64

	mu     sync.Mutex
	closed bool
	broken error
	// ents holds the committed batches from the cursor on: ents[i] has
	// seq headSeq+i, and ents[0] is never acked (acked heads are popped).
	ents    []entry
	headSeq uint64
	// nextIdx is the index in ents of the first entry Next has not handed
	// out since the last ResendUnacked. Every in-flight entry is below it.
	nextIdx int
	// nacked holds seqs (all below nextIdx) that Nack made ready again;
	// Next serves them first, lowest first.
	nacked       seqHeap
	nextSeq      uint64
	committedEnd seglog.Pos // log position after the last registered commit record
	hasMeta      bool
	lastMeta     CommitMeta
	lastMetaPos  seglog.Pos
	gen          uint64        // bumped whenever persisted state changes
	wake         chan struct{} // closed and replaced to wake waiting Next calls
	pendingCount int
	pendingBytes int64
	inflight     int
	counters     Stats // the counter fields of Stats
	ckFailing    bool

	// full is set when a Commit failed with ErrFull and cleared when one
	// succeeds; lastGroup is the log size of the last committed group.
	full      atomic.Bool
	lastGroup atomic.Int64

	ops       sync.WaitGroup // Next calls reading the log
	poke      chan struct{}  // capacity 1: an ack happened
	stop      chan struct{}
	wg        sync.WaitGroup // the checkpoint goroutine
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the spool in dir and recovers it: a torn
// log tail is truncated, an incomplete flush group is discarded, and every
// committed batch not known to be acked will be handed out by Next again.
// The logger may be nil. The spool runs one background goroutine until
// Close.
func Open(dir string, cfg Config, logger *slog.Logger) (*Spool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lg, err := seglog.Open(dir, seglog.Options{
		SegmentSize:   cfg.SegmentSize,
		MaxRecordSize: max(batchHeader+cfg.MaxBatchSize, commitHeader+MaxMetaData),
		MaxBytes:      cfg.MaxBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("open spool %q: %w", dir, err)
	}
	s := &Spool{
		dir:    dir,
		cfg:    cfg,
		log:    lg,
		logger: logger.With("component", "spool", "dir", dir),
		wake:   make(chan struct{}),
		poke:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	if err := s.recover(); err != nil {
		_ = lg.Close()
		return nil, fmt.Errorf("open spool %q: %w", dir, err)
	}
	s.wg.Add(1)
	go s.run()
	return s, nil
}

// pendingRec is a batch record found while recovering.
type pendingRec struct {
	seq  uint64
	pos  seglog.Pos
	size int
}

// recover rebuilds the in-memory queue from the state file and the log.
// It runs before the Spool is shared.
func (s *Spool) recover() error {
	st, err := readState(s.dir)
	if err != nil {
		return err
	}
	var (
		group         []pendingRec // batches since the last commit record
		pend          []pendingRec // committed batches above the cursor
		lastCommitted uint64       // highest committed seq in the log
		lastSeq       uint64       // highest seq seen in the log
		haveSeq       bool
		logMeta       CommitMeta
		logMetaPos    seglog.Pos
		haveLogMeta   bool
	)
	err = s.log.Read(s.log.Start(), func(next seglog.Pos, rec []byte) error {
		pos := next - seglog.HeaderSize - seglog.Pos(len(rec))
		switch rec[0] {
		case kindBatch, kindBatchV1:
			b, err := decodeBatch(rec)
			if err != nil {
				return fmt.Errorf("%w: record at %d: %w", ErrCorrupt, pos, err)
			}
			seq := b.seq
			if haveSeq && seq != lastSeq+1 {
				return fmt.Errorf("%w: batch at %d has seq %d after seq %d", ErrCorrupt, pos, seq, lastSeq)
			}
			group = append(group, pendingRec{seq: seq, pos: pos, size: len(b.payload)})
			lastSeq, haveSeq = seq, true
		case kindCommit:
			c, err := decodeCommit(rec)
			if err != nil {
				return fmt.Errorf("%w: record at %d: %w", ErrCorrupt, pos, err)
			}
			if int(c.count) != len(group) || (len(group) > 0 && group[0].seq != c.first) {
				return fmt.Errorf("%w: commit record at %d closes %d batches from seq %d, but %d batch records precede it",
					ErrCorrupt, pos, c.count, c.first, len(group))
			}
			for _, g := range group {
				if g.seq > st.AckedThrough {
					pend = append(pend, g)
				}
				lastCommitted = g.seq
			}
			group = group[:0]
			logMeta, logMetaPos, haveLogMeta = c.meta, next, true
		default:
			return fmt.Errorf("%w: record at %d has unknown kind 0x%02x", ErrCorrupt, pos, rec[0])
		}
		return nil
	})
	if err != nil {
		return err
	}
	rc := s.log.Recovered()
	if rc.Dropped > 0 {
		s.logger.Warn("truncated torn spool tail", "bytes", rc.Dropped, "cause", rc.Cause)
	}
	if len(group) > 0 {
		// A flush that crashed before its commit record was durable: the
		// journal still has its events, so drop it to keep them from
		// being shipped twice under different sequence numbers.
		if err := s.log.Truncate(group[0].pos); err != nil {
			return fmt.Errorf("discard incomplete flush: %w", err)
		}
		s.logger.Warn("discarded incomplete flush", "batches", len(group),
			"first_seq", group[0].seq, "log_pos", uint64(group[0].pos))
	}

	acked := st.AckedThrough
	nextSeq := max(st.NextSeq, lastCommitted+1, 1)
	switch {
	case acked >= nextSeq:
		return fmt.Errorf("%w: state says batches up to seq %d are acked, but only %d were ever committed",
			ErrCorrupt, acked, nextSeq-1)
	case acked+uint64(len(pend))+1 != nextSeq:
		return fmt.Errorf("%w: batches %d to %d were committed and not acked, but the log holds %d of them",
			ErrCorrupt, acked+1, nextSeq-1, len(pend))
	}
	s.headSeq = acked + 1
	s.nextSeq = nextSeq
	s.ents = make([]entry, len(pend))
	for i, p := range pend {
		s.ents[i] = entry{pos: p.pos, size: p.size}
		s.pendingBytes += int64(p.size)
	}
	s.pendingCount = len(pend)
	s.committedEnd = s.log.End()
	switch {
	case haveLogMeta && (!st.HasMeta || uint64(logMetaPos) > st.MetaLogPos):
		s.hasMeta, s.lastMeta, s.lastMetaPos = true, logMeta, logMetaPos
	case st.HasMeta:
		s.hasMeta = true
		s.lastMeta = CommitMeta{JournalPos: st.JournalPos, Data: st.MetaData}
		s.lastMetaPos = seglog.Pos(st.MetaLogPos)
	}
	s.counters.DiscardedRecords = len(group)
	s.counters.RecoveredTornBytes = rc.Dropped
	// Write the state once soon, so it reflects what recovery decided.
	s.gen = 1
	return nil
}

// Commit appends one flush: the batch records, then a commit record
// carrying meta, then fsyncs. It returns the sequence numbers given to the
// batches, in order. When Commit returns nil the whole group is durable
// and will be handed out by Next; when it returns an error, none of it
// will be, now or after a restart (except after ErrBroken, when the
// outcome is decided by what reached the disk, still all or nothing).
// An empty batches slice records only meta.
//
// Commit fails with ErrFull (nothing written) when the spool would exceed
// Config.MaxBytes even after deleting the segments already acked, and
// with ErrTooLarge for a flush it can never hold.
func (s *Spool) Commit(batches []Batch, meta CommitMeta) (seqs []uint64, err error) {
	if len(meta.Data) > MaxMetaData {
		return nil, fmt.Errorf("commit: meta data of %d bytes (max %d): %w", len(meta.Data), MaxMetaData, ErrTooLarge)
	}
	if len(batches) > math.MaxUint32-1 {
		return nil, fmt.Errorf("commit: %d batches: %w", len(batches), ErrTooLarge)
	}
	var payloadBytes int64
	for i, b := range batches {
		if len(b.Payload) > s.cfg.MaxBatchSize {
			return nil, fmt.Errorf("commit: batch %d of %d bytes (max %d): %w", i, len(b.Payload), s.cfg.MaxBatchSize, ErrTooLarge)
		}
		if len(b.Owner) > MaxOwner {
			return nil, fmt.Errorf("commit: batch %d has an owner name of %d bytes (max %d): %w", i, len(b.Owner), MaxOwner, ErrTooLarge)
		}
		payloadBytes += int64(len(b.Payload))
	}

	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	err = s.usable()
	first := s.nextSeq
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}

	recs := make([][]byte, 0, len(batches)+1)
	for i, b := range batches {
		recs = append(recs, encodeBatch(first+uint64(i), b))
	}
	meta.Data = append([]byte(nil), meta.Data...)
	recs = append(recs, encodeCommit(commitRec{first: first, count: uint32(len(batches)), meta: meta}))

	var ckErr error
	start, end, err := s.log.Append(recs...)
	if errors.Is(err, seglog.ErrFull) {
		// Acked segments may be waiting for the next checkpoint: free
		// them now rather than refuse the flush. The flag tells the
		// checkpoint to seal the active segment if that is what it takes.
		// Retry whether or not this checkpoint freed anything: the
		// background checkpoint may have freed the space between our
		// Append and this call. The second answer is authoritative.
		s.full.Store(true)
		_, ckErr = s.checkpoint()
		start, end, err = s.log.Append(recs...)
	}
	if err != nil {
		used, limit := s.Usage()
		switch {
		case errors.Is(err, seglog.ErrFull):
			// Full stays true until a checkpoint frees disk or a Commit
			// succeeds; until then a flush of this size does not fit.
			var framed int64
			for _, r := range recs {
				framed += seglog.HeaderSize + int64(len(r))
			}
			s.lastGroup.Store(framed)
			s.full.Store(true)
			if ckErr != nil {
				return nil, fmt.Errorf("commit %d batches (%d bytes; spool holds %d of %d bytes; freeing acked segments failed: %v): %w",
					len(batches), payloadBytes, used, limit, ckErr, ErrFull)
			}
			return nil, fmt.Errorf("commit %d batches (%d bytes; spool holds %d of %d bytes): %w",
				len(batches), payloadBytes, used, limit, ErrFull)
		case errors.Is(err, seglog.ErrTooLarge):
			return nil, fmt.Errorf("commit %d batches (%d bytes, max %d): %w", len(batches), payloadBytes, limit, ErrTooLarge)
		case errors.Is(err, seglog.ErrBroken):
			s.setBroken(err)
		}
		return nil, fmt.Errorf("commit: %w", err)
	}
	s.full.Store(false)
	if err := s.log.Sync(); err != nil {
		s.setBroken(err)
		return nil, fmt.Errorf("commit: %w", err)
	}

	seqs = make([]uint64, len(batches))
	s.mu.Lock()
	pos := start
	for i, b := range batches {
		seqs[i] = first + uint64(i)
		s.ents = append(s.ents, entry{pos: pos, size: len(b.Payload)})
		pos += seglog.HeaderSize + seglog.Pos(len(recs[i]))
	}
	s.nextSeq = first + uint64(len(batches))
	s.committedEnd = end
	s.hasMeta, s.lastMeta, s.lastMetaPos = true, meta, end
	s.pendingCount += len(batches)
	s.pendingBytes += payloadBytes
	s.counters.CommittedTotal += uint64(len(batches))
	s.gen++
	if len(batches) > 0 {
		s.broadcastLocked()
	}
	s.mu.Unlock()
	s.lastGroup.Store(int64(end - start))
	return seqs, nil
}

// usable reports why the spool cannot commit. Callers hold mu.
func (s *Spool) usable() error {
	if s.closed {
		return ErrClosed
	}
	if s.broken != nil {
		return fmt.Errorf("%w: %w", ErrBroken, s.broken)
	}
	return nil
}

func (s *Spool) setBroken(err error) {
	s.mu.Lock()
	if s.broken == nil {
		s.broken = err
	}
	s.mu.Unlock()
}

// broadcastLocked wakes every waiting Next. Callers hold mu.
func (s *Spool) broadcastLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// Next returns the next batch to ship, waiting until one is committed, ctx
// is done (ctx.Err()) or the spool is closed (ErrClosed). A batch that is
// ready is returned even when ctx is already done. Batches that Nack
// returned come first, oldest first; then committed batches in seq order.
// A batch stays in flight until Ack or Nack (or ResendUnacked).
func (s *Spool) Next(ctx context.Context) (Item, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return Item{}, ErrClosed
		}
		idx, ok := s.pickLocked()
		if !ok {
			wake := s.wake
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return Item{}, ctx.Err()
			case <-s.stop:
				return Item{}, ErrClosed
			case <-wake:
			}
			continue
		}
		e := &s.ents[idx]
		e.state = stInflight
		s.inflight++
		seq, pos := s.headSeq+uint64(idx), e.pos
		s.ops.Add(1)
		s.mu.Unlock()

		owner, payload, err := s.readBatch(seq, pos)
		s.ops.Done()
		if err == nil {
			return Item{Seq: seq, Owner: owner, Payload: payload}, nil
		}
		s.mu.Lock()
		if seq < s.headSeq {
			// Acked (through a copy handed out before ResendUnacked) and
			// released while we read: nothing to ship any more.
			s.mu.Unlock()
			continue
		}
		if e := &s.ents[seq-s.headSeq]; e.state == stInflight {
			e.state = stReady
			s.inflight--
			s.nacked.push(seq)
		}
		s.mu.Unlock()
		return Item{}, fmt.Errorf("next: %w", err)
	}
}

// pickLocked chooses the entry Next hands out. Callers hold mu.
func (s *Spool) pickLocked() (int, bool) {
	for s.nacked.len() > 0 {
		seq := s.nacked.pop()
		if seq < s.headSeq {
			continue
		}
		if i := int(seq - s.headSeq); s.ents[i].state == stReady {
			return i, true
		}
	}
	for s.nextIdx < len(s.ents) {
		i := s.nextIdx
		s.nextIdx++
		if s.ents[i].state == stReady {
			return i, true
		}
	}
	return 0, false
}

func (s *Spool) readBatch(seq uint64, pos seglog.Pos) (owner string, payload []byte, err error) {
	rec, _, err := s.log.ReadRecord(pos)
	if err != nil {
		return "", nil, fmt.Errorf("read batch %d: %w", seq, err)
	}
	b, err := decodeBatch(rec)
	if err != nil || b.seq != seq {
		return "", nil, fmt.Errorf("%w: record at %d should be batch %d, has seq %d (%v)", ErrCorrupt, pos, seq, b.seq, err)
	}
	return string(b.owner), b.payload, nil
}

// Ack marks batch seq delivered. Acks may come in any order and more than
// once; the cursor advances over the contiguous acked prefix. It returns
// ErrUnknownSeq for a seq that was never committed.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if seq == 0 || seq >= s.headSeq+uint64(len(s.ents)) {
		end := s.headSeq + uint64(len(s.ents))
		s.mu.Unlock()
		return fmt.Errorf("ack %d (committed seqs end before %d): %w", seq, end, ErrUnknownSeq)
	}
	if seq < s.headSeq {
		s.mu.Unlock()
		return nil
	}
	e := &s.ents[seq-s.headSeq]
	switch e.state {
	case stAcked:
		s.mu.Unlock()
		return nil
	case stInflight:
		s.inflight--
	}
	e.state = stAcked
	s.pendingCount--
	s.pendingBytes -= int64(e.size)
	s.counters.AckedTotal++
	n := 0
	for n < len(s.ents) && s.ents[n].state == stAcked {
		n++
	}
	if n > 0 {
		s.ents = s.ents[n:]
		s.headSeq += uint64(n)
		s.nextIdx = max(s.nextIdx-n, 0)
		s.gen++
	}
	s.mu.Unlock()
	if n > 0 {
		select {
		case s.poke <- struct{}{}:
		default:
		}
	}
	return nil
}

// Nack returns an in-flight batch to be handed out again before any batch
// not yet handed out. Nack of a batch that is not in flight (acked, or
// already returned) does nothing. It returns ErrUnknownSeq for a seq that
// was never committed.
func (s *Spool) Nack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if seq == 0 || seq >= s.headSeq+uint64(len(s.ents)) {
		return fmt.Errorf("nack %d (committed seqs end before %d): %w", seq, s.headSeq+uint64(len(s.ents)), ErrUnknownSeq)
	}
	if seq < s.headSeq {
		return nil
	}
	if e := &s.ents[seq-s.headSeq]; e.state == stInflight {
		e.state = stReady
		s.inflight--
		s.nacked.push(seq)
		s.broadcastLocked()
	}
	return nil
}

// ResendUnacked makes every unacked batch, in flight or not, ready to be
// handed out again from the cursor on, in seq order. Use it after a
// reconnect, when the fate of in-flight batches is unknown. Acks that
// still arrive for batches handed out before are honoured; the receiver
// must be idempotent, as a batch may be shipped more than once.
func (s *Spool) ResendUnacked() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.ents {
		if s.ents[i].state == stInflight {
			s.ents[i].state = stReady
		}
	}
	s.inflight = 0
	s.nextIdx = 0
	s.nacked = s.nacked[:0]
	s.broadcastLocked()
}

// LastCommitMeta returns the meta of the newest flush ever committed in
// this directory, and false if there has been none. It survives restarts
// and the deletion of every acked segment.
func (s *Spool) LastCommitMeta() (CommitMeta, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lastMeta
	m.Data = append([]byte(nil), m.Data...)
	return m, s.hasMeta
}

// Usage returns the size of the spool's segment files and Config.MaxBytes.
// The size includes acked data until its segment is deleted.
func (s *Spool) Usage() (used, limit int64) { return s.log.Size(), s.cfg.MaxBytes }

// Full reports whether a flush like the last one would not fit: the last
// Commit failed with ErrFull and no disk has been freed since, or the
// current size plus the size of the last flush (committed or refused)
// exceeds MaxBytes. The HTTP ingest uses it to answer 503 before it
// accepts events. It is cheap enough to call per request.
func (s *Spool) Full() bool {
	if s.full.Load() {
		return true
	}
	used, limit := s.Usage()
	return used+s.lastGroup.Load() > limit
}

// Stats returns a snapshot of the spool's counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	st := s.counters
	st.PendingBatches = s.pendingCount
	st.PendingBytes = s.pendingBytes
	st.InflightBatches = s.inflight
	st.AckedThrough = s.headSeq - 1
	st.NextSeq = s.nextSeq
	s.mu.Unlock()
	st.DiskBytes, st.MaxBytes = s.Usage()
	return st
}

// pressure reports whether disk should be given back at once rather than
// at the next tick.
func (s *Spool) pressure() bool {
	used, limit := s.Usage()
	return s.full.Load() || used*2 >= limit
}

// run is the checkpoint goroutine: it persists the cursor every
// CheckpointInterval, or after each ack while the spool is under pressure.
func (s *Spool) run() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.poke:
			if !s.pressure() {
				continue
			}
		}
		_, err := s.checkpoint()
		s.mu.Lock()
		wasFailing := s.ckFailing
		s.ckFailing = err != nil
		if err != nil {
			s.counters.CheckpointErrors++
		}
		s.mu.Unlock()
		// Log transitions only: the counter tells how often.
		switch {
		case err != nil && !wasFailing:
			s.logger.Error("spool checkpoint failing; acked batches stay on disk and are re-delivered after a restart", "err", err)
		case err == nil && wasFailing:
			s.logger.Info("spool checkpoint recovered")
		}
	}
}

// checkpoint persists the cursor, the next seq and the last meta (if they
// changed), then deletes the segments wholly below the oldest unacked
// batch. The state is durable before any segment goes, so nothing a
// segment held is forgotten. It reports whether disk was freed.
func (s *Spool) checkpoint() (freed bool, err error) {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	s.mu.Lock()
	gen := s.gen
	st := state{
		AckedThrough: s.headSeq - 1,
		NextSeq:      s.nextSeq,
		HasMeta:      s.hasMeta,
		JournalPos:   s.lastMeta.JournalPos,
		MetaData:     s.lastMeta.Data,
		MetaLogPos:   uint64(s.lastMetaPos),
	}
	before := s.committedEnd
	if len(s.ents) > 0 {
		before = s.ents[0].pos
	}
	s.mu.Unlock()
	if gen != s.persistedGen {
		if err := writeState(s.dir, st); err != nil {
			return false, err
		}
		s.persistedGen = gen
	}
	size := s.log.Size()
	if before == s.log.End() && s.log.Start() < before && s.pressure() {
		// Everything is acked but it sits in the active segment, which
		// Release never deletes: seal it so it can go. A Commit racing
		// with us only makes the sealed segment hold its group too.
		if err := s.log.Roll(); err != nil {
			return false, err
		}
	}
	if err := s.log.Release(before); err != nil {
		return false, err
	}
	freed = s.log.Size() < size
	if freed {
		// Let Full fall back to comparing sizes, or the ingest could
		// refuse events forever while no new flush comes to clear it.
		s.full.Store(false)
	}
	return freed, nil
}

// Close stops the checkpoint goroutine, waits for a running Commit and for
// Next calls reading the log, persists the cursor one last time and closes
// the log. Waiting Next calls return ErrClosed. Close is idempotent.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		s.wg.Wait()
		s.commitMu.Lock()
		defer s.commitMu.Unlock()
		s.ops.Wait()
		var errs []error
		if _, err := s.checkpoint(); err != nil {
			errs = append(errs, err)
		}
		if err := s.log.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close spool %q: %w", s.dir, err)
		}
	})
	return s.closeErr
}

// seqHeap is a min-heap of sequence numbers.
type seqHeap []uint64

func (h seqHeap) len() int { return len(h) }

func (h *seqHeap) push(v uint64) {
	*h = append(*h, v)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p] <= a[i] {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *seqHeap) pop() uint64 {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && a[l] < a[m] {
			m = l
		}
		if r < n && a[r] < a[m] {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

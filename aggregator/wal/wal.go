// Package wal is the aggregator's write-ahead log: every batch a node
// accepts, kept exactly as its sender encoded it, until the writer has
// stored (or handed to its owner) everything merged from it.
//
// The log is an internal/seglog log (segmented, checksummed, torn tails
// truncated, damage elsewhere refused) of records in this format:
//
//	offset  size  field
//	     0     1  format version, 2 (FormatVersion)
//	     1     1  record kind: 1 = batch
//	     2     n  the batch: the msgpack payload of a wire Batch frame,
//	              decompressed, byte for byte as the sender encoded it
//
// Storing the payload as received costs no encoding at all on the ack
// path: the wire layer has decoded it once, to validate and merge it, and
// replay decodes it again only after a crash.
//
// Format 1, written by the first release, has no version byte: a record
// is the msgpack map {"a": agent, "c": [contributions]}. Its first byte
// is a msgpack map header (0x80-0x8f, 0xde or 0xdf), which no format-2
// record starts with, so Replay reads both and a node upgraded with
// batches in its log loses none. A record of a version this code does not
// know stops Replay with an error naming it: silently skipping it would
// drop acknowledged data.
//
// testdata/ holds a log written by each format version; the tests replay
// both and pin the bytes of format 2.
package wal

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/internal/seglog"
	"github.com/tally-edge/tally/wire"
)

// FormatVersion is the version of the records Append writes.
const FormatVersion = 2

// Record kinds of format 2.
const kindBatch = 1

// Pos is a position in the log (see seglog.Pos).
type Pos = seglog.Pos

// Errors of Append; match with errors.Is.
var (
	// ErrFull: the log has reached Options.MaxBytes; nothing was written.
	ErrFull = seglog.ErrFull
	// ErrBroken: an earlier write or fsync failed, so what is on disk is
	// unknown; the log refuses writes until it is reopened.
	ErrBroken = seglog.ErrBroken
)

// Options configure a Log.
type Options struct {
	// MaxBytes bounds the log on disk; Append returns ErrFull beyond it.
	MaxBytes int64
	// SegmentSize is the size at which a new segment file starts
	// (default 16 MiB): Release frees whole segments.
	SegmentSize int64
}

// Log is the write-ahead log. It is safe for concurrent use.
type Log struct {
	seg *seglog.Log

	// syncMu makes concurrent Syncs share one fsync (group commit):
	// whoever holds it fsyncs everything appended so far, and those
	// waiting behind it find their records already durable.
	syncMu sync.Mutex
	synced atomic.Uint64

	brokenMu sync.Mutex
	broken   error

	bufs      sync.Pool
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the log in dir and reports how many
// bytes of torn tail it dropped (records whose append never finished, so
// never acknowledged).
func Open(dir string, opts Options) (*Log, int64, error) {
	if opts.SegmentSize == 0 {
		opts.SegmentSize = 16 << 20
	}
	seg, err := seglog.Open(dir, seglog.Options{SegmentSize: opts.SegmentSize, MaxBytes: opts.MaxBytes})
	if err != nil {
		return nil, 0, fmt.Errorf("open write-ahead log: %w", err)
	}
	l := &Log{seg: seg}
	l.synced.Store(uint64(seg.End()))
	return l, seg.Recovered().Dropped, nil
}

// Append writes one batch payload (the decompressed msgpack of a Batch
// frame) and returns the positions of the record and after it. It does
// not fsync: call Sync with end before acknowledging the batch.
func (l *Log) Append(payload []byte) (start, end Pos, err error) {
	if len(payload) == 0 {
		return 0, 0, errors.New("wal: empty batch payload")
	}
	bp, _ := l.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	rec := append(append((*bp)[:0], FormatVersion, kindBatch), payload...)
	start, end, err = l.seg.Append(rec)
	if cap(rec) <= 1<<20 {
		*bp = rec[:0]
		l.bufs.Put(bp)
	}
	if err != nil {
		if errors.Is(err, seglog.ErrBroken) {
			l.setBroken(err)
		}
		return 0, 0, fmt.Errorf("wal append: %w", err)
	}
	return start, end, nil
}

// Sync makes everything up to end durable. Concurrent callers share
// fsyncs. A failed fsync breaks the log for good (see Broken).
func (l *Log) Sync(end Pos) error {
	if Pos(l.synced.Load()) >= end {
		return nil
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if Pos(l.synced.Load()) >= end {
		return nil
	}
	target := l.seg.End()
	if err := l.seg.Sync(); err != nil {
		l.setBroken(err)
		return fmt.Errorf("wal fsync: %w", err)
	}
	if target > Pos(l.synced.Load()) {
		l.synced.Store(uint64(target))
	}
	return nil
}

func (l *Log) setBroken(err error) {
	l.brokenMu.Lock()
	if l.broken == nil {
		l.broken = err
	}
	l.brokenMu.Unlock()
}

// Broken returns the write or fsync error that broke the log, or nil.
// After one, nothing more can be made durable: the node must stop taking
// batches, save what it can and restart.
func (l *Log) Broken() error {
	l.brokenMu.Lock()
	defer l.brokenMu.Unlock()
	return l.broken
}

// End is the position after the last record.
func (l *Log) End() Pos { return l.seg.End() }

// Size is the log's size on disk in bytes.
func (l *Log) Size() int64 { return l.seg.Size() }

// Release deletes the segments wholly before pos: everything merged from
// them has been stored elsewhere.
func (l *Log) Release(before Pos) error { return l.seg.Release(before) }

// Replay decodes every record in order and hands its batch to fn. Records
// of format 1 come back as a Batch of protocol version 1 with Agent and
// Contributions set.
func (l *Log) Replay(fn func(pos Pos, b *wire.Batch) error) error {
	return l.seg.Read(l.seg.Start(), func(pos seglog.Pos, rec []byte) error {
		b, err := DecodeRecord(rec)
		if err != nil {
			return fmt.Errorf("wal record at position %d: %w", pos, err)
		}
		return fn(pos, b)
	})
}

// legacyRecord is a format-1 record.
type legacyRecord struct {
	Agent    string              `msgpack:"a"`
	Contribs []wire.Contribution `msgpack:"c"`
}

// DecodeRecord decodes one record of either format.
func DecodeRecord(rec []byte) (*wire.Batch, error) {
	if len(rec) == 0 {
		return nil, errors.New("empty record")
	}
	switch v := rec[0]; {
	case v == FormatVersion:
		if len(rec) < 3 || rec[1] != kindBatch {
			return nil, fmt.Errorf("format %d record of unknown kind or empty", v)
		}
		b, err := wire.DecodeBatch(wire.Frame{Version: wire.ProtocolVersion, Kind: wire.KindBatch, Payload: rec[2:]})
		if err != nil {
			return nil, fmt.Errorf("format %d batch: %w", v, err)
		}
		return b, nil
	case v >= 0x80 && v <= 0x8f, v == 0xde, v == 0xdf:
		var lr legacyRecord
		if err := msgpack.Unmarshal(rec, &lr); err != nil {
			return nil, fmt.Errorf("format 1 record: %w", err)
		}
		if lr.Agent == "" {
			return nil, errors.New("format 1 record without an agent")
		}
		b := &wire.Batch{Version: wire.ProtocolVersion, Agent: lr.Agent, Contributions: lr.Contribs}
		if err := b.Validate(); err != nil {
			return nil, fmt.Errorf("format 1 batch: %w", err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("record of format version %d; this node reads versions 1 and %d (was the log written by a newer release?)", v, FormatVersion)
	}
}

// Close closes the log; it is safe to call more than once.
func (l *Log) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.seg.Close() })
	return l.closeErr
}

package seglog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"sync"
)

// Pos is a logical byte position in a log: the offset of a record's first
// framing byte in the concatenation of every segment the directory has ever
// held. Positions only grow for the life of the directory (see Truncate for
// the one deliberate exception).
type Pos uint64

const (
	// DefaultSegmentSize is the segment size used when Options.SegmentSize
	// is zero.
	DefaultSegmentSize = 64 << 20
	// DefaultMaxRecordSize is the record size limit used when
	// Options.MaxRecordSize is zero.
	DefaultMaxRecordSize = 16 << 20

	// maxRetainedBuf caps the write buffer kept between Appends so one huge
	// append does not pin its buffer for the life of the Log.
	maxRetainedBuf = 4 << 20
)

// Options tunes a Log. The zero value means every default.
type Options struct {
	// SegmentSize is the size in bytes at which Append starts a new
	// segment. Default 64 MiB. Smaller segments let Release free disk
	// sooner (it deletes whole segments) at the cost of more files and
	// more fsyncs of the directory. A single Append larger than
	// SegmentSize gets a segment of its own.
	SegmentSize int64
	// MaxRecordSize is the largest payload Append accepts, in bytes.
	// Default 16 MiB, at most math.MaxUint32. It is not applied when
	// reading, so lowering it never makes existing records unreadable.
	MaxRecordSize int
	// MaxBytes bounds the total size of all segment files. Append returns
	// ErrFull instead of exceeding it. Zero means unbounded.
	MaxBytes int64
}

// DefaultOptions returns the Options Open uses for zero fields.
func DefaultOptions() Options {
	return Options{SegmentSize: DefaultSegmentSize, MaxRecordSize: DefaultMaxRecordSize}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.SegmentSize == 0 {
		o.SegmentSize = d.SegmentSize
	}
	if o.MaxRecordSize == 0 {
		o.MaxRecordSize = d.MaxRecordSize
	}
	return o
}

// Validate reports whether the options (after defaults are applied to zero
// fields) are usable.
func (o Options) Validate() error {
	o = o.withDefaults()
	switch {
	case o.SegmentSize <= HeaderSize:
		return fmt.Errorf("seglog: SegmentSize %d must be larger than %d", o.SegmentSize, HeaderSize)
	case o.MaxRecordSize < 1 || int64(o.MaxRecordSize) > math.MaxUint32:
		return fmt.Errorf("seglog: MaxRecordSize %d must be in [1, %d]", o.MaxRecordSize, uint32(math.MaxUint32))
	case o.MaxBytes < 0:
		return fmt.Errorf("seglog: MaxBytes %d must not be negative", o.MaxBytes)
	}
	return nil
}

// Log is an open segmented log.
//
// A Log is safe for concurrent use. Append, Roll, Release, Truncate and
// Close are serialised among themselves; Sync runs beside them and covers
// what was appended before it was called. Readers (Read, NewReader,
// ReadRecord) run concurrently with all of these and with each other and
// only ever see whole records whose Append has finished. The one exception
// is Truncate, which must not run while a reader is positioned beyond its
// target.
type Log struct {
	dir      string
	opts     Options
	lockFile *os.File
	recovery Recovery

	// wmu serialises everything that writes files: Append, roll, Release,
	// Truncate, Close.
	wmu  sync.Mutex
	wbuf []byte // guarded by wmu

	// mu guards the fields below. Writers of sizes and of the segment list
	// hold wmu too, so holders of wmu may read them without mu.
	mu     sync.RWMutex
	segs   []*segment // ascending base; the last one is active
	end    Pos
	size   int64
	synced Pos // everything before it has been fsynced
	closed bool
	broken error
}

// Open opens the log in dir, creating the directory and a first segment if
// needed, and recovers from a crash: a torn or corrupt tail of the newest
// segment is truncated (see Recovered); damage in an older segment, or
// segments that do not line up, make Open fail with a *CorruptError.
//
// Open takes an exclusive lock on the directory until Close. It reads every
// segment once to verify checksums, so it costs a sequential read of the
// whole log.
func Open(dir string, opts Options) (*Log, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open log %q: %w", dir, err)
	}
	lf, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open log %q: %w", dir, err)
	}
	l := &Log{dir: dir, opts: opts, lockFile: lf}
	if err := checkFormat(dir); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("open log %q: %w", dir, err)
	}
	if err := l.load(); err != nil {
		for _, s := range l.segs {
			s.unref()
		}
		_ = lf.Close()
		return nil, fmt.Errorf("open log %q: %w", dir, err)
	}
	return l, nil
}

// load opens and verifies every segment. It runs before the Log is shared,
// so it touches fields without locks.
func (l *Log) load() error {
	bases, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	if len(bases) == 0 {
		path := segPath(l.dir, 0)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, newSegment(0, path, f, 0))
		return syncDir(l.dir)
	}
	for i, base := range bases {
		path := segPath(l.dir, base)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		seg := newSegment(base, path, f, 0)
		l.segs = append(l.segs, seg)
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		valid, bad, err := scanSegment(f, path, base, fi.Size())
		if err != nil {
			return fmt.Errorf("read %q: %w", path, err)
		}
		last := i == len(bases)-1
		if bad != nil {
			if !last {
				return bad
			}
			if err := f.Truncate(valid); err != nil {
				return fmt.Errorf("truncate torn tail of %q: %w", path, err)
			}
			l.recovery = Recovery{Dropped: fi.Size() - valid, Cause: bad}
		}
		seg.size = valid
		if i > 0 {
			prev := l.segs[i-1]
			if want := prev.base + Pos(prev.size); want != base {
				return &CorruptError{Segment: prev.path, Offset: prev.size, Pos: want,
					Reason: fmt.Sprintf("segment ends at position %d but the next segment %q starts at %d",
						want, segmentName(base), base)}
			}
		}
		l.size += valid
	}
	active := l.segs[len(l.segs)-1]
	// A killed predecessor may have left unsynced pages behind; make what
	// we are about to build on durable, so synced is the truth.
	if err := active.f.Sync(); err != nil {
		return fmt.Errorf("sync %q: %w", active.path, err)
	}
	l.end = active.base + Pos(active.size)
	l.synced = l.end
	return nil
}

// Recovered reports what Open truncated from the tail of the newest
// segment.
func (l *Log) Recovered() Recovery { return l.recovery }

// Start returns the position of the oldest retained record (End when the
// log holds no records).
func (l *Log) Start() Pos {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segs[0].base
}

// End returns the position after the newest record: where the next Append
// will write.
func (l *Log) End() Pos {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.end
}

// Size returns the total size in bytes of the retained segments.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.size
}

// writable reports why the log cannot be written. Callers hold mu or wmu.
func (l *Log) writable() error {
	if l.closed {
		return ErrClosed
	}
	if l.broken != nil {
		return fmt.Errorf("%w: %w", ErrBroken, l.broken)
	}
	return nil
}

func (l *Log) setBroken(err error) {
	l.mu.Lock()
	if l.broken == nil {
		l.broken = err
	}
	l.mu.Unlock()
}

// Append writes recs as consecutive records with a single write(2) and
// returns the position of the first one and the position after the last.
// Appending no records returns (End, End, nil).
//
// Either every record is written or none is: ErrFull when Options.MaxBytes
// would be exceeded, ErrTooLarge or ErrEmptyRecord for a bad record, or an
// I/O error after which the partial write has been removed again. All
// records land in one segment; Append starts a new segment first when they
// do not fit in the active one.
//
// Append does not fsync: the records survive a killed process as soon as
// Append returns, and a power loss only after a later Sync.
func (l *Log) Append(recs ...[]byte) (first, end Pos, err error) {
	var total int64
	for i, r := range recs {
		switch {
		case len(r) == 0:
			return 0, 0, fmt.Errorf("append record %d: %w", i, ErrEmptyRecord)
		case len(r) > l.opts.MaxRecordSize:
			return 0, 0, fmt.Errorf("append record %d of %d bytes (max %d): %w",
				i, len(r), l.opts.MaxRecordSize, ErrTooLarge)
		}
		total += HeaderSize + int64(len(r))
	}

	l.wmu.Lock()
	defer l.wmu.Unlock()
	// Under wmu nobody else changes segs, sizes or end; mu is still needed
	// for closed and broken, which readers' paths may set.
	l.mu.RLock()
	werr := l.writable()
	size, start := l.size, l.end
	l.mu.RUnlock()
	if werr != nil {
		return 0, 0, fmt.Errorf("append: %w", werr)
	}
	if total == 0 {
		return start, start, nil
	}
	if max := l.opts.MaxBytes; max > 0 {
		if total > max {
			return 0, 0, fmt.Errorf("append %d bytes, more than MaxBytes %d: %w", total, max, ErrTooLarge)
		}
		if size+total > max {
			return 0, 0, fmt.Errorf("append %d bytes to log of %d (max %d): %w", total, size, max, ErrFull)
		}
	}
	active := l.segs[len(l.segs)-1]
	if active.size > 0 && active.size+total > l.opts.SegmentSize {
		if err := l.roll(); err != nil {
			return 0, 0, fmt.Errorf("append: %w", err)
		}
		active = l.segs[len(l.segs)-1]
	}

	buf := l.encode(recs, total)
	if _, err := active.f.WriteAt(buf, active.size); err != nil {
		// Remove whatever part of the write made it, so the next record
		// follows the last good one. If that fails too, the file has
		// garbage we cannot account for: stop writing.
		if terr := active.f.Truncate(active.size); terr != nil {
			l.setBroken(fmt.Errorf("undo failed write to %q: %w", active.path, terr))
		}
		return 0, 0, fmt.Errorf("append to %q: %w", active.path, err)
	}

	l.mu.Lock()
	active.size += total
	l.end += Pos(total)
	l.size += total
	l.mu.Unlock()
	return start, start + Pos(total), nil
}

// encode frames recs into the reusable write buffer. Callers hold wmu.
func (l *Log) encode(recs [][]byte, total int64) []byte {
	var buf []byte
	if total <= maxRetainedBuf {
		if int64(cap(l.wbuf)) < total {
			l.wbuf = make([]byte, total)
		}
		buf = l.wbuf[:total]
	} else {
		buf = make([]byte, total)
	}
	off := 0
	for _, r := range recs {
		binary.BigEndian.PutUint32(buf[off:], uint32(len(r)))
		binary.BigEndian.PutUint32(buf[off+4:], checksum(r))
		off += HeaderSize + copy(buf[off+HeaderSize:], r)
	}
	return buf
}

// roll seals the active segment and starts a new one at end. Callers hold
// wmu and have checked writable.
func (l *Log) roll() error {
	old := l.segs[len(l.segs)-1]
	// Sealed segments are always durable, so Sync only ever has to fsync
	// the active one.
	if err := old.f.Sync(); err != nil {
		err = fmt.Errorf("sync %q: %w", old.path, err)
		l.setBroken(err)
		return err
	}
	base := l.end
	path := segPath(l.dir, base)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("sync dir %q: %w", l.dir, err)
	}
	seg := newSegment(base, path, f, 0)
	l.mu.Lock()
	l.segs = append(l.segs, seg)
	if l.synced < base {
		l.synced = base
	}
	l.mu.Unlock()
	return nil
}

// Roll seals the active segment and starts a new, empty one at End, so that
// a later Release can delete what was the active segment. It does nothing
// when the active segment is empty. Use it to free disk when everything has
// been consumed; Append rolls on its own at SegmentSize.
func (l *Log) Roll() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.RLock()
	err := l.writable()
	empty := l.segs[len(l.segs)-1].size == 0
	l.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("roll: %w", err)
	}
	if empty {
		return nil
	}
	if err := l.roll(); err != nil {
		return fmt.Errorf("roll: %w", err)
	}
	return nil
}

// Sync makes every record appended before the call durable (fsync). It
// returns at once when nothing has been appended since the last Sync. A
// failed fsync breaks the log (see ErrBroken): after one, the kernel may
// already have discarded the unwritten pages, so retrying cannot be trusted.
func (l *Log) Sync() error {
	l.mu.RLock()
	if err := l.writable(); err != nil {
		l.mu.RUnlock()
		return fmt.Errorf("sync: %w", err)
	}
	target := l.end
	if l.synced >= target {
		l.mu.RUnlock()
		return nil
	}
	// Everything before target is in the active segment or in sealed
	// segments, which roll fsynced.
	active := l.segs[len(l.segs)-1]
	active.ref()
	l.mu.RUnlock()

	err := active.f.Sync()
	active.unref()
	if err != nil {
		err = fmt.Errorf("sync %q: %w", active.path, err)
		l.setBroken(err)
		return err
	}
	l.mu.Lock()
	if l.synced < target {
		l.synced = target
	}
	l.mu.Unlock()
	return nil
}

// Release deletes, oldest first, every segment that ends at or before the
// position before, except the active segment, which is never deleted (see
// Roll). Positions are not affected: Start moves forward, End stays.
// Readers positioned in a deleted segment keep reading it; readers that
// later need a deleted segment get ErrReleased.
func (l *Log) Release(before Pos) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return fmt.Errorf("release: %w", ErrClosed)
	}
	var doomed []*segment
	for _, s := range l.segs[:len(l.segs)-1] {
		if s.base+Pos(s.size) > before {
			break
		}
		doomed = append(doomed, s)
	}
	l.mu.RUnlock()
	if len(doomed) == 0 {
		return nil
	}

	// Oldest first, so a crash half way leaves a contiguous log.
	var err error
	removed := 0
	for _, s := range doomed {
		if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("release %q: %w", s.path, rerr)
			break
		}
		removed++
	}
	if removed == 0 {
		return err
	}
	var freed int64
	for _, s := range doomed[:removed] {
		freed += s.size
	}
	l.mu.Lock()
	l.segs = append([]*segment(nil), l.segs[removed:]...)
	l.size -= freed
	l.mu.Unlock()
	for _, s := range doomed[:removed] {
		s.unref()
	}
	if serr := syncDir(l.dir); serr != nil && err == nil {
		err = fmt.Errorf("release: sync dir %q: %w", l.dir, serr)
	}
	return err
}

// Truncate removes every record at or after the position end, which must
// be a record boundary between Start and End, and fsyncs the result.
// Segments after the one holding end are deleted, newest first.
//
// Truncate is the one operation that moves End backwards, so the positions
// it removes are handed out again by later Appends. Use it only for a tail
// nobody has acted on, such as an incomplete group of records found after
// a crash, and not while a reader is positioned beyond end.
func (l *Log) Truncate(end Pos) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.RLock()
	werr := l.writable()
	cur, start := l.end, l.segs[0].base
	l.mu.RUnlock()
	switch {
	case werr != nil:
		return fmt.Errorf("truncate: %w", werr)
	case end > cur:
		return fmt.Errorf("truncate to %d (end %d): %w", end, cur, ErrOutOfRange)
	case end < start:
		return fmt.Errorf("truncate to %d (start %d): %w", end, start, ErrReleased)
	case end == cur:
		return nil
	}
	idx := len(l.segs) - 1
	for l.segs[idx].base > end {
		idx--
	}
	keep := l.segs[idx]
	for j := len(l.segs) - 1; j > idx; j-- {
		if err := os.Remove(l.segs[j].path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("truncate: remove %q: %w", l.segs[j].path, err)
			l.setBroken(err)
			return err
		}
	}
	newSize := int64(end - keep.base)
	if err := keep.f.Truncate(newSize); err != nil {
		err = fmt.Errorf("truncate %q: %w", keep.path, err)
		l.setBroken(err)
		return err
	}
	if err := keep.f.Sync(); err != nil {
		err = fmt.Errorf("truncate: sync %q: %w", keep.path, err)
		l.setBroken(err)
		return err
	}
	if err := syncDir(l.dir); err != nil {
		err = fmt.Errorf("truncate: sync dir %q: %w", l.dir, err)
		l.setBroken(err)
		return err
	}
	dropped := l.segs[idx+1:]
	l.mu.Lock()
	l.segs = append([]*segment(nil), l.segs[:idx+1]...)
	keep.size = newSize
	l.size = 0
	for _, s := range l.segs {
		l.size += s.size
	}
	l.end = end
	l.synced = end
	l.mu.Unlock()
	for _, s := range dropped {
		s.unref()
	}
	return nil
}

// Close fsyncs the active segment (unless the log is broken) and releases
// the directory lock. Readers that are still open keep working on the
// segment they are positioned in and then fail with ErrClosed. Close is
// idempotent: later calls return nil.
func (l *Log) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	broken := l.broken
	needSync := l.synced < l.end
	segs := l.segs
	l.mu.Unlock()

	var err error
	if broken == nil && needSync {
		active := segs[len(segs)-1]
		if serr := active.f.Sync(); serr != nil {
			err = fmt.Errorf("close: sync %q: %w", active.path, serr)
		}
	}
	for _, s := range segs {
		s.unref()
	}
	if cerr := l.lockFile.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close: unlock %q: %w", l.dir, cerr)
	}
	return err
}

package seglog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// readChunk is how much a Reader asks the kernel for at a time: many small
// records per pread instead of two preads per record.
const readChunk = 64 << 10

// acquire returns the segment holding position pos with a reference the
// caller must drop, and the position where that segment's written data
// ends right now.
func (l *Log) acquire(pos Pos) (*segment, Pos, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, 0, ErrClosed
	}
	if pos > l.end {
		return nil, 0, fmt.Errorf("position %d (end %d): %w", pos, l.end, ErrOutOfRange)
	}
	if pos < l.segs[0].base {
		return nil, 0, fmt.Errorf("position %d (start %d): %w", pos, l.segs[0].base, ErrReleased)
	}
	// The last segment whose base is at or before pos.
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > pos }) - 1
	s := l.segs[i]
	s.ref()
	return s, s.base + Pos(s.size), nil
}

// segEnd returns where s's written data ends right now.
func (l *Log) segEnd(s *segment) Pos {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return s.base + Pos(s.size)
}

// ReadRecord reads the single record at position pos, which must be a
// record boundary, and returns a copy of its payload and the position
// after it. It returns io.EOF when pos is End.
func (l *Log) ReadRecord(pos Pos) (rec []byte, next Pos, err error) {
	s, segEnd, err := l.acquire(pos)
	if err != nil {
		return nil, 0, fmt.Errorf("read record at %d: %w", pos, err)
	}
	defer s.unref()
	if pos == segEnd {
		return nil, 0, io.EOF
	}
	var hdr [HeaderSize]byte
	off := int64(pos - s.base)
	if segEnd-pos < HeaderSize {
		return nil, 0, &CorruptError{Segment: s.path, Offset: off, Pos: pos, Reason: "partial header below end (not a record boundary?)"}
	}
	if _, err := s.f.ReadAt(hdr[:], off); err != nil {
		return nil, 0, fmt.Errorf("read record at %d in %q: %w", pos, s.path, err)
	}
	n, sum := binary.BigEndian.Uint32(hdr[0:4]), binary.BigEndian.Uint32(hdr[4:8])
	if n == 0 || Pos(n) > segEnd-pos-HeaderSize {
		return nil, 0, &CorruptError{Segment: s.path, Offset: off, Pos: pos,
			Reason: fmt.Sprintf("record length %d does not fit (not a record boundary?)", n)}
	}
	rec = make([]byte, n)
	if _, err := s.f.ReadAt(rec, off+HeaderSize); err != nil {
		return nil, 0, fmt.Errorf("read record at %d in %q: %w", pos, s.path, err)
	}
	if checksum(rec) != sum {
		return nil, 0, &CorruptError{Segment: s.path, Offset: off, Pos: pos, Reason: "checksum mismatch"}
	}
	return rec, pos + HeaderSize + Pos(n), nil
}

// Read calls fn for every record from position from (a record boundary)
// to the End observed when Read starts, in order. pos is the position
// after rec: where a caller that has processed rec resumes (the record
// itself starts at pos-HeaderSize-len(rec)). rec is only valid during the
// call. Records appended while Read runs are not seen; use a Reader to
// follow the log. An error from fn stops Read and is returned as is.
func (l *Log) Read(from Pos, fn func(pos Pos, rec []byte) error) error {
	r, err := l.newReader(from, true)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(r.Pos(), rec); err != nil {
			return err
		}
	}
}

// Reader iterates over records in order. It follows the log: after Next
// has returned io.EOF, later calls return records appended since. A Reader
// is not safe for concurrent use; many Readers may share one Log.
type Reader struct {
	l     *Log
	pos   Pos  // position of the next record
	limit Pos  // when fixed, Next stops here
	fixed bool // limit is a snapshot of End taken at creation

	seg    *segment // referenced; nil when none is held
	segEnd Pos      // written end of seg as last observed
	buf    []byte   // file bytes [bufOff, bufOff+len(buf)) of seg
	bufOff int64
	err    error // sticky non-EOF error
}

// NewReader returns a Reader positioned at from, which must be a record
// boundary (Start, End, or a position returned by Append, Read or Next).
// The caller must Close it to let released segments' files be closed.
func (l *Log) NewReader(from Pos) (*Reader, error) { return l.newReader(from, false) }

func (l *Log) newReader(from Pos, fixed bool) (*Reader, error) {
	s, segEnd, err := l.acquire(from)
	if err != nil {
		return nil, fmt.Errorf("new reader at %d: %w", from, err)
	}
	r := &Reader{l: l, pos: from, fixed: fixed, seg: s, segEnd: segEnd}
	if fixed {
		r.limit = l.End()
	}
	return r, nil
}

// Pos returns the position of the next record, which is the position after
// the record Next returned last.
func (r *Reader) Pos() Pos { return r.pos }

// Next returns the next record, or io.EOF when the reader has caught up with
// the end of the log. The returned slice is only valid until the next call.
// It fails with ErrReleased if the records the reader needs next have been
// released, and with a *CorruptError if a record is damaged.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil && err != io.EOF {
		r.err = err
	}
	return rec, err
}

func (r *Reader) next() ([]byte, error) {
	if r.fixed && r.pos >= r.limit {
		return nil, io.EOF
	}
	if r.seg == nil || r.pos >= r.segEnd {
		if r.seg != nil {
			// The segment may have grown (active) or been sealed.
			r.segEnd = r.l.segEnd(r.seg)
		}
		if r.seg == nil || r.pos >= r.segEnd {
			if err := r.advance(); err != nil {
				return nil, err
			}
			if r.pos >= r.segEnd {
				return nil, io.EOF
			}
		}
	}
	s := r.seg
	off := int64(r.pos - s.base)
	avail := int64(r.segEnd - r.pos)
	if avail < HeaderSize {
		return nil, r.corrupt(off, "partial header below end")
	}
	hdr, err := r.fill(off, HeaderSize, avail)
	if err != nil {
		return nil, err
	}
	n := int64(binary.BigEndian.Uint32(hdr[0:4]))
	sum := binary.BigEndian.Uint32(hdr[4:8])
	if n == 0 || n > avail-HeaderSize {
		return nil, r.corrupt(off, fmt.Sprintf("record length %d does not fit (not a record boundary?)", n))
	}
	b, err := r.fill(off, HeaderSize+n, avail)
	if err != nil {
		return nil, err
	}
	rec := b[HeaderSize : HeaderSize+n]
	if checksum(rec) != sum {
		return nil, r.corrupt(off, "checksum mismatch")
	}
	r.pos += Pos(HeaderSize + n)
	return rec, nil
}

// advance moves the reader to the segment holding r.pos.
func (r *Reader) advance() error {
	s, segEnd, err := r.l.acquire(r.pos)
	if err != nil {
		return fmt.Errorf("read at %d: %w", r.pos, err)
	}
	if r.seg != nil {
		r.seg.unref()
	}
	r.seg, r.segEnd = s, segEnd
	r.buf, r.bufOff = r.buf[:0], 0
	return nil
}

// fill returns the file bytes [off, off+want) of the current segment,
// reading ahead up to avail bytes to serve the following records too.
func (r *Reader) fill(off, want, avail int64) ([]byte, error) {
	if off >= r.bufOff && off+want <= r.bufOff+int64(len(r.buf)) {
		start := off - r.bufOff
		return r.buf[start : start+want], nil
	}
	n := min(max(want, readChunk), avail)
	if int64(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if _, err := r.seg.f.ReadAt(r.buf, off); err != nil {
		r.buf = r.buf[:0]
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %q at offset %d: %w", r.seg.path, off, err)
	}
	r.bufOff = off
	return r.buf[:want], nil
}

func (r *Reader) corrupt(off int64, reason string) error {
	return &CorruptError{Segment: r.seg.path, Offset: off, Pos: r.pos, Reason: reason}
}

// Close releases the reader's segment. It is idempotent.
func (r *Reader) Close() error {
	if r.seg != nil {
		r.seg.unref()
		r.seg = nil
	}
	return nil
}

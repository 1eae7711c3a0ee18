package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
)

// follower is one source: a path, and the file being read for it. That is
// the file at the path, or the path's previous file (rotated away, or the
// copy left by copytruncate) until it has been read to its end.
//
// Invariant between calls: the bytes before offset are consumed and the
// sink holds announced == {source, id, offset}; the bytes in [offset,
// readOff) are an incomplete line, held in partial (or, when skipping,
// dropped as part of a line longer than MaxLineBytes).
type follower struct {
	path, source string

	f     *os.File // nil only while being (re)started
	name  string   // the name f was opened by
	id    fileID
	idStr string

	offset, readOff int64
	partial         []byte
	skipping        bool

	// fp holds the fpN bytes before readOff. Every read starts fpN bytes
	// early and compares them: a mismatch means the file was truncated (and
	// perhaps rewritten past readOff) since the last read.
	fp  [fpLen]byte
	fpN int

	lastGrowth time.Time
	// rotated: f is no longer the file at path. It is read until it has
	// not grown for RotateWait since max(lastGrowth, rotatedAt).
	rotated   bool
	rotatedAt time.Time

	announced source.Position
}

func (f *follower) pos() source.Position {
	return source.Position{Source: f.source, File: f.idStr, Offset: f.offset}
}

func (f *follower) setFile(file *os.File, id fileID, name string) {
	f.f, f.id, f.idStr, f.name = file, id, id.String(), name
}

// resetReading forgets everything read from the current file.
func (f *follower) resetReading(now time.Time) {
	f.offset, f.readOff = 0, 0
	f.partial, f.skipping, f.fpN = nil, false, 0
	f.lastGrowth = now
}

func (f *follower) updateFP(p []byte) {
	if len(p) >= fpLen {
		copy(f.fp[:], p[len(p)-fpLen:])
		f.fpN = fpLen
		return
	}
	keep := min(f.fpN, fpLen-len(p))
	copy(f.fp[:keep], f.fp[f.fpN-keep:f.fpN])
	copy(f.fp[keep:], p)
	f.fpN = keep + len(p)
}

// loadFP reads the fingerprint of a file opened at readOff.
func (f *follower) loadFP() {
	n := int(min(fpLen, f.readOff))
	f.fpN = 0
	if n > 0 {
		if m, _ := f.f.ReadAt(f.fp[:n], f.readOff-int64(n)); m == n {
			f.fpN = n
		}
	}
}

// openRegular opens name if it is a regular file and returns its identity
// and size.
func openRegular(name string) (*os.File, fileID, int64, error) {
	if fi, err := os.Stat(name); err != nil {
		return nil, fileID{}, 0, err
	} else if !fi.Mode().IsRegular() {
		return nil, fileID{}, 0, fmt.Errorf("%s is not a regular file", name)
	}
	file, err := os.Open(name)
	if err != nil {
		return nil, fileID{}, 0, err
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fileID{}, 0, fmt.Errorf("stat %s: %w", name, err)
	}
	id, ok := identityOf(fi)
	if !ok {
		file.Close()
		return nil, fileID{}, 0, fmt.Errorf("%s: no device and inode", name)
	}
	return file, id, fi.Size(), nil
}

// start opens the file at f.path and decides where its source resumes: pos
// (when have) is the source's last accepted position; complete says pos is
// known to be the end of a file this process finished. It returns false
// when nothing could be opened (f is then closed). When it returns true
// with an error, f is open and must be closed by the caller.
func (t *Tailer) start(ctx context.Context, f *follower, pos source.Position, have, complete bool) (bool, error) {
	file, id, size, err := openRegular(f.path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			t.fileError(f.path, err)
		}
		return false, nil
	}
	delete(t.warned, f.path)
	now := time.Now()
	f.resetReading(now)
	f.rotated = false
	f.announced = source.Position{}
	if have {
		f.announced = pos
	}
	how := "new file"
	switch {
	case !have:
	case pos.File == id.String() && size >= pos.Offset:
		f.offset, f.readOff, how = pos.Offset, pos.Offset, "resumed"
	case pos.File == id.String():
		t.rotation(RotationTruncateStopped)
		t.count(func(s *Stats) { s.Unrecovered++ })
		t.log.Warn("file shrank while not followed (copytruncate?); reading it from the start; lines it held after the saved offset are lost",
			"path", f.path, "file", pos.File, "saved_offset", pos.Offset, "size", size)
		how = "truncated while stopped"
	case complete:
		how = "next file after rotation"
	default:
		t.rotation(RotationRenameStopped)
		if pf, pid, name, ok := t.findID(f.path, pos); ok {
			file.Close()
			file, id = pf, pid
			f.offset, f.readOff = pos.Offset, pos.Offset
			f.rotated, f.rotatedAt = true, now
			f.setFile(file, id, name)
			how = "rotated while stopped: finishing its previous file first"
			break
		}
		t.count(func(s *Stats) { s.Unrecovered++ })
		t.log.Warn("file was rotated while not followed and its previous file cannot be found; lines written to that file after the saved offset are lost",
			"path", f.path, "previous_file", pos.File, "saved_offset", pos.Offset, "searched_suffixes", t.cfg.RotatedSuffixes)
		how = "rotated while stopped, previous file lost"
	}
	if f.f == nil {
		f.setFile(file, id, f.path)
	}
	t.count(func(s *Stats) { s.FilesOpen++ })
	f.loadFP()
	if how == "resumed" && f.fpN > 0 && f.fp[f.fpN-1] != '\n' {
		// Either a torn line was flushed here, or the file was truncated and
		// rewritten past this offset while the agent was stopped (then lines
		// are lost). Restarting from 0 would count the whole file twice in
		// the first case, so the offset is kept.
		t.log.Warn("saved position is not at a line boundary; the file may have been truncated and rewritten while not followed",
			"path", f.path, "offset", f.offset)
	}
	t.log.Info("following file", "path", f.path, "file", f.name, "id", f.idStr, "offset", f.offset, "how", how)
	return true, t.announce(ctx, f)
}

// findID looks for the file identified by pos.File among the rotated names
// of path, and returns it opened if it still holds pos.Offset bytes. Other
// glob matches are not searched: a match that is not a rotated name is
// followed as a source of its own, and reading it here as well would count
// it twice.
func (t *Tailer) findID(path string, pos source.Position) (*os.File, fileID, string, bool) {
	for _, name := range t.rotatedNames(path) {
		fi, err := os.Stat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if id, ok := identityOf(fi); !ok || id.String() != pos.File {
			continue
		}
		file, id, size, err := openRegular(name)
		if err != nil || id.String() != pos.File {
			if file != nil {
				file.Close()
			}
			continue
		}
		if size < pos.Offset {
			file.Close()
			t.log.Warn("previous file found but shorter than the saved offset; not read", "path", name, "size", size, "saved_offset", pos.Offset)
			return nil, fileID{}, "", false
		}
		return file, id, name, true
	}
	return nil, fileID{}, "", false
}

// findCopy looks for the copy copytruncate left of f's file: a rotated name
// of f.path, another file, holding f's fingerprint just before f.readOff.
func (t *Tailer) findCopy(f *follower) (*os.File, fileID, string, bool) {
	if f.fpN == 0 {
		return nil, fileID{}, "", false
	}
	var b [fpLen]byte
	for _, name := range t.rotatedNames(f.path) {
		file, id, size, err := openRegular(name)
		if err != nil {
			continue
		}
		if id != f.id && size >= f.readOff {
			n, _ := file.ReadAt(b[:f.fpN], f.readOff-int64(f.fpN))
			if n == f.fpN && bytes.Equal(b[:n], f.fp[:n]) {
				return file, id, name, true
			}
		}
		file.Close()
	}
	return nil, fileID{}, "", false
}

// announce records f's position with the sink when it differs from the
// last one recorded: a source switching files (or restarting one from 0)
// must say so before it has lines to deliver, or a restart in between
// would look for the file it left.
func (t *Tailer) announce(ctx context.Context, f *follower) error {
	pos := f.pos()
	if pos == f.announced {
		return nil
	}
	if err := t.accept(ctx, nil, pos); err != nil {
		return err
	}
	f.announced = pos
	return nil
}

// step gives f one turn: read what is new, then handle rotation, idle
// torn lines, and the end of a rotated file. It reports whether anything
// happened, and returns an error only when Run must stop.
func (t *Tailer) step(ctx context.Context, f *follower) (bool, error) {
	now := time.Now()
	progressed, atEOF := false, false
	for range turnChunks {
		k := f.fpN
		n, err := f.f.ReadAt(t.rbuf[:k+t.cfg.BatchBytes], f.readOff-int64(k))
		if err != nil && !errors.Is(err, io.EOF) {
			t.drop(f, fmt.Errorf("read %s at offset %d: %w", f.name, f.readOff, err))
			return true, nil
		}
		if n < k || !bytes.Equal(t.rbuf[:k], f.fp[:k]) {
			progressed = true
			if err := t.onTruncate(ctx, f); err != nil {
				return true, err
			}
			if f.f == nil {
				return true, nil // finished and dropped
			}
			continue
		}
		if n > k {
			progressed = true
			if err := t.consume(ctx, f, t.rbuf[k:n]); err != nil {
				return true, err
			}
		}
		if err != nil {
			atEOF = true
			break
		}
	}
	if !atEOF {
		return progressed, nil
	}
	if f.rotated {
		if now.Sub(later(f.lastGrowth, f.rotatedAt)) < t.cfg.RotateWait {
			return progressed, nil
		}
		return true, t.finish(ctx, f)
	}
	if t.checkRotated(f, now) {
		return true, nil // read it to its end first, next turn
	}
	if (len(f.partial) > 0 || f.skipping) && now.Sub(f.lastGrowth) >= t.cfg.IdleFlush {
		return true, t.flushTorn(ctx, f)
	}
	return progressed, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// checkRotated looks at what the path names now; if it is no longer f's
// file, f is marked rotated and kept open until it has been read out.
func (t *Tailer) checkRotated(f *follower, now time.Time) bool {
	kind := RotationRename
	fi, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kind = RotationRemove
	case err != nil:
		t.warnOnce(f.path, err) // cannot tell; keep reading what is open
		return false
	default:
		if id, ok := identityOf(fi); ok && id == f.id {
			return false
		}
	}
	f.rotated, f.rotatedAt = true, now
	t.rotation(kind)
	t.log.Info("file rotated away; reading it to its end before moving on",
		"path", f.path, "kind", kind, "id", f.idStr, "offset", f.readOff, "rotate_wait", t.cfg.RotateWait)
	return true
}

// onTruncate handles a file whose bytes before readOff are gone.
func (t *Tailer) onTruncate(ctx context.Context, f *follower) error {
	if f.rotated {
		// A rotated file is not written, let alone truncated; whatever
		// happened to it, nothing more can be read from it.
		t.log.Warn("rotated file shrank while being read out; moving on", "file", f.name, "offset", f.readOff)
		return t.finish(ctx, f)
	}
	t.rotation(RotationTruncate)
	if file, id, name, ok := t.findCopy(f); ok {
		// The copy continues the very byte stream read so far: carry on
		// reading it from readOff, with the line in progress, then go back
		// to the (truncated) file at the path from 0.
		t.log.Info("file truncated in place (copytruncate); reading the rest of its copy first",
			"path", f.path, "copy", name, "offset", f.readOff)
		t.closeFile(f)
		f.setFile(file, id, name)
		t.count(func(s *Stats) { s.FilesOpen++ })
		f.rotated, f.rotatedAt = true, time.Now()
		return t.announce(ctx, f)
	}
	t.count(func(s *Stats) { s.Unrecovered++ })
	t.log.Warn("file truncated in place and no copy of it found; reading it from the start; lines written after offset before the truncation are lost",
		"path", f.path, "offset", f.readOff, "searched_suffixes", t.cfg.RotatedSuffixes)
	if err := t.flushTorn(ctx, f); err != nil {
		return err
	}
	f.resetReading(time.Now())
	return t.announce(ctx, f)
}

// finish ends reading a rotated file: its torn last line, if any, is
// consumed, and the source goes on with the file now at its path, from 0.
func (t *Tailer) finish(ctx context.Context, f *follower) error {
	if err := t.flushTorn(ctx, f); err != nil {
		return err
	}
	last := f.announced
	t.log.Info("finished rotated file", "path", f.path, "file", f.name, "id", f.idStr, "offset", f.offset)
	t.closeFile(f)
	ok, err := t.start(ctx, f, last, true, true)
	if !ok {
		// Nothing at the path now: the next scan starts it when it appears,
		// from 0, knowing this position is complete.
		delete(t.files, f.path)
		t.done[f.source] = last
		t.reorder()
	}
	return err
}

// drop stops following f after a file error; the next scan starts it again
// from the sink's position.
func (t *Tailer) drop(f *follower, err error) {
	t.fileError(f.path, err)
	t.closeFile(f)
	delete(t.files, f.path)
	t.reorder()
}

func (t *Tailer) closeFile(f *follower) {
	if f.f == nil {
		return
	}
	f.f.Close() // read-only: nothing to lose
	f.f = nil
	t.count(func(s *Stats) { s.FilesOpen-- })
}

// consume splits p, the bytes read at f.readOff, into lines and delivers
// them in batches.
func (t *Tailer) consume(ctx context.Context, f *follower, p []byte) error {
	at := f.readOff
	f.readOff += int64(len(p))
	f.updateFP(p)
	f.lastGrowth = time.Now()
	limit := t.cfg.MaxLineBytes
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			switch {
			case f.skipping:
			case len(f.partial)+len(p) > limit:
				f.skipping, f.partial = true, nil
			default:
				f.partial = append(f.partial, p...)
			}
			break
		}
		end := at + int64(i) + 1
		switch {
		case f.skipping:
			f.skipping = false
			t.addLine(f, nil, true, end)
		case len(f.partial) > 0:
			if len(f.partial)+i > limit {
				t.addLine(f, nil, true, end)
			} else {
				f.partial = append(f.partial, p[:i]...)
				t.addLine(f, f.partial, false, end)
			}
			f.partial = f.partial[:0]
			if cap(f.partial) > 8<<10 {
				f.partial = nil // do not pin a long line's buffer per file
			}
		default:
			t.addLine(f, p[:i], i > limit, end)
		}
		p, at = p[i+1:], end
		if t.batch.lines >= t.cfg.BatchLines {
			if err := t.deliver(ctx, f); err != nil {
				return err
			}
		}
	}
	return t.deliver(ctx, f)
}

// flushTorn consumes f's incomplete last line as a whole line: its writer
// is gone or the file was rotated away.
func (t *Tailer) flushTorn(ctx context.Context, f *follower) error {
	switch {
	case f.skipping:
		f.skipping = false
		t.addLine(f, nil, true, f.readOff)
	case len(f.partial) > 0:
		t.addLine(f, f.partial, false, f.readOff)
		f.partial = nil
	default:
		return nil
	}
	t.count(func(s *Stats) { s.TornLines++ })
	return t.deliver(ctx, f)
}

// addLine adds the line ending at offset end to the batch: decoded, or
// counted as malformed.
func (t *Tailer) addLine(f *follower, line []byte, tooLong bool, end int64) {
	start := f.offset
	if t.batch.lines > 0 {
		start = t.batch.end
	}
	t.batch.lines++
	t.batch.end = end
	if tooLong {
		t.malformed(f, ReasonTooLong, start, fmt.Errorf("line of %d bytes exceeds max_line_bytes %d", end-start, t.cfg.MaxLineBytes))
		return
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	n0 := len(t.batch.events)
	evs, err := t.decode(line, t.batch.events)
	if err != nil {
		t.batch.events = t.batch.events[:n0]
		t.malformed(f, reasonOf(err), start, err)
		return
	}
	t.batch.events = evs
}

// reasonOf names a decoder error for Stats.Malformed.
func reasonOf(err error) string {
	var ee *event.Error
	if errors.As(err, &ee) && ee.Code != "" {
		return ee.Code
	}
	var r interface{ Reason() string }
	if errors.As(err, &r) && r.Reason() != "" {
		return r.Reason()
	}
	return "invalid"
}

// malformed counts a skipped line and logs a sample at most every
// sampleEvery. The sample gives the line's place and reason code, not its
// bytes nor the error's text (which may quote them): access log lines
// carry client IPs, query strings and user agents, which must not leave
// the agent (ARCHITECTURE invariant 7), and logs are often shipped.
func (t *Tailer) malformed(f *follower, reason string, start int64, _ error) {
	t.count(func(s *Stats) {
		if _, ok := s.Malformed[reason]; !ok && len(s.Malformed) >= maxReasons {
			reason = "other"
		}
		s.Malformed[reason]++
	})
	t.unsampled++
	now := time.Now()
	if !t.lastSample.IsZero() && now.Sub(t.lastSample) < sampleEvery {
		return
	}
	t.log.Warn("malformed log line skipped (one sample per 10s)",
		"path", f.path, "file", f.name, "offset", start, "reason", reason, "malformed_since_last_sample", t.unsampled)
	t.lastSample, t.unsampled = now, 0
}

// deliver hands the batch to the sink (waiting while it is busy) and moves
// f's offset past it.
func (t *Tailer) deliver(ctx context.Context, f *follower) error {
	b := &t.batch
	if b.lines == 0 {
		return nil
	}
	pos := source.Position{Source: f.source, File: f.idStr, Offset: b.end}
	if err := t.accept(ctx, b.events, pos); err != nil {
		return err
	}
	lines, n, events := b.lines, b.end-f.offset, len(b.events)
	f.offset, f.announced = b.end, pos
	clear(b.events) // drop the strings they hold
	b.events, b.lines = b.events[:0], 0
	t.count(func(s *Stats) {
		s.Lines += uint64(lines)
		s.Bytes += uint64(n)
		s.Events += uint64(events)
		s.Batches++
	})
	return nil
}

// Package tail follows web server access logs (nginx, Apache) and hands
// their lines, decoded into events, to the collector together with the
// position they were read up to, so that a line is neither lost nor counted
// twice across rotations, crashes and restarts.
//
// The exactness argument, in order:
//
//  1. A file is identified by device and inode, never by name. A source
//     ("tail:" + path) reads one file at a time: a file rotated away is read
//     to its end (through the descriptor already open) before the file now
//     at the path is started, so a source's positions only move forward.
//  2. Only whole lines are consumed. Every AcceptAt carries the events of a
//     run of lines and the offset just after the last of them, and the
//     collector journals both in one record. The offset moves only when
//     AcceptAt succeeds.
//  3. On start each source resumes from the collector's Positions(): the
//     last position journaled, so the lines after it are exactly the ones
//     whose events are not in the journal.
//  4. A busy collector (source.BusyError) is offered the same batch again
//     until it takes it; tailing pauses meanwhile. Any other AcceptAt error
//     stops Run: retrying in-process could journal a record twice, while a
//     restart resumes from what the journal holds.
//
// README.md states what is and is not recoverable.
package tail

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
)

// SourcePrefix starts the Position.Source of every tailed file; the rest
// is the path as matched.
const SourcePrefix = "tail:"

// ReasonTooLong is the malformed reason of lines longer than MaxLineBytes.
const ReasonTooLong = "too_long"

// Rotation kinds counted in Stats.Rotations.
const (
	// RotationRename: the path now names another file (rename-and-create).
	RotationRename = "rename"
	// RotationRemove: the path no longer exists.
	RotationRemove = "remove"
	// RotationTruncate: the file shrank or its bytes before the read
	// position changed (copytruncate).
	RotationTruncate = "truncate"
	// RotationRenameStopped: at start, the path names another file than
	// the saved position.
	RotationRenameStopped = "rename_while_stopped"
	// RotationTruncateStopped: at start, the file is shorter than the saved
	// position.
	RotationTruncateStopped = "truncate_while_stopped"
)

const (
	// fpLen is how many bytes before the read position are compared on
	// every read to notice a file truncated and rewritten in place.
	fpLen = 32
	// turnChunks bounds the reads from one file before the next file gets
	// its turn.
	turnChunks = 16
	// sampleEvery is the least time between two logged malformed lines.
	sampleEvery = 10 * time.Second
	// maxReasons bounds the distinct malformed reasons kept in Stats;
	// further ones are counted as "other".
	maxReasons = 64
	// Busy backoff: from minBusyWait, doubling, up to the error's
	// RetryAfter (defaultBusyWait when it has none).
	minBusyWait     = 50 * time.Millisecond
	defaultBusyWait = time.Second
)

// Decoder turns one log line (without its newline and a trailing '\r')
// into events appended to dst, and returns the extended slice. A line may
// yield no event (a health check, a static asset). An error means the line
// is malformed: it is skipped and counted by reason, which is the Code of
// an *event.Error, or the result of a Reason() string method, or
// "invalid". line is only valid during the call; events must not refer to
// it. Decoders are called from Run's goroutine only.
type Decoder func(line []byte, dst []event.Event) ([]event.Event, error)

// Sink takes decoded events with the position they were read up to (the
// contract of source.PositionSink; *collector.Collector implements it).
// The Tailer calls it from Run's goroutine only.
type Sink = source.PositionSink

// Stats is a snapshot of a Tailer's counters since New. The integrator
// exports them (tally_agent_tail_…).
type Stats struct {
	// Lines counts lines consumed: decoded, malformed and torn alike.
	Lines uint64
	// Malformed counts lines skipped, by reason (ReasonTooLong or the
	// decoder's).
	Malformed map[string]uint64
	// Bytes counts the bytes of consumed lines.
	Bytes uint64
	// Events counts events accepted by the sink.
	Events uint64
	// Batches counts successful AcceptAt calls with at least one line.
	Batches uint64
	// TornLines counts fragments without a newline consumed as lines
	// because their file went idle (IdleFlush) or was rotated away.
	TornLines uint64
	// Files is the number of paths followed; FilesOpen the descriptors
	// open (a path whose old file is still being read has two).
	Files, FilesOpen int
	// Rotations counts rotations by kind (Rotation… constants).
	Rotations map[string]uint64
	// Unrecovered counts rotations after which unread lines may be lost: a
	// file rotated while the agent was stopped that could not be found
	// again, or a truncation whose copy could not be found.
	Unrecovered uint64
	// BusyWaits counts AcceptAt calls refused as busy; BusyTime is the time
	// spent waiting to retry them. Tailing pauses while the sink is busy.
	BusyWaits uint64
	BusyTime  time.Duration
	// FileErrors counts failed attempts to open or read a file. They are
	// retried every PollInterval; each distinct error is logged once per
	// path.
	FileErrors uint64
}

// Tailer follows the files matched by Config.Paths. Create it with New and
// call Run once; Stats is safe for concurrent use. A Tailer starts no
// goroutines of its own: everything runs in the goroutine that calls Run.
//
// Only one Tailer may follow a given path: sources are named by path, and
// two readers of one source would count its lines twice.
type Tailer struct {
	cfg    Config
	sink   Sink
	decode Decoder
	log    *slog.Logger

	ran atomic.Bool

	// Owned by Run's goroutine.
	files      map[string]*follower // by path
	order      []string             // keys of files, sorted
	done       map[string]source.Position
	rbuf       []byte
	batch      batch
	warned     map[string]string // path → last error logged for it
	lastSample time.Time
	unsampled  uint64 // malformed lines since the last sample logged

	mu    sync.Mutex
	stats Stats
}

// batch is the run of lines being read from one file, not yet accepted.
type batch struct {
	lines  int
	end    int64 // offset just after the last line
	events []event.Event
}

// New returns a Tailer over cfg (zero fields take their defaults) that
// hands lines decoded by decode to sink. logger may be nil.
func New(cfg Config, sink Sink, decode Decoder, logger *slog.Logger) (*Tailer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tail config: %w", err)
	}
	if sink == nil || decode == nil {
		return nil, errors.New("tail: sink and decoder are required")
	}
	if fi, err := os.Stat(os.TempDir()); err == nil {
		if _, ok := identityOf(fi); !ok {
			return nil, errors.New("tail: files cannot be identified by device and inode on this platform")
		}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Tailer{
		cfg: cfg, sink: sink, decode: decode, log: logger.With("component", "tail"),
		files:  map[string]*follower{},
		done:   map[string]source.Position{},
		warned: map[string]string{},
		rbuf:   make([]byte, fpLen+cfg.BatchBytes),
	}
	t.stats.Malformed = map[string]uint64{}
	t.stats.Rotations = map[string]uint64{}
	return t, nil
}

// Run follows the files until ctx is done, then closes them and returns
// nil. Lines read but not yet accepted are read again after a restart. Run
// returns an error only when the sink fails with something other than
// *source.BusyError; the agent should then stop and be restarted, which
// resumes exactly from the journaled positions. Run may be called once.
func (t *Tailer) Run(ctx context.Context) error {
	if !t.ran.CompareAndSwap(false, true) {
		return errors.New("tail: Run called twice")
	}
	defer t.closeAll()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var nextScan time.Time
	for ctx.Err() == nil {
		if now := time.Now(); !now.Before(nextScan) {
			if err := t.scan(ctx); err != nil {
				return t.stopped(ctx, err)
			}
			nextScan = now.Add(t.cfg.PollInterval)
		}
		progressed := false
		for _, path := range t.order {
			f, ok := t.files[path]
			if !ok {
				continue // dropped during this round
			}
			p, err := t.step(ctx, f)
			if err != nil {
				return t.stopped(ctx, err)
			}
			progressed = progressed || p
		}
		if progressed {
			continue
		}
		timer.Reset(time.Until(nextScan))
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
	}
	return nil
}

// stopped maps an error that ended Run: one caused by ctx is a clean stop.
func (t *Tailer) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Stats returns a snapshot of the counters.
func (t *Tailer) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Malformed = maps.Clone(t.stats.Malformed)
	s.Rotations = maps.Clone(t.stats.Rotations)
	return s
}

func (t *Tailer) count(fn func(s *Stats)) {
	t.mu.Lock()
	fn(&t.stats)
	t.mu.Unlock()
}

func (t *Tailer) rotation(kind string) {
	t.count(func(s *Stats) { s.Rotations[kind]++ })
}

// scan expands the patterns and starts following new matches.
func (t *Tailer) scan(ctx context.Context) error {
	matches := t.glob()
	known := make(map[string]bool, len(matches)+len(t.files))
	for _, m := range matches {
		known[m] = true
	}
	for p := range t.files {
		known[p] = true
	}
	for p := range t.warned {
		if !known[p] {
			delete(t.warned, p) // gone: a new error there is news again
		}
	}
	var positions map[string]source.Position
	changed := false
	for _, m := range matches {
		if _, ok := t.files[m]; ok {
			continue
		}
		if base, ok := t.rotatedNameOf(m, known); ok {
			t.once(slog.LevelInfo, m, fmt.Errorf("not followed: a rotated name of %s, read only as its previous file", base))
			continue
		}
		fi, err := os.Stat(m)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // gone since the glob
		case err != nil:
			t.fileError(m, err)
			continue
		case !fi.Mode().IsRegular():
			// Never open a FIFO or a device: the open could block Run.
			t.once(slog.LevelWarn, m, errors.New("not followed: not a regular file"))
			continue
		}
		if positions == nil {
			positions = t.sink.Positions()
		}
		f := &follower{path: m, source: SourcePrefix + m}
		pos, have := positions[f.source]
		complete := have && t.done[f.source] == pos
		t.files[m] = f
		changed = true
		ok, err := t.start(ctx, f, pos, have, complete)
		if !ok {
			delete(t.files, m)
		} else {
			delete(t.done, f.source)
		}
		if err != nil {
			t.reorder()
			return err
		}
	}
	if changed {
		t.reorder()
	}
	return nil
}

// glob returns the sorted, distinct matches of every pattern.
func (t *Tailer) glob() []string {
	var out []string
	for _, p := range t.cfg.Paths {
		ms, _ := filepath.Glob(p) // patterns were validated
		for _, m := range ms {
			out = append(out, filepath.Clean(m))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// rotatedNameOf reports whether m is base + one of the rotated suffixes for
// a base among known.
func (t *Tailer) rotatedNameOf(m string, known map[string]bool) (string, bool) {
	if len(t.cfg.RotatedSuffixes) == 0 {
		return "", false
	}
	for i := len(m) - 1; i > 0 && m[i] != filepath.Separator; i-- {
		if !known[m[:i]] {
			continue
		}
		for _, s := range t.cfg.RotatedSuffixes {
			if ok, _ := filepath.Match(s, m[i:]); ok {
				return m[:i], true
			}
		}
	}
	return "", false
}

// rotatedNames returns the existing files named path + a rotated suffix,
// sorted (so "access.log.1" comes before "access.log.2.gz").
func (t *Tailer) rotatedNames(path string) []string {
	var out []string
	esc := globEscape(path)
	for _, s := range t.cfg.RotatedSuffixes {
		ms, _ := filepath.Glob(esc + s)
		out = append(out, ms...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// globEscape quotes the pattern characters of a literal path.
func globEscape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (t *Tailer) reorder() {
	t.order = slices.Sorted(maps.Keys(t.files))
	n := len(t.files)
	t.count(func(s *Stats) { s.Files = n })
}

// accept hands events and pos to the sink, waiting out busy refusals. It
// returns an error only when ctx is done or the sink failed otherwise.
func (t *Tailer) accept(ctx context.Context, events []event.Event, pos source.Position) error {
	var wait time.Duration
	for {
		err := t.sink.AcceptAt(events, pos)
		if err == nil {
			return nil
		}
		var busy *source.BusyError
		if !errors.As(err, &busy) {
			return fmt.Errorf("tail: accept %d events of %s up to offset %d: %w", len(events), pos.Source, pos.Offset, err)
		}
		ceiling := busy.RetryAfter
		if ceiling <= 0 {
			ceiling = defaultBusyWait
		}
		wait = min(max(2*wait, minBusyWait), ceiling)
		t.count(func(s *Stats) { s.BusyWaits++; s.BusyTime += wait })
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// warnOnce logs err for path unless it is the error last logged for it.
func (t *Tailer) warnOnce(path string, err error) { t.once(slog.LevelWarn, path, err) }

func (t *Tailer) once(level slog.Level, path string, err error) {
	msg := err.Error()
	if t.warned[path] == msg {
		return
	}
	t.warned[path] = msg
	t.log.Log(context.Background(), level, msg, "path", path)
}

// fileError counts and logs (once) a file that cannot be opened or read.
func (t *Tailer) fileError(path string, err error) {
	t.count(func(s *Stats) { s.FileErrors++ })
	t.warnOnce(path, err)
}

func (t *Tailer) closeAll() {
	for _, f := range t.files {
		t.closeFile(f)
	}
	clear(t.files)
	t.reorder()
}

// fileID is a file's identity: device and inode.
type fileID struct{ dev, ino uint64 }

// String is the form kept in source.Position.File: "dev:ino".
func (id fileID) String() string {
	return strconv.FormatUint(id.dev, 10) + ":" + strconv.FormatUint(id.ino, 10)
}

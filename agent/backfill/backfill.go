// Package backfill imports historical access logs through the agent's
// pipeline (tally-agent import-log): parse, normalise, bot filter, minute
// rollup by event time, then ship like live data and wait until the
// aggregator has acknowledged everything.
//
// It keeps its own state under <state_dir>/import: its own spool and
// epoch, and a collector without a journal, since a file can be read
// again. File positions are committed with every flush, so an interrupted
// import resumes where its last flush ended, and importing a file that
// was fully imported again counts nothing twice.
package backfill

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/agent/pipeline"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/agent/source"
)

// ImportOptions configure a log backfill.
type ImportOptions struct {
	// Files are plain or gzip access logs (gzip is recognised by content).
	Files []string
	// Parse says how lines look and which become events.
	Parse logparse.Spec
	// MaxAge rejects events older than this. Default 10 years: a backfill
	// is about old data.
	MaxAge time.Duration
	// Progress receives a progress display (nil: none). Interactive makes
	// it a single redrawn line, for a terminal; otherwise a line every 5 s.
	Progress    io.Writer
	Interactive bool
	// BatchLines is the number of lines handed to the pipeline at once.
	// Default 8192.
	BatchLines int
}

// ImportSummary is what a backfill did.
type ImportSummary struct {
	Files           int
	AlreadyImported []string
	Lines           uint64
	Bytes           uint64
	Events          uint64
	Bots            uint64
	// Skipped counts well-formed lines that are not events, by reason.
	Skipped map[string]uint64
	// Rejected counts malformed lines and invalid events, by reason, with
	// where the first of each was in Samples ("access.log line 12"): the
	// place, never the line, which holds client addresses.
	Rejected map[string]uint64
	Samples  map[string]string
	// Elapsed is the reading time; Shipping the time spent afterwards
	// waiting for the aggregator to acknowledge everything.
	Elapsed, Shipping time.Duration
}

// LinesPerSecond is the reading throughput.
func (s *ImportSummary) LinesPerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Lines) / s.Elapsed.Seconds()
}

// defaultImportMemoryLimit is the soft heap limit of a backfill when the
// configuration sets none: a backfill's live data is the last minutes of
// log, and without a limit the heap grows to twice that before the
// collector runs.
const defaultImportMemoryLimit = 160 << 20

// importEpochBit marks the contribution ids of backfills, which run as the
// same agent (same name, same certificate) as the live process but keep
// their own state directory and epoch counter: the high bit keeps their
// CIDs apart from the live agent's.
const importEpochBit = 1 << 31

// Import reads historical logs through the agent's pipeline — parse,
// normalise, bot filter, minute rollup — and ships them like live data,
// then waits until the aggregator has acknowledged everything. Batches not
// yet acknowledged when it stops stay in its spool and are shipped by the
// next import-log run.
func Import(ctx context.Context, cfg config.Config, opts ImportOptions, logger *slog.Logger) (ImportSummary, error) {
	sum := ImportSummary{Skipped: map[string]uint64{}, Rejected: map[string]uint64{}, Samples: map[string]string{}}
	if len(opts.Files) == 0 {
		return sum, errors.New("import-log: no files given")
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 10 * 365 * 24 * time.Hour
	}
	if opts.BatchLines <= 0 {
		opts.BatchLines = 8192
	}
	logger = logger.With("agent", cfg.Name, "component", "import")
	limit := int64(cfg.MemoryLimit)
	if limit == 0 {
		limit = defaultImportMemoryLimit
	}
	SetMemoryLimit(limit, logger)
	dir := filepath.Join(cfg.StateDir, "import")
	p, err := pipeline.New(cfg, pipeline.Options{Dir: dir, SpoolName: "import", EpochBit: importEpochBit, NoJournal: true,
		Bulk: true, FlushInterval: 2 * time.Second, MaxAge: opts.MaxAge, MaxSkew: 5 * time.Minute,
		// Logs arrive (nearly) in time order: a minute the log has moved
		// a minute past is done. Closing minutes by log time, with a
		// flush every flushLines lines, bounds memory by the series of
		// the last minutes of log, not by the size of the backfill. A
		// line for a closed minute still counts (a new contribution).
		Rollup: func(r *rollup.Config) { r.Lateness, r.ByEventTime = time.Minute, true }},
		prometheus.NewRegistry(), logger)
	if err != nil {
		return sum, err
	}
	defer p.Close()
	dec, err := pipeline.NewLineDecoder(opts.Parse, p.Env)
	if err != nil {
		return sum, err
	}
	p.Start()

	r := &reader{ctx: ctx, opts: opts, dec: dec, sink: p.Collector, flush: p.Collector.Flush, sum: &sum, positions: p.Collector.Positions()}
	var total int64
	for _, f := range opts.Files {
		if st, err := os.Stat(f); err == nil {
			total += st.Size()
		}
	}
	prog := newProgress(opts.Progress, opts.Interactive, total)
	defer prog.halt()
	r.progress = prog
	start := time.Now()
	var readErr error
	for _, f := range opts.Files {
		if err := r.file(f); err != nil {
			readErr = err
			break
		}
		sum.Files++
	}
	sum.Elapsed = time.Since(start)
	prog.done(&sum)

	// Final flush, then wait for the aggregator to acknowledge it all.
	if err := p.Flush(); err != nil {
		return sum, err
	}
	if readErr != nil {
		return sum, readErr
	}
	shipStart := time.Now()
	for {
		st := p.Spool.Stats()
		if st.PendingBatches == 0 {
			break
		}
		prog.shipping(st.PendingBatches, p.Shipper.Connected())
		select {
		case <-ctx.Done():
			return sum, fmt.Errorf("stopped with %d batches not yet acknowledged; they stay in %s and the next import-log run ships them", st.PendingBatches, dir)
		case err := <-p.ShipperStopped():
			return sum, err
		case <-time.After(200 * time.Millisecond):
		}
	}
	sum.Shipping = time.Since(shipStart)
	return sum, nil
}

// SetMemoryLimit applies a soft heap limit unless GOMEMLIMIT is set.
func SetMemoryLimit(limit int64, logger *slog.Logger) {
	if limit <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(limit)
	logger.Info("soft memory limit set", "bytes", limit)
}

type reader struct {
	ctx       context.Context
	opts      ImportOptions
	dec       *pipeline.LineDecoder
	sink      source.PositionSink
	flush     func() error
	sum       *ImportSummary
	positions map[string]source.Position
	progress  *progress

	events     []event.Event
	now        time.Time // read once per batch
	sinceFlush int
	name       string // the file being read, for samples
	lineNo     uint64 // its line number
}

// flushLines is how many lines a backfill reads between flushes.
const flushLines = 250_000

// countingReader counts the bytes read from the file itself, so progress
// is right for compressed files too.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (r *reader) file(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	f, err := os.Open(abs)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	id, err := source.FileID(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	src := "import:" + abs
	var skip int64
	if p, ok := r.positions[src]; ok && p.File == id {
		skip = p.Offset
	}
	var raw io.Reader = countingReader{r: f, n: &r.progress.read}
	br := bufio.NewReaderSize(raw, 1<<20)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		defer gz.Close()
		br = bufio.NewReaderSize(gz, 1<<20)
	}
	// Offsets count bytes of the (decompressed) log, so resuming a gzip
	// file reads and discards what was already imported.
	if skip > 0 {
		n, err := io.CopyN(io.Discard, br, skip)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: skipping %d imported bytes: %w", path, skip, err)
		}
		if _, err := br.Peek(1); errors.Is(err, io.EOF) && n == skip {
			r.sum.AlreadyImported = append(r.sum.AlreadyImported, path)
			return nil
		}
	}
	offset := skip
	lines := 0
	r.name, r.lineNo = filepath.Base(path), 0
	r.events = r.events[:0]
	r.now = time.Now()
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: count it and skip to its end.
			n := int64(len(line))
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				n += int64(len(line))
			}
			offset += n
			r.sum.Lines++
			r.lineNo++
			r.reject("too_long")
			line = nil
		}
		if len(line) > 0 {
			offset += int64(len(line))
			r.sum.Bytes += uint64(len(line))
			r.sum.Lines++
			r.lineNo++
			lines++
			r.line(bytes.TrimRight(line, "\r\n"))
		}
		atEOF := errors.Is(err, io.EOF)
		if err != nil && !atEOF {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if lines >= r.opts.BatchLines || (atEOF && (lines > 0 || offset > skip)) {
			if err := r.hand(source.Position{Source: src, File: id, Offset: offset}); err != nil {
				return err
			}
			lines = 0
		}
		if atEOF {
			return nil
		}
	}
}

func (r *reader) line(line []byte) {
	if len(line) == 0 {
		r.sum.Skipped["skip_empty"]++
		return
	}
	n := len(r.events)
	var err error
	r.events, err = r.dec.Decode(line, r.events, r.now)
	switch {
	case errors.Is(err, logparse.ErrSkip):
		r.sum.Skipped[logparse.Reason(err)]++
	case err != nil:
		r.reject(pipeline.LineReason(err))
	case r.events[n].Bot != "":
		r.sum.Bots++
	default:
		r.sum.Events++
	}
}

// reject counts a rejected line and keeps where the first of its reason
// was: a place the operator can look up, never the line itself.
func (r *reader) reject(reason string) {
	r.sum.Rejected[reason]++
	if _, ok := r.sum.Samples[reason]; !ok {
		r.sum.Samples[reason] = fmt.Sprintf("%s line %d", r.name, r.lineNo)
	}
}

// hand gives the batch to the pipeline, waiting out backpressure: a
// backfill pauses, it never skips.
func (r *reader) hand(pos source.Position) error {
	for {
		err := r.sink.AcceptAt(r.events, pos)
		var busy *source.BusyError
		if !errors.As(err, &busy) {
			r.sinceFlush += len(r.events)
			r.events = r.events[:0]
			r.now = time.Now()
			r.progress.lines.Store(int64(r.sum.Lines))
			if err == nil && r.sinceFlush >= flushLines && r.flush != nil {
				r.sinceFlush = 0
				err = r.flush()
			}
			return err
		}
		wait := max(100*time.Millisecond, min(busy.RetryAfter, 2*time.Second))
		select {
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-time.After(wait):
		}
	}
}

// FormatSummary renders a summary for people.
func FormatSummary(s *ImportSummary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "imported %d file(s): %d lines (%.1f MB) in %s, %.0f lines/s\n",
		s.Files, s.Lines, float64(s.Bytes)/1e6, s.Elapsed.Round(time.Millisecond), s.LinesPerSecond())
	fmt.Fprintf(&b, "  events:   %d\n  bots:     %d (filtered, counted)\n", s.Events, s.Bots)
	list := func(title string, m map[string]uint64, samples map[string]string) {
		var total uint64
		keys := make([]string, 0, len(m))
		for k, n := range m {
			keys = append(keys, k)
			total += n
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "  %s %d\n", title, total)
		for _, k := range keys {
			fmt.Fprintf(&b, "    %-14s %d\n", k, m[k])
			if samples != nil && samples[k] != "" {
				fmt.Fprintf(&b, "      first at %s\n", samples[k])
			}
		}
	}
	list("skipped: ", s.Skipped, nil)
	list("rejected:", s.Rejected, s.Samples)
	for _, f := range s.AlreadyImported {
		fmt.Fprintf(&b, "  already imported, nothing to do: %s\n", f)
	}
	if s.Shipping > 0 {
		fmt.Fprintf(&b, "  acknowledged by the aggregator after %s more\n", s.Shipping.Round(time.Millisecond))
	}
	return b.String()
}

// progress draws a progress bar on a terminal, or logs a line every 5 s.
type progress struct {
	w           io.Writer
	interactive bool
	total       int64
	start       time.Time

	read  atomic.Int64
	lines atomic.Int64

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// halt stops the ticker goroutine and waits for it; safe to call twice.
func (p *progress) halt() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.wg.Wait()
}

func newProgress(w io.Writer, interactive bool, total int64) *progress {
	p := &progress{w: w, interactive: interactive, total: total, start: time.Now(), stop: make(chan struct{})}
	if w == nil {
		return p
	}
	every := 5 * time.Second
	if interactive {
		every = 200 * time.Millisecond
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.draw()
			}
		}
	})
	return p
}

func (p *progress) draw() {
	read, lines := p.read.Load(), p.lines.Load()
	elapsed := time.Since(p.start).Seconds()
	frac := 0.0
	if p.total > 0 {
		frac = min(1, float64(read)/float64(p.total))
	}
	rate := float64(lines) / max(elapsed, 0.001)
	if p.interactive {
		const width = 30
		bar := strings.Repeat("=", int(frac*width)) + strings.Repeat(" ", width-int(frac*width))
		fmt.Fprintf(p.w, "\r[%s] %5.1f%%  %d lines  %.0f lines/s ", bar, 100*frac, lines, rate)
		return
	}
	fmt.Fprintf(p.w, "import: %.1f%% of %.1f MB, %d lines, %.0f lines/s\n", 100*frac, float64(p.total)/1e6, lines, rate)
}

func (p *progress) done(s *ImportSummary) {
	if p.w == nil {
		return
	}
	p.halt()
	p.lines.Store(int64(s.Lines))
	p.draw()
	if p.interactive {
		fmt.Fprintln(p.w)
	}
}

func (p *progress) shipping(pending int, connected bool) {
	if p.w == nil || !p.interactive {
		return
	}
	state := "connected"
	if !connected {
		state = "waiting for the aggregator"
	}
	fmt.Fprintf(p.w, "\rshipping: %d batches to acknowledge (%s)   ", pending, state)
}

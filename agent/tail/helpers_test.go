package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/sketch"
)

// Run owns no goroutines, but the tests start it in one and the real
// collector's spool runs a checkpoint goroutine: every test must stop what
// it starts.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var discard = slog.New(slog.DiscardHandler)

// line is the log line carrying sequence number seq: the number, then
// padding of varying length so lines straddle reads at many places.
func line(seq int) string {
	return fmt.Sprintf("%d GET /p/%d HTTP/1.1 200 %s\n", seq, seq%97, "abcdefghijklmnopqrstuvwxyz"[:seq%27])
}

func lines(from, to int) string {
	var b bytes.Buffer
	for i := from; i < to; i++ {
		b.WriteString(line(i))
	}
	return b.String()
}

// seqDecoder emits one event per line, carrying the line's sequence number
// in Visitor (offset by one: 0 means no visitor).
func seqDecoder(l []byte, dst []event.Event) ([]event.Event, error) {
	i := bytes.IndexByte(l, ' ')
	if i < 0 {
		i = len(l)
	}
	n, err := strconv.ParseUint(string(l[:i]), 10, 32)
	if err != nil {
		return dst, &event.Error{Code: "bad_seq", Reason: "no sequence number"}
	}
	return append(dst, event.Event{
		Series:     sketch.Series{Campaign: "c", Type: "pageview", Region: "eu"},
		UnixMillis: time.Now().UnixMilli(),
		Visitor:    n + 1,
	}), nil
}

type acceptCall struct {
	pos     source.Position
	seqs    []int
	at      time.Time
	refused bool
}

// fakeSink records every AcceptAt. It refuses the first busy calls with
// a BusyError, and every call with fail when set.
type fakeSink struct {
	mu         sync.Mutex
	positions  map[string]source.Position
	calls      []acceptCall
	got        map[string][]int // source → sequence numbers accepted, in order
	busy       int
	retryAfter time.Duration
	fail       error
	violations []string
}

func newFakeSink() *fakeSink {
	return &fakeSink{positions: map[string]source.Position{}, got: map[string][]int{}}
}

func (s *fakeSink) AcceptAt(evs []event.Event, pos source.Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := acceptCall{pos: pos, at: time.Now()}
	for _, e := range evs {
		c.seqs = append(c.seqs, int(e.Visitor-1))
	}
	switch {
	case s.fail != nil:
		return s.fail
	case s.busy > 0:
		s.busy--
		c.refused = true
		s.calls = append(s.calls, c)
		return &source.BusyError{Reason: "test", RetryAfter: s.retryAfter}
	}
	s.calls = append(s.calls, c)
	// A source's position moves forward within a file, or back to 0 when the
	// file was truncated.
	if prev, ok := s.positions[pos.Source]; ok && prev.File == pos.File && pos.Offset < prev.Offset && pos.Offset != 0 {
		s.violations = append(s.violations, fmt.Sprintf("%s: offset %d after %d in file %s", pos.Source, pos.Offset, prev.Offset, pos.File))
	}
	s.positions[pos.Source] = pos
	s.got[pos.Source] = append(s.got[pos.Source], c.seqs...)
	return nil
}

func (s *fakeSink) Positions() map[string]source.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]source.Position, len(s.positions))
	for k, v := range s.positions {
		out[k] = v
	}
	return out
}

func (s *fakeSink) position(source string) source.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.positions[source]
}

// all returns every sequence number accepted, over all sources.
func (s *fakeSink) all() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, g := range s.got {
		out = append(out, g...)
	}
	return out
}

func (s *fakeSink) count() int { return len(s.all()) }

// sawFile reports whether a position in file id was accepted after the
// call numbered from.
func (s *fakeSink) sawFile(id string, from int, minOffset int64) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := from; i < len(s.calls); i++ {
		if c := s.calls[i]; !c.refused && c.pos.File == id && c.pos.Offset >= minOffset {
			return i, true
		}
	}
	return 0, false
}

func (s *fakeSink) ncalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *fakeSink) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) > 0 {
		t.Fatalf("positions moved backwards: %v", s.violations)
	}
}

// exactlyOnce fails unless got holds each of want exactly once.
func exactlyOnce(t *testing.T, got []int, want []int) {
	t.Helper()
	seen := map[int]int{}
	for _, g := range got {
		seen[g]++
	}
	var missing, dup []int
	for _, w := range want {
		switch seen[w] {
		case 0:
			missing = append(missing, w)
		case 1:
		default:
			dup = append(dup, w)
		}
		delete(seen, w)
	}
	var extra []int
	for g := range seen {
		extra = append(extra, g)
	}
	slices.Sort(extra)
	if len(missing)+len(dup)+len(extra) > 0 {
		t.Fatalf("got %d lines for %d expected: missing %s, duplicated %s, unexpected %s",
			len(got), len(want), head(missing), head(dup), head(extra))
	}
}

func head(s []int) string {
	if len(s) > 10 {
		return fmt.Sprintf("%v… (%d)", s[:10], len(s))
	}
	return fmt.Sprint(s)
}

func seqRange(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// start runs a Tailer in a goroutine; the returned stop cancels it, waits
// for Run to return and fails the test on a Run error.
func start(t *testing.T, cfg Config, sink Sink, logger *slog.Logger) (*Tailer, func()) {
	t.Helper()
	if logger == nil {
		logger = discard
	}
	tl, err := New(cfg, sink, seqDecoder, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx) }()
	stopped := false
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if st := tl.Stats(); st.FilesOpen != 0 {
			t.Fatalf("%d files still open after Run returned", st.FilesOpen)
		}
	}
	t.Cleanup(stop)
	return tl, stop
}

// waitFor polls cond until it holds, failing after a generous deadline.
// It waits for the tailer to catch up with real files; timer logic is
// tested in synctest bubbles instead.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// fileIdentity is what Position.File holds for path.
func fileIdentity(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := identityOf(fi)
	if !ok {
		t.Fatalf("no identity for %s", path)
	}
	return id.String()
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// testConfig is a fast-polling config over paths.
func testConfig(paths ...string) Config {
	return Config{Paths: paths, PollInterval: 5 * time.Millisecond, RotateWait: 20 * time.Millisecond}
}

var errDisk = errors.New("disk on fire")

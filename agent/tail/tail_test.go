package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"defaults with a path", Config{Paths: []string{"/var/log/nginx/*.access.log"}}, ""},
		{"no paths", Config{}, "at least one"},
		{"relative", Config{Paths: []string{"logs/*.log"}}, "not absolute"},
		{"directory", Config{Paths: []string{"/var/log/nginx/"}}, "directory"},
		{"bad pattern", Config{Paths: []string{"/var/log/[.log"}}, "syntax error"},
		{"negative poll", Config{Paths: []string{"/a"}, PollInterval: -time.Second}, "poll_interval"},
		{"huge lines", Config{Paths: []string{"/a"}, MaxLineBytes: 1 << 30}, "max_line_bytes"},
		{"tiny reads", Config{Paths: []string{"/a"}, BatchBytes: 10}, "batch_bytes"},
		{"negative batch", Config{Paths: []string{"/a"}, BatchLines: -1}, "batch_lines"},
		{"negative idle", Config{Paths: []string{"/a"}, IdleFlush: -1}, "idle_flush"},
		{"negative wait", Config{Paths: []string{"/a"}, RotateWait: -1}, "rotate_wait"},
		{"suffix with slash", Config{Paths: []string{"/a"}, RotatedSuffixes: []string{"/old"}}, "rotated_suffixes"},
		{"empty suffix", Config{Paths: []string{"/a"}, RotatedSuffixes: []string{""}}, "rotated_suffixes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate = %v, want an error saying %q", err, tc.wantErr)
			}
		})
	}
	// Every problem at once.
	err := Config{Paths: []string{"rel"}, PollInterval: -1, BatchLines: -1}.Validate()
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("Validate should report all three problems, got %v", err)
	}
	if _, err := New(Config{}, newFakeSink(), seqDecoder, nil); err == nil {
		t.Fatalf("New accepted a config without paths")
	}
}

// TestFollow: lines of a file present at start, lines appended while
// running, and a file appearing later under the glob.
func TestFollow(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.access.log"), filepath.Join(dir, "b.access.log")
	appendFile(t, a, lines(0, 100))
	sink := newFakeSink()
	tl, stop := start(t, testConfig(filepath.Join(dir, "*.access.log")), sink, nil)

	waitFor(t, "the existing lines", func() bool { return sink.count() >= 100 })
	appendFile(t, a, lines(100, 150))
	waitFor(t, "the appended lines", func() bool { return sink.count() >= 150 })
	appendFile(t, b, lines(1000, 1010))
	waitFor(t, "the new file's lines", func() bool { return sink.count() >= 160 })
	stop()

	sink.check(t)
	exactlyOnce(t, sink.got[SourcePrefix+a], seqRange(0, 150))
	exactlyOnce(t, sink.got[SourcePrefix+b], seqRange(1000, 1010))
	for _, p := range []string{a, b} {
		want := source.Position{Source: SourcePrefix + p, File: fileIdentity(t, p), Offset: fileSize(t, p)}
		if got := sink.position(SourcePrefix + p); got != want {
			t.Fatalf("position %+v, want %+v", got, want)
		}
	}
	st := tl.Stats()
	size := fileSize(t, a) + fileSize(t, b)
	if st.Lines != 160 || st.Events != 160 || st.Bytes != uint64(size) || st.Files != 0 || len(st.Malformed) != 0 {
		t.Fatalf("stats %+v, want 160 lines and events of %d bytes", st, size)
	}
}

// TestTornLine: a last line without its newline is not consumed until the
// newline arrives, and the position stays before it.
func TestTornLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "a.log")
		appendFile(t, p, "1 complete\n2 torn")
		sink := newFakeSink()
		tl, stop := start(t, Config{Paths: []string{p}, PollInterval: time.Second, IdleFlush: time.Hour}, sink, nil)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := sink.all(); len(got) != 1 || got[0] != 1 {
			t.Fatalf("got %v before the newline, want [1]", got)
		}
		if pos := sink.position(SourcePrefix + p); pos.Offset != int64(len("1 complete\n")) {
			t.Fatalf("position %d, want the end of the complete line", pos.Offset)
		}
		appendFile(t, p, " now whole\n")
		time.Sleep(time.Second)
		synctest.Wait()
		stop()
		exactlyOnce(t, sink.all(), []int{1, 2})
		if st := tl.Stats(); st.TornLines != 0 || st.Lines != 2 {
			t.Fatalf("stats %+v: the line was completed, not flushed torn", st)
		}
	})
}

// TestIdleFlush: a torn line whose file stops growing for IdleFlush is
// consumed as it is; what follows later is a line of its own.
func TestIdleFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "a.log")
		appendFile(t, p, "1 complete\n2 writer died here")
		sink := newFakeSink()
		tl, stop := start(t, Config{Paths: []string{p}, PollInterval: time.Second, IdleFlush: time.Minute}, sink, nil)
		time.Sleep(58 * time.Second)
		synctest.Wait()
		if n := sink.count(); n != 1 {
			t.Fatalf("%d lines after 58s idle, want 1 (IdleFlush is 1m)", n)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		exactlyOnce(t, sink.all(), []int{1, 2})
		if pos := sink.position(SourcePrefix + p); pos.Offset != fileSize(t, p) {
			t.Fatalf("position %d after the idle flush, want the file's end %d", pos.Offset, fileSize(t, p))
		}
		appendFile(t, p, "-tail\n3 next\n")
		time.Sleep(time.Second)
		synctest.Wait()
		stop()
		exactlyOnce(t, sink.all(), []int{1, 2, 3})
		st := tl.Stats()
		if st.TornLines != 1 || st.Lines != 4 || st.Malformed["bad_seq"] != 1 {
			t.Fatalf("stats %+v: want 1 torn line, 4 lines, the orphan rest malformed", st)
		}
	})
}

// TestLongLines: lines over MaxLineBytes are skipped up to their newline
// and counted, whether they arrive in one read or many, and lines up to
// the limit that straddle reads are whole.
func TestLongLines(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.log")
	const maxLine = 1000
	exact := "4 " + strings.Repeat("x", maxLine-2) // exactly the limit
	var content strings.Builder
	content.WriteString("1 ok\n")
	content.WriteString("2 " + strings.Repeat("y", 100<<10) + "\n") // 100 KiB: many reads
	content.WriteString("3 ok\n")
	content.WriteString(exact + "\n")
	content.WriteString("5 " + strings.Repeat("z", maxLine-1) + "\n") // one byte over
	content.WriteString("6 ok\n")
	appendFile(t, p, content.String())

	sink := newFakeSink()
	cfg := testConfig(p)
	cfg.MaxLineBytes, cfg.BatchBytes = maxLine, 512
	var got []string
	var mu sync.Mutex
	tl, err := New(cfg, sink, func(l []byte, dst []event.Event) ([]event.Event, error) {
		mu.Lock()
		got = append(got, string(l))
		mu.Unlock()
		return seqDecoder(l, dst)
	}, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx) }()
	waitFor(t, "all lines", func() bool { return sink.position(SourcePrefix+p).Offset == fileSize(t, p) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, sink.all(), []int{1, 3, 4, 6})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4 || got[2] != exact {
		t.Fatalf("decoder saw %d lines; the one at the limit must be whole", len(got))
	}
	if st := tl.Stats(); st.Malformed[ReasonTooLong] != 2 || st.Lines != 6 {
		t.Fatalf("stats %+v: want 2 too_long of 6 lines", st)
	}
}

// reasoned is a decoder error with its own reason.
type reasoned struct{}

func (reasoned) Error() string  { return "status is not a number" }
func (reasoned) Reason() string { return "bad_status" }

// TestMalformed: decoder errors are counted by reason, and a sample is
// logged at most every 10 s, never per line.
func TestMalformed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "a.log")
		var b strings.Builder
		for i := range 300 {
			switch i % 3 {
			case 0:
				b.WriteString(line(i))
			case 1:
				b.WriteString("garbage\n")
			case 2:
				b.WriteString("status\n")
			}
		}
		appendFile(t, p, b.String())
		var logBuf bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logBuf, nil))
		sink := newFakeSink()
		decode := func(l []byte, dst []event.Event) ([]event.Event, error) {
			switch string(l) {
			case "status":
				return append(dst, event.Event{}), fmt.Errorf("wrapped: %w", reasoned{}) // partial output is discarded
			case "plain":
				return dst, errors.New("no reason")
			}
			return seqDecoder(l, dst)
		}
		tl, err := New(Config{Paths: []string{p}, PollInterval: time.Second, BatchLines: 7}, sink, decode, logger)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- tl.Run(ctx) }()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		appendFile(t, p, "plain\n")
		time.Sleep(20 * time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := sink.count(); n != 100 {
			t.Fatalf("%d events, want 100 (the malformed lines yield none)", n)
		}
		st := tl.Stats()
		if st.Malformed["bad_seq"] != 100 || st.Malformed["bad_status"] != 100 || st.Malformed["invalid"] != 1 || st.Lines != 301 {
			t.Fatalf("malformed %v of %d lines", st.Malformed, st.Lines)
		}
		// 200 malformed lines at once: one sample. The one 5 s later falls
		// in the same 10 s window, so it is not logged either.
		if n := strings.Count(logBuf.String(), "malformed log line"); n != 1 {
			t.Fatalf("%d malformed samples logged, want 1:\n%s", n, logBuf.String())
		}
		if strings.Contains(logBuf.String(), "garbage") {
			t.Fatalf("the sample logged the line's bytes:\n%s", logBuf.String())
		}
	})
}

// TestRotatedNamesNotFollowed: a broad pattern also matching rotated names
// follows only the live file.
func TestRotatedNamesNotFollowed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		live := filepath.Join(dir, "access.log")
		appendFile(t, live, lines(0, 5))
		appendFile(t, live+".1", lines(100, 105))
		appendFile(t, live+"-20240101", lines(200, 205))
		appendFile(t, filepath.Join(dir, "other.log"), lines(300, 303))
		if err := os.Mkdir(filepath.Join(dir, "dir.log"), 0o755); err != nil {
			t.Fatal(err)
		}
		sink := newFakeSink()
		tl, stop := start(t, Config{Paths: []string{filepath.Join(dir, "*.log*")}, PollInterval: time.Second}, sink, nil)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		stop()
		exactlyOnce(t, sink.all(), append(seqRange(0, 5), seqRange(300, 303)...))
		if st := tl.Stats(); st.FileErrors != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestRemovedFile: a deleted file is read to its end (its torn last line
// included) and closed after RotateWait; a file created again at the path
// is a new file, read from its start.
func TestRemovedFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "a.log")
		appendFile(t, p, lines(0, 10)+"10 torn")
		sink := newFakeSink()
		cfg := Config{Paths: []string{p}, PollInterval: time.Second, RotateWait: 5 * time.Second, IdleFlush: time.Hour}
		tl, stop := start(t, cfg, sink, nil)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if st := tl.Stats(); st.FilesOpen != 1 || sink.count() != 10 {
			t.Fatalf("stats %+v, %d lines", st, sink.count())
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if st := tl.Stats(); st.FilesOpen != 1 || st.Rotations[RotationRemove] != 1 {
			t.Fatalf("stats %+v: the removed file must stay open for RotateWait", st)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if st := tl.Stats(); st.FilesOpen != 0 || st.Files != 0 || st.TornLines != 1 {
			t.Fatalf("stats %+v: want the file closed after its torn line", st)
		}
		exactlyOnce(t, sink.all(), seqRange(0, 11))

		appendFile(t, p, lines(20, 25))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		stop()
		exactlyOnce(t, sink.all(), append(seqRange(0, 11), seqRange(20, 25)...))
		if pos := sink.position(SourcePrefix + p); pos.File != fileIdentity(t, p) || pos.Offset != fileSize(t, p) {
			t.Fatalf("position %+v after the new file", pos)
		}
	})
}

// TestBackpressure: a busy sink is offered the same batch again, with
// backoff doubling up to RetryAfter; reading pauses meanwhile and nothing
// is lost or duplicated.
func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "a.log")
		appendFile(t, p, lines(0, 3000))
		sink := newFakeSink()
		sink.busy, sink.retryAfter = 6, 300*time.Millisecond
		// Known from a previous run at offset 0: the first call is a batch
		// of lines, not the announcement of a new file.
		sink.positions[SourcePrefix+p] = source.Position{Source: SourcePrefix + p, File: fileIdentity(t, p)}
		tl, stop := start(t, Config{Paths: []string{p}, PollInterval: time.Second, BatchLines: 1000}, sink, nil)
		time.Sleep(time.Minute)
		synctest.Wait()
		stop()

		exactlyOnce(t, sink.all(), seqRange(0, 3000))
		sink.check(t)
		calls := sink.calls
		if len(calls) < 7 {
			t.Fatalf("%d calls", len(calls))
		}
		first := calls[0]
		if len(first.seqs) != 1000 {
			t.Fatalf("first call offered %d lines, want a batch of 1000", len(first.seqs))
		}
		want := []time.Duration{50, 100, 200, 300, 300, 300} // ms: doubling, capped at RetryAfter
		for i := 1; i <= 6; i++ {
			c := calls[i]
			if c.pos != first.pos || fmt.Sprint(c.seqs) != fmt.Sprint(first.seqs) {
				t.Fatalf("call %d offered %+v, want the refused batch %+v again", i, c.pos, first.pos)
			}
			if gap := c.at.Sub(calls[i-1].at); gap != want[i-1]*time.Millisecond {
				t.Fatalf("retry %d after %v, want %v", i, gap, want[i-1]*time.Millisecond)
			}
			if c.refused != (i < 6) {
				t.Fatalf("call %d refused=%v", i, c.refused)
			}
		}
		st := tl.Stats()
		if st.BusyWaits != 6 || st.BusyTime != 1250*time.Millisecond || st.Lines != 3000 {
			t.Fatalf("stats %+v: want 6 busy waits of 1.25s in all", st)
		}
	})
}

// TestSinkFailureStopsRun: an error other than busy ends Run; the restart
// resumes from the journaled position.
func TestSinkFailureStopsRun(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.log")
	appendFile(t, p, lines(0, 10))
	sink := newFakeSink()
	sink.fail = errDisk
	tl, err := New(testConfig(p), sink, seqDecoder, discard)
	if err != nil {
		t.Fatal(err)
	}
	err = tl.Run(context.Background())
	if !errors.Is(err, errDisk) || !strings.Contains(err.Error(), p) {
		t.Fatalf("Run = %v, want the sink's error naming the source", err)
	}
	if st := tl.Stats(); st.FilesOpen != 0 {
		t.Fatalf("%d files left open", st.FilesOpen)
	}
	if err := tl.Run(context.Background()); err == nil {
		t.Fatalf("second Run accepted")
	}
}

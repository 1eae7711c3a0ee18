package tail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"testing/synctest"
	"time"
)

// writeLine writes line seq to out; every seventh line in two writes, so
// the tailer meets torn lines while the writer runs.
func writeLine(out *os.File, seq int) error {
	l := line(seq)
	if seq%7 == 0 {
		if _, err := out.WriteString(l[:len(l)/2]); err != nil {
			return err
		}
		runtime.Gosched()
		l = l[len(l)/2:]
	}
	_, err := out.WriteString(l)
	return err
}

// await polls cond from the writer goroutine (which cannot call t.Fatal).
func await(what string, cond func() bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

func identityString(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	id, ok := identityOf(fi)
	if !ok {
		return "", errors.New("no identity")
	}
	return id.String(), nil
}

// TestRotateRenameWhileWriting: logrotate's default (rename, create) while
// a writer appends continuously, and keeps writing the renamed file for a
// moment before it reopens the path, as nginx does until its USR1. Every
// line is delivered exactly once.
func TestRotateRenameWhileWriting(t *testing.T) {
	const total, every, late = 20_000, 2500, 50
	dir := t.TempDir()
	p := filepath.Join(dir, "access.log")
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	sink := newFakeSink()
	cfg := testConfig(p)
	cfg.RotateWait, cfg.BatchLines = 100*time.Millisecond, 100
	tl, stop := start(t, cfg, sink, nil)

	rotations := 0
	done := make(chan error, 1)
	go func() {
		defer func() { out.Close() }()
		done <- func() error {
			var newID string
			for seq := 0; seq < total; seq++ {
				if seq > 0 && seq%every == 0 {
					// At most one rotation per RotateWait (README): the
					// previous one must be behind the tailer.
					if newID != "" {
						if err := await("the tailer to reach the new file", func() bool { _, ok := sink.sawFile(newID, 0, 0); return ok }); err != nil {
							return err
						}
					}
					rotations++
					if err := os.Rename(p, fmt.Sprintf("%s.%d", p, rotations)); err != nil {
						return err
					}
					for range late { // still writing the renamed file
						if err := writeLine(out, seq); err != nil {
							return err
						}
						seq++
					}
					next, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o644)
					if err != nil {
						return err
					}
					out.Close()
					out = next
					if newID, err = identityString(p); err != nil {
						return err
					}
				}
				if err := writeLine(out, seq); err != nil {
					return err
				}
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatalf("writer: %v", err)
	}
	waitFor(t, "the tailer to reach the end", func() bool {
		pos := sink.position(SourcePrefix + p)
		return pos.File == fileIdentity(t, p) && pos.Offset == fileSize(t, p)
	})
	stop()
	sink.check(t)
	exactlyOnce(t, sink.all(), seqRange(0, total))
	st := tl.Stats()
	// A look at the path between the rename and the create sees no file: a
	// "remove" that the new file then follows.
	if st.Rotations[RotationRename]+st.Rotations[RotationRemove] != uint64(rotations) || st.Unrecovered != 0 || len(st.Malformed) != 0 || st.TornLines != 0 {
		t.Fatalf("stats %+v, want %d renames (or removes) and nothing else", st, rotations)
	}
}

// TestRotateCopyTruncateWhileWriting: logrotate's copytruncate while a
// writer appends continuously. The writer pauses from the copy to the
// truncation, so no line falls in the window logrotate itself loses (see
// README); then every line is delivered exactly once, although the tailer
// may lag: what it had not read of the file before the truncation is read
// from the copy.
func TestRotateCopyTruncateWhileWriting(t *testing.T) {
	const total, every = 20_000, 2500
	dir := t.TempDir()
	p := filepath.Join(dir, "access.log")
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	origID := fileIdentity(t, p)
	sink := newFakeSink()
	cfg := testConfig(p)
	cfg.BatchLines = 100
	tl, stop := start(t, cfg, sink, nil)

	rotations := 0
	done := make(chan error, 1)
	go func() {
		defer out.Close()
		done <- func() error {
			var copyID string
			rotatedAt := 0
			for seq := 0; seq < total; seq++ {
				if seq > 0 && seq%every == 0 {
					// The tailer has read some of the file since the previous
					// rotation (through the copy and back): a truncation
					// before it has read anything of the file cannot be
					// noticed (README).
					if err := await("the tailer to read the file", func() bool {
						from := rotatedAt // inode numbers of old copies are reused
						if copyID != "" {
							i, ok := sink.sawFile(copyID, from, 0)
							if !ok {
								return false
							}
							from = i + 1
						}
						_, ok := sink.sawFile(origID, from, 1)
						return ok
					}); err != nil {
						return err
					}
					rotations++
					rotatedAt = sink.ncalls()
					// logrotate: older copies move up, the file is copied to
					// .1, then truncated. The writer is paused throughout.
					if err := os.Rename(p+".1", p+".2"); err != nil && !errors.Is(err, os.ErrNotExist) {
						return err
					}
					data, err := os.ReadFile(p)
					if err != nil {
						return err
					}
					if err := os.WriteFile(p+".1", data, 0o644); err != nil {
						return err
					}
					if err := os.Truncate(p, 0); err != nil {
						return err
					}
					if copyID, err = identityString(p + ".1"); err != nil {
						return err
					}
				}
				if err := writeLine(out, seq); err != nil {
					return err
				}
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		sink.mu.Lock()
		calls := sink.calls[max(0, len(sink.calls)-8):]
		sink.mu.Unlock()
		t.Fatalf("writer: %v; stats %+v; origID %s; last calls %+v", err, tl.Stats(), origID, calls)
	}
	waitFor(t, "the tailer to reach the end", func() bool {
		pos := sink.position(SourcePrefix + p)
		return pos.File == origID && pos.Offset == fileSize(t, p)
	})
	stop()
	exactlyOnce(t, sink.all(), seqRange(0, total))
	st := tl.Stats()
	if st.Rotations[RotationTruncate] != uint64(rotations) || st.Unrecovered != 0 || len(st.Malformed) != 0 {
		t.Fatalf("stats %+v, want %d truncations, all recovered", st, rotations)
	}
}

// TestRestart: each source resumes from the sink's position, across a
// plain restart, a rename while stopped (the rest of the old file is read
// first), a rename whose old file is gone (lost, and said so), and a
// truncation while stopped.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "access.log")
	src := SourcePrefix + p
	sink := newFakeSink()
	run := func(what string) Stats {
		t.Helper()
		tl, stop := start(t, testConfig(filepath.Join(dir, "*.log")), sink, nil)
		waitFor(t, what, func() bool {
			pos := sink.position(src)
			return pos.File == fileIdentity(t, p) && pos.Offset == fileSize(t, p)
		})
		stop()
		sink.check(t)
		return tl.Stats()
	}

	appendFile(t, p, lines(0, 100))
	run("the first run")
	appendFile(t, p, lines(100, 150))
	if st := run("a plain restart"); st.Lines != 50 {
		t.Fatalf("the restart read %d lines, want the 50 new ones", st.Lines)
	}
	exactlyOnce(t, sink.all(), seqRange(0, 150))

	// Rotated while stopped; the old file had grown before its rename.
	appendFile(t, p, lines(150, 160))
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, lines(160, 170))
	st := run("the rest of the rotated file, then the new one")
	exactlyOnce(t, sink.all(), seqRange(0, 170))
	if st.Rotations[RotationRenameStopped] != 1 || st.Unrecovered != 0 || st.Lines != 20 {
		t.Fatalf("stats %+v", st)
	}

	// Rotated while stopped, and the old file moved where no suffix finds it.
	appendFile(t, p, lines(170, 180))
	if err := os.Mkdir(filepath.Join(dir, "archive"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p, filepath.Join(dir, "archive", "access.log")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, lines(180, 185))
	st = run("the new file after a lost one")
	exactlyOnce(t, sink.all(), append(seqRange(0, 170), seqRange(180, 185)...))
	if st.Rotations[RotationRenameStopped] != 1 || st.Unrecovered != 1 {
		t.Fatalf("stats %+v: the loss must be counted", st)
	}

	// Truncated while stopped (a copytruncate): read from the start.
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, lines(190, 192))
	st = run("the truncated file")
	exactlyOnce(t, sink.all(), append(append(seqRange(0, 170), seqRange(180, 185)...), 190, 191))
	if st.Rotations[RotationTruncateStopped] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTruncatedAndRegrown: between two polls the file is copied, truncated
// and written past the offset the tailer had reached, so its size alone
// does not show the truncation; the bytes before the read offset do. With
// the copy in place, the lines the tailer had not read yet come from it;
// without it, they are lost and counted as such.
func TestTruncatedAndRegrown(t *testing.T) {
	for _, withCopy := range []bool{true, false} {
		t.Run(fmt.Sprintf("copy=%v", withCopy), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dir := t.TempDir()
				p := filepath.Join(dir, "access.log")
				appendFile(t, p, lines(0, 10))
				sink := newFakeSink()
				cfg := Config{Paths: []string{p}, PollInterval: time.Second, RotateWait: 3 * time.Second}
				tl, stop := start(t, cfg, sink, nil)
				time.Sleep(500 * time.Millisecond)
				synctest.Wait()
				exactlyOnce(t, sink.all(), seqRange(0, 10))

				// All between two polls: 10 more lines, then copytruncate,
				// then more new content than the tailer had read.
				appendFile(t, p, lines(10, 20))
				if withCopy {
					data, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p+".1", data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.Truncate(p, 0); err != nil {
					t.Fatal(err)
				}
				appendFile(t, p, lines(100, 200))
				time.Sleep(5 * time.Second)
				synctest.Wait()
				stop()

				want := append(seqRange(0, 20), seqRange(100, 200)...)
				unrecovered := uint64(0)
				if !withCopy {
					want = append(seqRange(0, 10), seqRange(100, 200)...)
					unrecovered = 1
				}
				exactlyOnce(t, sink.all(), want)
				sink.check(t)
				st := tl.Stats()
				if st.Rotations[RotationTruncate] != 1 || st.Unrecovered != unrecovered || len(st.Malformed) != 0 {
					t.Fatalf("stats %+v", st)
				}
				if pos := sink.position(SourcePrefix + p); pos.File != fileIdentity(t, p) || pos.Offset != fileSize(t, p) {
					t.Fatalf("position %+v, want the end of the file", pos)
				}
			})
		})
	}
}

package seglog

import (
	"bytes"
	"fmt"
	"github.com/tally-edge/tally/internal/crashtest"
	"os"
	"strconv"
	"strings"
	"testing"
)

const helperEnv = "SEGLOG_CRASH_HELPER_DIR"

// crashRecord is record i of the crash test: its index and 0–3 KiB of
// bytes derived from it, so a record from the wrong place or a torn one is
// detected by content, not only by the checksum.
func crashRecord(i int) []byte {
	n := 8 + (i*2654435761)%3072
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*31 + j)
	}
	copy(b, strconv.AppendInt(nil, int64(i), 16))
	return b
}

// TestHelperProcess is the child of TestCrashKill9: it appends numbered
// records in groups until it is killed and, after some Appends return,
// prints "appended N", N being the number of records in the log.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process of TestCrashKill9")
	}
	l, err := Open(dir, Options{SegmentSize: 256 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	next := 0
	if err := l.Read(l.Start(), func(Pos, []byte) error { next++; return nil }); err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		os.Exit(2)
	}
	for i := range 200_000 { // bounded; the parent kills us long before
		group := make([][]byte, 1+next%17)
		for j := range group {
			group[j] = crashRecord(next + j)
		}
		if _, _, err := l.Append(group...); err != nil {
			fmt.Fprintln(os.Stderr, "append:", err)
			os.Exit(2)
		}
		next += len(group)
		// Report only now and then so the kill mostly lands inside Append.
		if i%8 == 0 {
			fmt.Printf("appended %d\n", next)
		}
	}
	os.Exit(0)
}

// TestCrashKill9 kills a process that is appending to a log with SIGKILL at
// an arbitrary point, several times over, and checks after each kill that
// the log holds an unbroken prefix of the sequence with every record intact
// and every record whose Append had returned present.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	reported := 0
	for round := range 3 {
		target := reported + 2000 + round*1500
		last, killed := runCrashChild(t, dir, target)
		if last > reported {
			reported = last
		}
		l, err := Open(dir, Options{SegmentSize: 256 << 10})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		n := 0
		err = l.Read(l.Start(), func(_ Pos, r []byte) error {
			if want := crashRecord(n); !bytes.Equal(r, want) {
				return fmt.Errorf("record %d: got %d bytes %.16q, want %d bytes %.16q", n, len(r), r, len(want), want)
			}
			n++
			return nil
		})
		rc := l.Recovered()
		if cerr := l.Close(); cerr != nil {
			t.Fatalf("round %d: close: %v", round, cerr)
		}
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if n < reported {
			t.Fatalf("round %d: log has %d records but the child had appended %d before the kill", round, n, reported)
		}
		t.Logf("round %d: killed=%v, child reported %d, log holds %d, torn bytes dropped %d",
			round, killed, reported, n, rc.Dropped)
		reported = n
	}
}

// runCrashChild starts the helper on dir, kills it once it reports target
// records, and returns the highest count it reported.
func runCrashChild(t *testing.T, dir string, target int) (last int, killed bool) {
	t.Helper()
	// Lines already in the pipe when the kill landed still count: their
	// Appends had returned.
	killed = crashtest.Run(t, "TestHelperProcess", helperEnv, dir, func(line string) bool {
		s, ok := strings.CutPrefix(line, "appended ")
		if !ok {
			return false
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return false
		}
		last = n
		return n >= target
	})
	if !killed {
		t.Logf("child finished before it could be killed")
	}
	return last, killed
}

package deadletter

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden file of the current format version")

var golden = Letter{Spool: "live", Seq: 12, Owner: "agg-2", Agent: "agent-eu", Reason: "invalid message: empty campaign",
	Code: "malformed", Time: time.Date(2025, 1, 2, 10, 0, 0, 0, time.UTC)}

// TestFormatVersion2 pins the bytes of a dead letter as written today.
func TestFormatVersion2(t *testing.T) {
	b, err := Encode(golden, []byte("the refused payload"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "v2", "live-00000000000000000012.dl")
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("dead letter format changed:\n got %q\nwant %q", b, want)
	}
	l, payload, err := Read(path)
	golden.Version, golden.Path, golden.Size = 2, path, len("the refused payload")
	if err != nil || l != golden || string(payload) != "the refused payload" {
		t.Fatalf("Read = %+v %q, %v", l, payload, err)
	}
	garbled := append([]byte(nil), b...)
	garbled[len(magic)] = 3
	if _, _, err := Decode(garbled); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a version 3 file: %v", err)
	}
}

// TestVersion1Files lists and reads the files 388fe42 wrote (the payload
// alone, named by its sequence number).
func TestVersion1Files(t *testing.T) {
	letters, err := List(filepath.Join("testdata", "v1"))
	if err != nil || len(letters) != 1 {
		t.Fatalf("List = %+v, %v", letters, err)
	}
	l := letters[0]
	if l.Version != 1 || l.Seq != 1 || l.Spool != "" || l.Size != 185 {
		t.Fatalf("letter %+v", l)
	}
}

// TestStoreBounds: Put is durable and bounded in files and bytes; a full
// store refuses (ErrFull) and takes letters again after Remove; the same
// batch refused twice is kept once.
func TestStoreBounds(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, MaxBatches: 2, MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	put := func(seq uint64, n int) error {
		return s.Put(Letter{Spool: "live", Seq: seq, Time: time.Now()}, bytes.Repeat([]byte{'x'}, n))
	}
	if err := put(1, 60); err != nil {
		t.Fatal(err)
	}
	if err := put(2, 60); !errors.Is(err, ErrFull) {
		t.Fatalf("over MaxBytes: %v", err)
	}
	if err := put(1, 60); err != nil { // refused again after a restart
		t.Fatal(err)
	}
	if err := put(3, 10); err != nil {
		t.Fatal(err)
	}
	if err := put(4, 10); !errors.Is(err, ErrFull) {
		t.Fatalf("over MaxBatches: %v", err)
	}
	if n, b := s.Usage(); n != 2 || b != 70 {
		t.Fatalf("usage %d letters %d bytes", n, b)
	}
	// A reopened store counts what is on disk.
	s2, err := Open(Config{Dir: dir, MaxBatches: 2, MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !s2.Full() {
		t.Fatal("reopened store is not full")
	}
	letters, _ := List(dir)
	if err := s2.Remove(letters[0]); err != nil {
		t.Fatal(err)
	}
	if err := s2.Put(Letter{Spool: "import", Seq: 4}, []byte("y")); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("%d files, want 2 (no temporary files left)", len(entries))
	}
}

// FuzzDecode: no file makes the dead-letter decoder panic, and a file
// that decodes re-encodes to the same letter and payload.
//
//	go test -run='^$' -fuzz='^FuzzDecode$' -fuzztime=30s ./agent/deadletter/
func FuzzDecode(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "v2", "live-00000000000000000012.dl"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(magic + "\x02\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, payload, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(l, payload)
		if err != nil {
			t.Fatal(err)
		}
		l2, p2, err := Decode(again)
		if err != nil || !bytes.Equal(p2, payload) || !l2.Time.Equal(l.Time) || l2.Seq != l.Seq || l2.Reason != l.Reason {
			t.Fatalf("round trip: %v", err)
		}
	})
}

package seglog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// copyDir copies the files of src into a new temporary directory: tests
// open golden directories, and opening writes.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestOpensVersion1Logs opens testdata/v1, written before logs carried a
// format file (four records over two segments, by the code of commit
// 388fe42): every record reads back, the format file is added, and the
// log takes appends.
func TestOpensVersion1Logs(t *testing.T) {
	dir := copyDir(t, filepath.Join("testdata", "v1"))
	l, err := Open(dir, Options{SegmentSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var got []string
	if err := l.Read(l.Start(), func(_ Pos, rec []byte) error { got = append(got, string(rec)); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{"alpha", "beta", "gamma is a longer record", "delta"}
	if len(got) != len(want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("records %q, want %q", got, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, formatFile)); err != nil || string(b) != "seglog 1\n" {
		t.Fatalf("format file %q, %v", b, err)
	}
	if _, _, err := l.Append([]byte("epsilon")); err != nil {
		t.Fatal(err)
	}
}

// TestRefusesUnknownFormat: a directory written by a later version is
// refused with ErrFormat, never misread.
func TestRefusesUnknownFormat(t *testing.T) {
	dir := copyDir(t, filepath.Join("testdata", "v1"))
	if err := os.WriteFile(filepath.Join(dir, formatFile), []byte("seglog 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrFormat) {
		t.Fatalf("Open = %v, want ErrFormat", err)
	}
	if err := os.WriteFile(filepath.Join(dir, formatFile), []byte("something else"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a garbled format file = %v, want ErrCorrupt", err)
	}
}

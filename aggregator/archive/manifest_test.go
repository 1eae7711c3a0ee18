package archive

import (
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s changed: a format change must be deliberate (new FormatVersion, then go test -update).\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func goldenManifest() *Manifest {
	return &Manifest{Format: FormatName, Version: 1, Day: "2026-03-01",
		ExportedAt: time.Date(2026, 3, 2, 2, 0, 5, 0, time.UTC), ExportedBy: "agg-2", SketchEncoding: 1, Campaigns: 2,
		Counters: Fingerprint{Rows: 1500, Events: 91234, ValueMicros: 123456789, CostMicros: 4500000, Bots: 321, Sum: "0123456789abcdef"},
		Parts: []Part{
			{Name: "part-00000.parquet", Rows: 1000, Bytes: 65536, SHA256: strings.Repeat("ab", 32)},
			{Name: "part-00001.parquet", Rows: 500, Bytes: 30000, SHA256: strings.Repeat("cd", 32)},
		}}
}

// TestManifestGolden pins the manifest's bytes (version 1) and checks
// that the golden file still decodes to the same manifest, so archives
// written today stay readable.
func TestManifestGolden(t *testing.T) {
	b, err := goldenManifest().Encode()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "manifest-v1.json", b)
	m, err := DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := m.Encode(); string(again) != string(b) {
		t.Fatalf("decode then encode changed the manifest:\n%s", again)
	}
}

// TestSchemaGolden pins the Parquet schema of format version 1.
func TestSchemaGolden(t *testing.T) {
	golden(t, "schema-v1.txt", []byte(parquet.SchemaOf(Row{}).String()+"\n"))
}

func TestBadManifestsAreRefused(t *testing.T) {
	good, _ := goldenManifest().Encode()
	for name, edit := range map[string]func(string) string{
		"unknown version": func(s string) string { return strings.Replace(s, `"version": 1`, `"version": 2`, 1) },
		"other format":    func(s string) string { return strings.Replace(s, `"tally-archive"`, `"other"`, 1) },
		"unknown field":   func(s string) string { return strings.Replace(s, `"day"`, `"extra": 1, "day"`, 1) },
		"bad day":         func(s string) string { return strings.Replace(s, `"2026-03-01"`, `"2026-3-1"`, 1) },
		"path in a part name": func(s string) string {
			return strings.Replace(s, `"part-00001.parquet"`, `"../../etc/passwd"`, 1)
		},
		"parts out of order": func(s string) string {
			return strings.Replace(s, `"part-00001.parquet"`, `"part-00002.parquet"`, 1)
		},
		"rows do not add up":    func(s string) string { return strings.Replace(s, `"rows": 500`, `"rows": 501`, 1) },
		"bad checksum":          func(s string) string { return strings.Replace(s, strings.Repeat("cd", 32), "cd", 1) },
		"unknown sketch format": func(s string) string { return strings.Replace(s, `"sketch_encoding": 1`, `"sketch_encoding": 7`, 1) },
		"too large":             func(s string) string { return s + strings.Repeat(" ", MaxManifestBytes) },
		"not json":              func(s string) string { return "{" },
	} {
		if _, err := DecodeManifest([]byte(edit(string(good)))); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

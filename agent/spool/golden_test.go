package spool

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of the current format versions")

// golden compares got with testdata/golden/name, or writes it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s changed:\n got % x\nwant % x\n(a format change must bump its version; -update only for a new version's file)", name, got, want)
	}
}

// TestRecordFormats pins the bytes of every spool record: batch v2 and
// the commit record as written today, and batch v1 (written by 388fe42,
// read only) decodes to what it held.
func TestRecordFormats(t *testing.T) {
	golden(t, "batch-v2.bin", encodeBatch(7, Batch{Owner: "agg-2", Payload: []byte("payload of batch 7")}))
	golden(t, "commit.bin", encodeCommit(commitRec{first: 7, count: 2, meta: CommitMeta{JournalPos: 4096, Data: []byte("meta")}}))

	for _, tc := range []struct {
		file, owner string
	}{{"batch-v1.bin", ""}, {"batch-v2.bin", "agg-2"}} {
		rec, err := os.ReadFile(filepath.Join("testdata", "golden", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		b, err := decodeBatch(rec)
		if err != nil || b.seq != 7 || string(b.owner) != tc.owner || string(b.payload) != "payload of batch 7" {
			t.Fatalf("%s: %+v, %v", tc.file, b, err)
		}
	}
	rec, err := os.ReadFile(filepath.Join("testdata", "golden", "commit.bin"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeCommit(rec)
	if err != nil || c.first != 7 || c.count != 2 || c.meta.JournalPos != 4096 || string(c.meta.Data) != "meta" {
		t.Fatalf("commit: %+v, %v", c, err)
	}
}

// TestStateFileVersion1 reads the state file (the acked cursor) as
// 388fe42 wrote it.
func TestStateFileVersion1(t *testing.T) {
	st, err := readState(filepath.Join("testdata", "golden", "state-v1"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 1 || st.AckedThrough != 6 || st.NextSeq != 9 || !st.HasMeta || st.JournalPos != 4096 ||
		string(st.MetaData) != "meta" || st.MetaLogPos != 1234 {
		t.Fatalf("state %+v", st)
	}
}

// TestMixedVersionsReopen: a spool holding v1 batches gets v2 batches
// appended behind them, and after a restart every batch is handed out
// with its own owner (none for v1).
func TestMixedVersionsReopen(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir, Config{})
	v1, err := os.ReadFile(filepath.Join("testdata", "golden", "batch-v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encodeBatchV1(7, []byte("payload of batch 7")), v1) {
		t.Fatal("the test's version 1 writer does not write what 388fe42 wrote")
	}
	// Write a v1 group as 388fe42 did: batch records then a commit.
	if _, _, err := s.log.Append(encodeBatchV1(1, []byte("old")), encodeCommit(commitRec{first: 1, count: 1})); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openSpool(t, dir, Config{})
	if _, err := s.Commit([]Batch{{Owner: "agg-1", Payload: []byte("new")}}, CommitMeta{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openSpool(t, dir, Config{})
	for _, want := range []Item{{Seq: 1, Payload: []byte("old")}, {Seq: 2, Owner: "agg-1", Payload: []byte("new")}} {
		it, err := s.Next(t.Context())
		if err != nil || it.Seq != want.Seq || it.Owner != want.Owner || string(it.Payload) != string(want.Payload) {
			t.Fatalf("Next = %+v, %v; want %+v", it, err, want)
		}
	}
}

// encodeBatchV1 writes a batch record as version 1 did.
func encodeBatchV1(seq uint64, payload []byte) []byte {
	b := make([]byte, batchV1Header+len(payload))
	b[0] = kindBatchV1
	for i := range 8 {
		b[1+i] = byte(seq >> (56 - 8*i))
	}
	copy(b[batchV1Header:], payload)
	return b
}

// FuzzRecord: no spool record makes the record decoders panic, and a
// batch that decodes re-encodes to the same bytes (v2) or the same
// content (v1).
//
//	go test -run='^$' -fuzz='^FuzzRecord$' -fuzztime=30s ./agent/spool/
func FuzzRecord(f *testing.F) {
	for _, name := range []string{"batch-v1.bin", "batch-v2.bin", "commit.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", "golden", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		if len(rec) > 0 && rec[0] == kindCommit {
			_, _ = decodeCommit(rec)
			return
		}
		b, err := decodeBatch(rec)
		if err != nil {
			return
		}
		again := encodeBatch(b.seq, Batch{Owner: string(b.owner), Payload: b.payload})
		b2, err := decodeBatch(again)
		if err != nil || b2.seq != b.seq || !bytes.Equal(b2.owner, b.owner) || !bytes.Equal(b2.payload, b.payload) {
			t.Fatalf("round trip: %v", err)
		}
		if rec[0] == kindBatch && !bytes.Equal(again, rec) {
			t.Fatal("a v2 record re-encodes differently")
		}
	})
}

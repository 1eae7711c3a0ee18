package wal

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite testdata/v2 from the current encoder")

const segment = "00000000000000000000.seg"

// goldenBatches are the batches the logs in testdata hold: testdata/v1
// was written by the first release's aggregator (format 1) from exactly
// these, testdata/v2 by this package.
func goldenBatches(t *testing.T) []*wire.Batch {
	t.Helper()
	m := int64(1_700_000_040)
	mk := func(campaign, typ string, count uint64, cid, ver uint64, visitors ...uint64) wire.Contribution {
		var st sketch.State
		st.Count = count
		if typ == "conversion" {
			st.ValueMicros = int64(count) * 1_500_000
		}
		st.AddBot("crawler")
		enc, err := st.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var regs sketch.Registers
		for _, v := range visitors {
			regs.Add(v)
		}
		enc.Registers = regs.AppendUpdates(nil)
		return wire.Contribution{Series: sketch.Series{Campaign: campaign, Source: "google", Medium: "cpc", Type: typ, Country: "DE", Device: "mobile", Region: "eu"},
			Minute: m, CID: cid, Version: ver, State: enc}
	}
	return []*wire.Batch{
		{Version: 1, Agent: "edge-1", Region: "eu", Seq: 1, Contributions: []wire.Contribution{
			mk("spring", "click", 3, 1<<32|1, 1, 0x1111111111111111, 0x2222222222222222), mk("spring", "conversion", 1, 1<<32|2, 1, 0x3333333333333333)}},
		{Version: 1, Agent: "edge-2", Region: "us", Seq: 7, Contributions: []wire.Contribution{
			mk("spring", "click", 5, 2<<32|1, 2, 0x4444444444444444), mk("autumn", "pageview", 2, 2<<32|3, 1)}},
	}
}

// payload is the msgpack payload of b's frame, as a receiver sees it.
func payload(t *testing.T, b *wire.Batch) []byte {
	t.Helper()
	f, err := wire.EncodeBatch(b, wire.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f[wire.HeaderSize:]
}

// openCopy opens a copy of a testdata log (Open takes a lock and may
// truncate; testdata stays untouched).
func openCopy(t *testing.T, version string) *Log {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("testdata", version, segment))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, segment), b, 0o644); err != nil {
		t.Fatal(err)
	}
	l, dropped, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if dropped != 0 {
		t.Fatalf("%s: %d bytes dropped from a clean log", version, dropped)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func replay(t *testing.T, l *Log) []*wire.Batch {
	t.Helper()
	var got []*wire.Batch
	if err := l.Replay(func(_ Pos, b *wire.Batch) error {
		got = append(got, b)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestReplaysLogOfFirstRelease: a log written by the first release
// (format 1, no version byte) replays into the same agents and
// contributions.
func TestReplaysLogOfFirstRelease(t *testing.T) {
	want := goldenBatches(t)
	got := replay(t, openCopy(t, "v1"))
	if len(got) != len(want) {
		t.Fatalf("replayed %d batches, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Agent != want[i].Agent || !reflect.DeepEqual(got[i].Contributions, want[i].Contributions) {
			t.Fatalf("batch %d: got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// TestFormat2Golden: the bytes Append writes are those of testdata/v2
// (a change of format is deliberate: bump FormatVersion and keep reading
// the old one), and they replay into the batches as sent.
func TestFormat2Golden(t *testing.T) {
	dir := t.TempDir()
	l, _, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := goldenBatches(t)
	for _, b := range want {
		_, end, err := l.Append(payload(t, b))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(end); err != nil {
			t.Fatal(err)
		}
	}
	got := replay(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("replay = %+v\nwant %+v", got, want)
	}
	written, err := os.ReadFile(filepath.Join(dir, segment))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "v2", segment)
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, written, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pinned, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if !bytes.Equal(written, pinned) {
		t.Fatalf("format 2 bytes differ from %s: a format change must bump FormatVersion", golden)
	}
	if got := replay(t, openCopy(t, "v2")); !reflect.DeepEqual(got, want) {
		t.Fatalf("golden v2 replays %+v", got)
	}
}

func TestUnknownVersionStopsReplay(t *testing.T) {
	for _, rec := range [][]byte{{3, 1, 0x80}, {FormatVersion, 9, 0x80}, {0x01}} {
		if _, err := DecodeRecord(rec); err == nil {
			t.Fatalf("record % x decoded", rec)
		}
	}
}

// TestGroupCommit: concurrent appenders each get their records durable
// from Sync, sharing fsyncs.
func TestGroupCommit(t *testing.T) {
	l, _, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := payload(t, goldenBatches(t)[0])
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 20 {
				_, end, err := l.Append(p)
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.Sync(end); err != nil {
					t.Error(err)
					return
				}
				if Pos(l.synced.Load()) < end {
					t.Error("Sync returned before its records were durable")
				}
			}
		})
	}
	wg.Wait()
	if n := len(replay(t, l)); n != 16*20 {
		t.Fatalf("replayed %d batches, want %d", n, 16*20)
	}
}

func TestFullAndClose(t *testing.T) {
	l, _, err := Open(t.TempDir(), Options{MaxBytes: 1 << 10, SegmentSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	p := payload(t, goldenBatches(t)[0])
	for {
		if _, _, err = l.Append(p); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrFull) || l.Broken() != nil {
		t.Fatalf("append to a full log: %v (broken %v)", err, l.Broken())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

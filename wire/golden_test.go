package wire

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Regenerate the golden frames, and the fuzz seeds made from them, with:
//
//	go test ./wire/ -run TestGolden -update
var update = flag.Bool("update", false, "rewrite the golden frames in testdata/")

// goldenCases are the frames whose bytes pin the wire format. A change to
// the header, the msgpack settings or a message's tags shows up here; if
// it is deliberate, it probably needs a new protocol version (see doc.go).
func goldenCases(t testing.TB) []struct {
	file     string
	kind     Kind
	msg      any
	compress bool
} {
	batch := buildBatch(t, 3, 2026)
	ack := testAck(2026)
	reject := &Ack{Version: ProtocolVersion, Seq: 17, Status: AckRejected, Reason: "invalid message: batch 17, contribution 0: empty campaign"}
	return []struct {
		file     string
		kind     Kind
		msg      any
		compress bool
	}{
		{file: "batch.bin", kind: KindBatch, msg: batch},
		{file: "batch.zst.bin", kind: KindBatch, msg: batch, compress: true},
		{file: "ack.bin", kind: KindAck, msg: ack},
		{file: "ack.zst.bin", kind: KindAck, msg: ack, compress: true},
		{file: "ack-rejected.bin", kind: KindAck, msg: reject},
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases(t) {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			got, err := AppendFrame(nil, tc.kind, tc.msg, EncodeOptions{Compress: tc.compress})
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatalf("update: %v", err)
				}
				writeFuzzSeeds(t, tc.file, tc.kind, got)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden frame (run with -update to create it): %v", err)
			}

			// Old frames must stay readable, whatever else changes.
			f, err := ReadFrame(bytes.NewReader(want), 0)
			if err != nil {
				t.Fatalf("golden frame no longer reads: %v", err)
			}
			var decoded any
			if tc.kind == KindBatch {
				decoded, err = DecodeBatch(f)
			} else {
				decoded, err = DecodeAck(f)
			}
			if err != nil {
				t.Fatalf("golden frame no longer decodes: %v", err)
			}
			if !reflect.DeepEqual(decoded, tc.msg) {
				t.Fatalf("golden frame decodes to a different message:\n got %+v\nwant %+v", decoded, tc.msg)
			}

			if !bytes.Equal(got, want) {
				hint := "the wire format changed: if deliberate, bump the protocol version or justify it, then run with -update"
				if tc.compress && bytes.Equal(got[:5], want[:5]) {
					hint = "the zstd bytes changed: an upgrade of klauspost/compress may do that without a format change; check, then run with -update"
				}
				t.Fatalf("%s: encoding differs from the golden frame (%d vs %d bytes, first difference at %d): %s",
					path, len(got), len(want), firstDiff(got, want), hint)
			}
		})
	}
}

// writeFuzzSeeds stores a golden frame, and its payload, as seeds of the
// fuzzers in testdata/fuzz/<FuzzName>/golden-<file>.
func writeFuzzSeeds(t *testing.T, file string, kind Kind, frame []byte) {
	t.Helper()
	f, err := ReadFrame(bytes.NewReader(frame), 0)
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	seeds := map[string][]byte{"FuzzReadFrame": frame}
	switch {
	case strings.Contains(file, ".zst"):
		// Same payload as the plain frame.
	case kind == KindBatch:
		seeds["FuzzDecodeBatch"] = f.Payload
	default:
		seeds["FuzzDecodeAck"] = f.Payload
	}
	for fuzzer, data := range seeds {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("seed: %v", err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, "golden-"+strings.TrimSuffix(file, ".bin")), []byte(body), 0o644); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime/metrics"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/sketch"
)

func TestFrameRoundTrip(t *testing.T) {
	batch := buildBatch(t, 20, 1)
	ack := testAck(9)
	tests := []struct {
		name      string
		kind      Kind
		msg       any
		compress  bool
		fastest   bool
		wantFlags Flags
	}{
		{name: "batch", kind: KindBatch, msg: batch},
		{name: "batch zstd", kind: KindBatch, msg: batch, compress: true, wantFlags: FlagZstd},
		{name: "batch zstd fastest", kind: KindBatch, msg: batch, compress: true, fastest: true, wantFlags: FlagZstd},
		{name: "batch value", kind: KindBatch, msg: *batch},
		{name: "ack", kind: KindAck, msg: ack},
		{name: "ack zstd", kind: KindAck, msg: ack, compress: true, wantFlags: FlagZstd},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("prefix")
			opts := EncodeOptions{Compress: tc.compress, Fastest: tc.fastest}
			frame, err := AppendFrame(prefix, tc.kind, tc.msg, opts)
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			if !bytes.HasPrefix(frame, prefix) {
				t.Fatalf("AppendFrame lost the prefix")
			}
			frame = frame[len(prefix):]
			if string(frame[:2]) != Magic || frame[2] != ProtocolVersion || Kind(frame[3]) != tc.kind || Flags(frame[4]) != tc.wantFlags {
				t.Fatalf("header % x, want magic, version 1, kind %d, flags %d", frame[:HeaderSize], tc.kind, tc.wantFlags)
			}
			if n := binary.BigEndian.Uint32(frame[5:9]); int(n) != len(frame)-HeaderSize {
				t.Fatalf("length field %d, payload %d", n, len(frame)-HeaderSize)
			}

			var w bytes.Buffer
			n, err := WriteFrame(&w, tc.kind, tc.msg, opts)
			if err != nil || n != len(frame) || !bytes.Equal(w.Bytes(), frame) {
				t.Fatalf("WriteFrame wrote %d bytes, err %v; differs from AppendFrame", n, err)
			}

			f, err := ReadFrame(bytes.NewReader(frame), 0)
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			if f.Kind != tc.kind || f.Version != ProtocolVersion || f.Flags != tc.wantFlags || f.WireSize != len(frame) {
				t.Fatalf("frame %+v", f)
			}
			var got any
			switch tc.kind {
			case KindBatch:
				got, err = DecodeBatch(f)
			case KindAck:
				got, err = DecodeAck(f)
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			want := tc.msg
			if v, ok := want.(Batch); ok {
				want = &v
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded message differs:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestCompressOnlyWhenSmaller(t *testing.T) {
	frame, err := EncodeAck(&Ack{Version: ProtocolVersion, Seq: 1, Status: AckOK}, EncodeOptions{Compress: true})
	if err != nil {
		t.Fatalf("EncodeAck: %v", err)
	}
	if Flags(frame[4]) != 0 {
		t.Fatalf("tiny ack was sent compressed (%d bytes)", len(frame))
	}
	plain, err := EncodeAck(&Ack{Version: ProtocolVersion, Seq: 1, Status: AckOK}, EncodeOptions{})
	if err != nil || !bytes.Equal(plain, frame) {
		t.Fatalf("uncompressed fallback differs from plain encoding: %v", err)
	}
}

func TestReadFrameStream(t *testing.T) {
	// Frames read back to back from one reader, then a clean io.EOF.
	var stream []byte
	var err error
	for seq := range uint64(3) {
		stream, err = AppendFrame(stream, KindAck, testAck(seq), EncodeOptions{Compress: seq%2 == 0})
		if err != nil {
			t.Fatalf("AppendFrame: %v", err)
		}
	}
	r := bytes.NewReader(stream)
	for seq := range uint64(3) {
		f, err := ReadFrame(r, 0)
		if err != nil {
			t.Fatalf("frame %d: %v", seq, err)
		}
		a, err := DecodeAck(f)
		if err != nil || a.Seq != seq {
			t.Fatalf("frame %d: ack %+v, err %v", seq, a, err)
		}
	}
	if _, err := ReadFrame(r, 0); err != io.EOF {
		t.Fatalf("after the last frame: err = %v, want io.EOF", err)
	}
}

func TestAppendFrameRejectsWrongMessage(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
		msg  any
	}{
		{name: "ack as batch", kind: KindBatch, msg: &Ack{}},
		{name: "batch as ack", kind: KindAck, msg: &Batch{}},
		{name: "not a message", kind: KindBatch, msg: "hello"},
		{name: "nil batch", kind: KindBatch, msg: (*Batch)(nil)},
		{name: "unknown kind", kind: 7, msg: &Batch{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := AppendFrame([]byte("x"), tc.kind, tc.msg, EncodeOptions{})
			if err == nil {
				t.Fatalf("AppendFrame succeeded")
			}
			if string(out) != "x" {
				t.Fatalf("AppendFrame changed dst on error: %q", out)
			}
		})
	}
}

// rawFrame builds a frame by hand.
func rawFrame(version uint8, kind Kind, flags Flags, payload []byte) []byte {
	f := []byte{Magic[0], Magic[1], version, byte(kind), byte(flags), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(f[5:], uint32(len(payload)))
	return append(f, payload...)
}

func withLength(frame []byte, n uint32) []byte {
	f := bytes.Clone(frame)
	binary.BigEndian.PutUint32(f[5:], n)
	return f
}

func mustMsgpack(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatalf("msgpack: %v", err)
	}
	return b
}

func zstdFrame(t testing.TB, data []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		t.Fatalf("zstd: %v", err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// zstdNoContentSize compresses data into a zstd frame whose header does
// not declare the content size, as streaming compressors write them.
func zstdNoContentSize(t testing.TB, data []byte) []byte {
	t.Helper()
	frame := zstdFrame(t, data)
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		t.Fatalf("zstd header: %v", err)
	}
	h.SingleSegment, h.FrameContentSize, h.HasFCS, h.WindowSize = false, 0, false, 1<<20
	out, err := h.AppendTo(nil)
	if err != nil {
		t.Fatalf("zstd header: %v", err)
	}
	return append(out, frame[h.HeaderSize:]...)
}

func TestReadFrameErrors(t *testing.T) {
	good, err := EncodeBatch(buildBatch(t, 2, 1), EncodeOptions{})
	if err != nil {
		t.Fatalf("EncodeBatch: %v", err)
	}
	payload := good[HeaderSize:]
	const max = 1 << 20
	bomb := zstdFrame(t, make([]byte, 8<<20)) // 8 MiB of zeros in a few hundred bytes
	twoFrames := append(zstdFrame(t, payload), zstdFrame(t, make([]byte, 4<<20))...)
	tests := []struct {
		name        string
		in          []byte
		want        Reason
		wantVersion uint8
		wantText    string
	}{
		{name: "one byte", in: []byte("T"), want: ErrTruncated},
		{name: "short header", in: good[:5], want: ErrTruncated},
		{name: "bad magic", in: append([]byte("HTTP/1.1 200"), good...), want: ErrBadMagic, wantText: `"HT"`},
		{name: "bad magic in a short read", in: []byte("X"), want: ErrBadMagic},
		{name: "version 2", in: rawFrame(2, KindBatch, 0, payload), want: ErrUnknownVersion, wantVersion: 2, wantText: "version 2, this node speaks 1"},
		{name: "version 0 in a short header", in: []byte{'T', 'L', 0}, want: ErrUnknownVersion, wantVersion: 0},
		{name: "unknown kind", in: rawFrame(1, 9, 0, payload), want: ErrUnknownKind},
		{name: "unknown flag", in: rawFrame(1, KindBatch, 0x80, payload), want: ErrMalformed, wantText: "flag"},
		{name: "too large", in: withLength(good, max+1), want: ErrTooLarge},
		{name: "huge length", in: withLength(good, 0xffffffff), want: ErrTooLarge},
		{name: "empty payload", in: rawFrame(1, KindBatch, 0, nil), want: ErrMalformed},
		{name: "truncated payload", in: good[:len(good)-1], want: ErrTruncated},
		{name: "zstd flag on plain payload", in: rawFrame(1, KindBatch, FlagZstd, payload), want: ErrBadCompression},
		{name: "zstd bomb", in: rawFrame(1, KindBatch, FlagZstd, bomb), want: ErrTooLarge},
		{name: "zstd without content size beyond the cap", in: rawFrame(1, KindBatch, FlagZstd, zstdNoContentSize(t, make([]byte, maxSizeless+1))), want: ErrTooLarge, wantText: "without a declared size"},
		{name: "zstd frames concatenated", in: rawFrame(1, KindBatch, FlagZstd, twoFrames), want: ErrTooLarge},
		{name: "zstd corrupt", in: rawFrame(1, KindBatch, FlagZstd, corruptTail(zstdFrame(t, payload))), want: ErrBadCompression},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tc.in), max)
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want a *FrameError", err, err)
			}
			if !errors.Is(err, tc.want) || fe.Reason != tc.want {
				t.Fatalf("err = %v, reason %v, want %v", err, fe.Reason, tc.want)
			}
			if fe.Version != tc.wantVersion {
				t.Fatalf("version %d, want %d", fe.Version, tc.wantVersion)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("err %q does not mention %q", err, tc.wantText)
			}
		})
	}
	if _, err := ReadFrame(bytes.NewReader(nil), max); err != io.EOF {
		t.Fatalf("empty input: err = %v, want io.EOF", err)
	}
	wantErr := errors.New("boom")
	if _, err := ReadFrame(io.MultiReader(bytes.NewReader(good[:3]), errReader{wantErr}), max); !errors.Is(err, wantErr) {
		t.Fatalf("read error: err = %v, want it wrapped", err)
	}
}

func corruptTail(b []byte) []byte {
	b = bytes.Clone(b)
	for i := len(b) / 2; i < len(b); i++ {
		b[i] ^= 0x5a
	}
	return b
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// heapAllocs returns the bytes allocated on the heap so far.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestReadFrameAllocatesWhatArrives checks that a header's length is not
// trusted: a frame claiming the maximum size but carrying 100 bytes costs
// about a read chunk, not the claim; a decompression bomb costs nothing.
func TestReadFrameAllocatesWhatArrives(t *testing.T) {
	const max = 64 << 20
	lying := withLength(rawFrame(1, KindBatch, 0, make([]byte, 100)), max)
	bomb := rawFrame(1, KindBatch, FlagZstd, zstdFrame(t, make([]byte, max+1)))
	tests := []struct {
		name     string
		in       []byte
		maxAlloc uint64
	}{
		{name: "length claims 64 MiB", in: lying, maxAlloc: 2 * readChunk},
		{name: "zstd bomb of 64 MiB", in: bomb, maxAlloc: 2 * readChunk},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const runs = 10
			before := heapAllocs()
			for range runs {
				if _, err := ReadFrame(bytes.NewReader(tc.in), max); err == nil {
					t.Fatalf("ReadFrame accepted it")
				}
			}
			if per := (heapAllocs() - before) / runs; per > tc.maxAlloc+uint64(len(tc.in)) {
				t.Fatalf("ReadFrame allocated %d bytes per call, want at most %d", per, tc.maxAlloc+uint64(len(tc.in)))
			}
		})
	}
}

func TestDecodeRejectsHostileMsgpack(t *testing.T) {
	nested := bytes.Repeat([]byte{0x91}, 100) // 100 nested one-element arrays
	nested = append(nested, 0x01)
	tests := []struct {
		name     string
		payload  []byte
		wantText string
	}{
		// The first two cost msgpack/v5 hundreds of megabytes (or a
		// crash) before it notices the input is 15 bytes long.
		{name: "array32 of a million contributions", payload: []byte{0x81, 0xa8, 'c', 'o', 'n', 't', 'r', 'i', 'b', 's', 0xdd, 0x00, 0x10, 0x00, 0x00}, wantText: "exceeds the limit"},
		{name: "array32 of 2^32-1", payload: []byte{0x81, 0xa8, 'c', 'o', 'n', 't', 'r', 'i', 'b', 's', 0xdd, 0xff, 0xff, 0xff, 0xff}, wantText: "exceeds the limit"},
		{name: "array longer than input", payload: []byte{0x81, 0xa8, 'c', 'o', 'n', 't', 'r', 'i', 'b', 's', 0xdc, 0x01, 0x00}, wantText: "elements in 0 bytes"},
		{name: "map32 of a million", payload: []byte{0xdf, 0x00, 0x10, 0x00, 0x00}, wantText: "exceeds the limit"},
		{name: "map longer than input", payload: []byte{0x8f, 0xa1, 'x'}, wantText: "entries in"},
		{name: "str32 longer than input", payload: []byte{0x81, 0xa5, 'a', 'g', 'e', 'n', 't', 0xdb, 0x7f, 0xff, 0xff, 0xff}, wantText: "needs"},
		{name: "deep nesting", payload: append([]byte{0x81, 0xa1, 'x'}, nested...), wantText: "nests deeper"},
		{name: "trailing bytes", payload: append(mustMsgpack(t, testAck(1)), 0xc0), wantText: "trailing"},
		{name: "reserved byte", payload: []byte{0xc1}, wantText: "never used"},
		{name: "empty", payload: nil, wantText: "ends at byte 0"},
		{name: "length cut short", payload: []byte{0xdd, 0x00}, wantText: "inside a length"},
		{name: "wrong types", payload: []byte{0x81, 0xa3, 'v', 'e', 'r', 0xa3, 'o', 'n', 'e'}, wantText: "msgpack"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := heapAllocs()
			_, berr := DecodeBatch(Frame{Version: 1, Kind: KindBatch, Payload: tc.payload})
			_, aerr := DecodeAck(Frame{Version: 1, Kind: KindAck, Payload: tc.payload})
			if alloc := heapAllocs() - before; alloc > 1<<20 {
				t.Fatalf("decoding %d bytes allocated %d bytes", len(tc.payload), alloc)
			}
			for _, err := range []error{berr, aerr} {
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.wantText) {
					t.Fatalf("err = %v, want ErrMalformed mentioning %q", err, tc.wantText)
				}
			}
		})
	}
}

func TestCheckMsgpackAcceptsEveryType(t *testing.T) {
	v := map[string]any{
		"nil": nil, "t": true, "f": false,
		"ints":   []any{0, 1, -1, -33, 127, 128, 255, 256, 65535, 65536, -129, -32769, int64(1) << 40, -(int64(1) << 40), uint64(1) << 63},
		"floats": []any{float32(1.5), 2.25},
		"strs":   []any{"", "short", strings.Repeat("m", 40), strings.Repeat("l", 300), strings.Repeat("x", 70000)},
		"bins":   []any{[]byte{}, []byte{1, 2}, make([]byte, 300), make([]byte, 70000)},
		"arrs":   []any{make([]any, 20), make([]any, 70)},
		"maps":   map[string]any{"a": map[string]any{}, "big": bigMap(20)},
		"ext":    []any{msgpack.RawMessage{0xd4, 1, 2}, msgpack.RawMessage{0xc7, 3, 1, 1, 2, 3}, msgpack.RawMessage{0xd8, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
	}
	enc := mustMsgpack(t, v)
	if err := checkMsgpack(enc); err != nil {
		t.Fatalf("checkMsgpack: %v", err)
	}
	// Every proper prefix is incomplete.
	for i := range len(enc) {
		if err := checkMsgpack(enc[:i]); err == nil {
			t.Fatalf("prefix of %d/%d bytes accepted", i, len(enc))
		}
	}
}

func bigMap(n int) map[string]any {
	m := make(map[string]any, n)
	for i := range n {
		m[string(rune('a'+i))] = i
	}
	return m
}

func TestDecodeWrongKind(t *testing.T) {
	if _, err := DecodeBatch(Frame{Kind: KindAck, Payload: []byte{0x80}}); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("DecodeBatch(ack): %v", err)
	}
	if _, err := DecodeAck(Frame{Kind: KindBatch, Payload: []byte{0x80}}); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("DecodeAck(batch): %v", err)
	}
}

func TestDecodeSkipsUnknownFields(t *testing.T) {
	// A newer sender within version 1 may add fields; they are skipped.
	payload := mustMsgpack(t, map[string]any{
		"ver": 1, "seq": 5, "status": 1, "future": map[string]any{"x": []int{1, 2, 3}},
	})
	a, err := DecodeAck(Frame{Version: 1, Kind: KindAck, Payload: payload})
	if err != nil {
		t.Fatalf("DecodeAck: %v", err)
	}
	if a.Seq != 5 || a.Status != AckOK {
		t.Fatalf("ack %+v", a)
	}
}

func TestBatchValidate(t *testing.T) {
	good := func() *Batch { return buildBatch(t, 3, 1) }
	tests := []struct {
		name   string
		mutate func(b *Batch)
		want   Reason
		text   string
	}{
		{name: "valid", mutate: func(*Batch) {}},
		{name: "no contributions", mutate: func(b *Batch) { b.Contributions = nil }},
		{name: "version 2", mutate: func(b *Batch) { b.Version = 2 }, want: ErrUnknownVersion, text: "batch has version 2"},
		{name: "version 0", mutate: func(b *Batch) { b.Version = 0 }, want: ErrUnknownVersion},
		{name: "no agent", mutate: func(b *Batch) { b.Agent = "" }, want: ErrInvalid, text: "agent"},
		{name: "no campaign", mutate: func(b *Batch) { b.Contributions[1].Series.Campaign = "" }, want: ErrInvalid, text: "contribution 1"},
		{name: "no type", mutate: func(b *Batch) { b.Contributions[2].Series.Type = "" }, want: ErrInvalid, text: "event type"},
		{name: "minute not aligned", mutate: func(b *Batch) { b.Contributions[0].Minute += 30 }, want: ErrInvalid, text: "minute"},
		{name: "minute in milliseconds", mutate: func(b *Batch) { b.Contributions[0].Minute *= 1000 }, want: ErrInvalid, text: "minute"},
		{name: "minute zero", mutate: func(b *Batch) { b.Contributions[0].Minute = 0 }, want: ErrInvalid, text: "minute"},
		{name: "minute negative", mutate: func(b *Batch) { b.Contributions[0].Minute = -60 }, want: ErrInvalid, text: "minute"},
		{name: "too many", mutate: func(b *Batch) {
			c := b.Contributions[0]
			b.Contributions = make([]Contribution, MaxContributions+1)
			for i := range b.Contributions {
				b.Contributions[i] = c
			}
		}, want: ErrInvalid, text: "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := good()
			tc.mutate(b)
			err := b.Validate()
			if tc.want == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Reason != tc.want || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Validate = %v, want %v mentioning %q", err, tc.want, tc.text)
			}
		})
	}
}

func TestAckValidate(t *testing.T) {
	tests := []struct {
		name string
		ack  Ack
		want Reason
	}{
		{name: "ok", ack: Ack{Version: 1, Status: AckOK}},
		{name: "rejected", ack: Ack{Version: 1, Status: AckRejected, Reason: "x"}},
		{name: "busy", ack: Ack{Version: 1, Status: AckBusy, RetryAfterMillis: 500}},
		{name: "redirect", ack: Ack{Version: 1, Status: AckRedirect, Redirect: "10.0.0.2:4433"}},
		{name: "redirect nowhere", ack: Ack{Version: 1, Status: AckRedirect}, want: ErrInvalid},
		{name: "no status", ack: Ack{Version: 1}, want: ErrInvalid},
		{name: "unknown status", ack: Ack{Version: 1, Status: 9}, want: ErrInvalid},
		{name: "negative retry", ack: Ack{Version: 1, Status: AckBusy, RetryAfterMillis: -1}, want: ErrInvalid},
		{name: "version 2", ack: Ack{Version: 2, Status: AckOK}, want: ErrUnknownVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ack.Validate()
			if tc.want == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReasons(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		if seen[r.String()] || strings.HasPrefix(r.String(), "reason_") || strings.HasPrefix(r.Error(), "frame error") {
			t.Fatalf("reason %d has a duplicate or missing name: %q / %q", r, r.String(), r.Error())
		}
		seen[r.String()] = true
	}
	if len(seen) != numReasons-1 {
		t.Fatalf("%d reasons, want %d", len(seen), numReasons-1)
	}
	err := error(&FrameError{Reason: ErrInvalid, Detail: "d", Err: io.ErrUnexpectedEOF})
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrMalformed) {
		t.Fatalf("errors.Is does not see through FrameError")
	}
}

func TestSketchesSurviveTheWire(t *testing.T) {
	b := buildBatch(t, 8, 3)
	frame, err := EncodeBatch(b, EncodeOptions{Compress: true})
	if err != nil {
		t.Fatalf("EncodeBatch: %v", err)
	}
	f, err := ReadFrame(bytes.NewReader(frame), 0)
	if err != nil {
		t.Fatalf("ReadFrame: %v", err)
	}
	got, err := DecodeBatch(f)
	if err != nil {
		t.Fatalf("DecodeBatch: %v", err)
	}
	for i, c := range got.Contributions {
		want, err := b.Contributions[i].State.Decode()
		if err != nil {
			t.Fatalf("decode sent state: %v", err)
		}
		st, err := c.State.Decode()
		if err != nil {
			t.Fatalf("contribution %d: decode received state: %v", i, err)
		}
		if st.Count != want.Count || st.UniquesEstimate() != want.UniquesEstimate() || st.Quantile(0.5) != want.Quantile(0.5) {
			t.Fatalf("contribution %d: state changed on the wire", i)
		}
	}
}

// TestSmallCompressedFrames: a batch small enough that zstd leaves out its
// content size must still get through, whichever side compresses it.
func TestSmallCompressedFrames(t *testing.T) {
	small := &Batch{Version: ProtocolVersion, Agent: "a", Region: "r", Seq: 1, Contributions: []Contribution{{
		Series: sketch.Series{Campaign: "c", Type: "click", Region: "r"}, Minute: 600, CID: 1, Version: 1, State: sketch.Encoded{Count: 1}}}}
	frame, err := EncodeBatch(small, EncodeOptions{Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ReadFrame(bytes.NewReader(frame), DefaultMaxFrameSize)
	if err != nil {
		t.Fatalf("our own small compressed frame: %v", err)
	}
	if _, err := DecodeBatch(f); err != nil {
		t.Fatal(err)
	}
	// Another encoder's sizeless frame is accepted under a cap.
	plain, err := EncodeBatch(small, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	payload := plain[HeaderSize:]
	enc, _ := zstd.NewWriter(nil)
	z := enc.EncodeAll(payload, nil)
	var h zstd.Header
	if err := h.Decode(z); err != nil || h.HasFCS {
		t.Fatalf("expected the library to omit the size of a %d-byte input (HasFCS=%v, err=%v)", len(payload), h.HasFCS, err)
	}
	sizeless := append(append([]byte(nil), plain[:HeaderSize]...), z...)
	sizeless[4] = byte(FlagZstd)
	binary.BigEndian.PutUint32(sizeless[5:], uint32(len(z)))
	f, err = ReadFrame(bytes.NewReader(sizeless), DefaultMaxFrameSize)
	if err != nil {
		t.Fatalf("sizeless frame: %v", err)
	}
	if b, err := DecodeBatch(f); err != nil || b.Contributions[0].State.Count != 1 {
		t.Fatalf("sizeless frame decoded to %+v, %v", b, err)
	}
}

// TestRawBatchEncodesLikeBatch: a batch framed from its pre-encoded
// contributions decodes to the same batch as the frame of the decoded
// batch, and is the same bytes when its maps have one key (msgpack cannot
// sort map[string]uint64, so larger bot maps vary between encodings).
func TestRawBatchEncodesLikeBatch(t *testing.T) {
	for _, n := range []int{1, 12} {
		b := buildBatch(t, n, 42)
		contribs, err := EncodeContributions(b.Contributions)
		if err != nil {
			t.Fatal(err)
		}
		raw := &RawBatch{Version: b.Version, Agent: b.Agent, Region: b.Region, Seq: b.Seq, Contributions: contribs}
		for _, compress := range []bool{false, true} {
			want, err := EncodeBatch(b, EncodeOptions{Compress: compress})
			if err != nil {
				t.Fatal(err)
			}
			got, err := AppendFrame(nil, KindBatch, raw, EncodeOptions{Compress: compress})
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 && !bytes.Equal(got, want) {
				t.Fatalf("compress=%v: raw batch frame differs from the batch frame", compress)
			}
			decode := func(frame []byte) *Batch {
				f, err := ReadFrame(bytes.NewReader(frame), DefaultMaxFrameSize)
				if err != nil {
					t.Fatal(err)
				}
				d, err := DecodeBatch(f)
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			if !reflect.DeepEqual(decode(got), decode(want)) {
				t.Fatalf("n=%d compress=%v: raw batch decodes differently", n, compress)
			}
		}
	}
}

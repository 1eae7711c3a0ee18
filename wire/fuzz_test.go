package wire

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fuzzers run their seeds as part of `go test`. To fuzz:
//
//	go test -run=^$ -fuzz=FuzzReadFrame -fuzztime=60s -fuzzminimizetime=3s ./wire/
//	go test -run=^$ -fuzz=FuzzDecodeBatch -fuzztime=60s -fuzzminimizetime=3s ./wire/
//	go test -run=^$ -fuzz=FuzzDecodeAck -fuzztime=60s -fuzzminimizetime=3s ./wire/
//	go test -run=^$ -fuzz=FuzzDecodeLive -fuzztime=60s -fuzzminimizetime=3s ./wire/
//
// Without -fuzzminimizetime, Go spends up to a minute minimizing each new
// interesting input (the golden frames are kilobytes), which eats a short
// run's whole budget at "0 execs/sec".
//
// Seeds live in testdata/fuzz/<FuzzName>/: golden-* are the golden frames
// and their payloads (rewritten by TestGolden -update); inputs that once
// found a bug stay there: msgpack-*-length-bomb are six-byte payloads that
// cost msgpack/v5 234 MB and 860 MB before checkMsgpack existed (found in
// seconds by FuzzDecodeBatch and FuzzDecodeAck). Truncations and
// hand-made hostile inputs are added below.

// fuzzMaxSize is the frame limit while fuzzing: small, so the allocation
// bound below is tight.
const fuzzMaxSize = 1 << 20

// fuzzAllocLimit bounds what one decode may allocate: the payload, its
// decompression, and the Go values built from at most fuzzMaxSize bytes
// of msgpack (maps cost about 15 times their encoding). The bugs this
// catches cost hundreds of megabytes.
const fuzzAllocLimit = 48 << 20

func goldenFrames(f *testing.F) [][]byte {
	f.Helper()
	var frames [][]byte
	for _, tc := range goldenCases(f) {
		b, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			f.Fatalf("golden frame: %v", err)
		}
		frames = append(frames, b)
	}
	return frames
}

// addTruncations seeds b and a spread of its prefixes (the whole golden
// frames are seeds in testdata/fuzz already).
func addTruncations(f *testing.F, b []byte) {
	f.Add(b)
	for _, n := range []int{0, 1, 2, 3, 4, 8, 9, 10, len(b) / 2, len(b) - 1} {
		if n >= 0 && n < len(b) {
			f.Add(b[:n])
		}
	}
}

// checkDecodeError fails on errors a decoder must never produce: a
// recovered panic, or anything but a *FrameError.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var fe *FrameError
	if !errors.As(err, &fe) {
		t.Fatalf("error is not a *FrameError: %v (%T)", err, err)
	}
	if strings.Contains(err.Error(), "panic") {
		t.Fatalf("decoder panicked: %v", err)
	}
}

func checkAllocs(t *testing.T, before uint64, in []byte) {
	t.Helper()
	if alloc := heapAllocs() - before; alloc > fuzzAllocLimit {
		t.Fatalf("decoding %d bytes allocated %d bytes", len(in), alloc)
	}
}

func FuzzReadFrame(f *testing.F) {
	for _, frame := range goldenFrames(f) {
		addTruncations(f, frame[:len(frame)-1])
		f.Add(withLength(frame, 0xffffffff))
		f.Add(append(bytes.Clone(frame), frame...))
	}
	f.Add(rawFrame(2, KindBatch, 0, []byte{0x80}))
	f.Add(rawFrame(1, KindBatch, FlagZstd, zstdFrame(f, make([]byte, 4<<20))))

	f.Fuzz(func(t *testing.T, in []byte) {
		before := heapAllocs()
		fr, err := ReadFrame(bytes.NewReader(in), fuzzMaxSize)
		if err != nil {
			if err == io.EOF {
				if len(in) != 0 {
					t.Fatalf("io.EOF after %d bytes", len(in))
				}
				return
			}
			checkDecodeError(t, err)
			checkAllocs(t, before, in)
			return
		}
		if fr.WireSize > len(in) || fr.WireSize < HeaderSize || len(fr.Payload) > fuzzMaxSize {
			t.Fatalf("frame of wire size %d, payload %d from %d bytes", fr.WireSize, len(fr.Payload), len(in))
		}
		switch fr.Kind {
		case KindBatch:
			if _, err := DecodeBatch(fr); err != nil {
				checkDecodeError(t, err)
			}
		case KindAck:
			if _, err := DecodeAck(fr); err != nil {
				checkDecodeError(t, err)
			}
		case KindLive:
			if _, err := NewLiveDecoder().Decode(fr); err != nil {
				checkDecodeError(t, err)
			}
		default:
			t.Fatalf("ReadFrame returned kind %d", fr.Kind)
		}
		checkAllocs(t, before, in)
	})
}

// payloads returns the msgpack payloads of the golden frames of kind.
func payloads(f *testing.F, kind Kind) [][]byte {
	var out [][]byte
	for _, frame := range goldenFrames(f) {
		fr, err := ReadFrame(bytes.NewReader(frame), 0)
		if err != nil {
			f.Fatalf("golden frame: %v", err)
		}
		if fr.Kind == kind {
			out = append(out, fr.Payload)
		}
	}
	return out
}

// fuzzDecode is the body of the message fuzzers: decode, and if that
// works, the message must validate, re-encode and decode again.
func fuzzDecode[M any](t *testing.T, kind Kind, payload []byte, decode func(Frame) (*M, error)) {
	before := heapAllocs()
	m, err := decode(Frame{Version: ProtocolVersion, Kind: kind, Payload: payload})
	checkAllocs(t, before, payload)
	if err != nil {
		checkDecodeError(t, err)
		return
	}
	frame, err := AppendFrame(nil, kind, m, EncodeOptions{})
	if err != nil {
		t.Fatalf("decoded message does not encode: %v", err)
	}
	fr, err := ReadFrame(bytes.NewReader(frame), 0)
	if err != nil {
		t.Fatalf("re-encoded frame does not read: %v", err)
	}
	if _, err := decode(fr); err != nil {
		t.Fatalf("re-encoded message does not decode: %v", err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for _, p := range payloads(f, KindBatch) {
		addTruncations(f, p[:len(p)-1])
	}
	f.Add([]byte{0x81, 0xa8, 'c', 'o', 'n', 't', 'r', 'i', 'b', 's', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xdf, 0x00, 0x10, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, payload []byte) {
		fuzzDecode(t, KindBatch, payload, DecodeBatch)
	})
}

func FuzzDecodeAck(f *testing.F) {
	for _, p := range payloads(f, KindAck) {
		addTruncations(f, p[:len(p)-1])
	}
	f.Add([]byte{0x83, 0xa3, 'v', 'e', 'r', 0x01, 0xa3, 's', 'e', 'q', 0x01, 0xa6, 's', 't', 'a', 't', 'u', 's', 0x01})
	f.Fuzz(func(t *testing.T, payload []byte) {
		fuzzDecode(t, KindAck, payload, DecodeAck)
	})
}

// FuzzDecodeLive reads a live stream: frames one after another through
// one decoder, as a server does, until one is refused. Whatever the
// input, every error is a *FrameError, allocations stay bounded, and the
// decoder never names more campaign-minutes than MaxLiveRefs.
func FuzzDecodeLive(f *testing.F) {
	stream, err := os.ReadFile(filepath.Join("testdata", "live-stream.bin"))
	if err != nil {
		f.Fatalf("golden live stream: %v", err)
	}
	addTruncations(f, stream[:len(stream)-1])
	f.Fuzz(func(t *testing.T, in []byte) {
		before := heapAllocs()
		r := bytes.NewReader(in)
		dec := NewLiveDecoder()
		for {
			fr, err := ReadFrame(r, fuzzMaxSize)
			if err == io.EOF {
				break
			}
			if err == nil {
				_, err = dec.Decode(fr)
			}
			if err != nil {
				checkDecodeError(t, err)
				break
			}
			if dec.Known() > MaxLiveRefs {
				t.Fatalf("decoder names %d campaign-minutes", dec.Known())
			}
		}
		checkAllocs(t, before, in)
	})
}

package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"
)

// Magic opens every frame. It never changes, whatever the version, so a
// receiver can always tell a Tally frame from noise.
const Magic = "TL"

// HeaderSize is the size in bytes of the fixed frame header.
const HeaderSize = 9

// DefaultMaxFrameSize is the largest payload a receiver accepts unless told
// otherwise, both as sent and after decompression. A flush larger than this
// must be split into several batches.
const DefaultMaxFrameSize = 16 << 20

// Kind says which message a frame carries.
type Kind uint8

// The message kinds of protocol version 1.
const (
	// KindBatch frames carry a Batch, from agent to aggregator or from
	// aggregator to owner.
	KindBatch Kind = 1
	// KindAck frames carry the Ack that answers a Batch.
	KindAck Kind = 2
	// KindLive frames carry a Live message of an agent's live counters,
	// only on a unidirectional live stream (see doc.go).
	KindLive Kind = 3
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case KindBatch:
		return "batch"
	case KindAck:
		return "ack"
	case KindLive:
		return "live"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Flags are the header's flag bits. Bits a receiver does not know make the
// frame malformed: a new bit that changes how the payload is read needs a
// new protocol version.
type Flags uint8

// FlagZstd marks a payload compressed with zstd.
const FlagZstd Flags = 1 << 0

const knownFlags = FlagZstd

// Frame is one frame as read from a stream.
type Frame struct {
	// Version is the protocol version from the header.
	Version uint8
	// Kind is the message kind from the header.
	Kind Kind
	// Flags are the header's flags as received. FlagZstd is kept for
	// information; Payload is already decompressed.
	Flags Flags
	// Payload is the msgpack encoding of the message.
	Payload []byte
	// WireSize is the number of bytes the frame took on the wire, header
	// included.
	WireSize int
}

// EncodeOptions tune how a message is framed.
type EncodeOptions struct {
	// Compress compresses the payload with zstd when that makes it
	// smaller; a payload that does not shrink is sent plain, so the flag
	// never costs bytes. The gain depends on what dominates the batch:
	// HLL deltas are random visitor hashes and barely compress (a
	// realistic 200-contribution batch, 87 % HLL, shrinks by 10 %), while
	// series names and counters do. Acks are too small to bother.
	Compress bool
	// Fastest compresses with zstd's fastest level instead of its
	// default: for bulk senders such as a log backfill, where the CPU is
	// the limit. About 1.6 times faster; on the day log of the benchmarks
	// as small, on live flushes 2 to 4 % larger.
	Fastest bool
	// Best compresses with zstd's best level, for slow links where
	// bytes cost more than CPU (an agent chooses it from the goodput it
	// measures): about 30 times the CPU of the default level
	// (BenchmarkEncodeBatch) for frames 1 % (HLL-heavy) to 9 % (a
	// realistic burst) smaller. Fastest wins if both are set.
	Best bool
}

// AppendFrame appends the frame of msg to dst and returns the extended
// slice. msg must be a Batch or an Ack (value or pointer) matching kind. It
// does not validate the message: call Validate first where that matters.
func AppendFrame(dst []byte, kind Kind, msg any, opts EncodeOptions) ([]byte, error) {
	if err := checkMessageKind(kind, msg); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, Magic[0], Magic[1], ProtocolVersion, byte(kind), 0, 0, 0, 0, 0)
	body := start + HeaderSize
	var flags Flags
	if !opts.Compress {
		buf := bytes.NewBuffer(dst)
		if err := marshal(buf, msg); err != nil {
			return dst[:start], fmt.Errorf("encode %s: %w", kind, err)
		}
		dst = buf.Bytes()
	} else {
		scratch := getScratch()
		defer putScratch(scratch)
		if err := marshal(scratch, msg); err != nil {
			return dst[:start], fmt.Errorf("encode %s: %w", kind, err)
		}
		plain := scratch.Bytes()
		// Below minCompress bytes zstd gains nothing worth a frame of its
		// own, and the encoder leaves out the content size.
		if len(plain) >= minCompress {
			enc := zstdEncoder
			switch {
			case opts.Fastest:
				enc = zstdFastestEncoder
			case opts.Best:
				enc = zstdBestEncoder
			}
			dst = enc().EncodeAll(plain, dst)
		}
		if len(plain) >= minCompress && len(dst)-body < len(plain) {
			flags |= FlagZstd
		} else {
			dst = append(dst[:body], plain...)
		}
	}
	n := len(dst) - body
	if uint64(n) > math.MaxUint32 {
		return dst[:start], frameErr(ErrTooLarge, nil, "%s payload of %d bytes does not fit a frame", kind, n)
	}
	dst[start+4] = byte(flags)
	binary.BigEndian.PutUint32(dst[start+5:], uint32(n))
	return dst, nil
}

// WriteFrame writes the frame of msg to w in one Write call and returns the
// number of bytes written. See AppendFrame.
func WriteFrame(w io.Writer, kind Kind, msg any, opts EncodeOptions) (int, error) {
	buf := getScratch()
	defer putScratch(buf)
	frame, err := AppendFrame(buf.AvailableBuffer(), kind, msg, opts)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(frame)
	if err != nil {
		return n, fmt.Errorf("write %s frame: %w", kind, err)
	}
	return n, nil
}

// EncodeBatch returns the frame of b.
func EncodeBatch(b *Batch, opts EncodeOptions) ([]byte, error) {
	return AppendFrame(nil, KindBatch, b, opts)
}

// EncodeAck returns the frame of a.
func EncodeAck(a *Ack, opts EncodeOptions) ([]byte, error) {
	return AppendFrame(nil, KindAck, a, opts)
}

func checkMessageKind(kind Kind, msg any) error {
	var want Kind
	switch m := msg.(type) {
	case *Batch:
		if m == nil {
			return errors.New("encode: nil *Batch")
		}
		want = KindBatch
	case Batch:
		want = KindBatch
	case *RawBatch:
		if m == nil {
			return errors.New("encode: nil *RawBatch")
		}
		want = KindBatch
	case *Ack:
		if m == nil {
			return errors.New("encode: nil *Ack")
		}
		want = KindAck
	case Ack:
		want = KindAck
	default:
		return fmt.Errorf("encode: %T is not a wire message", msg)
	}
	if kind != want {
		return fmt.Errorf("encode: %T framed as %s", msg, kind)
	}
	return nil
}

// EncodeContributions encodes contributions exactly as a Batch frame
// carries them, for a RawBatch: an agent spools this form and ships it
// without encoding it again. See AppendContributions.
func EncodeContributions(cs []Contribution) ([]byte, error) {
	return AppendContributions(make([]byte, 0, 16+128*len(cs)), cs), nil
}

// marshal encodes msg with the settings that make encodings compact and,
// except for maps of types msgpack cannot sort (map[string]uint64),
// deterministic.
func marshal(w *bytes.Buffer, msg any) error {
	enc := msgpack.GetEncoder()
	enc.Reset(w)
	enc.SetSortMapKeys(true)
	enc.UseCompactInts(true)
	err := enc.Encode(msg)
	msgpack.PutEncoder(enc)
	return err
}

// ReadFrame reads one frame from r. maxSize caps the payload both as sent
// and after decompression; zero or less means DefaultMaxFrameSize.
//
// ReadFrame never allocates more than about twice the bytes it has actually
// received (a header claiming a large payload costs nothing until the
// payload arrives) nor more than maxSize for a decompressed payload.
//
// It returns io.EOF if r ends before the first byte, a *FrameError for
// anything wrong with the frame, and other read errors wrapped.
func ReadFrame(r io.Reader, maxSize int) (Frame, error) {
	return readFrame(r, maxSize, nil)
}

// readFrame is ReadFrame calling reserve, when not nil, with the number
// of bytes it is about to allocate before each allocation that follows
// from the frame's claims: the payload as sent, then the decompressed
// payload. An error from reserve ends the read with that error. A server
// uses it to bound the memory all streams of one peer spend on decoding.
func readFrame(r io.Reader, maxSize int, reserve func(n int) error) (Frame, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrameSize
	}
	var hdr [HeaderSize]byte
	n, err := io.ReadFull(r, hdr[:])
	if err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return Frame{}, io.EOF
		}
		// A peer speaking another version may send a shorter header:
		// name its version rather than the truncation.
		if ferr := checkPrefix(hdr[:n]); ferr != nil {
			return Frame{}, ferr
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, frameErr(ErrTruncated, nil, "header ends after %d of %d bytes", n, HeaderSize)
		}
		return Frame{}, fmt.Errorf("read frame header: %w", err)
	}
	if ferr := checkPrefix(hdr[:]); ferr != nil {
		return Frame{}, ferr
	}
	f := Frame{Version: hdr[2], Kind: Kind(hdr[3]), Flags: Flags(hdr[4])}
	if f.Kind != KindBatch && f.Kind != KindAck && f.Kind != KindLive {
		return Frame{}, frameErr(ErrUnknownKind, nil, "kind byte %d", hdr[3])
	}
	if f.Flags&^knownFlags != 0 {
		return Frame{}, frameErr(ErrMalformed, nil, "unknown flag bits %#02x", uint8(f.Flags&^knownFlags))
	}
	size := binary.BigEndian.Uint32(hdr[5:])
	if uint64(size) > uint64(maxSize) {
		return Frame{}, frameErr(ErrTooLarge, nil, "%s payload of %d bytes exceeds the limit of %d", f.Kind, size, maxSize)
	}
	if size == 0 {
		return Frame{}, frameErr(ErrMalformed, nil, "empty payload")
	}
	if reserve != nil {
		if err := reserve(int(size)); err != nil {
			return Frame{}, err
		}
	}
	payload, err := readPayload(r, int(size))
	if err != nil {
		return Frame{}, err
	}
	f.WireSize = HeaderSize + len(payload)
	if f.Flags&FlagZstd != 0 {
		payload, err = decompress(payload, maxSize, reserve)
		if err != nil {
			return Frame{}, err
		}
	}
	f.Payload = payload
	return f, nil
}

// checkPrefix checks as much of magic and version as b holds.
func checkPrefix(b []byte) *FrameError {
	for i := 0; i < len(b) && i < len(Magic); i++ {
		if b[i] != Magic[i] {
			return frameErr(ErrBadMagic, nil, "frame starts with %q, want %q", b[:min(len(b), len(Magic))], Magic)
		}
	}
	if len(b) > 2 && b[2] != ProtocolVersion {
		return versionErr("frame", b[2])
	}
	return nil
}

// readChunk is how much readPayload allocates before it has seen any
// payload byte: the header's length is a claim, not a promise.
const readChunk = 64 << 10

// readPayload reads exactly n bytes, growing its buffer as bytes arrive.
func readPayload(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, readChunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), len(buf)))
		}
		k, err := io.ReadFull(r, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+k]
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, frameErr(ErrTruncated, nil, "payload ends after %d of %d bytes", len(buf), n)
			}
			return nil, fmt.Errorf("read frame payload: %w", err)
		}
	}
	return buf, nil
}

// decompress inflates a zstd payload into a buffer of exactly the size the
// zstd frame declares, after checking that size against maxSize. The
// decoder is limited to that buffer's capacity, so neither a lying header
// nor concatenated frames can make it allocate more.
const (
	// minCompress is the smallest payload AppendFrame compresses.
	minCompress = 256
	// maxSizeless caps what a zstd frame without a declared content size
	// may decompress to.
	maxSizeless = 64 << 10
)

func decompress(p []byte, maxSize int, reserve func(n int) error) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(p); err != nil {
		return nil, frameErr(ErrBadCompression, err, "zstd header")
	}
	switch {
	case h.Skippable:
		return nil, frameErr(ErrBadCompression, nil, "payload starts with a skippable zstd frame")
	case !h.HasFCS:
		// Encoders leave the size out of small frames (ours do not
		// compress those, others may): decode them under a small cap
		// instead, which no legitimate sizeless frame comes near.
		if reserve != nil {
			if err := reserve(min(maxSize, maxSizeless)); err != nil {
				return nil, err
			}
		}
		out, err := zstdDecoder().DecodeAll(p, make([]byte, 0, min(maxSize, maxSizeless)))
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
				return nil, frameErr(ErrTooLarge, err, "zstd frame without a declared size decompresses beyond %d bytes", min(maxSize, maxSizeless))
			}
			return nil, frameErr(ErrBadCompression, err, "zstd")
		}
		if len(out) == 0 {
			return nil, frameErr(ErrMalformed, nil, "empty payload")
		}
		return out, nil
	case h.FrameContentSize > uint64(maxSize):
		return nil, frameErr(ErrTooLarge, nil, "decompressed payload of %d bytes exceeds the limit of %d", h.FrameContentSize, maxSize)
	case h.FrameContentSize == 0:
		return nil, frameErr(ErrMalformed, nil, "empty payload")
	}
	want := int(h.FrameContentSize)
	if reserve != nil {
		if err := reserve(want); err != nil {
			return nil, err
		}
	}
	out, err := zstdDecoder().DecodeAll(p, make([]byte, 0, want))
	if err != nil {
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return nil, frameErr(ErrTooLarge, err, "decompressed payload exceeds its declared %d bytes", want)
		}
		return nil, frameErr(ErrBadCompression, err, "zstd")
	}
	if len(out) != want {
		return nil, frameErr(ErrBadCompression, nil, "decompressed %d bytes, zstd frame declared %d", len(out), want)
	}
	return out, nil
}

// The zstd encoder and decoder are shared by every frame of the process.
// Both are safe for concurrent EncodeAll/DecodeAll, start no goroutines,
// keep nothing from one call to the next that a caller could observe, and
// cost hundreds of kilobytes to build, so they are built once, on first use.
var (
	zstdEncoder        = sync.OnceValue(func() *zstd.Encoder { return newZstdEncoder(zstd.SpeedDefault) })
	zstdFastestEncoder = sync.OnceValue(func() *zstd.Encoder { return newZstdEncoder(zstd.SpeedFastest) })
	zstdBestEncoder    = sync.OnceValue(func() *zstd.Encoder { return newZstdEncoder(zstd.SpeedBestCompression) })
	zstdDecoder        = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			// DecodeAll writes no further than cap(dst): this is
			// what bounds a zip bomb (see decompress).
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(fmt.Sprintf("wire: zstd decoder with constant options: %v", err)) // programming error
		}
		return d
	})
)

func newZstdEncoder(level zstd.EncoderLevel) *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		panic(fmt.Sprintf("wire: zstd encoder with constant options: %v", err)) // programming error
	}
	return e
}

// scratchPool recycles encode buffers. Buffers that grew past
// maxPooledScratch are dropped so one huge batch does not pin its memory.
var scratchPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledScratch = 1 << 20

func getScratch() *bytes.Buffer { return scratchPool.Get().(*bytes.Buffer) }

func putScratch(b *bytes.Buffer) {
	if b.Cap() > maxPooledScratch {
		return
	}
	b.Reset()
	scratchPool.Put(b)
}

package wire

import (
	"fmt"
	"strconv"
)

// Reason classifies why a frame or a message was refused. Every Reason is
// itself an error, so callers match a refusal with errors.Is:
//
//	if errors.Is(err, wire.ErrUnknownVersion) { ... }
//
// and get the details (the version seen, the cause) with errors.As on a
// *FrameError. Reasons are stable: their String forms are metric labels.
type Reason uint8

// The reasons a frame or message is refused. The zero Reason is not used.
const (
	// ErrTruncated means the stream ended inside a frame (or before one).
	ErrTruncated Reason = iota + 1
	// ErrBadMagic means the first two bytes are not "TL": the peer does
	// not speak this protocol at all.
	ErrBadMagic
	// ErrUnknownVersion means the frame or the message carries a protocol
	// version this node does not speak. FrameError.Version holds it.
	ErrUnknownVersion
	// ErrUnknownKind means the kind byte names no message this version
	// defines.
	ErrUnknownKind
	// ErrWrongKind means a known message arrived where another was
	// expected (an Ack sent to a server, a Batch decoded as an Ack).
	ErrWrongKind
	// ErrTooLarge means the payload, compressed or decompressed, is
	// larger than the receiver's maximum frame size.
	ErrTooLarge
	// ErrBadCompression means a payload flagged as zstd does not
	// decompress.
	ErrBadCompression
	// ErrMalformed means the header has unknown flags, or the payload is
	// not a well-formed msgpack message within the decoder's limits.
	ErrMalformed
	// ErrInvalid means the message decoded but breaks a protocol rule
	// (see Batch.Validate and Ack.Validate).
	ErrInvalid

	numReasons = int(ErrInvalid) + 1
)

// Reasons lists every Reason, for exporting counters with all labels
// present from the start.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ErrTruncated; int(r) < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// String returns the reason's short label, e.g. "too_large".
func (r Reason) String() string {
	switch r {
	case ErrTruncated:
		return "truncated"
	case ErrBadMagic:
		return "bad_magic"
	case ErrUnknownVersion:
		return "unknown_version"
	case ErrUnknownKind:
		return "unknown_kind"
	case ErrWrongKind:
		return "wrong_kind"
	case ErrTooLarge:
		return "too_large"
	case ErrBadCompression:
		return "bad_compression"
	case ErrMalformed:
		return "malformed"
	case ErrInvalid:
		return "invalid"
	}
	return "reason_" + strconv.Itoa(int(r))
}

// Error returns the reason as a sentence fragment, e.g. "frame too large".
func (r Reason) Error() string {
	switch r {
	case ErrTruncated:
		return "truncated frame"
	case ErrBadMagic:
		return "bad frame magic"
	case ErrUnknownVersion:
		return "unknown protocol version"
	case ErrUnknownKind:
		return "unknown message kind"
	case ErrWrongKind:
		return "unexpected message kind"
	case ErrTooLarge:
		return "frame too large"
	case ErrBadCompression:
		return "bad compressed payload"
	case ErrMalformed:
		return "malformed message"
	case ErrInvalid:
		return "invalid message"
	}
	return "frame error " + strconv.Itoa(int(r))
}

// FrameError reports a frame or message that cannot be accepted. It is what
// ReadFrame, DecodeBatch, DecodeAck and the Validate methods return, and
// what a server turns into an AckRejected on the offending stream.
type FrameError struct {
	// Reason classifies the error; errors.Is(err, Reason) matches it.
	Reason Reason
	// Version is the protocol version found in the frame header or the
	// message, when Reason is ErrUnknownVersion; otherwise zero.
	Version uint8
	// Detail says what exactly was wrong, for humans.
	Detail string
	// Err is the underlying cause (an io, msgpack or zstd error), if any.
	Err error
}

// Error renders the reason, the detail and the cause, e.g.
// "unknown protocol version: frame has version 2, this node speaks 1".
func (e *FrameError) Error() string {
	s := e.Reason.Error()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the Reason and the cause, so errors.Is matches either.
func (e *FrameError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Err}
}

func frameErr(r Reason, err error, format string, args ...any) *FrameError {
	return &FrameError{Reason: r, Detail: fmt.Sprintf(format, args...), Err: err}
}

func versionErr(where string, v uint8) *FrameError {
	return &FrameError{
		Reason:  ErrUnknownVersion,
		Version: v,
		Detail:  fmt.Sprintf("%s has version %d, this node speaks %d (ALPN %q)", where, v, ProtocolVersion, ALPN),
	}
}

// ConnError reports that the QUIC connection itself failed or could not be
// established: dial and handshake failures (including a certificate the
// peer refused), idle timeouts, the peer closing the connection. The
// connection is unusable; the caller decides when to dial again. Nothing
// sent on it without an Ack may be assumed delivered.
type ConnError struct {
	// Addr is the remote address.
	Addr string
	// Op is what was being done: "dial", "open stream", "send", "receive".
	Op string
	// Err is the cause, typically a quic-go error.
	Err error
}

// Error renders the operation, address and cause.
func (e *ConnError) Error() string {
	return fmt.Sprintf("wire: %s %s: connection failed: %v", e.Op, e.Addr, e.Err)
}

// Unwrap returns the cause.
func (e *ConnError) Unwrap() error { return e.Err }

// StreamError reports that one exchange failed without an Ack while the
// connection may still be usable: the stream was reset, its deadline or the
// caller's context expired, or the peer answered with something that is not
// a valid Ack. The batch may or may not have been processed; because
// delivery is idempotent, the caller resends it.
type StreamError struct {
	// Seq is the batch's sequence number.
	Seq uint64
	// Op is what was being done: "write", "read ack", "decode ack".
	Op string
	// Err is the cause; errors.Is(err, context.DeadlineExceeded) and
	// errors.As(err, **FrameError) see through it.
	Err error
}

// Error renders the operation, the batch and the cause.
func (e *StreamError) Error() string {
	return fmt.Sprintf("wire: batch %d: %s: %v", e.Seq, e.Op, e.Err)
}

// Unwrap returns the cause.
func (e *StreamError) Unwrap() error { return e.Err }

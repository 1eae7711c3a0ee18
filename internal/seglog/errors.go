package seglog

import (
	"errors"
	"fmt"
)

var (
	// ErrFull is returned by Append when the records would take the log's
	// on-disk size beyond Options.MaxBytes. Nothing is written; the caller
	// may retry after Release has freed space.
	ErrFull = errors.New("seglog: log full")

	// ErrTooLarge is returned by Append for a record longer than
	// Options.MaxRecordSize, or for an append that could not fit within
	// Options.MaxBytes even in an empty log (retrying can never succeed).
	ErrTooLarge = errors.New("seglog: record too large")

	// ErrEmptyRecord is returned by Append for a zero-length record.
	ErrEmptyRecord = errors.New("seglog: empty record")

	// ErrClosed is returned by operations on a closed Log.
	ErrClosed = errors.New("seglog: log closed")

	// ErrBroken is returned by writes after a write or fsync failed in a
	// way that leaves the on-disk state unknown. Close and reopen the Log.
	ErrBroken = errors.New("seglog: log broken by an earlier I/O error")

	// ErrFormat is returned by Open for a directory written by a format
	// version this build does not read (see FormatVersion).
	ErrFormat = errors.New("seglog: unknown log format version")

	// ErrLocked is returned by Open when another Log (in this process or
	// another) has the directory open.
	ErrLocked = errors.New("seglog: directory locked by another log")

	// ErrReleased is returned when reading from a position whose segment
	// has been released (a position before Start).
	ErrReleased = errors.New("seglog: position released")

	// ErrOutOfRange is returned for a position beyond End.
	ErrOutOfRange = errors.New("seglog: position beyond end of log")

	// ErrCorrupt matches every *CorruptError with errors.Is.
	ErrCorrupt = errors.New("seglog: corrupt log")
)

// CorruptError describes damaged or inconsistent data in a segment file.
// Open returns it for damage in any segment but the newest; for the newest
// segment the damaged tail is truncated instead and the CorruptError is
// reported in Recovery.Cause.
type CorruptError struct {
	// Segment is the path of the segment file.
	Segment string
	// Offset is the byte offset within the segment file where the first
	// bad record starts.
	Offset int64
	// Pos is the logical position of that record.
	Pos Pos
	// Reason says what is wrong, e.g. "checksum mismatch".
	Reason string
}

// Error implements error.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("seglog: corrupt segment %q at offset %d (position %d): %s",
		e.Segment, e.Offset, e.Pos, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true for every *CorruptError.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Recovery reports what Open removed from the tail of the newest segment.
type Recovery struct {
	// Dropped is the number of bytes truncated away; zero when the log was
	// clean.
	Dropped int64
	// Cause describes the first bad record; nil when Dropped is zero.
	Cause *CorruptError
}

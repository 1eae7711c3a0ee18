// Package seglog is a durable, segmented, append-only record log.
//
// It backs the agent's event journal, the agent's outbound spool and the
// aggregator's write-ahead log: anything that must survive a crash and be
// replayed in order.
//
// # Layout
//
// A log is a directory of segment files plus a lock file:
//
//	<dir>/seglog.lock                 flock(2)ed while a Log has the directory open
//	<dir>/seglog.format               "seglog 1": the format version (FormatVersion)
//	<dir>/00000000000000000000.seg    records at positions [0, 67108871)
//	<dir>/00000000000067108871.seg    records from 67108871 on (the active segment)
//
// A segment is named by the zero-padded logical position (Pos) of its first
// byte. Positions are byte offsets into the concatenation of all segments
// ever written, so they grow for the life of the directory: releasing old
// segments never resets them, because the newest (active) segment is never
// released and its name carries the position forward. Other files in the
// directory are ignored, so a user such as the spool may keep its own state
// beside the segments.
//
// # Records
//
// Each record is framed as
//
//	+----------------+----------------------+-----------------+
//	| length  uint32 | CRC-32C(payload) u32 | payload (length)|
//	+----------------+----------------------+-----------------+
//
// both integers big-endian, CRC-32 with the Castagnoli polynomial. Empty
// records are rejected so that a zero-filled tail (what some file systems
// leave after a power loss) never parses as valid records.
//
// # Durability
//
// Append hands all its records to the kernel with one write(2). Once Append
// returns, the records survive the process being killed (kill -9, panic,
// OOM): they are in the page cache and the kernel writes them out. Only Sync
// (fsync) makes them survive a power loss or kernel crash; when to call it is
// the caller's policy. A write that was cut short by a crash leaves a torn
// record at the end of the newest segment, which Open truncates away and
// reports through Recovered. Damage anywhere else is never repaired silently:
// Open fails with a *CorruptError naming the file and offset.
//
// All records of one Append land in the same segment (Append rolls to a new
// segment first if they do not fit in the active one), which lets callers
// treat one Append as one unit when they reason about what a crash can cut.
//
// After a failed write that could not be undone, or a failed fsync, the Log
// refuses further writes with ErrBroken: the kernel may have dropped dirty
// pages, and only reopening (which re-reads what is really on disk) tells
// what survived.
package seglog

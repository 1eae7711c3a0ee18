// Package source is the contract between the agent's event sources and
// the collector that makes their events durable.
//
// Sources are HTTP ingest (POST /v1/events), the browser pixel, report
// imports and webhooks, access-log tailers and log backfills. Each turns
// its input into event.Raw, normalises it with a Context built by Env (so
// every source stamps the same region, checks the same ages and hashes
// visitors alike), and hands the events to a Sink; sources that read
// files also hand over the Position they have read up to. A Sink that
// cannot take events now answers *BusyError, and the source waits and
// offers the same events again (files) or answers 503 (HTTP).
//
// This package holds only the contract: it imports no source and no sink.
package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// Sink takes accepted events. Accept must make them durable (journal)
// before it returns nil, must be safe for concurrent use, and must not
// keep or modify events after returning. It returns a *BusyError when it
// cannot take events now; any other error means the events were not
// accepted and the failure is not the client's.
type Sink interface {
	Accept(events []event.Event) error
}

// PositionSink takes events read by a source that can read its input
// again (a file), together with the Position they were read up to.
//
// AcceptAt must make the events and the position durable together (or
// neither), must not keep or modify events after returning, and returns a
// *BusyError when it cannot take them now; the source then waits and
// offers the same events and position again, never skipping them.
// events may be empty: lines without events still move the position.
// Positions returns the last position accepted for every source,
// including those accepted before a restart.
type PositionSink interface {
	AcceptAt(events []event.Event, pos Position) error
	Positions() map[string]Position
}

// BusyError tells a source to come back later: HTTP sources answer 503
// with Retry-After, file sources pause and offer the same events again.
type BusyError struct {
	// Cause is a short stable label for metrics ("spool_full",
	// "journal_full", "rollup_full", "bytes_in_flight").
	Cause string
	// Reason is the human-readable explanation.
	Reason string
	// RetryAfter is when to try again; 0 means the source's default.
	RetryAfter time.Duration
}

func (e *BusyError) Error() string { return "busy: " + e.Reason }

// Position is how far a source (a tailed file, an imported file) has been
// read. The collector journals it in the same record as the events read
// up to it and commits it with every flush, so after a crash a source
// resumes exactly after the last line whose events are durable: no line
// is lost, none is counted twice.
type Position struct {
	// Source names the reader, e.g. "tail:/var/log/nginx/access.log".
	Source string
	// File identifies the file read (FileID: "dev:inode"), so a reader
	// can tell a rotated file from the one it was reading.
	File string
	// Offset is the byte offset just after the last line consumed.
	Offset int64
}

func (p Position) String() string { return fmt.Sprintf("%s@%s:%d", p.Source, p.File, p.Offset) }

// FileGone reports whether the file a Position names ("kind:path", for
// example "tail:/var/log/nginx/access.log") is gone: nothing is at the
// path, or another file (another FileID) is. A position of a gone file
// can never be resumed, so it may be forgotten.
func FileGone(p Position) bool {
	_, path, ok := strings.Cut(p.Source, ":")
	if !ok || path == "" {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	defer f.Close()
	id, err := FileID(f)
	return err == nil && id != p.File
}

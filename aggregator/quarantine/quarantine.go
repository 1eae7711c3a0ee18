// Package quarantine keeps what storage refused for good, so that one
// refused write never holds back the others, and so that nothing refused
// is lost: an operator fixes the cause (extends the retention policy,
// raises max-values-per-tag) and replays it.
//
// # What is kept
//
// A Record is one series-minute whose point InfluxDB refused: the reason,
// the server's explanation, and every agent's contributions to that
// series-minute as the node held them (cumulative state, as in
// tally_contrib). Contributions, not the refused line: replaying sends
// them back through the merge like a forwarded batch, so they meet
// whatever the node holds of that minute by then, and the merged point
// and contribution points are written again from everything; a stale line
// could overwrite newer data. A series-minute refused again later gets a
// record of its own; replaying both is harmless (versions and unions).
//
// # On disk
//
// One file per record in the quarantine directory (data_dir/quarantine),
// named <unix nanoseconds>-<sequence>.q, written to a temporary file,
// fsynced and renamed, so a crash leaves a whole record or none:
//
//	offset  size  field
//	     0     2  magic "TQ"
//	     2     1  format version, 1 (FormatVersion)
//	     3     4  CRC-32C of the body, big-endian
//	     7     n  body: msgpack of Record
//
// The directory is bounded by MaxBytes; a record that would exceed it is
// refused with ErrFull, and the writer then keeps the series-minute dirty
// (the write-ahead log holds it) rather than drop it. testdata/ pins the
// bytes of format 1.
package quarantine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// FormatVersion is the version of the files Add writes.
const FormatVersion = 1

const (
	magic      = "TQ"
	headerSize = 7
	suffix     = ".q"
	// claimSuffix marks a file a replay has claimed.
	claimSuffix = ".replaying"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFull reports that a record would take the directory beyond MaxBytes.
var ErrFull = errors.New("quarantine full")

// Record is one series-minute storage refused, with everything needed to
// write it again.
type Record struct {
	// Time is when the node set it aside.
	Time time.Time `msgpack:"t"`
	// Node is the node that set it aside.
	Node string `msgpack:"n"`
	// Reason is the refusal's short code (influx.RefusalReason), Error the
	// server's explanation.
	Reason string `msgpack:"r"`
	Error  string `msgpack:"e"`
	// Measurement is the measurement of the refused point, Agent its agent
	// for a tally_contrib point.
	Measurement string `msgpack:"m"`
	Agent       string `msgpack:"a,omitempty"`
	// Series and Minute name the series-minute.
	Series sketch.Series `msgpack:"s"`
	Minute int64         `msgpack:"min"`
	// Contribs are every agent's contributions to the series-minute.
	Contribs []AgentContribs `msgpack:"c"`
}

// AgentContribs are one agent's contributions to the series-minute.
type AgentContribs struct {
	Agent    string              `msgpack:"a"`
	Contribs []wire.Contribution `msgpack:"c"`
}

// Count is the number of events the record holds (the sum of its
// contributions' counts).
func (r *Record) Count() uint64 {
	var n uint64
	for _, ac := range r.Contribs {
		for _, c := range ac.Contribs {
			n += c.State.Count
		}
	}
	return n
}

// maxErrorLen keeps the server's explanation short in every record.
const maxErrorLen = 1024

// Encode returns the file bytes of r.
func Encode(r *Record) ([]byte, error) {
	if len(r.Error) > maxErrorLen {
		r.Error = r.Error[:maxErrorLen]
	}
	body, err := msgpack.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode quarantine record: %w", err)
	}
	out := make([]byte, headerSize, headerSize+len(body))
	copy(out, magic)
	out[2] = FormatVersion
	binary.BigEndian.PutUint32(out[3:], crc32.Checksum(body, castagnoli))
	return append(out, body...), nil
}

// Decode reads the file bytes of a record.
func Decode(b []byte) (*Record, error) {
	if len(b) < headerSize || string(b[:2]) != magic {
		return nil, errors.New("not a quarantine record (no TQ magic)")
	}
	if b[2] != FormatVersion {
		return nil, fmt.Errorf("quarantine record of format %d; this node reads format %d", b[2], FormatVersion)
	}
	body := b[headerSize:]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[3:]) {
		return nil, errors.New("quarantine record damaged: checksum mismatch")
	}
	var r Record
	if err := msgpack.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("quarantine record: %w", err)
	}
	return &r, nil
}

// Dir is a quarantine directory. It is safe for concurrent use; several
// processes may use the same directory (the node adds, a replay command
// claims and removes).
type Dir struct {
	dir      string
	maxBytes int64
	seq      atomic.Uint64
	mu       sync.Mutex // orders Adds, so the size check holds
}

// Open opens (creating if needed) the quarantine directory. maxBytes <= 0
// means no bound.
func Open(dir string, maxBytes int64) (*Dir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open quarantine %q: %w", dir, err)
	}
	return &Dir{dir: dir, maxBytes: maxBytes}, nil
}

// Path is the directory.
func (d *Dir) Path() string { return d.dir }

// Add writes a record durably and returns its file name.
func (d *Dir) Add(r *Record) (string, error) {
	b, err := Encode(r)
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.maxBytes > 0 {
		_, size, err := d.Stats()
		if err != nil {
			return "", err
		}
		if size+int64(len(b)) > d.maxBytes {
			return "", fmt.Errorf("%w: %d bytes held, %d more would pass the bound of %d", ErrFull, size, len(b), d.maxBytes)
		}
	}
	name := fmt.Sprintf("%020d-%06d%s", time.Now().UnixNano(), d.seq.Add(1)%1_000_000, suffix)
	if err := writeAtomic(filepath.Join(d.dir, name), b); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	return name, nil
}

// Entry is one record file.
type Entry struct {
	Name   string
	Size   int64
	Record *Record
	// Err is set when the file could not be read or decoded.
	Err error
}

// List returns every record, oldest first (claimed ones excluded).
func (d *Dir) List() ([]Entry, error) {
	names, err := d.names()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, n := range names {
		e := Entry{Name: n}
		b, err := os.ReadFile(filepath.Join(d.dir, n))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // claimed or removed meanwhile
		case err != nil:
			e.Err = err
		default:
			e.Size = int64(len(b))
			e.Record, e.Err = Decode(b)
		}
		out = append(out, e)
	}
	return out, nil
}

func (d *Dir) names() ([]string, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("list quarantine %q: %w", d.dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), suffix) {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// Stats returns how many records the directory holds and their bytes
// (claimed ones included: they are still on disk).
func (d *Dir) Stats() (records int, bytes int64, err error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return 0, 0, fmt.Errorf("quarantine %q: %w", d.dir, err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !(strings.HasSuffix(e.Name(), suffix) || strings.HasSuffix(e.Name(), suffix+claimSuffix)) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		records++
		bytes += info.Size()
	}
	return records, bytes, nil
}

// Claim renames a record so that no other replay takes it, and returns
// the claimed name. Give it back with Unclaim, or Remove it once it is
// replayed.
func (d *Dir) Claim(name string) (string, error) {
	claimed := name + claimSuffix
	if err := os.Rename(filepath.Join(d.dir, name), filepath.Join(d.dir, claimed)); err != nil {
		return "", fmt.Errorf("claim %s: %w", name, err)
	}
	return claimed, nil
}

// Unclaim gives a claimed record back.
func (d *Dir) Unclaim(claimed string) error {
	name, ok := strings.CutSuffix(claimed, claimSuffix)
	if !ok {
		return fmt.Errorf("unclaim %s: not a claimed record", claimed)
	}
	return os.Rename(filepath.Join(d.dir, claimed), filepath.Join(d.dir, name))
}

// Remove deletes a (claimed) record for good.
func (d *Dir) Remove(name string) error {
	if err := os.Remove(filepath.Join(d.dir, name)); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return syncDir(d.dir)
}

// RecoverClaims gives back the records a replay claimed and never
// finished (it was killed): call it when no replay runs.
func (d *Dir) RecoverClaims() (int, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), suffix+claimSuffix) {
			if err := d.Unclaim(e.Name()); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// writeAtomic writes b to path through a temporary file, fsynced, renamed
// and the directory fsynced.
func writeAtomic(path string, b []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Sender hands one agent's contributions to a node and returns nil once
// the node acknowledged them as durable (a forward with ALPN tally-fwd/1).
type Sender func(ctx context.Context, agent string, cs []wire.Contribution) error

// Replay sends every record back through a node: it claims the record
// (so no other replay takes it), sends each agent's contributions, and
// removes the record once the node acknowledged all of them; a record
// that fails is given back for the next replay. report, if set, is called
// for every record with its outcome. A record the node sets aside again
// (the cause is not fixed) comes back as a new record.
func (d *Dir) Replay(ctx context.Context, send Sender, report func(e Entry, err error)) (replayed, failed int, err error) {
	entries, err := d.List()
	if err != nil {
		return 0, 0, err
	}
	for _, e := range entries {
		if ctx.Err() != nil {
			return replayed, failed, ctx.Err()
		}
		rerr := e.Err
		if rerr == nil {
			rerr = d.replayOne(ctx, e, send)
		}
		if rerr != nil {
			failed++
		} else {
			replayed++
		}
		if report != nil {
			report(e, rerr)
		}
	}
	return replayed, failed, nil
}

func (d *Dir) replayOne(ctx context.Context, e Entry, send Sender) error {
	claimed, err := d.Claim(e.Name)
	if err != nil {
		return err
	}
	for _, ac := range e.Record.Contribs {
		if len(ac.Contribs) == 0 {
			continue
		}
		if err := send(ctx, ac.Agent, ac.Contribs); err != nil {
			if uerr := d.Unclaim(claimed); uerr != nil {
				return errors.Join(err, uerr)
			}
			return err
		}
	}
	return d.Remove(claimed)
}

// Package deadletter keeps the batches an aggregator refused for good
// (wire.RejectMalformed), so they neither block the batches behind them
// in the spool nor vanish: each is written to its own file, fsynced,
// within a bound of files and bytes, and can be listed and replayed into
// the spool once the cause is fixed (tally-agent dead-letters list|replay).
//
// # Files
//
// A dead letter is <dir>/<spool>-<seq>.dl, where spool names the spool it
// came from ("live" or "import") and seq its sequence number there
// (20 digits). Version 2, written since dead letters had a version:
//
//	"TALLYDL\n" | version u8 (2) | header length u32 | header | payload
//
// The header is JSON (Letter's fields with their json names); the payload
// is the batch as the spool held it. Integers are big-endian. A file is
// written to a temporary name, fsynced, renamed into place and the
// directory fsynced: it is either whole or absent.
//
// Version 1, written before, is <dir>/<seq>.msgpack holding the payload
// alone: its spool, owner and reason are unknown. Both are listed and
// replayed.
package deadletter

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	magic   = "TALLYDL\n"
	version = 2
	// maxHeader bounds the header a reader accepts.
	maxHeader = 64 << 10
	ext       = ".dl"
	extV1     = ".msgpack"
)

var (
	// ErrFull is returned by Put when the letter would exceed MaxBatches
	// or MaxBytes: the batch must stay in the spool.
	ErrFull = errors.New("dead letters: full")
	// ErrCorrupt is a file that is not a dead letter of a known version.
	ErrCorrupt = errors.New("dead letters: not a dead letter file")
)

// Letter describes one dead letter.
type Letter struct {
	// Version is the file format version (1 or 2).
	Version int `json:"-"`
	// Spool is the spool the batch came from: "live", "import", or ""
	// for version 1 files, which did not say.
	Spool string `json:"spool"`
	// Seq is the batch's sequence number in that spool.
	Seq uint64 `json:"seq"`
	// Owner is the node the batch was grouped for.
	Owner string `json:"owner,omitempty"`
	// Agent is the agent that shipped it.
	Agent string `json:"agent,omitempty"`
	// Reason is the aggregator's explanation; Code its classification.
	Reason string `json:"reason,omitempty"`
	Code   string `json:"code,omitempty"`
	// Time is when the batch was refused (version 1: the file's mtime).
	Time time.Time `json:"time"`
	// Path is the file; Size the payload's bytes.
	Path string `json:"-"`
	Size int    `json:"-"`
}

// Config bounds a Store.
type Config struct {
	// Dir holds the files.
	Dir string
	// MaxBatches and MaxBytes bound the files and their payload bytes.
	MaxBatches int
	MaxBytes   int64
}

// Store writes dead letters within the bounds. Safe for concurrent use.
type Store struct {
	cfg Config

	mu    sync.Mutex
	count int
	bytes int64
}

// Open returns a Store over cfg.Dir (created when missing), counting what
// it already holds against the bounds.
func Open(cfg Config) (*Store, error) {
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	letters, err := List(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, count: len(letters)}
	for _, l := range letters {
		s.bytes += int64(l.Size)
	}
	return s, nil
}

// Usage returns the letters held and their payload bytes.
func (s *Store) Usage() (count int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, s.bytes
}

// Full reports whether the store holds as many letters or bytes as it may.
func (s *Store) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count >= s.cfg.MaxBatches || s.bytes >= s.cfg.MaxBytes
}

func fileName(spool string, seq uint64) string {
	return fmt.Sprintf("%s-%020d%s", spool, seq, ext)
}

// Put writes l with payload durably. It returns ErrFull (writing nothing)
// beyond the bounds; any other error means the letter may not be on disk,
// and the batch must stay in the spool.
func (s *Store) Put(l Letter, payload []byte) error {
	if l.Spool == "" || strings.ContainsAny(l.Spool, `/\-.`) {
		return fmt.Errorf("dead letters: bad spool name %q", l.Spool)
	}
	path := filepath.Join(s.cfg.Dir, fileName(l.Spool, l.Seq))
	if _, err := os.Stat(path); err == nil {
		// The same batch refused again (a restart re-sent it before its
		// ack was recorded): the file on disk already holds it.
		return nil
	}
	s.mu.Lock()
	if s.count+1 > s.cfg.MaxBatches || s.bytes+int64(len(payload)) > s.cfg.MaxBytes {
		s.mu.Unlock()
		return ErrFull
	}
	// Count it now, so concurrent Puts cannot overshoot; give it back on
	// failure.
	s.count++
	s.bytes += int64(len(payload))
	s.mu.Unlock()
	if err := s.write(l, payload); err != nil {
		s.mu.Lock()
		s.count--
		s.bytes -= int64(len(payload))
		s.mu.Unlock()
		return err
	}
	return nil
}

func (s *Store) write(l Letter, payload []byte) error {
	b, err := Encode(l, payload)
	if err != nil {
		return err
	}
	path := filepath.Join(s.cfg.Dir, fileName(l.Spool, l.Seq))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(s.cfg.Dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dead letters: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Remove deletes a letter (after it was replayed) and gives its room back.
func (s *Store) Remove(l Letter) error {
	if err := os.Remove(l.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dead letters: %w", err)
	}
	s.mu.Lock()
	s.count = max(s.count-1, 0)
	s.bytes = max(s.bytes-int64(l.Size), 0)
	s.mu.Unlock()
	return syncDir(s.cfg.Dir)
}

// Encode renders a version 2 dead letter file.
func Encode(l Letter, payload []byte) ([]byte, error) {
	hdr, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	b := make([]byte, 0, len(magic)+1+4+len(hdr)+len(payload))
	b = append(b, magic...)
	b = append(b, version)
	b = binary.BigEndian.AppendUint32(b, uint32(len(hdr)))
	b = append(b, hdr...)
	return append(b, payload...), nil
}

// Decode parses a version 2 dead letter file.
func Decode(b []byte) (Letter, []byte, error) {
	var l Letter
	if !bytes.HasPrefix(b, []byte(magic)) || len(b) < len(magic)+5 {
		return l, nil, ErrCorrupt
	}
	b = b[len(magic):]
	if v := int(b[0]); v != version {
		return l, nil, fmt.Errorf("%w: version %d, this build reads %d", ErrCorrupt, v, version)
	}
	n := binary.BigEndian.Uint32(b[1:])
	b = b[5:]
	if n > maxHeader || uint64(n) > uint64(len(b)) {
		return l, nil, fmt.Errorf("%w: header of %d bytes", ErrCorrupt, n)
	}
	dec := json.NewDecoder(bytes.NewReader(b[:n]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return l, nil, fmt.Errorf("%w: header: %w", ErrCorrupt, err)
	}
	l.Version = version
	return l, b[n:], nil
}

// Read reads the dead letter at path, of either version.
func Read(path string) (Letter, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Letter{}, nil, err
	}
	name := filepath.Base(path)
	if strings.HasSuffix(name, extV1) {
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, extV1), 10, 64)
		if err != nil {
			return Letter{}, nil, fmt.Errorf("%w: %s", ErrCorrupt, name)
		}
		l := Letter{Version: 1, Seq: seq, Path: path, Size: len(b)}
		if st, err := os.Stat(path); err == nil {
			l.Time = st.ModTime().UTC()
		}
		return l, b, nil
	}
	l, payload, err := Decode(b)
	if err != nil {
		return l, nil, fmt.Errorf("%s: %w", name, err)
	}
	l.Path, l.Size = path, len(payload)
	return l, payload, nil
}

// List returns the letters in dir, oldest first (by spool, then seq). A
// missing directory holds none.
func List(dir string) ([]Letter, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	var out []Letter
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ext) || strings.HasSuffix(name, extV1)) {
			continue
		}
		l, _, err := Read(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Letter) int {
		if c := strings.Compare(a.Spool, b.Spool); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	return out, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("dead letters: sync %s: %w", dir, err)
	}
	return nil
}

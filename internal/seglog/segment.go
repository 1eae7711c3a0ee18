package seglog

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

// HeaderSize is the number of framing bytes before each record's payload
// (length and checksum). A record of n payload bytes occupies HeaderSize+n
// positions, so the record that ends at position p with payload rec starts
// at p - HeaderSize - len(rec).
const HeaderSize = 8

const (
	segSuffix  = ".seg"
	segNameLen = 20 // digits of the zero-padded base position
	lockName   = "seglog.lock"
)

// castagnoli is read-only after package initialisation.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// segment is one segment file. The file handle is shared by the Log and by
// readers and closed when the last reference is dropped, so a reader never
// sees its file closed under it, even when the segment is released.
type segment struct {
	base Pos
	path string
	f    *os.File
	// size is the number of valid bytes. It is written only while holding
	// both Log.wmu and Log.mu, so either lock suffices to read it.
	size int64
	refs atomic.Int32
}

func newSegment(base Pos, path string, f *os.File, size int64) *segment {
	s := &segment{base: base, path: path, f: f, size: size}
	s.refs.Store(1) // the Log's own reference
	return s
}

func (s *segment) ref() { s.refs.Add(1) }

func (s *segment) unref() {
	if s.refs.Add(-1) == 0 {
		// Data was fsynced (or deliberately not) before the last
		// reference went away; a close error tells us nothing more.
		_ = s.f.Close()
	}
}

func segmentName(base Pos) string {
	return fmt.Sprintf("%0*d%s", segNameLen, uint64(base), segSuffix)
}

// parseSegmentName returns the base position of a segment file name.
func parseSegmentName(name string) (Pos, bool) {
	digits, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(digits) != segNameLen {
		return 0, false
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return Pos(v), true
}

// listSegments returns the base positions of the segment files in dir in
// ascending order.
func listSegments(dir string) ([]Pos, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var bases []Pos
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if b, ok := parseSegmentName(e.Name()); ok {
			bases = append(bases, b) // ReadDir sorts by name = by base
		}
	}
	return bases, nil
}

// scanSegment verifies the records of a segment file of the given size and
// returns the length of its valid prefix. bad is non-nil when the file has
// bytes beyond that prefix. err is an I/O error.
func scanSegment(f *os.File, path string, base Pos, size int64) (valid int64, bad *CorruptError, err error) {
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	var hdr [HeaderSize]byte
	var payload []byte
	corrupt := func(reason string) *CorruptError {
		return &CorruptError{Segment: path, Offset: valid, Pos: base + Pos(valid), Reason: reason}
	}
	for valid < size {
		rest := size - valid
		if rest < HeaderSize {
			return valid, corrupt(fmt.Sprintf("partial header (%d of %d bytes)", rest, HeaderSize)), nil
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return valid, nil, err
		}
		n := int64(binary.BigEndian.Uint32(hdr[0:4]))
		sum := binary.BigEndian.Uint32(hdr[4:8])
		if n == 0 {
			return valid, corrupt("zero record length"), nil
		}
		if n > rest-HeaderSize {
			return valid, corrupt(fmt.Sprintf("partial payload (%d of %d bytes)", rest-HeaderSize, n)), nil
		}
		// n is bounded by the file size, so a damaged length cannot make
		// us allocate more than the file holds.
		if int64(cap(payload)) < n {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return valid, nil, err
		}
		if checksum(payload) != sum {
			return valid, corrupt("checksum mismatch"), nil
		}
		valid += HeaderSize + n
	}
	return valid, nil, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func segPath(dir string, base Pos) string { return filepath.Join(dir, segmentName(base)) }

package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// FormatVersion is the version of the archive layout, manifest and
// Parquet schema this build writes. A reader refuses a manifest of a
// version it does not know rather than guess.
const FormatVersion = 1

// FormatName is the manifest's "format" value.
const FormatName = "tally-archive"

// MaxManifestBytes bounds a manifest read from storage: the store may be
// shared or tampered with, and a manifest is read whole.
const MaxManifestBytes = 1 << 20

// MaxParts bounds the parts of one day a manifest may list.
const MaxParts = 10_000

// Manifest describes one exported day. It is written last, after every
// part is uploaded, read back and checked against InfluxDB: a day with a
// manifest is done; a day without one is not (its parts, if any, are
// left-overs of an interrupted export and are replaced by the next).
type Manifest struct {
	// Format and Version identify the layout: FormatName, FormatVersion.
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Day is the UTC day, YYYY-MM-DD; rows cover [Day 00:00, Day+1 00:00).
	Day string `json:"day"`
	// ExportedAt and ExportedBy say when and by which node (or "cli").
	ExportedAt time.Time `json:"exported_at"`
	ExportedBy string    `json:"exported_by"`
	// SketchEncoding is the sketch encoding of every row (the rows carry
	// it too).
	SketchEncoding int `json:"sketch_encoding"`
	// Campaigns is the number of distinct campaigns of the day.
	Campaigns int `json:"campaigns"`
	// Counters fingerprints every row's counters (see Fingerprint); the
	// day in InfluxDB had the same when the export was checked.
	Counters Fingerprint `json:"counters"`
	// Parts lists the Parquet objects of the day, in order. Rows are
	// sorted by series, then minute, across parts.
	Parts []Part `json:"parts"`
}

// Part is one Parquet object of a day.
type Part struct {
	// Name is the object's name inside the day's directory.
	Name string `json:"name"`
	// Rows, Bytes and SHA256 (hex) describe its contents exactly.
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

var (
	partName = regexp.MustCompile(`^part-[0-9]{5}\.parquet$`)
	sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)
	sumRe    = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// ErrBadManifest reports a manifest that is not one this build can trust.
var ErrBadManifest = errors.New("archive: bad manifest")

// Encode returns the manifest as indented JSON with a final newline.
func (m *Manifest) Encode() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// DecodeManifest parses and checks a manifest: known format and version,
// no unknown fields, a valid day, part names, sizes and checksums.
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadManifest, len(b), MaxManifestBytes)
	}
	var head struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if head.Format != FormatName || head.Version != FormatVersion {
		return nil, fmt.Errorf("%w: format %q version %d; this build reads %q version %d", ErrBadManifest,
			head.Format, head.Version, FormatName, FormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Manifest) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: day %q: %s", ErrBadManifest, m.Day, fmt.Sprintf(format, args...))
	}
	if m.Format != FormatName || m.Version != FormatVersion {
		return bad("format %q version %d", m.Format, m.Version)
	}
	if _, err := ParseDay(m.Day); err != nil {
		return bad("%v", err)
	}
	if m.SketchEncoding < 1 || m.SketchEncoding > SketchEncoding {
		return bad("sketch encoding %d unknown", m.SketchEncoding)
	}
	if len(m.Parts) > MaxParts {
		return bad("%d parts, at most %d", len(m.Parts), MaxParts)
	}
	var rows int64
	for i, p := range m.Parts {
		if !partName.MatchString(p.Name) || p.Name != partObjectName(i) {
			return bad("part %d is named %q, want %q", i, p.Name, partObjectName(i))
		}
		if p.Rows <= 0 || p.Bytes <= 0 || !sha256Re.MatchString(p.SHA256) {
			return bad("part %s: rows %d, bytes %d, sha256 %q", p.Name, p.Rows, p.Bytes, p.SHA256)
		}
		rows += p.Rows
	}
	if rows != m.Counters.Rows {
		return bad("parts hold %d rows, counters say %d", rows, m.Counters.Rows)
	}
	if m.Counters.Rows < 0 || !sumRe.MatchString(m.Counters.Sum) {
		return bad("counters %+v", m.Counters)
	}
	return nil
}

// partObjectName is the name of the i-th part of a day.
func partObjectName(i int) string { return fmt.Sprintf("part-%05d.parquet", i) }

// ParseDay parses a UTC day, YYYY-MM-DD, into its midnight.
func ParseDay(s string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("day %q: want YYYY-MM-DD", s)
	}
	if t.Year() < 2000 || t.Year() > 9999 {
		return time.Time{}, fmt.Errorf("day %q: out of range", s)
	}
	return t, nil
}

package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// Minute is one merged series-minute as the archive reads and restores
// it: the shared record of the merge, storage and the API. The archive
// never changes a Minute's State.
type Minute = sketch.Minute

// Query selects the merged minutes of one campaign, or of every
// campaign, whose start lies in [From, To).
type Query struct {
	// All selects every campaign; otherwise Campaign selects one (""
	// being the campaign of events that had none).
	All      bool
	Campaign string
	From, To time.Time
	// CountersOnly leaves the sketches out (nil Uniques and Values).
	CountersOnly bool
}

// Source reads merged minutes: the aggregator's storage. EachMinute calls
// fn on the caller's goroutine for every minute, in any order, and stops
// at fn's first error, which it returns. It must be safe for concurrent
// use.
type Source interface {
	EachMinute(ctx context.Context, q Query, fn func(Minute) error) error
}

// Sink writes merged minutes back (restore). WriteMinutes blocks until
// they are durable; writing a minute again replaces it.
type Sink interface {
	WriteMinutes(ctx context.Context, minutes []Minute) error
}

// Options configure an Archiver.
type Options struct {
	Store  Store
	Source Source
	// Sink is needed by Restore only.
	Sink Sink
	// Node names the exporter in manifests ("cli" for the command).
	Node string
	// TempDir holds parts while they are written and read back
	// (default: the system's).
	TempDir string
	Logger  *slog.Logger
	// Now is the clock of manifests (default time.Now).
	Now func() time.Time

	// partRows bounds the rows of one part (default partRows); tests
	// lower it to get several parts from little data.
	partRows int64
}

// Archiver exports days to a Store, verifies them and restores them. It
// is safe for concurrent use on different days; two exports of one day
// at once (two nodes that both believe they own it for a moment) write
// the same bytes, so the last one to finish wins harmlessly.
type Archiver struct {
	o   Options
	log *slog.Logger
}

// New returns an Archiver.
func New(o Options) (*Archiver, error) {
	if o.Store == nil || o.Source == nil {
		return nil, errors.New("archive: a store and a source are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Node == "" {
		o.Node = "cli"
	}
	if o.partRows <= 0 {
		o.partRows = partRows
	}
	return &Archiver{o: o, log: o.Logger.With("component", "archive", "store", o.Store.String())}, nil
}

// Layout: one directory per day, hive-style, so query engines read the
// day as a column:
//
//	day=2024-03-01/part-00000.parquet
//	day=2024-03-01/part-00001.parquet
//	day=2024-03-01/_manifest.json
//
// The manifest's leading underscore makes Hive-style engines (Athena,
// Spark, Trino) skip it when they read every object of a partition.

func dayPrefix(day string) string   { return "day=" + day + "/" }
func manifestKey(day string) string { return dayPrefix(day) + "_manifest.json" }

// Outcome says what Export did with a day.
type Outcome string

// Outcomes of Export.
const (
	// Exported: the day was written (first time, changed, or forced).
	Exported Outcome = "exported"
	// Unchanged: the archived day still matches InfluxDB; nothing written.
	Unchanged Outcome = "unchanged"
)

// ExportResult describes one exported day.
type ExportResult struct {
	Day       string
	Outcome   Outcome
	Campaigns int
	Rows      int64
	Parts     int
	// Bytes is the size of the day's Parquet parts.
	Bytes int64
	// Attempts is how many times the day was read: more than one when
	// data arrived for it during the export.
	Attempts int
	Duration time.Duration
}

// maxAttempts bounds how often Export reads a day that keeps changing
// while it is being exported.
const maxAttempts = 3

// ErrChanging reports a day whose minutes kept changing during export.
var ErrChanging = errors.New("archive: the day kept changing during export")

// Export archives one UTC day (day is its midnight). Unless force, a day
// whose manifest's counters still match InfluxDB's is left as it is.
//
// Steps, each a precondition of the next:
//  1. scan the day's counters in InfluxDB (fingerprint, campaigns);
//  2. remove the old manifest, if any: the day is not done while rewritten;
//  3. read each campaign with its sketches, sort, write Parquet parts
//     to temporary files, fingerprinting what is written;
//  4. upload the parts, read each back from the store and check its
//     checksum and that its rows fingerprint alike;
//  5. scan InfluxDB's counters again: equal to what was written means the
//     archive holds the day as InfluxDB does now (otherwise back to 3);
//  6. delete objects of the day that are not in the new set of parts;
//  7. write the manifest.
//
// An interruption anywhere leaves a day without a manifest, which the
// next export writes anew: export is resumable by day and idempotent.
func (a *Archiver) Export(ctx context.Context, day time.Time, force bool) (ExportResult, error) {
	start := time.Now()
	ds := dayString(day)
	res := ExportResult{Day: ds}
	log := a.log.With("day", ds)
	from, to := day.UTC(), day.UTC().Add(24*time.Hour)
	old, err := a.Manifest(ctx, ds)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("the day's manifest is unreadable; exporting the day again", "err", err)
		old = nil
	}
	scan, err := a.scan(ctx, from, to)
	if err != nil {
		return res, err
	}
	if old != nil && !force && old.Counters == scan.fp {
		res.Outcome, res.Rows, res.Campaigns, res.Parts = Unchanged, old.Counters.Rows, old.Campaigns, len(old.Parts)
		for _, p := range old.Parts {
			res.Bytes += p.Bytes
		}
		res.Duration = time.Since(start)
		return res, nil
	}
	if old != nil {
		if err := a.o.Store.Delete(ctx, manifestKey(ds)); err != nil {
			return res, err
		}
	}
	for res.Attempts < maxAttempts {
		res.Attempts++
		parts, written, err := a.writeParts(ctx, ds, from, to, scan.campaigns, log)
		if err != nil {
			return res, err
		}
		now, err := a.scan(ctx, from, to)
		if err != nil {
			return res, err
		}
		if now.fp != written {
			log.Info("the day changed while it was exported; reading it again", "attempt", res.Attempts,
				"written_rows", written.Rows, "now_rows", now.fp.Rows)
			scan = now
			continue
		}
		if err := a.removeStale(ctx, ds, parts); err != nil {
			return res, err
		}
		m := &Manifest{Format: FormatName, Version: FormatVersion, Day: ds, ExportedAt: a.o.Now().UTC().Truncate(time.Second),
			ExportedBy: a.o.Node, SketchEncoding: SketchEncoding, Campaigns: len(scan.campaigns), Counters: written, Parts: parts}
		b, err := m.Encode()
		if err != nil {
			return res, err
		}
		if err := a.o.Store.Put(ctx, manifestKey(ds), strings.NewReader(string(b)), int64(len(b))); err != nil {
			return res, err
		}
		res.Outcome, res.Rows, res.Campaigns, res.Parts = Exported, written.Rows, len(scan.campaigns), len(parts)
		for _, p := range parts {
			res.Bytes += p.Bytes
		}
		res.Duration = time.Since(start)
		log.Info("day archived", "rows", res.Rows, "campaigns", res.Campaigns, "parts", res.Parts, "bytes", res.Bytes,
			"attempts", res.Attempts, "took", res.Duration.Round(time.Millisecond))
		return res, nil
	}
	return res, fmt.Errorf("%w: %s after %d attempts", ErrChanging, ds, maxAttempts)
}

// dayScan is the counters of a day in the source.
type dayScan struct {
	fp        Fingerprint
	campaigns []string
}

// scan reads the counters of every minute of [from, to).
func (a *Archiver) scan(ctx context.Context, from, to time.Time) (dayScan, error) {
	var (
		fp    fingerprinter
		camps = map[string]bool{}
	)
	err := a.o.Source.EachMinute(ctx, Query{All: true, From: from, To: to, CountersOnly: true}, func(m Minute) error {
		r, err := toRow(Minute{Series: m.Series, Minute: m.Minute, State: countersOf(m.State)})
		if err != nil {
			return err
		}
		fp.add(&r)
		camps[m.Series.Campaign] = true
		return nil
	})
	if err != nil {
		return dayScan{}, fmt.Errorf("archive: scan %s: %w", dayString(from), err)
	}
	out := dayScan{fp: fp.result()}
	for c := range camps {
		out.campaigns = append(out.campaigns, c)
	}
	slices.Sort(out.campaigns)
	return out, nil
}

// countersOf is st without sketches.
func countersOf(st *sketch.State) *sketch.State {
	if st == nil {
		return &sketch.State{}
	}
	return &sketch.State{Count: st.Count, ValueMicros: st.ValueMicros, CostMicros: st.CostMicros, Bots: st.Bots, Votes: st.Votes}
}

// readCampaign reads one campaign's minutes of [from, to) as sorted rows.
func (a *Archiver) readCampaign(ctx context.Context, campaign string, from, to time.Time) ([]Row, error) {
	var rows []Row
	err := a.o.Source.EachMinute(ctx, Query{Campaign: campaign, From: from, To: to}, func(m Minute) error {
		r, err := toRow(m)
		if err != nil {
			return err
		}
		rows = append(rows, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("archive: read campaign %q of %s: %w", campaign, dayString(from), err)
	}
	slices.SortFunc(rows, func(x, y Row) int { return compareRows(&x, &y) })
	for i := 1; i < len(rows); i++ {
		if compareRows(&rows[i-1], &rows[i]) == 0 {
			return nil, fmt.Errorf("archive: campaign %q: two points for %s minute %d", campaign, rows[i].series(), rows[i].Minute/1000)
		}
	}
	return rows, nil
}

// localPart is a part written to a temporary file.
type localPart struct {
	path string
	Part
}

// writeParts writes, uploads and reads back the day's parts, and returns
// them with the fingerprint of the rows written.
func (a *Archiver) writeParts(ctx context.Context, ds string, from, to time.Time, campaigns []string, log *slog.Logger) ([]Part, Fingerprint, error) {
	tmp, err := os.MkdirTemp(a.o.TempDir, "tally-archive-"+ds+"-")
	if err != nil {
		return nil, Fingerprint{}, fmt.Errorf("archive: temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	var (
		fp    fingerprinter
		parts []localPart
		cur   *partWriter
		file  *os.File
		hash  = sha256.New()
	)
	closePart := func() error {
		if cur == nil {
			return nil
		}
		err := cur.close()
		if err == nil {
			err = file.Sync()
		}
		info, serr := file.Stat()
		if cerr := file.Close(); err == nil {
			err = errors.Join(serr, cerr)
		}
		if err != nil {
			return err
		}
		p := &parts[len(parts)-1]
		p.Rows, p.Bytes, p.SHA256 = cur.rows, info.Size(), hex.EncodeToString(hash.Sum(nil))
		cur = nil
		return nil
	}
	openPart := func() error {
		name := partObjectName(len(parts))
		f, err := os.Create(tmp + "/" + name)
		if err != nil {
			return err
		}
		hash.Reset()
		file, cur = f, newPartWriter(io.MultiWriter(f, hash), ds)
		parts = append(parts, localPart{path: f.Name(), Part: Part{Name: name}})
		return nil
	}
	defer func() {
		if file != nil {
			file.Close()
		}
	}()
	for i, c := range campaigns {
		rows, err := a.readCampaign(ctx, c, from, to)
		if err != nil {
			return nil, Fingerprint{}, err
		}
		for len(rows) > 0 {
			if cur == nil {
				if err := openPart(); err != nil {
					return nil, Fingerprint{}, err
				}
			}
			n := min(len(rows), int(a.o.partRows-cur.rows))
			for j := range rows[:n] {
				fp.add(&rows[j])
			}
			if err := cur.write(rows[:n]); err != nil {
				return nil, Fingerprint{}, err
			}
			rows = rows[n:]
			if cur.rows >= a.o.partRows {
				if err := closePart(); err != nil {
					return nil, Fingerprint{}, err
				}
			}
		}
		log.Debug("campaign written", "campaign", c, "n", i+1, "of", len(campaigns))
	}
	if err := closePart(); err != nil {
		return nil, Fingerprint{}, err
	}
	written := fp.result()

	// Upload, then read every part back from the store.
	var back fingerprinter
	out := make([]Part, len(parts))
	for i, p := range parts {
		if err := a.upload(ctx, dayPrefix(ds)+p.Name, p.path, p.Bytes); err != nil {
			return nil, Fingerprint{}, err
		}
		if err := a.readPart(ctx, ds, p.Part, tmp, func(r *Row) error { back.add(r); return nil }); err != nil {
			return nil, Fingerprint{}, fmt.Errorf("archive: reading back %s: %w", p.Name, err)
		}
		out[i] = p.Part
	}
	if got := back.result(); got != written {
		return nil, Fingerprint{}, fmt.Errorf("archive: %s read back from the store holds %+v, written %+v", ds, got, written)
	}
	return out, written, nil
}

func (a *Archiver) upload(ctx context.Context, key, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return a.o.Store.Put(ctx, key, f, size)
}

// ErrDamaged reports an archived object that does not match its manifest.
var ErrDamaged = errors.New("archive: object does not match its manifest")

// readPart downloads one part into dir, checks its size and checksum
// against p, and hands every row to fn.
func (a *Archiver) readPart(ctx context.Context, ds string, p Part, dir string, fn func(*Row) error) error {
	rc, err := a.o.Store.Get(ctx, dayPrefix(ds)+p.Name)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, "read-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	// One byte more than expected tells a longer object from the right one.
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rc, p.Bytes+1))
	if err != nil {
		return err
	}
	if n != p.Bytes || hex.EncodeToString(h.Sum(nil)) != p.SHA256 {
		return fmt.Errorf("%w: %s%s: %d bytes, sha256 %x; manifest: %d bytes, %s", ErrDamaged, dayPrefix(ds), p.Name,
			n, h.Sum(nil), p.Bytes, p.SHA256)
	}
	var rows int64
	err = eachRow(f, n, func(r *Row) error {
		rows++
		if d := dayString(time.UnixMilli(r.Minute)); d != ds {
			return fmt.Errorf("%w: %s has a row of %s", ErrDamaged, p.Name, d)
		}
		return fn(r)
	})
	if err != nil {
		return err
	}
	if rows != p.Rows {
		return fmt.Errorf("%w: %s holds %d rows, manifest says %d", ErrDamaged, p.Name, rows, p.Rows)
	}
	return nil
}

// removeStale deletes the objects of a day that are neither one of parts
// nor the manifest: parts of an earlier, larger export, which query
// engines would otherwise read too.
func (a *Archiver) removeStale(ctx context.Context, ds string, parts []Part) error {
	keys, err := a.o.Store.List(ctx, dayPrefix(ds))
	if err != nil {
		return err
	}
	keep := map[string]bool{manifestKey(ds): true}
	for _, p := range parts {
		keep[dayPrefix(ds)+p.Name] = true
	}
	for _, k := range keys {
		if !keep[k] {
			if err := a.o.Store.Delete(ctx, k); err != nil {
				return err
			}
			a.log.Info("removed a stale object", "key", k)
		}
	}
	return nil
}

// Manifest reads the manifest of a day; a day without one gives an
// error wrapping fs.ErrNotExist.
func (a *Archiver) Manifest(ctx context.Context, day string) (*Manifest, error) {
	rc, err := a.o.Store.Get(ctx, manifestKey(day))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifestBytes+1))
	if err != nil {
		return nil, err
	}
	m, err := DecodeManifest(b)
	if err != nil {
		return nil, err
	}
	if m.Day != day {
		return nil, fmt.Errorf("%w: manifest of %s names day %s", ErrBadManifest, day, m.Day)
	}
	return m, nil
}

// Days lists the archived days (those with a manifest object), sorted.
func (a *Archiver) Days(ctx context.Context) ([]string, error) {
	keys, err := a.o.Store.List(ctx, "")
	if err != nil {
		return nil, err
	}
	var days []string
	for _, k := range keys {
		d, ok := strings.CutPrefix(k, "day=")
		if !ok {
			continue
		}
		if d, ok = strings.CutSuffix(d, "/_manifest.json"); ok {
			if _, err := ParseDay(d); err == nil {
				days = append(days, d)
			}
		}
	}
	return days, nil
}

package archive

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/axiomhq/hyperloglog"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/tally-edge/tally/sketch"
)

// SketchEncoding is the version of the sketch bytes this build writes in
// the sketch_encoding column; readers decode each row by its own version.
//
//	1: hll is the HyperLogLog library's binary encoding at precision 14
//	   (sketch.DecodeHLL), with its sparse buffer flushed so that equal
//	   sketches give equal bytes; quantiles is the DDSketch encoding
//	   without its index mapping at 1 % relative accuracy
//	   (sketch.DecodeQuantiles). Both are what sketch.State.Encode gives.
//	2: the compact encodings InfluxDB stores since the first release:
//	   hll is sketch.AppendStoredHLL's (version byte 0x10, the non-zero
//	   registers Rice-coded; canonical), quantiles is
//	   sketch.AppendStoredQuantiles' (version byte 0x20, then encoding 1's
//	   bytes). Read with sketch.DecodeStoredHLL and
//	   sketch.DecodeStoredQuantiles.
//
// A new encoding adds a version here and a case in decodeSketches; files
// already written keep theirs.
const SketchEncoding = 2

// Row is one merged series-minute in a Parquet part: the file's schema.
// Column names, types and order are the archive format; change them only
// with a new FormatVersion.
type Row struct {
	// Minute is the start of the minute (UTC).
	Minute   int64  `parquet:"minute,timestamp(millisecond)"`
	Campaign string `parquet:"campaign,dict"`
	Source   string `parquet:"source,dict"`
	Medium   string `parquet:"medium,dict"`
	Type     string `parquet:"type,dict"`
	Country  string `parquet:"country,dict"`
	Device   string `parquet:"device,dict"`
	Region   string `parquet:"region,dict"`
	// Events is the number of non-bot events (InfluxDB field count).
	Events int64 `parquet:"events"`
	// ValueMicros and CostMicros are the exact sums in millionths.
	ValueMicros int64 `parquet:"value_micros"`
	CostMicros  int64 `parquet:"cost_micros"`
	// Bots is the number of bot events filtered, all reasons.
	Bots         int64       `parquet:"bots"`
	BotsByReason []BotCount  `parquet:"bots_by_reason,list"`
	Votes        []VoteCount `parquet:"votes,list"`
	// Uniques is the HyperLogLog estimate of this row alone. Never sum
	// it across rows: merge the hll column instead.
	Uniques int64 `parquet:"uniques"`
	// SketchEncoding says how to read HLL and Quantiles (see the
	// constant of that name).
	SketchEncoding int32  `parquet:"sketch_encoding"`
	HLL            []byte `parquet:"hll,optional"`
	Quantiles      []byte `parquet:"quantiles,optional"`
}

// BotCount is the bot events of one reason.
type BotCount struct {
	Reason string `parquet:"reason"`
	Events int64  `parquet:"events"`
}

// VoteCount is the votes of one poll answer.
type VoteCount struct {
	Poll   string `parquet:"poll"`
	Answer string `parquet:"answer"`
	Votes  int64  `parquet:"votes"`
}

// Lists, not Parquet maps, hold bots and votes: a Go map would be written
// in random order, and an archive file must be the same bytes every time
// the same minutes are exported.

const (
	// rowGroupRows bounds a row group: the writer buffers one in memory,
	// and a row may carry a 16 KB dense HyperLogLog.
	rowGroupRows = 4096
	// partRows bounds one Parquet object.
	partRows = 500_000
	// createdBy is written into every file instead of the library's
	// default, which names its build and would make files differ by
	// build.
	createdByApp = "tally-aggregator archive"
)

// toRow converts a merged minute into a row. It does not change m.
func toRow(m Minute) (Row, error) {
	st := m.State
	if st == nil {
		st = &sketch.State{}
	}
	if st.Count > 1<<63-1 {
		return Row{}, fmt.Errorf("%s minute %d: count %d overflows int64", m.Series, m.Minute, st.Count)
	}
	r := Row{
		Minute:   m.Minute * 1000,
		Campaign: m.Series.Campaign, Source: m.Series.Source, Medium: m.Series.Medium, Type: m.Series.Type,
		Country: m.Series.Country, Device: m.Series.Device, Region: m.Series.Region,
		Events: int64(st.Count), ValueMicros: st.ValueMicros, CostMicros: st.CostMicros,
		SketchEncoding: SketchEncoding,
	}
	for _, reason := range slices.Sorted(maps.Keys(st.Bots)) {
		n := st.Bots[reason]
		if n == 0 {
			continue
		}
		r.BotsByReason = append(r.BotsByReason, BotCount{Reason: reason, Events: int64(n)})
		r.Bots += int64(n)
	}
	for _, key := range slices.Sorted(maps.Keys(st.Votes)) {
		if n := st.Votes[key]; n > 0 {
			poll, answer := sketch.SplitVote(key)
			r.Votes = append(r.Votes, VoteCount{Poll: poll, Answer: answer, Votes: int64(n)})
		}
	}
	hll, quantiles, uniques, err := encodeSketches(st)
	if err != nil {
		return Row{}, fmt.Errorf("%s minute %d: %w", m.Series, m.Minute, err)
	}
	r.HLL, r.Quantiles, r.Uniques = hll, quantiles, int64(uniques)
	return r, nil
}

// ErrBadRow reports a row that cannot be turned back into a minute.
var ErrBadRow = errors.New("archive: bad row")

// toMinute converts a row back into a merged minute, decoding its
// sketches by the row's encoding version.
func toMinute(r Row) (Minute, error) {
	m := Minute{Series: r.series(), Minute: r.Minute / 1000}
	bad := func(format string, args ...any) (Minute, error) {
		return Minute{}, fmt.Errorf("%w: %s minute %d: %s", ErrBadRow, m.Series, m.Minute, fmt.Sprintf(format, args...))
	}
	if r.Minute%60_000 != 0 {
		return bad("time %d ms is not the start of a minute", r.Minute)
	}
	if r.Events < 0 || r.Bots < 0 {
		return bad("negative count")
	}
	st := &sketch.State{Count: uint64(r.Events), ValueMicros: r.ValueMicros, CostMicros: r.CostMicros}
	var bots int64
	for _, b := range r.BotsByReason {
		if b.Events <= 0 {
			return bad("bot reason %q with %d events", b.Reason, b.Events)
		}
		if st.Bots == nil {
			st.Bots = make(map[string]uint64, len(r.BotsByReason))
		}
		st.Bots[b.Reason] += uint64(b.Events)
		bots += b.Events
	}
	if bots != r.Bots {
		return bad("bots %d but %d by reason", r.Bots, bots)
	}
	for _, v := range r.Votes {
		if v.Votes <= 0 {
			return bad("poll %q answer %q with %d votes", v.Poll, v.Answer, v.Votes)
		}
		st.AddVotes(sketch.VoteKey(v.Poll, v.Answer), uint64(v.Votes))
	}
	if err := decodeSketches(r.SketchEncoding, r.HLL, r.Quantiles, st); err != nil {
		return bad("%v", err)
	}
	m.State = st
	return m, nil
}

func (r *Row) series() sketch.Series {
	return sketch.Series{Campaign: r.Campaign, Source: r.Source, Medium: r.Medium, Type: r.Type,
		Country: r.Country, Device: r.Device, Region: r.Region}
}

// encodeSketches returns the sketch bytes of st in SketchEncoding and
// its uniques estimate, the HyperLogLog's registers read once for both.
func encodeSketches(st *sketch.State) (hll, quantiles []byte, uniques uint64, err error) {
	if st.Uniques != nil {
		if hll, uniques, err = sketch.AppendStoredHLLEstimate(nil, st.Uniques); err != nil {
			return nil, nil, 0, fmt.Errorf("encode hll: %w", err)
		}
	} else {
		uniques = st.UniquesEstimate()
	}
	if st.Values != nil && !st.Values.IsEmpty() {
		quantiles = sketch.AppendStoredQuantiles(nil, st.Values)
	}
	return hll, quantiles, uniques, nil
}

// encodeSketchesV1 returns the sketch bytes of st in sketch encoding 1,
// for the tests that keep files of that encoding readable.
func encodeSketchesV1(st *sketch.State) (hll, quantiles []byte, err error) {
	if st.Uniques != nil {
		if hll, err = st.Uniques.MarshalBinary(); err != nil {
			return nil, nil, fmt.Errorf("encode hll: %w", err)
		}
		// A sparse sketch (flag byte 3) keeps recent insertions in a hash
		// set that it encodes in map order. Flushing the set into the
		// sorted sparse list first (what Estimate does, here on a clone)
		// makes the bytes a function of the sketch's contents. A dense
		// sketch's bytes already are.
		if len(hll) > 3 && hll[3] == 1 {
			c := st.Uniques.Clone()
			c.Estimate()
			if hll, err = c.MarshalBinary(); err != nil {
				return nil, nil, fmt.Errorf("encode hll: %w", err)
			}
		}
	}
	if st.Values != nil && !st.Values.IsEmpty() {
		st.Values.Encode(&quantiles, true)
	}
	return hll, quantiles, nil
}

// decodeSketches decodes sketch bytes of the given encoding version into st.
func decodeSketches(version int32, hll, quantiles []byte, st *sketch.State) error {
	switch version {
	case 1:
		e := sketch.Encoded{HLL: hll, Quantiles: quantiles}
		d, err := e.Decode()
		if err != nil {
			return err
		}
		st.Uniques, st.Values = d.Uniques, d.Values
		return nil
	case 2:
		// Only the compact encodings, although the decoders also read
		// the first release's: a row says what its bytes are.
		if len(hll) > 0 && hll[0] != sketch.StoredHLLV1 {
			return fmt.Errorf("hll version byte %#x in sketch encoding 2", hll[0])
		}
		if len(quantiles) > 0 && quantiles[0] != sketch.StoredQuantilesV1 {
			return fmt.Errorf("quantiles version byte %#x in sketch encoding 2", quantiles[0])
		}
		var err error
		if len(hll) > 0 {
			if st.Uniques, err = sketch.DecodeStoredHLL(hll); err != nil {
				return err
			}
		}
		if len(quantiles) > 0 {
			if st.Values, err = sketch.DecodeStoredQuantiles(quantiles); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("sketch encoding %d is unknown to this build (it reads 1 to %d)", version, SketchEncoding)
}

// compareRows orders rows by series, then minute: the order of rows in
// every part.
func compareRows(a, b *Row) int {
	return cmp.Or(
		cmp.Compare(a.Campaign, b.Campaign), cmp.Compare(a.Source, b.Source), cmp.Compare(a.Medium, b.Medium),
		cmp.Compare(a.Type, b.Type), cmp.Compare(a.Country, b.Country), cmp.Compare(a.Device, b.Device),
		cmp.Compare(a.Region, b.Region), cmp.Compare(a.Minute, b.Minute))
}

// partWriter writes rows into one Parquet part.
type partWriter struct {
	w    *parquet.GenericWriter[Row]
	rows int64
}

func newPartWriter(out io.Writer, day string) *partWriter {
	w := parquet.NewGenericWriter[Row](out,
		parquet.Compression(&zstd.Codec{Level: zstd.SpeedDefault}),
		parquet.MaxRowsPerRowGroup(rowGroupRows),
		parquet.CreatedBy(createdByApp, fmt.Sprint(FormatVersion), ""),
		parquet.KeyValueMetadata("tally.archive.format", fmt.Sprint(FormatVersion)),
		parquet.KeyValueMetadata("tally.archive.day", day),
	)
	return &partWriter{w: w}
}

func (p *partWriter) write(rows []Row) error {
	for len(rows) > 0 {
		n, err := p.w.Write(rows)
		p.rows += int64(n)
		if err != nil {
			return fmt.Errorf("write parquet rows: %w", err)
		}
		rows = rows[n:]
	}
	return nil
}

func (p *partWriter) close() error {
	if err := p.w.Close(); err != nil {
		return fmt.Errorf("close parquet part: %w", err)
	}
	return nil
}

// eachRow reads every row of a Parquet part in order.
func eachRow(r io.ReaderAt, size int64, fn func(*Row) error) error {
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return fmt.Errorf("open parquet: %w", err)
	}
	want := parquet.SchemaOf(Row{})
	if !parquet.EqualNodes(f.Schema(), want) {
		return fmt.Errorf("parquet schema differs from format %d:\n%s", FormatVersion, f.Schema())
	}
	rd := parquet.NewGenericReader[Row](f)
	defer rd.Close()
	buf := make([]Row, 256)
	for {
		clear(buf)
		n, err := rd.Read(buf)
		for i := range n {
			if ferr := fn(&buf[i]); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read parquet rows: %w", err)
		}
	}
}

// Fingerprint summarises the counters of a set of minutes independently
// of their order: how the exporter checks that what it wrote, what the
// objects hold and what InfluxDB holds are the same minutes. Compare
// fingerprints with ==.
type Fingerprint struct {
	// Rows is the number of series-minutes.
	Rows int64 `json:"rows"`
	// Events, ValueMicros, CostMicros and Bots are their exact totals.
	Events      int64 `json:"events"`
	ValueMicros int64 `json:"value_micros"`
	CostMicros  int64 `json:"cost_micros"`
	Bots        int64 `json:"bots"`
	// Sum is the sum (mod 2^64) of a 64-bit FNV-1a hash of every row's
	// series, minute and counters (bots by reason and votes included), as
	// 16 hex digits.
	Sum string `json:"sum"`
}

// fingerprinter accumulates a Fingerprint. The zero value is empty.
type fingerprinter struct {
	f   Fingerprint
	sum uint64
}

// add counts one row.
func (p *fingerprinter) add(r *Row) {
	p.f.Rows++
	p.f.Events += r.Events
	p.f.ValueMicros += r.ValueMicros
	p.f.CostMicros += r.CostMicros
	p.f.Bots += r.Bots
	p.sum += countersHash(r)
}

// result returns the fingerprint of every row added.
func (p *fingerprinter) result() Fingerprint {
	f := p.f
	f.Sum = fmt.Sprintf("%016x", p.sum)
	return f
}

// countersHash hashes a row's series, minute and counters; sketches are
// left out (their encodings are not canonical across writers).
func countersHash(r *Row) uint64 {
	h := fnv.New64a()
	var b []byte
	for _, s := range []string{r.Campaign, r.Source, r.Medium, r.Type, r.Country, r.Device, r.Region} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, r.Minute)
	b = binary.AppendVarint(b, r.Events)
	b = binary.AppendVarint(b, r.ValueMicros)
	b = binary.AppendVarint(b, r.CostMicros)
	b = binary.AppendVarint(b, r.Bots)
	for _, c := range r.BotsByReason {
		b = binary.AppendUvarint(b, uint64(len(c.Reason)))
		b = append(b, c.Reason...)
		b = binary.AppendVarint(b, c.Events)
	}
	for _, v := range r.Votes {
		b = binary.AppendUvarint(b, uint64(len(v.Poll)))
		b = append(b, v.Poll...)
		b = binary.AppendUvarint(b, uint64(len(v.Answer)))
		b = append(b, v.Answer...)
		b = binary.AppendVarint(b, v.Votes)
	}
	_, _ = h.Write(b)
	return h.Sum64()
}

// sketchesEqual reports whether two rows' sketches hold the same
// registers and bins, whatever their bytes: a restored or rewritten
// sketch must merge exactly as the original does.
func sketchesEqual(a, b *Row) (bool, error) {
	if a.SketchEncoding == b.SketchEncoding && slices.Equal(a.HLL, b.HLL) && slices.Equal(a.Quantiles, b.Quantiles) {
		return true, nil
	}
	var sa, sb sketch.State
	if err := decodeSketches(a.SketchEncoding, a.HLL, a.Quantiles, &sa); err != nil {
		return false, err
	}
	if err := decodeSketches(b.SketchEncoding, b.HLL, b.Quantiles, &sb); err != nil {
		return false, err
	}
	ha, err := canonicalHLL(sa.Uniques)
	if err != nil {
		return false, err
	}
	hb, err := canonicalHLL(sb.Uniques)
	if err != nil {
		return false, err
	}
	return slices.Equal(ha, hb) && slices.Equal(canonicalQuantiles(&sa), canonicalQuantiles(&sb)), nil
}

// canonicalHLL returns the dense registers of h (nil for none): merged
// into an empty dense sketch, equal contents give equal bytes.
func canonicalHLL(h *hyperloglog.Sketch) ([]byte, error) {
	if h == nil {
		return nil, nil
	}
	d := hyperloglog.NewNoSparse()
	if err := d.Merge(h); err != nil {
		return nil, err
	}
	return d.MarshalBinary()
}

// canonicalQuantiles re-encodes a value sketch through the checked
// decoder, which rebuilds the bins in a fresh dense store.
func canonicalQuantiles(st *sketch.State) []byte {
	if st.Values == nil || st.Values.IsEmpty() {
		return nil
	}
	var b []byte
	st.Values.Encode(&b, true)
	q, err := sketch.DecodeQuantiles(b)
	if err != nil {
		return b
	}
	var out []byte
	q.Encode(&out, true)
	return out
}

// dayString formats the UTC day of t as YYYY-MM-DD.
func dayString(t time.Time) string { return t.UTC().Format(time.DateOnly) }

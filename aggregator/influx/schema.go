package influx

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Measurements, tag keys and field keys of the schema (see README.md).
const (
	// MeasurementMinute holds one point per (series, minute): the merged value.
	MeasurementMinute = "tally"
	// MeasurementContrib holds one point per (agent, series, minute): that
	// agent's contributions, from which any node rebuilds exact state.
	MeasurementContrib = "tally_contrib"

	TagCampaign = "campaign"
	TagSource   = "source"
	TagMedium   = "medium"
	TagType     = "type"
	TagCountry  = "country"
	TagDevice   = "device"
	TagRegion   = "region"
	TagAgent    = "agent"
	// TagNode names the aggregator node that wrote a tally_contrib point.
	// Each node keeps its own points, so two nodes that briefly both hold
	// a campaign (a handoff) never overwrite each other's contributions;
	// rebuilds merge the points of every node.
	TagNode = "node"
	// TagPart numbers the parts of a tally_contrib point whose
	// contributions do not fit one string field (absent on part 0).
	TagPart = "part"
	// TagFormat holds a tally_contrib point's ContribFormat (absent on
	// format 1). A tag rather than a field, so that it comes with every
	// row of the contribs field: InfluxDB 1.8's pivot does not reliably
	// join two fields of one point into one row.
	TagFormat = "format"

	FieldCount       = "count"
	FieldValueMicros = "value_micros"
	FieldCostMicros  = "cost_micros"
	FieldRevenue     = "revenue"
	FieldCost        = "cost"
	FieldBots        = "bots"
	FieldBotsPrefix  = "bots_"
	// FieldVotePrefix starts the field of a poll answer's votes:
	// vote_<poll>/<answer>, each part path-escaped (see VoteField).
	FieldVotePrefix = "vote_"
	FieldUniques    = "uniques"
	FieldValueP50   = "value_p50"
	FieldValueP90   = "value_p90"
	FieldValueP99   = "value_p99"
	FieldHLL        = "hll"
	FieldQuantiles  = "quantiles"
	FieldContribs   = "contribs"
	// FieldLedger holds a merged minute's ledger (sketch.Minute.Ledger).
	FieldLedger = "ledger"
	// FieldSeries holds a point's exact series when TagValue had to alter
	// one of its tags (base64 of seven length-prefixed strings).
	FieldSeries = "series"
	// FieldChanged and FieldRolled are the fields of a rollup marker
	// (MeasurementRollup).
	FieldChanged = "changed"
	FieldRolled  = "rolled"
)

// MeasurementRollup holds one marker per campaign and hour (in the hours
// bucket) or day (in the days bucket): "changed", when the owner last
// wrote minutes of it, and "rolled", the changed value its rollups were
// last computed from. A period whose two fields are equal, or that has
// no marker, is answered exactly by its rollups (see package rollup).
const MeasurementRollup = "tally_rollup"

// NoneTag is stored for an empty dimension, because InfluxDB drops tags
// with empty values (and Flux cannot filter on a missing tag with ==). Read
// back, it becomes "" again; as a MinuteQuery filter it selects the
// series whose dimension is empty.
const NoneTag = "(none)"

// MaxStringField is the longest string field value written, in bytes.
// InfluxDB 1.8 itself accepts longer strings, but 2.x and Cloud cap them
// at 64 KB, and a point the next version would refuse must not be written.
const MaxStringField = 65535

// MaxSeriesKey is InfluxDB's limit on measurement plus tags, in bytes.
const MaxSeriesKey = 65535

// ContribPoint is everything one agent contributed to one series-minute:
// one wire.Contribution per distinct CID, each with its latest version and
// cumulative state (counters, the union of every HLL delta received for
// that CID, and the quantiles). Write stores it as one or more points
// (parts, see appendContrib); a loader returns one ContribPoint per part
// it read.
type ContribPoint struct {
	Series sketch.Series
	Minute int64
	Agent  string
	// Node is the aggregator node that holds and writes the point.
	Node string
	// Contribs must all have this point's Series and Minute. Loaders
	// return them; Write writes them unless Entries is set.
	Contribs []wire.Contribution
	// Entries, when set, is what Write writes instead of Contribs: each
	// contribution's sketch.StoredContribsV1 entry (agent index 0, its
	// HyperLogLog kept), as the merge store caches them, and Count their
	// events. Where ExactSeriesNeeded(Series), each entry must carry the
	// series (tags cannot hold it); Contribs do that by themselves.
	Entries [][]byte
	Count   uint64
}

// TagValue returns the tag value stored for dimension value v, which is
// also what a Flux query must compare with. It is v itself except for
// what line protocol cannot carry:
//   - "" becomes NoneTag;
//   - invalid UTF-8, control characters and trailing backslashes (which
//     InfluxDB's parser reads as escaping the next separator) become
//     U+FFFD.
//
// Only the last rule loses information, and only for values that a sane
// agent never ships; the exact Series stays inside tally_contrib's
// contributions regardless.
func TagValue(v string) string {
	if v == "" {
		return NoneTag
	}
	if !needsSanitizing(v) {
		return v
	}
	v = strings.ToValidUTF8(v, "\uFFFD")
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return utf8.RuneError
		}
		return r
	}, v)
	if t := strings.TrimRight(v, `\`); len(t) < len(v) {
		v = t + strings.Repeat("\uFFFD", len(v)-len(t))
	}
	return v
}

func needsSanitizing(v string) bool {
	if v[len(v)-1] == '\\' {
		return true
	}
	ascii := true
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c < 0x20 || c == 0x7f:
			return true
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return !ascii && !utf8.ValidString(v)
}

// valueFromTag inverts TagValue where it can.
// VoteField is the field of a sketch.VoteKey's votes, e.g.
// "vote_launch%20poll/yes": poll and answer path-escaped, so the one '/'
// separates them and the name survives line protocol and Flux.
func VoteField(key string) string {
	poll, answer := sketch.SplitVote(key)
	return FieldVotePrefix + url.PathEscape(poll) + "/" + url.PathEscape(answer)
}

// voteFromField is the sketch.VoteKey of a VoteField name.
func voteFromField(field string) (string, error) {
	poll, answer, ok := strings.Cut(strings.TrimPrefix(field, FieldVotePrefix), "/")
	if !ok {
		return "", fmt.Errorf("vote field %q has no '/' between poll and answer", field)
	}
	p, err1 := url.PathUnescape(poll)
	a, err2 := url.PathUnescape(answer)
	if err := errors.Join(err1, err2); err != nil {
		return "", fmt.Errorf("vote field %q: %w", field, err)
	}
	return sketch.VoteKey(p, a), nil
}

func valueFromTag(t string) string {
	if t == NoneTag {
		return ""
	}
	return t
}

// appendKey appends a tag key, tag value or field key in line protocol:
// commas, spaces and equals signs are escaped with a backslash. InfluxDB's
// parser looks only at the byte before a separator, so backslashes are
// otherwise literal and need no escaping (TagValue has removed the one case
// that breaks: a trailing backslash).
func appendKey(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ',', ' ', '=':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendSeriesKey appends measurement and tags, in key order (InfluxDB
// sorts them anyway; sorted input saves it the work).
func appendSeriesKey(b []byte, measurement string, s sketch.Series, agent, node string, part, format int) []byte {
	b = append(b, measurement...)
	if agent != "" {
		b = appendTag(b, TagAgent, agent)
	}
	b = appendTag(b, TagCampaign, s.Campaign)
	b = appendTag(b, TagCountry, s.Country)
	b = appendTag(b, TagDevice, s.Device)
	if format > 0 {
		b = append(b, ","+TagFormat+"="...)
		b = strconv.AppendInt(b, int64(format), 10)
	}
	b = appendTag(b, TagMedium, s.Medium)
	if node != "" {
		b = appendTag(b, TagNode, node)
	}
	if part > 0 {
		b = append(b, ","+TagPart+"="...)
		b = strconv.AppendInt(b, int64(part), 10)
	}
	b = appendTag(b, TagRegion, s.Region)
	b = appendTag(b, TagSource, s.Source)
	b = appendTag(b, TagType, s.Type)
	return append(b, ' ')
}

func appendTag(b []byte, key, value string) []byte {
	b = append(b, ',')
	b = append(b, key...)
	b = append(b, '=')
	return appendKey(b, TagValue(value))
}

// fieldWriter appends the field set of one line.
type fieldWriter struct {
	b     []byte
	first bool
}

func (f *fieldWriter) key(k string) {
	if !f.first {
		f.b = append(f.b, ',')
	}
	f.first = false
	f.b = appendKey(f.b, k)
	f.b = append(f.b, '=')
}

func (f *fieldWriter) int(k string, v int64) {
	f.key(k)
	f.b = strconv.AppendInt(f.b, v, 10)
	f.b = append(f.b, 'i')
}

// float writes v without an exponent (the 1.x parser's float syntax is
// easiest to satisfy that way). NaN and ±Inf have no line-protocol form
// and are left out.
func (f *fieldWriter) float(k string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	f.key(k)
	f.b = strconv.AppendFloat(f.b, v, 'f', -1, 64)
}

// base64 writes raw as a base64 string field; base64 needs no escaping.
func (f *fieldWriter) base64(k string, raw []byte) {
	f.key(k)
	f.b = append(f.b, '"')
	f.b = base64.StdEncoding.AppendEncode(f.b, raw)
	f.b = append(f.b, '"')
}

// errInvalidPoint marks a point that the caller built wrongly.
var errInvalidPoint = errors.New("invalid point")

// toInt converts a counter to a line-protocol integer (signed 64-bit:
// InfluxDB 1.8 has no unsigned fields).
func toInt(v uint64, what string) (int64, error) {
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("%w: %s %d overflows int64", errInvalidPoint, what, v)
	}
	return int64(v), nil
}

// A merged point (a minute, an hour or a day) leaves out the fields that
// are zero and that no earlier write of the same point can have given
// another value: most series never see money or bots, and each field a
// series has costs an entry in every TSM index of its shard (about 130
// bytes), more than its zeros' data. InfluxDB 1.x keeps the old value of a
// field that a rewrite of the point leaves out, so whether a field is
// written must only ever change from no to yes as the point's state grows
// (see writtenFields). Readers take a missing field as zero.

// writtenFields says which of a merged point's optional fields are
// written. Each condition is monotone in the state, so a rewrite never
// leaves a stale value behind:
//   - value_micros and revenue once any event carried a value (its
//     quantile sketch is not empty; it only ever grows: the imports
//     whose newer rows replace older ones carry no values), so revenue
//     that refunds bring back to zero is written as zero;
//   - cost_micros and cost always on cost series, and on others once not
//     zero: agents refuse negative costs except on cost events, so a
//     non-cost series' cost only grows;
//   - bots once not zero: counts only grow, except that a newer
//     import of a row may no longer count it as a bot, and then the
//     merge store keeps its reason at zero (merge.keepReasons), which
//     writes bots and bots_<reason> as 0;
//   - uniques once any visitor was seen (registers only grow).
type writtenFields struct{ value, cost, bots, uniques bool }

func fieldsOf(p *sketch.Minute, bots, uniques uint64, hll []byte) writtenFields {
	st := p.State
	return writtenFields{
		value:   st.ValueMicros != 0 || (st.Values != nil && !st.Values.IsEmpty()),
		cost:    st.CostMicros != 0 || p.Series.Type == costType,
		bots:    bots != 0 || len(st.Bots) > 0,
		uniques: uniques != 0 || len(hll) > 0 || len(st.UniquesStored) > 0,
	}
}

// costType is the event type whose series always carry cost fields.
const costType = "cost"

// appendMinute appends the line of p's merged value (fields as
// writtenFields says).
func appendMinute(b []byte, p *sketch.Minute) ([]byte, error) {
	if p.State == nil {
		return b, fmt.Errorf("%w: %s minute %d has no state", errInvalidPoint, p.Series, p.Minute)
	}
	st := p.State
	start := len(b)
	b = appendSeriesKey(b, MeasurementMinute, p.Series, "", "", 0, 0)
	if n := len(b) - start - 1; n > MaxSeriesKey {
		return b[:start], &PointTooLargeError{Measurement: MeasurementMinute, Series: p.Series, Minute: p.Minute, Size: n, Limit: MaxSeriesKey}
	}
	count, err := toInt(st.Count, "count")
	if err != nil {
		return b[:start], err
	}
	bots, err := toInt(st.BotTotal(), "bots")
	if err != nil {
		return b[:start], err
	}
	// The stored HyperLogLog and its estimate, from one read of the registers.
	var hll []byte
	estimate := uint64(0)
	if st.Uniques != nil {
		var err error
		if hll, estimate, err = sketch.AppendStoredHLLEstimate(nil, st.Uniques); err != nil {
			return b[:start], fmt.Errorf("encode %s minute %d: %w", p.Series, p.Minute, err)
		}
	} else {
		estimate = st.UniquesEstimate()
	}
	uniques, err := toInt(estimate, "uniques")
	if err != nil {
		return b[:start], err
	}
	written := fieldsOf(p, uint64(bots), uint64(uniques), hll)
	f := fieldWriter{b: b, first: true}
	f.int(FieldCount, count)
	if written.value {
		f.int(FieldValueMicros, st.ValueMicros)
	}
	if written.cost {
		f.int(FieldCostMicros, st.CostMicros)
	}
	if written.value {
		f.float(FieldRevenue, sketch.FromMicros(st.ValueMicros))
	}
	if written.cost {
		f.float(FieldCost, sketch.FromMicros(st.CostMicros))
	}
	if written.bots {
		f.int(FieldBots, bots)
	}
	for reason, n := range st.Bots {
		v, err := toInt(n, "bots "+reason)
		if err != nil {
			return b[:start], err
		}
		f.int(FieldBotsPrefix+TagValue(reason), v)
	}
	for key, n := range st.Votes {
		v, err := toInt(n, "votes "+key)
		if err != nil {
			return b[:start], err
		}
		f.int(VoteField(key), v)
	}
	if written.uniques {
		f.int(FieldUniques, uniques)
	}
	if st.Values != nil && !st.Values.IsEmpty() {
		f.float(FieldValueP50, st.Quantile(0.5))
		f.float(FieldValueP90, st.Quantile(0.9))
		f.float(FieldValueP99, st.Quantile(0.99))
	}
	var quantiles []byte
	if st.Values != nil && !st.Values.IsEmpty() {
		quantiles = sketch.AppendStoredQuantiles(nil, st.Values)
	}
	var series []byte
	if ExactSeriesNeeded(p.Series) {
		series = appendExactSeries(nil, p.Series)
	}
	for _, s := range []struct {
		name string
		raw  []byte
	}{{FieldHLL, hll}, {FieldQuantiles, quantiles}, {FieldLedger, p.Ledger}, {FieldSeries, series}} {
		if len(s.raw) == 0 {
			continue
		}
		if n := base64.StdEncoding.EncodedLen(len(s.raw)); n > MaxStringField {
			return b[:start], &PointTooLargeError{Measurement: MeasurementMinute, Series: p.Series, Minute: p.Minute, Field: s.name, Size: n, Limit: MaxStringField}
		}
		f.base64(s.name, s.raw)
	}
	b = f.b
	b = append(b, ' ')
	b = strconv.AppendInt(b, p.Minute, 10)
	return append(b, '\n'), nil
}

// ExactSeriesNeeded reports whether the tags of a point of series s
// cannot give s back (TagValue alters a dimension), so that a stored
// contribution must carry its series itself.
func ExactSeriesNeeded(s sketch.Series) bool { return storedSeries(s) != s }

// appendExactSeries encodes a series as seven length-prefixed strings
// (FieldSeries).
func appendExactSeries(b []byte, s sketch.Series) []byte {
	for _, v := range [...]string{s.Campaign, s.Source, s.Medium, s.Type, s.Country, s.Device, s.Region} {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

// decodeExactSeries decodes a FieldSeries value.
func decodeExactSeries(field string) (sketch.Series, error) {
	b, err := decodeBase64(field)
	if err != nil {
		return sketch.Series{}, fmt.Errorf("series: %w", err)
	}
	var f [7]string
	for i := range f {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return sketch.Series{}, errors.New("series: truncated")
		}
		f[i] = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	if len(b) > 0 {
		return sketch.Series{}, errors.New("series: trailing bytes")
	}
	return sketch.Series{Campaign: f[0], Source: f[1], Medium: f[2], Type: f[3], Country: f[4], Device: f[5], Region: f[6]}, nil
}

// ContribFormat is the version of the tally_contrib points Write
// writes, stored in their "format" tag. Format 1 (the first release) has
// neither a format nor a part tag and format 2 adds both, each with the
// contribs field the msgpack of []wire.Contribution (the sketches in the
// libraries' encodings). Format 3 keeps the tags and makes contribs a
// sketch.StoredContribsV1 value with HyperLogLogs (Rice-coded register
// updates), written to the contributions bucket. A point rewritten after
// an upgrade is a new series beside its predecessor, which holds older
// versions the merge ignores. Readers refuse points of a format they do
// not know.
const ContribFormat = 3

// maxContribPayload is the most bytes one part's contribs field may hold
// before base64: its base64 stays within MaxStringField.
const maxContribPayload = MaxStringField / 4 * 3

// contribEntries returns the StoredContribsV1 entries of p and the sum of
// their counts: p.Entries as they are, or each of p.Contribs encoded.
func contribEntries(p *ContribPoint) ([][]byte, uint64, error) {
	if p.Entries != nil {
		return p.Entries, p.Count, nil
	}
	entries := make([][]byte, len(p.Contribs))
	var count uint64
	var exact *sketch.Series
	if ExactSeriesNeeded(p.Series) {
		exact = &p.Series
	}
	for i := range p.Contribs {
		c := &p.Contribs[i]
		if c.Series != p.Series || c.Minute != p.Minute {
			return nil, 0, fmt.Errorf("%w: agent %q contribution %d (cid %d) is for %s minute %d, not its point's %s minute %d",
				errInvalidPoint, p.Agent, i, c.CID, c.Series, c.Minute, p.Series, p.Minute)
		}
		st, err := c.State.Decode()
		if err != nil {
			return nil, 0, fmt.Errorf("%w: agent %q contribution %d (cid %d): %v", errInvalidPoint, p.Agent, i, c.CID, err)
		}
		e, err := sketch.AppendStoredContribEntry(nil, &sketch.StoredContrib{Agent: p.Agent, CID: c.CID, Version: c.Version, Series: exact, State: st}, 0, true)
		if err != nil {
			return nil, 0, fmt.Errorf("encode contribution %d of agent %q to %s minute %d: %w", c.CID, p.Agent, p.Series, p.Minute, err)
		}
		entries[i] = e
		count += st.Count
	}
	return entries, count, nil
}

// appendContrib appends the lines of one agent's contributions: one per
// part. Contributions are packed, in order, into as few parts as keep
// each part's contribs field within MaxStringField; part 0 has no part
// tag (as in format 1), part n > 0 has part=n. A single contribution too
// large for a part of its own is refused with a *PointTooLargeError.
//
// A rewrite may pack differently from the write before it; a part left
// over from an earlier packing holds older versions of contributions that
// a later part holds too, which the merge ignores (versions and unions).
func appendContrib(b []byte, p *ContribPoint) ([]byte, error) {
	if p.Agent == "" {
		return b, fmt.Errorf("%w: tally_contrib point %s minute %d has no agent", errInvalidPoint, p.Series, p.Minute)
	}
	if len(p.Contribs) == 0 && len(p.Entries) == 0 {
		return b, fmt.Errorf("%w: tally_contrib point %s minute %d agent %q has no contributions", errInvalidPoint, p.Series, p.Minute, p.Agent)
	}
	entries, count, err := contribEntries(p)
	if err != nil {
		return b, err
	}
	n, err := toInt(count, "count")
	if err != nil {
		return b, err
	}
	agents := []string{p.Agent}
	header := func(k int) int { return len(sketch.AppendStoredContribsHeader(nil, agents, k)) }
	for _, e := range entries {
		if header(1)+len(e) > maxContribPayload {
			return b, &PointTooLargeError{Measurement: MeasurementContrib, Series: p.Series, Minute: p.Minute, Agent: p.Agent,
				Field: FieldContribs, Size: base64.StdEncoding.EncodedLen(header(1) + len(e)), Limit: MaxStringField, Contribs: 1}
		}
	}
	start := len(b)
	part := 0
	for first := 0; first < len(entries); part++ {
		// The longest run from first that fits one part.
		size, last := 0, first
		for last < len(entries) && header(last-first+1)+size+len(entries[last]) <= maxContribPayload {
			size += len(entries[last])
			last++
		}
		raw := sketch.AppendStoredContribsHeader(make([]byte, 0, header(last-first)+size), agents, last-first)
		for _, e := range entries[first:last] {
			raw = append(raw, e...)
		}
		kb := len(b)
		b = appendSeriesKey(b, MeasurementContrib, p.Series, p.Agent, p.Node, part, ContribFormat)
		if size := len(b) - kb - 1; size > MaxSeriesKey {
			return b[:start], &PointTooLargeError{Measurement: MeasurementContrib, Series: p.Series, Minute: p.Minute, Agent: p.Agent, Size: size, Limit: MaxSeriesKey}
		}
		f := fieldWriter{b: b, first: true}
		if part == 0 {
			f.int(FieldCount, n) // the whole point's, on its first part
		}
		f.base64(FieldContribs, raw)
		b = f.b
		b = append(b, ' ')
		b = strconv.AppendInt(b, p.Minute, 10)
		b = append(b, '\n')
		first = last
	}
	return b, nil
}

// appendMarker appends a rollup marker: one field (FieldChanged or
// FieldRolled) of the campaign's period starting at start (unix seconds).
func appendMarker(b []byte, campaign string, start int64, field string, v int64) []byte {
	b = append(b, MeasurementRollup...)
	b = appendTag(b, TagCampaign, campaign)
	b = append(b, ' ')
	f := fieldWriter{b: b, first: true}
	f.int(field, v)
	b = append(f.b, ' ')
	b = strconv.AppendInt(b, start, 10)
	return append(b, '\n')
}

// arrayHeaderLen is the size of a msgpack array header for n elements.
func arrayHeaderLen(n int) int {
	switch {
	case n < 16:
		return 1
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

// appendArrayHeader appends a msgpack array header for n elements.
func appendArrayHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xdc, byte(n>>8), byte(n))
	}
	return append(b, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// decodeContribs decodes the "contribs" field of a tally_contrib point of
// format 1 or 2.
func decodeContribs(field string) ([]wire.Contribution, error) {
	raw, err := base64.StdEncoding.DecodeString(field)
	if err != nil {
		return nil, fmt.Errorf("contribs: base64: %w", err)
	}
	var cs []wire.Contribution
	if err := msgpack.Unmarshal(raw, &cs); err != nil {
		return nil, fmt.Errorf("contribs: msgpack: %w", err)
	}
	return cs, nil
}

func decodeBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("base64: %w", err)
	}
	return b, nil
}

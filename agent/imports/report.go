package imports

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
)

// field is a column of a spend report.
type field int

const (
	fDate field = iota
	fTS
	fCampaign
	fSource
	fMedium
	fCountry
	fDevice
	fCost
	fImpressions
	fClicks
	fCurrency
	fID
	fPoll
	fAnswer
	fVotes
	fVoter
	numFields
)

var fieldNames = [numFields]string{"date", "ts", "campaign", "source", "medium", "country", "device",
	"cost", "impressions", "clicks", "currency", "id", "poll", "answer", "votes", "voter"}

func (f field) String() string { return fieldNames[f] }

// columnNames lists the column names of each field, normalised (see
// columnName). The extra names are those of common ad network exports
// (Google Ads "Day", "Impr."; Meta "Amount spent", "Link clicks").
var columnNames = [numFields][]string{
	fDate:        {"date", "day", "report_date", "reporting_starts"},
	fTS:          {"ts", "timestamp", "time", "datetime"},
	fCampaign:    {"campaign", "campaign_name", "utm_campaign"},
	fSource:      {"source", "utm_source", "network"},
	fMedium:      {"medium", "utm_medium"},
	fCountry:     {"country", "country_code"},
	fDevice:      {"device"},
	fCost:        {"cost", "spend", "amount", "amount_spent"},
	fImpressions: {"impressions", "impr", "imps"},
	fClicks:      {"clicks", "link_clicks"},
	fCurrency:    {"currency", "currency_code"},
	fID:          {"id", "row_id"},
	fPoll:        {"poll", "poll_name", "question"},
	fAnswer:      {"answer", "option", "choice"},
	fVotes:       {"votes", "vote_count", "responses"},
	fVoter:       {"voter", "respondent", "respondent_id", "user_id", "email"},
}

// reportKind is what differs between the report imports: the columns
// each reads and requires, and how a row becomes events.
type reportKind struct {
	name      string // "cost" or "polls": in metrics and logs
	what      string // "a spend report", for errors
	keyPrefix string // of natural row keys: "cost", "poll"
	reads     [numFields]bool
	required  []requiredColumn
	// parseRow reads the kind's own columns into row, whose common
	// fields (time, dimensions, id) are set.
	parseRow func(imp *reportImport, rec *record, commaDecimal bool, row *reportRow) error
	// events are the types a row key becomes, each when it has a count.
	events []string
	// visitors says whether rows name people (voters), who are hashed
	// like visitor ids; spend rows do not.
	visitors bool
}

// requiredColumn is a column a report must have: any of fields.
type requiredColumn struct {
	fields []field
	label  string
}

// withReads sets the columns k reads: its own and the common ones.
func (k *reportKind) withReads(own ...field) *reportKind {
	for _, f := range append(own, fDate, fTS, fCampaign, fSource, fMedium, fCountry, fDevice, fID) {
		k.reads[f] = true
	}
	return k
}

var (
	dateOrTS   = requiredColumn{[]field{fDate, fTS}, "date (or ts)"}
	campaign   = requiredColumn{[]field{fCampaign}, "campaign"}
	costReport = (&reportKind{name: "cost", what: "a spend report", keyPrefix: "cost",
		required: []requiredColumn{campaign, {[]field{fCost}, "cost (or spend)"}, dateOrTS},
		parseRow: (*reportImport).parseCost, events: []string{"cost", "impression", "click"},
	}).withReads(fCost, fImpressions, fClicks, fCurrency)
	pollReport = (&reportKind{name: "polls", what: "a poll report", keyPrefix: "poll",
		required: []requiredColumn{campaign, {[]field{fAnswer}, "answer"}, dateOrTS},
		parseRow: (*reportImport).parseVotes, events: []string{event.PollVote}, visitors: true,
	}).withReads(fPoll, fAnswer, fVotes, fVoter)
)

// field returns the field a column name gives in reports of kind k.
func (k *reportKind) field(name string) (field, bool) {
	f, ok := aliases[columnName(name)]
	return f, ok && k.reads[f]
}

// aliases maps every name of columnNames to its field.
var aliases = func() map[string]field {
	m := map[string]field{}
	for f, names := range columnNames {
		for _, n := range names {
			m[n] = field(f)
		}
	}
	return m
}()

// columnName normalises a column or field name: lower case, runs of
// anything but letters and digits become one '_', none at the ends
// ("Impr." → "impr", "Amount Spent" → "amount_spent").
func columnName(s string) string {
	var b strings.Builder
	sep := false
	for _, r := range strings.ToLower(s) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if sep && b.Len() > 0 {
				b.WriteByte('_')
			}
			sep = false
			b.WriteRune(r)
		} else {
			sep = true
		}
	}
	return b.String()
}

// record is one report row by field; a field is absent when not given or
// blank.
type record struct {
	v   [numFields]string
	has [numFields]bool
}

func (r *record) set(f field, v string) {
	v = strings.TrimSpace(v)
	r.v[f], r.has[f] = v, v != ""
}

func (r *record) get(f field) (string, bool) { return r.v[f], r.has[f] }

// reportRow is a validated report row.
type reportRow struct {
	raw         event.Raw // the row's first event as Normalize saw it
	day         bool      // given by date, not ts
	key         string    // the row key: id, or the natural key
	costMicros  int64
	impressions uint64
	clicks      uint64
	votes       uint64
}

// serveReport implements POST /v1/import/cost and /v1/import/polls.
func (h *Handlers) serveReport(w http.ResponseWriter, r *http.Request, rk *reportKind) {
	kind := rk.name
	if !h.admit(w, r, kind, false) {
		return
	}
	b, ok := h.readBody(w, r, kind)
	if !ok {
		return
	}
	defer b.Release()
	body := bytes.TrimPrefix(b.Bytes, utf8BOM)
	f, err := detect(r.Header.Get("Content-Type"), body)
	if err != nil {
		h.fail(w, kind, http.StatusBadRequest, err.Error())
		return
	}
	now := h.cfg.Now()
	imp := &reportImport{h: h, kind: rk, ctx: h.eventContext(now), res: &Result{}, index: map[groupKey]int{}}
	if !rk.visitors {
		imp.ctx.Hasher = nil // these reports name no people
	}
	imp.dayCtx = imp.ctx
	imp.dayCtx.MaxSkew = 24*time.Hour + h.cfg.MaxClockSkew
	if f == formatCSV {
		err = imp.readCSV(body)
	} else {
		err = imp.readJSON(body)
	}
	if h.failedBody(w, kind, err) {
		return
	}
	events, err := imp.events(h.version())
	if err != nil {
		h.log.Error("import failed: a valid row made an invalid event", "err", err)
		h.fail(w, kind, http.StatusInternalServerError, "internal error: "+err.Error())
		return
	}
	if h.accept(w, kind, events, imp.res) {
		h.log.Info("imported a report", "kind", kind, "format", f, "rows", imp.res.Accepted, "rejected", imp.res.Rejected,
			"row_keys", len(imp.groups), "events", len(events))
	}
}

// reportImport is the state of one report import.
type reportImport struct {
	h      *Handlers
	kind   *reportKind
	ctx    event.Context // for rows given by ts
	dayCtx event.Context // for rows given by date: may start up to a day ahead
	res    *Result

	// Rows with the same key (the same campaign, day, … in rows of ad
	// groups or keywords) are summed: the report is the truth for every
	// key it names, so a re-import that sums alike replaces alike.
	groups []reportRow
	index  map[groupKey]int
}

// groupKey identifies a contribution: a row key within one series-minute.
// With derived keys the key alone decides; an explicit id may name rows of
// different series, which stay apart.
type groupKey struct {
	key    string
	series sketch.Series
	minute int64
}

// readCSV reads a CSV report: header row first, delimiter detected.
func (imp *reportImport) readCSV(body []byte) error {
	delim := detectDelimiter(body)
	cr := csv.NewReader(bytes.NewReader(body))
	cr.Comma, cr.FieldsPerRecord, cr.ReuseRecord = delim, -1, true
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("reading the CSV header: %w", err)
	}
	cols := make([]field, len(header))
	named := map[field]string{}
	for i, name := range header {
		cols[i] = -1
		n := columnName(name)
		f, ok := imp.kind.field(name)
		switch {
		case n == "":
		case !ok:
			imp.res.IgnoredColumns = append(imp.res.IgnoredColumns, strings.TrimSpace(name))
		case named[f] != "":
			return fmt.Errorf("columns %q and %q both give %s: keep one", named[f], strings.TrimSpace(name), f)
		default:
			cols[i], named[f] = f, strings.TrimSpace(name)
		}
	}
	var missing []string
	for _, rc := range imp.kind.required {
		if !slices.ContainsFunc(rc.fields, func(f field) bool { return named[f] != "" }) {
			missing = append(missing, rc.label)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("not %s: the header (line 1, delimiter %q) has no %s column; it has %q",
			imp.kind.what, delim, strings.Join(missing, ", no "), header)
	}
	commaDecimal := delim != ','
	index := 0
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			imp.res.reject(pe.StartLine, index, fmt.Errorf("column %d: %v", pe.Column, pe.Err))
			index++
			continue
		}
		if err != nil {
			return fmt.Errorf("reading the CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if blank(rec) {
			continue // Excel leaves rows of empty cells at the end
		}
		if index == imp.h.cfg.MaxRows {
			return &errTooMany{imp.h.cfg.MaxRows}
		}
		if len(rec) != len(header) {
			imp.res.reject(line, index, fmt.Errorf("%d fields, the header has %d: an unquoted %q inside a value?", len(rec), len(header), delim))
			index++
			continue
		}
		var row record
		for i, v := range rec {
			if cols[i] >= 0 {
				row.set(cols[i], v)
			}
		}
		imp.add(line, index, &row, commaDecimal)
		index++
	}
}

// detectDelimiter picks ',', ';' or tab: whichever occurs most in the
// header line outside quotes. Ties and none go to ','.
func detectDelimiter(body []byte) rune {
	var n [3]int // , ; \t
	quoted := false
	for _, c := range body {
		if c == '"' {
			quoted = !quoted
			continue
		}
		if quoted {
			continue
		}
		if c == '\n' {
			break
		}
		switch c {
		case ',':
			n[0]++
		case ';':
			n[1]++
		case '\t':
			n[2]++
		}
	}
	switch {
	case n[1] > n[0] && n[1] >= n[2]:
		return ';'
	case n[2] > n[0] && n[2] > n[1]:
		return '\t'
	}
	return ','
}

func blank(rec []string) bool {
	for _, v := range rec {
		if strings.TrimSpace(v) != "" {
			return false
		}
	}
	return true
}

// readJSON reads rows as a JSON array or NDJSON of objects whose keys are
// the CSV column names.
func (imp *reportImport) readJSON(body []byte) error {
	items, err := splitJSON(body, imp.h.cfg.MaxRows)
	if err != nil {
		return err
	}
	ignored := map[string]bool{}
	for _, it := range items {
		if it.err != nil {
			imp.res.reject(it.line, it.index, it.err)
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(it.raw, &obj); err != nil {
			imp.res.reject(it.line, it.index, errors.New("want a JSON object"))
			continue
		}
		var row record
		if err := jsonRecord(imp.kind, obj, &row, ignored); err != nil {
			imp.res.reject(it.line, it.index, err)
			continue
		}
		imp.add(it.line, it.index, &row, true)
	}
	for k := range ignored {
		imp.res.IgnoredColumns = append(imp.res.IgnoredColumns, k)
	}
	slices.Sort(imp.res.IgnoredColumns)
	return nil
}

func jsonRecord(rk *reportKind, obj map[string]json.RawMessage, row *record, ignored map[string]bool) error {
	var named [numFields]string
	// Sorted keys make the error for two keys of one field deterministic.
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f, ok := rk.field(k)
		if !ok {
			ignored[k] = true
			continue
		}
		if named[f] != "" {
			return fmt.Errorf("%q and %q both give %s: keep one", named[f], k, f)
		}
		named[f] = k
		s, present, err := stringValue(obj[k])
		if err != nil {
			return fmt.Errorf("%s: %v", k, err)
		}
		if present {
			row.set(f, s)
		}
	}
	return nil
}

// add validates one row and folds it into its group.
func (imp *reportImport) add(line, index int, rec *record, commaDecimal bool) {
	row, err := imp.parse(rec, commaDecimal)
	if err != nil {
		imp.res.reject(line, index, err)
		return
	}
	var e event.Event
	ctx := &imp.ctx
	if row.day {
		ctx = &imp.dayCtx
	}
	if err := event.Normalize(&row.raw, ctx, &e); err != nil {
		var ee *event.Error
		if errors.As(err, &ee) && ee.Field == "ts" && row.day {
			err = fmt.Errorf("date: %s", ee.Reason) // the row has no ts column
		}
		imp.res.reject(line, index, err)
		return
	}
	if row.key == "" {
		row.key = naturalKey(imp.kind, &e, row.day)
	}
	gk := groupKey{key: row.key, series: e.Series, minute: sketch.MinuteOf(e.UnixMillis)}
	i, seen := imp.index[gk]
	if !seen {
		imp.index[gk] = len(imp.groups)
		imp.groups = append(imp.groups, row)
		imp.res.Accepted++
		return
	}
	g := &imp.groups[i]
	sum := g.costMicros + row.costMicros
	if sum > maxMicros || sum < -maxMicros || g.impressions+row.impressions > maxCount || g.clicks+row.clicks > maxCount ||
		g.votes+row.votes > maxCount {
		imp.res.reject(line, index, fmt.Errorf("the rows with key %q sum to more than the limits (cost 1e12, counts 1e12)", row.key))
		return
	}
	g.costMicros, g.impressions, g.clicks = sum, g.impressions+row.impressions, g.clicks+row.clicks
	g.votes += row.votes
	imp.res.Accepted++
	imp.res.Summed++
}

// parse checks a row's fields and builds its first event.
func (imp *reportImport) parse(rec *record, commaDecimal bool) (reportRow, error) {
	var row reportRow
	campaign, ok := rec.get(fCampaign)
	if !ok {
		return row, errors.New("campaign: required")
	}
	ms, day, err := rowTime(rec)
	if err != nil {
		return row, err
	}
	row.key, _ = rec.get(fID)
	row.day = day
	src, _ := rec.get(fSource)
	med, _ := rec.get(fMedium)
	country, _ := rec.get(fCountry)
	device, _ := rec.get(fDevice)
	row.raw = event.Raw{TS: event.Time{UnixMillis: ms, Set: true}, Campaign: campaign,
		Source: src, Medium: med, Country: country, Device: device}
	return row, imp.kind.parseRow(imp, rec, commaDecimal, &row)
}

// parseVotes reads a poll report row: an answer and its votes (1 when
// the report has no votes column: a row per vote).
func (imp *reportImport) parseVotes(rec *record, _ bool, row *reportRow) error {
	answer, ok := rec.get(fAnswer)
	if !ok {
		return errors.New("answer: required")
	}
	row.votes = 1
	if v, ok := rec.get(fVotes); ok {
		var err error
		if row.votes, err = parseCount(v); err != nil {
			return fmt.Errorf("votes: %w", err)
		}
	}
	poll, _ := rec.get(fPoll)
	voter, _ := rec.get(fVoter)
	row.raw.Type, row.raw.Poll, row.raw.Answer, row.raw.Visitor = event.PollVote, poll, answer, voter
	return nil
}

// parseCost reads a spend report row: cost, and impressions and clicks
// when given.
func (imp *reportImport) parseCost(rec *record, commaDecimal bool, row *reportRow) error {
	c, ok := rec.get(fCost)
	if !ok {
		return errors.New("cost: required")
	}
	var err error
	if row.costMicros, err = parseMicros(c, commaDecimal); err != nil {
		return fmt.Errorf("cost: %w", err)
	}
	if v, ok := rec.get(fImpressions); ok {
		if row.impressions, err = parseCount(v); err != nil {
			return fmt.Errorf("impressions: %w", err)
		}
	}
	if v, ok := rec.get(fClicks); ok {
		if row.clicks, err = parseCount(v); err != nil {
			return fmt.Errorf("clicks: %w", err)
		}
	}
	if cur, ok := rec.get(fCurrency); ok && imp.h.cfg.Currency != "" && !strings.EqualFold(cur, imp.h.cfg.Currency) {
		return fmt.Errorf("currency: %q, but this deployment holds costs in %s (imports.currency); convert the report first", cur, imp.h.cfg.Currency)
	}
	cost := sketch.FromMicros(row.costMicros) // for Normalize's checks; the exact micros are set after
	row.raw.Type, row.raw.Cost = "cost", &cost
	return nil
}

// rowTime returns the row's time in unix ms: ts when given, else the
// start (00:00 UTC) of date.
func rowTime(rec *record) (ms int64, day bool, err error) {
	if v, ok := rec.get(fTS); ok {
		if isInteger(v) {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, false, fmt.Errorf("ts: %q is out of range", v)
			}
			return ms, false, nil
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return 0, false, fmt.Errorf("ts: %q is neither RFC 3339 (2026-11-21T10:00:00Z) nor unix milliseconds", v)
		}
		return t.UnixMilli(), false, nil
	}
	if v, ok := rec.get(fDate); ok {
		t, err := time.Parse(time.DateOnly, v)
		if err != nil {
			return 0, false, fmt.Errorf("date: %q is not a date in the form YYYY-MM-DD", v)
		}
		return t.UnixMilli(), true, nil
	}
	return 0, false, errors.New("date: required (YYYY-MM-DD), or ts")
}

func isInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// naturalKey is the row key of a row without an id: its time and the
// normalised dimensions, e.g. "cost|2026-11-21|spring_sale|google|cpc|DE".
// The device is appended only when the report gives one, so reports
// without a device column keep the shorter key. A poll row's key adds
// the poll and answer, and the voter's hash when it names one.
func naturalKey(rk *reportKind, e *event.Event, day bool) string {
	t := time.UnixMilli(e.UnixMillis).UTC()
	when := t.Format(time.DateOnly)
	if !day && t.Truncate(24*time.Hour) != t {
		when = t.Format("2006-01-02T15:04:05.000Z")
	}
	s := &e.Series
	key := rk.keyPrefix + "|" + when + "|" + s.Campaign + "|" + s.Source + "|" + s.Medium + "|" + s.Country
	if s.Device != event.NoDevice {
		key += "|" + s.Device
	}
	if e.Vote != "" {
		poll, answer := sketch.SplitVote(e.Vote)
		key += "|" + poll + "|" + answer
	}
	if e.Visitor != 0 {
		key += "|" + strconv.FormatUint(e.Visitor, 16)
	}
	return key
}

// events builds the events of every row key, each with a row id of its
// own (key + "|" + type) and the import's version: of a spend report a
// cost event, and an impression and a click event when the report gives
// any; of a poll report a poll_vote event standing for the votes.
func (imp *reportImport) events(version uint64) ([]event.Event, error) {
	out := make([]event.Event, 0, len(imp.groups)*len(imp.kind.events))
	for i := range imp.groups {
		g := &imp.groups[i]
		ctx := &imp.ctx
		if g.day {
			ctx = &imp.dayCtx
		}
		for _, typ := range imp.kind.events {
			raw := g.raw
			raw.Type = typ
			var weight uint64
			switch typ {
			case "impression":
				weight, raw.Cost = g.impressions, nil
			case "click":
				weight, raw.Cost = g.clicks, nil
			case event.PollVote:
				weight = g.votes
			}
			if typ != "cost" && weight == 0 {
				continue
			}
			var e event.Event
			if err := event.Normalize(&raw, ctx, &e); err != nil {
				// The row's first event passed: a bug, not bad input.
				return nil, fmt.Errorf("row %q, %s event: %w", g.key, typ, err)
			}
			if typ == "cost" {
				e.CostMicros = g.costMicros // exact, not through float64
			}
			e.Weight, e.Row, e.RowVersion = weight, event.RowID(g.key+"|"+typ), version
			out = append(out, e)
		}
	}
	return out, nil
}

// Bounds of one row, the same as Normalize's for amounts.
const (
	maxMicros = 1e12 * 1e6
	maxCount  = 1e12
)

// parseMicros parses a decimal amount into micro-units exactly, rounding
// digits beyond the sixth half away from zero. '.' is the decimal
// separator; ',' is one too when commaDecimal (semicolon- and
// tab-delimited reports, JSON strings). A second separator, or a comma in
// a comma-delimited report, is refused as a likely thousands separator:
// guessing would turn 1,234 into 1.234.
func parseMicros(s string, commaDecimal bool) (int64, error) {
	orig := s
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg, s = s[0] == '-', s[1:]
	}
	if strings.Count(s, ".")+strings.Count(s, ",") > 1 {
		return 0, fmt.Errorf("%q has more than one separator: thousands separators are not supported, write 1234.56", orig)
	}
	intPart, frac := s, ""
	if i := strings.IndexAny(s, ".,"); i >= 0 {
		if s[i] == ',' && !commaDecimal {
			return 0, fmt.Errorf("%q: a comma in a comma-delimited report reads as a thousands separator; write 1234.56, or use ';' between columns for decimal commas", orig)
		}
		intPart, frac = s[:i], s[i+1:]
	}
	if intPart == "" && frac == "" || !digits(intPart) || !digits(frac) {
		return 0, fmt.Errorf("%q is not a decimal number (no currency symbols or spaces)", orig)
	}
	intPart = strings.TrimLeft(intPart, "0")
	if len(intPart) > 13 {
		return 0, fmt.Errorf("%q is above 1e12", orig)
	}
	var units int64
	if intPart != "" {
		units, _ = strconv.ParseInt(intPart, 10, 64) // at most 13 digits
	}
	var micros int64
	for i := range 6 {
		micros *= 10
		if i < len(frac) {
			micros += int64(frac[i] - '0')
		}
	}
	if len(frac) > 6 && frac[6] >= '5' {
		micros++
	}
	micros += units * 1e6
	if micros > maxMicros {
		return 0, fmt.Errorf("%q is above 1e12", orig)
	}
	if neg {
		micros = -micros
	}
	return micros, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseCount parses a non-negative whole number without separators.
func parseCount(s string) (uint64, error) {
	switch {
	case strings.HasPrefix(s, "-"):
		return 0, fmt.Errorf("%q: must not be negative", s)
	case strings.ContainsAny(s, ".,") && digits(strings.NewReplacer(".", "", ",", "").Replace(s)):
		return 0, fmt.Errorf("%q: want a whole number without separators, e.g. 120000", s)
	case s == "" || !digits(s):
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxCount {
		return 0, fmt.Errorf("%q is above 1e12", s)
	}
	return n, nil
}

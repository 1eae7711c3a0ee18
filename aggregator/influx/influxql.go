package influx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The InfluxQL read path: statements sent to the v1 query API (POST
// /query), which InfluxDB 1.x answers in its default configuration, 2.x
// through its v1 compatibility (bucket "db/rp" is reachable as database
// "db", retention policy "rp" by its virtual DBRP mapping) and 3.x. The
// answers are streamed: chunked=true makes the server send one JSON
// document per chunk of rows, decoded one at a time, so memory is bounded
// by the chunk size, not by the answer.

// splitBucket splits "db/rp" at its first slash, as InfluxDB 1.8 does; a
// bucket without a slash is a database read through its default
// retention policy (rp "").
func splitBucket(bucket string) (db, rp string) {
	if i := strings.IndexByte(bucket, '/'); i >= 0 {
		return bucket[:i], bucket[i+1:]
	}
	return bucket, ""
}

// influxQLString returns s as an InfluxQL string literal that means
// exactly s. InfluxQL's scanner knows four escapes (\\, \', \" and \n) and
// ends a string at an unescaped quote or newline, so those four are all
// that must be escaped; every other character stands for itself. The
// literal therefore cannot end early or run into the next statement,
// whatever s holds: values from HTTP requests cannot change a query.
// Tag values reach here through TagValue, which has already replaced
// control characters and invalid UTF-8.
func influxQLString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	writeInfluxQLEscaped(&b, s)
	b.WriteByte('\'')
	return b.String()
}

// influxQLIdent returns s as a double-quoted InfluxQL identifier (the
// same escapes as a string).
func influxQLIdent(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	writeInfluxQLEscaped(&b, s)
	b.WriteByte('"')
	return b.String()
}

func writeInfluxQLEscaped(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '\'', '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
}

// influxQLTime returns t as an InfluxQL time literal (RFC 3339, UTC).
func influxQLTime(t time.Time) string {
	return "'" + t.UTC().Format(time.RFC3339Nano) + "'"
}

// influxQLTagEquals returns `"<key>" = '<stored value>'`.
func influxQLTagEquals(key, value string) string {
	return influxQLIdent(key) + " = " + influxQLString(TagValue(value))
}

// influxQLCampaignsIn is an "or" of equalities, the InfluxQL counterpart
// of campaignsIn.
func influxQLCampaignsIn(campaigns []string) string {
	ors := make([]string, len(campaigns))
	for i, c := range campaigns {
		ors[i] = influxQLTagEquals(TagCampaign, c)
	}
	return "(" + strings.Join(ors, " OR ") + ")"
}

// influxQLSelect builds `SELECT <fields> FROM "<measurement>" WHERE <conds>
// AND time >= from AND time < to GROUP BY *`. GROUP BY * returns every tag
// in each series' tags rather than as columns, one series per tag set,
// rows in time order within it. The time bounds are [from, to): InfluxQL's
// < is exclusive on every version (no 1.8 Flux quirk to work around).
func influxQLSelect(fields, measurement string, conds []string, from, to time.Time) string {
	var b strings.Builder
	b.WriteString("SELECT ")
	b.WriteString(fields)
	b.WriteString(" FROM ")
	b.WriteString(influxQLIdent(measurement))
	b.WriteString(" WHERE ")
	for _, c := range conds {
		b.WriteString(c)
		b.WriteString(" AND ")
	}
	b.WriteString("time >= ")
	b.WriteString(influxQLTime(from))
	b.WriteString(" AND time < ")
	b.WriteString(influxQLTime(to))
	b.WriteString(" GROUP BY *")
	return b.String()
}

// InfluxQL field selections: regular expressions over field keys, since
// bots_<reason> and vote_<poll>/<answer> are open sets. They name the
// same fields as minuteFields, counterFields and uniquesFields of the
// Flux path.
const (
	influxQLMinuteFields  = `/^(count|value_micros|cost_micros|hll|quantiles|bots_.+|vote_.+)$/`
	influxQLCounterFields = `/^(count|value_micros|cost_micros|bots_.+|vote_.+)$/`
	influxQLUniquesFields = `/^(count|value_micros|cost_micros|hll|bots_.+|vote_.+)$/`
	influxQLLedgerFields  = `/^(hll|ledger|series)$/`
)

// minuteConds are the conditions of a MinuteQuery but its time range.
func minuteConds(q MinuteQuery) []string {
	var conds []string
	switch {
	case q.Campaign != "":
		conds = append(conds, influxQLTagEquals(TagCampaign, q.Campaign))
	case len(q.Campaigns) > 0:
		conds = append(conds, influxQLCampaignsIn(q.Campaigns))
	}
	for _, f := range []struct{ key, value string }{
		{TagSource, q.Source}, {TagMedium, q.Medium}, {TagType, q.Type},
		{TagCountry, q.Country}, {TagDevice, q.Device}, {TagRegion, q.Region},
	} {
		if f.value != "" {
			conds = append(conds, influxQLTagEquals(f.key, f.value))
		}
	}
	for _, c := range q.ExcludeCampaigns {
		conds = append(conds, influxQLIdent(TagCampaign)+" != "+influxQLString(TagValue(c)))
	}
	return conds
}

// minutesInfluxQL builds QueryMinutes's statement.
func minutesInfluxQL(q MinuteQuery) string {
	fields := influxQLMinuteFields
	switch {
	case q.CountersOnly:
		fields = influxQLCounterFields
	case q.NoQuantiles:
		fields = influxQLUniquesFields
	}
	return influxQLSelect(fields, MeasurementMinute, minuteConds(q), q.From, q.To)
}

// ledgersInfluxQL builds the statement reading merged minutes' ledgers
// and HyperLogLogs (LoadContributionsOf).
func ledgersInfluxQL(q MinuteQuery) string {
	return influxQLSelect(influxQLLedgerFields, MeasurementMinute, minuteConds(q), q.From, q.To)
}

// contribsInfluxQL builds the loaders' statement.
func contribsInfluxQL(from, to time.Time, campaigns []string) string {
	var conds []string
	if len(campaigns) > 0 {
		conds = append(conds, influxQLCampaignsIn(campaigns))
	}
	return influxQLSelect(influxQLIdent(FieldContribs), MeasurementContrib, conds, from, to)
}

// Chunk sizes: rows per JSON document of a streamed answer. A minute row
// with sketches is at most about 30 KB (a dense HLL is 22 KB of base64),
// a contribution row at most MaxStringField, so a chunk stays within a
// few tens of MiB however long the answer.
const (
	minutesChunkRows  = 1000
	contribsChunkRows = 250
)

// v1Response is one JSON document of the v1 query API's answer.
type v1Response struct {
	Results []v1Result `json:"results"`
	// Error is set when the request as a whole failed.
	Error string `json:"error"`
}

type v1Result struct {
	StatementID int        `json:"statement_id"`
	Series      []v1Series `json:"series"`
	Error       string     `json:"error"`
}

type v1Series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// StatementError reports an InfluxQL statement the server refused while
// answering the request itself with 200 (database not found, parse error
// of a later statement, not authorized ...). Retrying does not help.
type StatementError struct {
	// Statement is the statement's index in the request.
	Statement int
	// Message is the server's explanation.
	Message string
}

// Error returns the server's explanation.
func (e *StatementError) Error() string { return "influxql: " + e.Message }

// influxQL runs one statement on database db (retention policy rp, both
// may be "") and hands every row of every series to fn: its time in unix
// seconds (epoch=s) and its values (the series' tags and the row's
// columns by name; integers as int64, other numbers as float64). An error
// from fn stops reading and is returned as is. chunk is the rows per
// streamed document (0: not streamed, for small answers such as SHOW).
func (r *Reader) influxQL(ctx context.Context, method, stmt, db, rp string, chunk int, fn func(s *v1Series, t int64, vals map[string]any) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.QueryTimeout)
	defer cancel()
	form := url.Values{"q": {stmt}, "epoch": {"s"}}
	if db != "" {
		form.Set("db", db)
	}
	if rp != "" {
		form.Set("rp", rp)
	}
	if chunk > 0 {
		form.Set("chunked", "true")
		form.Set("chunk_size", strconv.Itoa(chunk))
	}
	var req *http.Request
	var err error
	if method == http.MethodGet {
		req, err = http.NewRequestWithContext(ctx, method, r.cfg.URL+"/query?"+form.Encode(), nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, method, r.cfg.URL+"/query", strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if err != nil {
		return &PermanentError{Err: fmt.Errorf("build query request: %w", err)}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tally-aggregator")
	if r.cfg.Token != "" {
		req.Header.Set("Authorization", "Token "+r.cfg.Token)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return &RetryableError{Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return httpStatusError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	vals := map[string]any{}
	for {
		var doc v1Response
		if err := dec.Decode(&doc); err == io.EOF {
			return nil
		} else if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("read influxql answer: %w (%v)", ctx.Err(), err)
			}
			return &RetryableError{Err: fmt.Errorf("read influxql answer: %w", err)}
		}
		if doc.Error != "" {
			return &StatementError{Message: doc.Error}
		}
		for _, res := range doc.Results {
			if res.Error != "" {
				return &StatementError{Statement: res.StatementID, Message: res.Error}
			}
			for i := range res.Series {
				s := &res.Series[i]
				for _, row := range s.Values {
					clear(vals)
					for k, v := range s.Tags {
						vals[k] = v
					}
					var t int64
					for j, c := range s.Columns {
						if j >= len(row) {
							break
						}
						v := row[j]
						if n, ok := v.(json.Number); ok {
							v = numberValue(n)
						}
						if c == "time" {
							t, _ = v.(int64)
							continue
						}
						vals[c] = v
					}
					if err := fn(s, t, vals); err != nil {
						return err
					}
				}
			}
		}
	}
}

// numberValue is an int64 when n is an integer, else a float64. InfluxQL
// prints integer fields without a decimal point.
func numberValue(n json.Number) any {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i
	}
	if u, err := strconv.ParseUint(string(n), 10, 64); err == nil {
		return u
	}
	f, _ := n.Float64()
	return f
}

// httpStatusError turns a non-200 answer of the v1 API into a
// *RetryableError (408, 429, 5xx) or a *PermanentError, with the server's
// explanation: InfluxDB puts it in {"error": ...} (1.x also in the
// X-Influxdb-Error header), or in plain text.
func httpStatusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := resp.Header.Get("X-Influxdb-Error")
	if msg == "" {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &e) == nil && (e.Error != "" || e.Message != "") {
			msg = e.Error
			if msg == "" {
				msg = e.Message
			}
		} else {
			msg = strings.TrimSpace(string(body))
		}
	}
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	err := errors.New(http.StatusText(resp.StatusCode))
	code := resp.StatusCode
	if code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 {
		var ra time.Duration
		if v := resp.Header.Get("Retry-After"); v != "" {
			if s, perr := strconv.Atoi(v); perr == nil && s > 0 {
				ra = min(time.Duration(s)*time.Second, maxRetryAfter)
			}
		}
		return &RetryableError{StatusCode: code, RetryAfter: ra, Message: msg, Err: err}
	}
	return &PermanentError{StatusCode: code, Message: msg, Err: err}
}

// showColumn runs a SHOW statement and returns the values of its first
// column (database names, retention policy names ...).
func (r *Reader) showColumn(ctx context.Context, stmt string) ([]string, error) {
	var out []string
	err := r.influxQL(ctx, http.MethodGet, stmt, "", "", 0, func(s *v1Series, _ int64, vals map[string]any) error {
		if len(s.Columns) > 0 {
			if v, ok := vals[s.Columns[0]].(string); ok {
				out = append(out, v)
			}
		}
		return nil
	})
	return out, err
}

// retentionPolicies returns the retention policies of database db and
// the name of its default one. ok is false when the database does not
// exist.
func (r *Reader) retentionPolicies(ctx context.Context, db string) (rps []string, def string, ok bool, err error) {
	dbs, err := r.showColumn(ctx, "SHOW DATABASES")
	if err != nil {
		return nil, "", false, err
	}
	found := false
	for _, d := range dbs {
		if d == db {
			found = true
		}
	}
	if !found {
		return nil, "", false, nil
	}
	err = r.influxQL(ctx, http.MethodGet, "SHOW RETENTION POLICIES ON "+influxQLIdent(db), "", "", 0,
		func(_ *v1Series, _ int64, vals map[string]any) error {
			name, _ := vals["name"].(string)
			rps = append(rps, name)
			if d, _ := vals["default"].(bool); d {
				def = name
			}
			return nil
		})
	if err != nil {
		return nil, "", false, err
	}
	return rps, def, true, nil
}

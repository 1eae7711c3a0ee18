package influx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	"github.com/influxdata/influxdb-client-go/v2/api/query"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// Reader reads merged minutes and contributions back, with InfluxQL
// through the v1 query API or with Flux (Config.QueryLanguage; Setup or
// the first query settles "auto"). Both paths return the same points. It
// is safe for concurrent use; every method blocks until its query has
// been read or ctx (or QueryTimeout) ends. Reads are not retried: a
// caller that can wait, such as an aggregator rebuilding at start,
// retries itself.
type Reader struct {
	cfg    Config
	log    *slog.Logger
	hc     *http.Client
	client influxdb2.Client
	query  api.QueryAPI

	langMu sync.Mutex
	lang   string // QueryInfluxQL or QueryFlux once settled, else ""

	closeOnce sync.Once
}

// MinuteQuery selects merged minutes of one campaign, of a list of
// campaigns, or of every campaign. Optional filters left "" match every
// value; NoneTag matches series whose dimension is empty. Values are
// compared exactly (after TagValue), never as patterns.
type MinuteQuery struct {
	// Exactly one of Campaign, Campaigns and AllCampaigns selects the
	// campaigns: one, any of a list, or all of them. Asking for every
	// campaign is explicit so that a forgotten Campaign never becomes a
	// scan of the whole bucket.
	Campaign     string
	Campaigns    []string
	AllCampaigns bool
	// From and To bound the minutes' start times: From <= t < To.
	From, To time.Time

	Source, Medium, Type, Country, Device, Region string

	// CountersOnly leaves the sketches (HLL and quantiles) out: states
	// come back with counters and sums only, at a fraction of the bytes.
	CountersOnly bool
	// StoredUniques hands each point's HyperLogLog over still in its
	// stored encoding (sketch.State.UniquesStored, Uniques nil), for a
	// caller that folds uniques into a sketch.Union: decoding each into a
	// library sketch is most of the cost of a long series. The bytes are
	// not checked here, as checking is decoding: the Union refuses a
	// corrupt one where it folds it (kpi.Accumulator.Add names the point).
	StoredUniques bool
	// NoQuantiles leaves the value sketches out (nil Values), for a
	// caller that never reads them: fewer bytes to send and decode.
	NoQuantiles bool

	// Resolution chooses the points read: merged minutes (the default),
	// or hourly or daily rollups, whose Minute is the start of their hour
	// or day.
	Resolution Resolution
	// ExcludeCampaigns leaves these campaigns out of AllCampaigns.
	ExcludeCampaigns []string
}

// Resolution names a kind of merged point: minutes, hourly or daily
// rollups. Each lives in its own bucket (Config.Buckets).
type Resolution string

// Resolutions.
const (
	Minutes Resolution = "minute"
	Hours   Resolution = "hour"
	Days    Resolution = "day"
)

// Seconds is the length of one point of the resolution.
func (r Resolution) Seconds() int64 {
	switch r {
	case Hours:
		return 3600
	case Days:
		return 86400
	}
	return 60
}

// bucketOf returns the bucket holding points of resolution res.
func (r *Reader) bucketOf(res Resolution) string { return r.cfg.bucketOf(res) }

// NewReader returns a Reader for cfg (zero fields take their defaults;
// only the connection fields and QueryTimeout matter to a Reader). It does
// not contact the server. logger may be nil.
func NewReader(cfg Config, logger *slog.Logger) (*Reader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hc := newHTTPClient()
	// InfluxQL answers come uncompressed unless Gzip asks (the Flux
	// client asks for gzip itself). They are mostly base64 of compressed
	// sketches, which gzip shrinks by only about a quarter, while
	// compressing them was most of InfluxDB's time for a 365-day daily
	// series (BenchmarkSeriesLatency: the read alone went from 281 to 129
	// ms at p50).
	hc.Transport.(*http.Transport).DisableCompression = !cfg.Gzip
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, influxdb2.DefaultOptions().
		SetHTTPClient(hc).
		SetApplicationName("tally-aggregator"))
	r := &Reader{
		cfg:    cfg,
		log:    logger.With("component", "influx-reader", "bucket", cfg.Bucket),
		hc:     hc,
		client: client,
		query:  client.QueryAPI(cfg.Org),
	}
	if cfg.QueryLanguage == QueryInfluxQL || cfg.QueryLanguage == QueryFlux {
		r.lang = cfg.QueryLanguage
	}
	return r, nil
}

// QueryLanguage returns the language the Reader reads with, QueryInfluxQL
// or QueryFlux, or "" while "auto" is not settled yet.
func (r *Reader) QueryLanguage() string {
	r.langMu.Lock()
	defer r.langMu.Unlock()
	return r.lang
}

// language returns the query language, settling "auto" on first use: it
// asks the server for InfluxQL (SHOW DATABASES) and, when the server does
// not answer InfluxQL at all, for Flux. An error that may pass (network,
// 5xx) settles nothing, so the next query asks again.
func (r *Reader) language(ctx context.Context) (string, error) {
	r.langMu.Lock()
	defer r.langMu.Unlock()
	if r.lang != "" {
		return r.lang, nil
	}
	_, qlErr := r.showColumn(ctx, "SHOW DATABASES")
	if qlErr == nil {
		r.lang = QueryInfluxQL
		return r.lang, nil
	}
	if !languageMissing(qlErr) {
		return "", fmt.Errorf("influx: ask for InfluxQL: %w", qlErr)
	}
	fluxErr := r.probeFlux(ctx)
	if fluxErr == nil {
		r.lang = QueryFlux
		return r.lang, nil
	}
	return "", fmt.Errorf("influx: the server answers neither InfluxQL (%v) nor Flux (%w)", qlErr, fluxErr)
}

// setLanguage fixes the query language (Setup's choice).
func (r *Reader) setLanguage(lang string) {
	r.langMu.Lock()
	r.lang = lang
	r.langMu.Unlock()
}

// probeFlux runs the smallest Flux query there is that reads the server.
func (r *Reader) probeFlux(ctx context.Context) error {
	return r.runFlux(ctx, `buckets() |> limit(n: 1) |> keep(columns: ["name"])`, func(*query.FluxRecord) {})
}

// languageMissing reports whether err says that the server does not
// answer a query language at all (rather than failing this request):
// no such endpoint (404, 405, 501), Flux switched off (InfluxDB 1.8
// answers 403 "Flux query service disabled"), or a statement the server
// does not know.
func languageMissing(err error) bool {
	var perr *PermanentError
	if errors.As(err, &perr) {
		switch perr.StatusCode {
		case http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
			return true
		}
	}
	var serr *StatementError
	return errors.As(err, &serr)
}

// Ping checks that the server answers /ping.
func (r *Reader) Ping(ctx context.Context) error {
	return ping(ctx, r.client, r.cfg)
}

// ErrBucketNotFound reports that the configured bucket does not exist.
var ErrBucketNotFound = errors.New("bucket not found")

// CheckBucket returns nil when the configured bucket exists, and an error
// wrapping ErrBucketNotFound when it does not. Call it at start (Setup
// does): InfluxDB 1.8 answers a write to a missing retention policy with
// 500, which Write must treat as retryable (a missing database is a clean
// 404).
//
// With InfluxQL it looks for the database and retention policy ("db/rp";
// a bucket without "/rp" needs a default retention policy); with Flux for
// the bucket by name.
func (r *Reader) CheckBucket(ctx context.Context) error {
	lang, err := r.language(ctx)
	if err != nil {
		return fmt.Errorf("influx check bucket %q: %w", r.cfg.Bucket, err)
	}
	found := false
	if lang == QueryFlux {
		// 1.8 names its buckets "db/rp" only; a bucket "db" (the default
		// retention policy) is there when any "db/..." is.
		db, rp := splitBucket(r.cfg.Bucket)
		flux := `buckets() |> keep(columns: ["name"])`
		err = r.runFlux(ctx, flux, func(rec *query.FluxRecord) {
			name, _ := rec.ValueByKey("name").(string)
			found = found || name == r.cfg.Bucket || (rp == "" && strings.HasPrefix(name, db+"/"))
		})
	} else {
		found, err = r.bucketInfluxQL(ctx)
	}
	if err != nil {
		return fmt.Errorf("influx check bucket %q: %w", r.cfg.Bucket, err)
	}
	if !found {
		return fmt.Errorf("influx check bucket %q: %w", r.cfg.Bucket, ErrBucketNotFound)
	}
	return nil
}

// bucketInfluxQL reports whether the database and retention policy of the
// bucket exist.
func (r *Reader) bucketInfluxQL(ctx context.Context) (bool, error) {
	db, rp := splitBucket(r.cfg.Bucket)
	rps, def, ok, err := r.retentionPolicies(ctx, db)
	if err != nil || !ok {
		return false, err
	}
	if rp == "" {
		return def != "", nil
	}
	for _, p := range rps {
		if p == rp {
			return true, nil
		}
	}
	return false, nil
}

// Close releases the Reader's connections; it is safe to call more than once.
func (r *Reader) Close() {
	r.closeOnce.Do(func() {
		r.client.Close()
		r.hc.CloseIdleConnections()
	})
}

// LoadContributions returns every tally_contrib point whose minute lies in
// [from, to): what an aggregator reloads at start to rebuild its open
// minutes. Each point's Series comes from its contributions, so it is
// exact even where TagValue had to change a tag.
//
// Points that cannot be decoded are skipped; then the other points are
// returned together with a *CorruptPointError.
func (r *Reader) LoadContributions(ctx context.Context, from, to time.Time) ([]ContribPoint, error) {
	return r.loadContribs(ctx, from, to, nil, nil, false)
}

// LoadContributionsOf is LoadContributions for the given campaigns only,
// filtered by InfluxDB, together with the ledgers of their merged minutes
// (see ledgerFromValues): what a node loads to merge late data into
// minutes whose contribution points may be gone. An empty list selects
// nothing.
func (r *Reader) LoadContributionsOf(ctx context.Context, from, to time.Time, campaigns []string) ([]ContribPoint, error) {
	if len(campaigns) == 0 {
		return nil, nil
	}
	return r.loadContribs(ctx, from, to, campaigns, nil, true)
}

// LoadContributionsFunc is LoadContributions keeping only the points for
// whose series keep returns true (e.g. "this node owns the campaign").
// InfluxDB still sends every point of the range; prefer
// LoadContributionsOf when the campaigns are known.
func (r *Reader) LoadContributionsFunc(ctx context.Context, from, to time.Time, keep func(sketch.Series) bool) ([]ContribPoint, error) {
	return r.loadContribs(ctx, from, to, nil, keep, false)
}

func (r *Reader) loadContribs(ctx context.Context, from, to time.Time, campaigns []string, keep func(sketch.Series) bool, ledgers bool) ([]ContribPoint, error) {
	if !from.Before(to) {
		return nil, fmt.Errorf("influx load contributions: empty range [%s, %s)", fluxTime(from), fluxTime(to))
	}
	var (
		out     []ContribPoint
		corrupt CorruptPointError
	)
	note := func(err error) {
		if corrupt.Skipped == 0 {
			corrupt.First = err
		}
		corrupt.Skipped++
	}
	row := func(minute int64, vals map[string]any) {
		p, err := contribFromValues(minute, vals)
		if err != nil {
			note(err)
			return
		}
		if keep == nil || keep(p.Series) {
			out = append(out, p)
		}
	}
	lang, err := r.language(ctx)
	if err != nil {
		return nil, fmt.Errorf("influx load contributions [%s, %s): %w", fluxTime(from), fluxTime(to), err)
	}
	// The contributions bucket, and the minutes bucket, where releases
	// before format 3 wrote them.
	for _, bucket := range []string{r.cfg.ContribBucket, r.cfg.Bucket} {
		if lang == QueryFlux {
			err = r.runFlux(ctx, contribsQuery(bucket, from, to, campaigns), func(rec *query.FluxRecord) {
				vals := rec.Values()
				vals[FieldContribs] = rec.Value()
				row(rec.Time().Unix(), vals)
			})
		} else {
			db, rp := splitBucket(bucket)
			err = r.influxQL(ctx, http.MethodPost, contribsInfluxQL(from, to, campaigns), db, rp, contribsChunkRows,
				func(_ *v1Series, t int64, vals map[string]any) error {
					row(t, vals)
					return nil
				})
		}
		if err != nil {
			return nil, fmt.Errorf("influx load contributions of %s [%s, %s): %w", bucket, fluxTime(from), fluxTime(to), err)
		}
	}
	if ledgers {
		lrow := func(minute int64, vals map[string]any) {
			ps, err := ledgerFromValues(minute, vals)
			if err != nil {
				note(err)
				return
			}
			for _, p := range ps {
				if keep == nil || keep(p.Series) {
					out = append(out, p)
				}
			}
		}
		q := MinuteQuery{Campaigns: campaigns, AllCampaigns: len(campaigns) == 0, From: from, To: to}
		if lang == QueryFlux {
			err = r.runFlux(ctx, ledgersQuery(r.cfg.Bucket, q), func(rec *query.FluxRecord) { lrow(rec.Time().Unix(), rec.Values()) })
		} else {
			db, rp := splitBucket(r.cfg.Bucket)
			err = r.influxQL(ctx, http.MethodPost, ledgersInfluxQL(q), db, rp, contribsChunkRows,
				func(_ *v1Series, t int64, vals map[string]any) error {
					lrow(t, vals)
					return nil
				})
		}
		if err != nil {
			return nil, fmt.Errorf("influx load ledgers [%s, %s): %w", fluxTime(from), fluxTime(to), err)
		}
	}
	if corrupt.Skipped > 0 {
		return out, &corrupt
	}
	return out, nil
}

// contribFromValues decodes one "contribs" row (its minute, tags and the
// contribs field, from either query language) and checks that the
// contributions agree with the row's time and tags.
func contribFromValues(minute int64, vals map[string]any) (ContribPoint, error) {
	tags := seriesFromValues(vals)
	agent := valueFromTag(stringValue(vals, TagAgent))
	where := fmt.Sprintf("tally_contrib %s minute %d agent %q", tags, minute, agent)
	s, ok := vals[FieldContribs].(string)
	if !ok {
		return ContribPoint{}, fmt.Errorf("%s: contribs is %T, not a string", where, vals[FieldContribs])
	}
	var cs []wire.Contribution
	switch f := stringValue(vals, TagFormat); f {
	case "", "1", "2":
		var err error
		if cs, err = decodeContribs(s); err != nil {
			return ContribPoint{}, fmt.Errorf("%s: %w", where, err)
		}
	case "3":
		raw, err := decodeBase64(s)
		if err == nil {
			cs, err = wireContribs(raw, tags, minute)
		}
		if err != nil {
			return ContribPoint{}, fmt.Errorf("%s: contribs: %w", where, err)
		}
	default:
		return ContribPoint{}, fmt.Errorf("%s: format %q; this node reads formats 1 to %d (written by a newer release?)", where, f, ContribFormat)
	}
	if len(cs) == 0 {
		return ContribPoint{}, fmt.Errorf("%s: no contributions", where)
	}
	series := cs[0].Series
	for i := range cs {
		if cs[i].Series != series || cs[i].Minute != minute || storedSeries(cs[i].Series) != tags {
			return ContribPoint{}, fmt.Errorf("%s: contribution %d is for %s minute %d", where, i, cs[i].Series, cs[i].Minute)
		}
	}
	node := stringValue(vals, TagNode)
	return ContribPoint{Series: series, Minute: minute, Agent: agent, Node: node, Contribs: cs}, nil
}

// wireContribs decodes a StoredContribsV1 value into wire contributions
// of the series and minute (an entry's own series, when it has one,
// wins).
func wireContribs(raw []byte, series sketch.Series, minute int64) ([]wire.Contribution, error) {
	scs, err := sketch.DecodeStoredContribs(raw)
	if err != nil {
		return nil, err
	}
	cs := make([]wire.Contribution, len(scs))
	for i, sc := range scs {
		enc, err := sc.State.Encode()
		if err != nil {
			return nil, err
		}
		s := series
		if sc.Series != nil {
			s = *sc.Series
		}
		cs[i] = wire.Contribution{Series: s, Minute: minute, CID: sc.CID, Version: sc.Version, State: enc}
	}
	return cs, nil
}

// ledgerFromValues turns one tally row read with its ledger into the
// contribution points it stands for: one per agent of the ledger, with
// each contribution's counters and quantiles, and one of agent "" (no
// real agent has that name) holding the minute's HyperLogLog as a
// contribution of version 0, which adds its visitors and no counts. A
// row without a ledger (written before ledgers existed) stands for
// nothing: its contribution points hold it.
func ledgerFromValues(minute int64, vals map[string]any) ([]ContribPoint, error) {
	ledger, _ := vals[FieldLedger].(string)
	if ledger == "" {
		return nil, nil
	}
	series := seriesFromValues(vals)
	if exact, ok := vals[FieldSeries].(string); ok && exact != "" {
		var err error
		if series, err = decodeExactSeries(exact); err != nil {
			return nil, fmt.Errorf("tally %s minute %d: %w", series, minute, err)
		}
	}
	where := fmt.Sprintf("tally %s minute %d", series, minute)
	raw, err := decodeBase64(ledger)
	if err != nil {
		return nil, fmt.Errorf("%s: ledger: %w", where, err)
	}
	scs, err := sketch.DecodeStoredContribs(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: ledger: %w", where, err)
	}
	byAgent := map[string]int{}
	var out []ContribPoint
	for _, sc := range scs {
		if sc.Agent == "" {
			return nil, fmt.Errorf("%s: ledger names no agent", where)
		}
		enc, err := sc.State.Encode()
		if err != nil {
			return nil, fmt.Errorf("%s: ledger: %w", where, err)
		}
		i, ok := byAgent[sc.Agent]
		if !ok {
			i = len(out)
			byAgent[sc.Agent] = i
			out = append(out, ContribPoint{Series: series, Minute: minute, Agent: sc.Agent})
		}
		out[i].Contribs = append(out[i].Contribs, wire.Contribution{Series: series, Minute: minute, CID: sc.CID, Version: sc.Version, State: enc})
	}
	if h, ok := vals[FieldHLL].(string); ok && h != "" {
		raw, err := decodeBase64(h)
		if err != nil {
			return nil, fmt.Errorf("%s: hll: %w", where, err)
		}
		hll, err := sketch.DecodeStoredHLL(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		enc, err := (&sketch.State{Uniques: hll}).Encode()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		out = append(out, ContribPoint{Series: series, Minute: minute, Agent: FoldedAgent,
			Contribs: []wire.Contribution{{Series: series, Minute: minute, State: enc}}})
	}
	return out, nil
}

// FoldedAgent is the agent name of the contribution a merged minute's
// ledger stands on for its visitors (see ledgerFromValues): no agent has
// this name (the wire refuses batches without one), so it never meets a
// real contribution. Contribution points are never written for it.
const FoldedAgent = ""

// storedSeries maps every dimension through TagValue and back, which is
// what reading the tags of a written series gives.
func storedSeries(s sketch.Series) sketch.Series {
	f := func(v string) string { return valueFromTag(TagValue(v)) }
	return sketch.Series{Campaign: f(s.Campaign), Source: f(s.Source), Medium: f(s.Medium), Type: f(s.Type),
		Country: f(s.Country), Device: f(s.Device), Region: f(s.Region)}
}

// QueryMinutes returns the merged minutes of q's campaigns in [q.From,
// q.To) that match its filters, with decoded state (counters, HLL,
// quantiles), in the order InfluxDB returns them (grouped by series, by
// time within a series). Series come from tags: a dimension TagValue had
// to change comes back changed.
//
// A point that cannot be decoded is skipped; then the other points are
// returned together with a *CorruptPointError.
func (r *Reader) QueryMinutes(ctx context.Context, q MinuteQuery) ([]sketch.Minute, error) {
	var out []sketch.Minute
	err := r.EachMinute(ctx, q, func(p sketch.Minute) error {
		out = append(out, p)
		return nil
	})
	var corrupt *CorruptPointError
	if err != nil && !errors.As(err, &corrupt) {
		return nil, err
	}
	return out, err
}

// EachMinute is QueryMinutes handing each point to fn as it is decoded,
// so a caller that folds points into a few buckets never holds them all:
// memory stays bounded whatever the window. fn runs on the caller's
// goroutine; an error from fn stops the query and is returned as is.
//
// Points that cannot be decoded are skipped; then EachMinute returns a
// *CorruptPointError after the other points.
func (r *Reader) EachMinute(ctx context.Context, q MinuteQuery, fn func(sketch.Minute) error) error {
	if err := q.check(); err != nil {
		return fmt.Errorf("influx query minutes: %w", err)
	}
	var (
		corrupt CorruptPointError
		fnErr   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	row := func(minute int64, vals map[string]any) error {
		p, err := minuteFromValues(minute, vals, q.StoredUniques)
		if err != nil {
			if corrupt.Skipped == 0 {
				corrupt.First = err
			}
			corrupt.Skipped++
			return nil
		}
		fnErr = fn(p)
		return fnErr
	}
	lang, err := r.language(ctx)
	switch {
	case err != nil:
	case lang == QueryFlux:
		err = r.runFlux(ctx, minutesQuery(r.bucketOf(q.Resolution), q), func(rec *query.FluxRecord) {
			if fnErr == nil && row(rec.Time().Unix(), rec.Values()) != nil {
				cancel() // stop reading the answer
			}
		})
	default:
		db, rp := splitBucket(r.bucketOf(q.Resolution))
		err = r.influxQL(ctx, http.MethodPost, minutesInfluxQL(q), db, rp, minutesChunkRows,
			func(_ *v1Series, t int64, vals map[string]any) error { return row(t, vals) })
	}
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("influx query minutes of %s: %w", q.campaignsString(), err)
	}
	if corrupt.Skipped > 0 {
		return &corrupt
	}
	return nil
}

func (q MinuteQuery) check() error {
	n := 0
	if q.Campaign != "" {
		n++
	}
	if len(q.Campaigns) > 0 {
		n++
	}
	if q.AllCampaigns {
		n++
	}
	if n != 1 {
		return errors.New("exactly one of campaign, campaigns and all campaigns is required")
	}
	if !q.From.Before(q.To) {
		return fmt.Errorf("empty range [%s, %s)", fluxTime(q.From), fluxTime(q.To))
	}
	return nil
}

func (q MinuteQuery) campaignsString() string {
	switch {
	case q.AllCampaigns:
		return "all campaigns"
	case len(q.Campaigns) > 0:
		return fmt.Sprintf("campaigns %q", q.Campaigns)
	}
	return fmt.Sprintf("campaign %q", q.Campaign)
}

// minuteFromValues decodes one tally row: a pivoted Flux record or an
// InfluxQL row, both as the minute and the values by column (tags and
// fields; other columns are ignored). With storedUniques, its HyperLogLog
// is left encoded and unchecked (MinuteQuery.StoredUniques).
func minuteFromValues(minute int64, vals map[string]any, storedUniques bool) (sketch.Minute, error) {
	p := sketch.Minute{Series: seriesFromValues(vals), Minute: minute}
	var (
		enc            sketch.Encoded
		hll, quantiles []byte
	)
	for k, v := range vals {
		if v == nil {
			continue // a field this row lacks (pivot fills the table's columns)
		}
		var err error
		switch {
		case k == FieldCount:
			enc.Count, err = uintValue(v)
		case k == FieldValueMicros:
			enc.ValueMicros, err = intValue(v)
		case k == FieldCostMicros:
			enc.CostMicros, err = intValue(v)
		case k == FieldHLL:
			hll, err = base64Value(v)
		case k == FieldQuantiles:
			quantiles, err = base64Value(v)
		// Reasons and answers at 0 are kept: a rollup computed from these
		// minutes must write them as 0 too (see writtenFields).
		case strings.HasPrefix(k, FieldBotsPrefix):
			var n uint64
			if n, err = uintValue(v); err == nil {
				if enc.Bots == nil {
					enc.Bots = make(map[string]uint64)
				}
				enc.Bots[valueFromTag(k[len(FieldBotsPrefix):])] = n
			}
		case strings.HasPrefix(k, FieldVotePrefix):
			var n uint64
			var key string
			if n, err = uintValue(v); err == nil {
				if key, err = voteFromField(k); err == nil {
					if enc.Votes == nil {
						enc.Votes = make(map[string]uint64)
					}
					enc.Votes[key] = n
				}
			}
		}
		if err != nil {
			return sketch.Minute{}, fmt.Errorf("tally %s minute %d: field %s: %w", p.Series, p.Minute, k, err)
		}
	}
	st, err := enc.Decode()
	switch {
	case err != nil || len(hll) == 0:
	case storedUniques:
		st.UniquesStored = hll
	default:
		st.Uniques, err = sketch.DecodeStoredHLL(hll)
	}
	if err == nil && len(quantiles) > 0 {
		st.Values, err = sketch.DecodeStoredQuantiles(quantiles)
	}
	if err != nil {
		return sketch.Minute{}, fmt.Errorf("tally %s minute %d: %w", p.Series, p.Minute, err)
	}
	p.State = st
	return p, nil
}

// runFlux executes a Flux query and hands every record to fn.
func (r *Reader) runFlux(ctx context.Context, flux string, fn func(*query.FluxRecord)) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.QueryTimeout)
	defer cancel()
	res, err := r.query.Query(ctx, flux)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return classify(err)
	}
	defer res.Close()
	for res.Next() {
		fn(res.Record())
	}
	if err := res.Err(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("read flux answer: %w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("read flux answer: %w", err)
	}
	return nil
}

func seriesFromValues(vals map[string]any) sketch.Series {
	g := func(k string) string { return valueFromTag(stringValue(vals, k)) }
	return sketch.Series{
		Campaign: g(TagCampaign), Source: g(TagSource), Medium: g(TagMedium), Type: g(TagType),
		Country: g(TagCountry), Device: g(TagDevice), Region: g(TagRegion),
	}
}

func stringValue(vals map[string]any, k string) string {
	s, _ := vals[k].(string)
	return s
}

func intValue(v any) (int64, error) {
	switch n := v.(type) {
	case int64:
		return n, nil
	case uint64:
		if n > 1<<63-1 {
			return 0, fmt.Errorf("%d overflows int64", n)
		}
		return int64(n), nil
	}
	return 0, fmt.Errorf("want an integer, got %T", v)
}

func uintValue(v any) (uint64, error) {
	switch n := v.(type) {
	case int64:
		if n < 0 {
			return 0, fmt.Errorf("negative count %d", n)
		}
		return uint64(n), nil
	case uint64:
		return n, nil
	}
	return 0, fmt.Errorf("want an integer, got %T", v)
}

func base64Value(v any) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("want a string, got %T", v)
	}
	if s == "" {
		return nil, nil
	}
	return decodeBase64(s)
}

package influx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	"github.com/influxdata/influxdb-client-go/v2/api/query"

	"github.com/tally-edge/tally/sketch"
)

// Reader reads merged minutes and contributions back with Flux. It is safe
// for concurrent use; every method blocks until its query has been read or
// ctx (or QueryTimeout) ends. Reads are not retried: a caller that can
// wait, such as an aggregator rebuilding at start, retries itself.
type Reader struct {
	cfg    Config
	log    *slog.Logger
	hc     *http.Client
	client influxdb2.Client
	query  api.QueryAPI

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
}

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
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, influxdb2.DefaultOptions().
		SetHTTPClient(hc).
		SetApplicationName("tally-aggregator"))
	return &Reader{
		cfg:    cfg,
		log:    logger.With("component", "influx-reader", "bucket", cfg.Bucket),
		hc:     hc,
		client: client,
		query:  client.QueryAPI(cfg.Org),
	}, nil
}

// Ping checks that the server answers /ping.
func (r *Reader) Ping(ctx context.Context) error {
	return ping(ctx, r.client, r.cfg)
}

// ErrBucketNotFound reports that the configured bucket does not exist.
var ErrBucketNotFound = errors.New("bucket not found")

// CheckBucket returns nil when the configured bucket exists, and an error
// wrapping ErrBucketNotFound when it does not. Call it at start: InfluxDB
// 1.8 answers a write to a missing retention policy with 500, which Write
// must treat as retryable (a missing database is a clean 404).
func (r *Reader) CheckBucket(ctx context.Context) error {
	flux := `buckets() |> filter(fn: (r) => r.name == ` + fluxString(r.cfg.Bucket) + `) |> keep(columns: ["name"])`
	found := false
	if err := r.run(ctx, flux, func(*query.FluxRecord) { found = true }); err != nil {
		return fmt.Errorf("influx check bucket %q: %w", r.cfg.Bucket, err)
	}
	if !found {
		return fmt.Errorf("influx check bucket %q: %w", r.cfg.Bucket, ErrBucketNotFound)
	}
	return nil
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
	return r.loadContribs(ctx, from, to, nil, nil)
}

// LoadContributionsOf is LoadContributions for the given campaigns only,
// filtered by InfluxDB: what a node reloads when it becomes the owner of
// some campaigns. An empty list selects nothing.
func (r *Reader) LoadContributionsOf(ctx context.Context, from, to time.Time, campaigns []string) ([]ContribPoint, error) {
	if len(campaigns) == 0 {
		return nil, nil
	}
	return r.loadContribs(ctx, from, to, campaigns, nil)
}

// LoadContributionsFunc is LoadContributions keeping only the points for
// whose series keep returns true (e.g. "this node owns the campaign").
// InfluxDB still sends every point of the range; prefer
// LoadContributionsOf when the campaigns are known.
func (r *Reader) LoadContributionsFunc(ctx context.Context, from, to time.Time, keep func(sketch.Series) bool) ([]ContribPoint, error) {
	return r.loadContribs(ctx, from, to, nil, keep)
}

func (r *Reader) loadContribs(ctx context.Context, from, to time.Time, campaigns []string, keep func(sketch.Series) bool) ([]ContribPoint, error) {
	if !from.Before(to) {
		return nil, fmt.Errorf("influx load contributions: empty range [%s, %s)", fluxTime(from), fluxTime(to))
	}
	var (
		out     []ContribPoint
		corrupt CorruptPointError
	)
	err := r.run(ctx, contribsQuery(r.cfg.Bucket, from, to, campaigns), func(rec *query.FluxRecord) {
		p, err := contribFromRecord(rec)
		if err != nil {
			if corrupt.Skipped == 0 {
				corrupt.First = err
			}
			corrupt.Skipped++
			return
		}
		if keep == nil || keep(p.Series) {
			out = append(out, p)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("influx load contributions [%s, %s): %w", fluxTime(from), fluxTime(to), err)
	}
	if corrupt.Skipped > 0 {
		return out, &corrupt
	}
	return out, nil
}

// contribFromRecord decodes one "contribs" row and checks that the
// contributions agree with the row's time and tags.
func contribFromRecord(rec *query.FluxRecord) (ContribPoint, error) {
	minute := rec.Time().Unix()
	tags := seriesFromRecord(rec)
	agent := valueFromTag(stringValue(rec, TagAgent))
	where := fmt.Sprintf("tally_contrib %s minute %d agent %q", tags, minute, agent)
	switch f := stringValue(rec, TagFormat); f {
	case "", "1", strconv.Itoa(ContribFormat):
	default:
		return ContribPoint{}, fmt.Errorf("%s: format %q; this node reads formats 1 to %d (written by a newer release?)", where, f, ContribFormat)
	}
	s, ok := rec.Value().(string)
	if !ok {
		return ContribPoint{}, fmt.Errorf("%s: contribs is %T, not a string", where, rec.Value())
	}
	cs, err := decodeContribs(s)
	if err != nil {
		return ContribPoint{}, fmt.Errorf("%s: %w", where, err)
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
	node := stringValue(rec, TagNode)
	return ContribPoint{Series: series, Minute: minute, Agent: agent, Node: node, Contribs: cs}, nil
}

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
	err := r.run(ctx, minutesQuery(r.cfg.Bucket, q), func(rec *query.FluxRecord) {
		if fnErr != nil {
			return
		}
		p, err := minuteFromRecord(rec)
		if err != nil {
			if corrupt.Skipped == 0 {
				corrupt.First = err
			}
			corrupt.Skipped++
			return
		}
		if fnErr = fn(p); fnErr != nil {
			cancel() // stop reading the answer
		}
	})
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

// minuteFromRecord decodes one pivoted tally row.
func minuteFromRecord(rec *query.FluxRecord) (sketch.Minute, error) {
	p := sketch.Minute{Series: seriesFromRecord(rec), Minute: rec.Time().Unix()}
	var enc sketch.Encoded
	for k, v := range rec.Values() {
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
			enc.HLL, err = base64Value(v)
		case k == FieldQuantiles:
			enc.Quantiles, err = base64Value(v)
		case strings.HasPrefix(k, FieldBotsPrefix):
			var n uint64
			if n, err = uintValue(v); err == nil && n > 0 {
				if enc.Bots == nil {
					enc.Bots = make(map[string]uint64)
				}
				enc.Bots[valueFromTag(k[len(FieldBotsPrefix):])] = n
			}
		case strings.HasPrefix(k, FieldVotePrefix):
			var n uint64
			var key string
			if n, err = uintValue(v); err == nil && n > 0 {
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
	if err != nil {
		return sketch.Minute{}, fmt.Errorf("tally %s minute %d: %w", p.Series, p.Minute, err)
	}
	p.State = st
	return p, nil
}

// run executes a Flux query and hands every record to fn.
func (r *Reader) run(ctx context.Context, flux string, fn func(*query.FluxRecord)) error {
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

func seriesFromRecord(rec *query.FluxRecord) sketch.Series {
	g := func(k string) string { return valueFromTag(stringValue(rec, k)) }
	return sketch.Series{
		Campaign: g(TagCampaign), Source: g(TagSource), Medium: g(TagMedium), Type: g(TagType),
		Country: g(TagCountry), Device: g(TagDevice), Region: g(TagRegion),
	}
}

func stringValue(rec *query.FluxRecord, k string) string {
	s, _ := rec.ValueByKey(k).(string)
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

package influx

import (
	"strings"
	"time"
)

// fluxString returns s as a Flux string literal that means exactly s and
// nothing else. Only ASCII letters, digits and a few harmless punctuation
// marks are written as themselves; every other byte, including quotes,
// backslashes, '$' (Flux's "${...}" interpolation) and every byte of a
// multi-byte character, is written as a \xNN escape, which the Flux spec
// defines for string literals in every version (1.8's Flux 0.65 included).
// The result therefore never contains a quote, a newline or an
// interpolation, whatever s holds: values from HTTP requests cannot change
// a query's structure.
func fluxString(s string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if fluxPlain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteString(`\x`)
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	b.WriteByte('"')
	return b.String()
}

func fluxPlain(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case ' ', '-', '_', '.', ':', '/', '@', '+', '(', ')', ',', ';', '!', '?', '#', '%', '&', '*', '=', '<', '>', '[', ']', '|', '~', '^':
		return true
	}
	return false
}

// fluxTime returns t as a Flux time literal.
func fluxTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// fluxFrom starts every query: the bucket, the time range [from, to) and
// the predicate.
//
// The stop sent is to minus one nanosecond, because InfluxDB 1.8's storage
// read treats range's stop as inclusive (a point exactly at stop comes
// back, against the Flux spec); one nanosecond less is exact for every
// version, since stored times are whole seconds. The predicate must only compare r._measurement, r._field and
// tags with literals (==, !=, =~, !~), joined by and/or: then InfluxDB
// pushes the whole filter into its storage read (1.8: PushDownFilterRule),
// instead of reading every series of the bucket and filtering in Flux.
func fluxFrom(bucket string, from, to time.Time, predicate string) string {
	var b strings.Builder
	b.WriteString("from(bucket: ")
	b.WriteString(fluxString(bucket))
	b.WriteString(")\n  |> range(start: ")
	b.WriteString(fluxTime(from))
	b.WriteString(", stop: ")
	b.WriteString(fluxTime(to.Add(-time.Nanosecond)))
	b.WriteString(")\n  |> filter(fn: (r) => ")
	b.WriteString(predicate)
	b.WriteString(")")
	return b.String()
}

// tagEquals returns `r.<key> == "<stored value>"`.
func tagEquals(key, value string) string {
	return "r." + key + " == " + fluxString(TagValue(value))
}

// minuteFields selects the fields QueryMinutes decodes: the exact counters
// and the encoded sketches. The derived fields (revenue, uniques, p50 ...)
// are for dashboards reading InfluxDB directly; fetching them here would
// only double the answer.
const minuteFields = `r._field =~ /^(count|value_micros|cost_micros|hll|quantiles|bots_.+|vote_.+)$/`

// counterFields selects the exact counters only (MinuteQuery.CountersOnly).
const counterFields = `r._field =~ /^(count|value_micros|cost_micros|bots_.+|vote_.+)$/`

// uniquesFields selects the counters and the HLL (MinuteQuery.NoQuantiles).
const uniquesFields = `r._field =~ /^(count|value_micros|cost_micros|hll|bots_.+|vote_.+)$/`

// minutesQuery builds QueryMinutes's Flux. The pivot comes straight after
// the pushed-down read, where 1.8 uses a sorted pivot (SortedPivotRule),
// and keeps every tag column.
func minutesQuery(bucket string, q MinuteQuery) string {
	pred := minutePredicate(q)
	switch {
	case q.CountersOnly:
		pred = append(pred, counterFields)
	case q.NoQuantiles:
		pred = append(pred, uniquesFields)
	default:
		pred = append(pred, minuteFields)
	}
	return fluxFrom(bucket, q.From, q.To, strings.Join(pred, " and ")) +
		"\n  |> pivot(rowKey: [\"_time\"], columnKey: [\"_field\"], valueColumn: \"_value\")"
}

// ledgersQuery reads merged minutes' ledgers and HyperLogLogs
// (LoadContributionsOf).
func ledgersQuery(bucket string, q MinuteQuery) string {
	pred := append(minutePredicate(q), `r._field =~ /^(hll|ledger|series)$/`)
	return fluxFrom(bucket, q.From, q.To, strings.Join(pred, " and ")) +
		"\n  |> pivot(rowKey: [\"_time\"], columnKey: [\"_field\"], valueColumn: \"_value\")"
}

// minutePredicate is the filter of a MinuteQuery but its fields.
func minutePredicate(q MinuteQuery) []string {
	pred := []string{`r._measurement == "` + MeasurementMinute + `"`}
	switch {
	case q.Campaign != "":
		pred = append(pred, tagEquals(TagCampaign, q.Campaign))
	case len(q.Campaigns) > 0:
		pred = append(pred, campaignsIn(q.Campaigns))
	}
	for _, f := range []struct{ key, value string }{
		{TagSource, q.Source}, {TagMedium, q.Medium}, {TagType, q.Type},
		{TagCountry, q.Country}, {TagDevice, q.Device}, {TagRegion, q.Region},
	} {
		if f.value != "" {
			pred = append(pred, tagEquals(f.key, f.value))
		}
	}
	for _, c := range q.ExcludeCampaigns {
		pred = append(pred, "r."+TagCampaign+" != "+fluxString(TagValue(c)))
	}
	return pred
}

// contribsQuery builds the loaders' Flux: the contribs field of
// tally_contrib, optionally for a set of campaigns only.
func contribsQuery(bucket string, from, to time.Time, campaigns []string) string {
	pred := `r._measurement == "` + MeasurementContrib + `" and r._field == "` + FieldContribs + `"`
	if len(campaigns) > 0 {
		pred += " and " + campaignsIn(campaigns)
	}
	return fluxFrom(bucket, from, to, pred)
}

// campaignsIn returns a predicate true for any of the campaigns: an "or"
// of equalities, which (unlike contains()) InfluxDB pushes into storage.
func campaignsIn(campaigns []string) string {
	ors := make([]string, len(campaigns))
	for i, c := range campaigns {
		ors[i] = tagEquals(TagCampaign, c)
	}
	return "(" + strings.Join(ors, " or ") + ")"
}

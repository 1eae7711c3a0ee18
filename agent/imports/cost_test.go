package imports

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
)

// row is what one imported event says, for comparisons.
type row struct {
	typ, campaign, source, medium, country string
	minute                                 int64
	count                                  uint64
	costMicros                             int64
}

func rowsOf(evs []event.Event) []row {
	var out []row
	for _, e := range evs {
		s := e.Series
		out = append(out, row{s.Type, s.Campaign, s.Source, s.Medium, s.Country, sketch.MinuteOf(e.UnixMillis), e.Count(), e.CostMicros})
	}
	return out
}

func day(s string) int64 {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return sketch.MinuteOf(t.UnixMilli())
}

func TestCostFormats(t *testing.T) {
	nov21, nov20, nov19 := day("2026-11-21"), day("2026-11-20"), day("2026-11-19")
	for _, tc := range []struct {
		name, file, contentType string
		want                    []row
		accepted, summed        int
		ignoredColumns          []string
	}{
		{
			name: "excel semicolons, BOM, CRLF, quotes, decimal commas", file: "cost_semicolon_bom/report.csv",
			contentType: "text/csv; charset=utf-8",
			want: []row{
				{"cost", "spring_sale", "google", "cpc", "DE", nov21, 1, 1_234_560_000},
				{"impression", "spring_sale", "google", "cpc", "DE", nov21, 120_000, 0},
				{"click", "spring_sale", "google", "cpc", "DE", nov21, 3400, 0},
				{"cost", `Spring; Sale "Deluxe"`, "facebook", "paid_social", "FR", nov21, 1, 99_500_000},
				{"impression", `Spring; Sale "Deluxe"`, "facebook", "paid_social", "FR", nov21, 8000, 0},
				{"cost", "spring_sale", "google", "cpc", "DE", nov20, 1, 750_000},
				{"click", "spring_sale", "google", "cpc", "DE", nov20, 12, 0},
			},
			accepted: 3, ignoredColumns: []string{"CTR"},
		},
		{
			name: "comma-delimited, quoted commas, ad group rows summed", file: "cost_google_ads/report.csv",
			contentType: "", // sniffed
			want: []row{
				{"cost", "Winter, Brand", "google", "cpc", "ZZ", nov21, 1, 16_000_001},
				{"impression", "Winter, Brand", "google", "cpc", "ZZ", nov21, 1500, 0},
				{"click", "Winter, Brand", "google", "cpc", "ZZ", nov21, 75, 0},
				{"cost", "Retargeting", "google", "display", "ZZ", nov21, 1, 3_100_000},
				{"impression", "Retargeting", "google", "display", "ZZ", nov21, 20_000, 0},
			},
			accepted: 4, summed: 2, ignoredColumns: []string{"Ad group"},
		},
		{
			name: "JSON array, pretty-printed, ts and aliases", file: "cost_json/rows.json", contentType: "application/json",
			want: []row{
				{"cost", "spring_sale", "newsletter", "email", "ZZ", nov21, 1, 12_500_000},
				{"click", "spring_sale", "newsletter", "email", "ZZ", nov21, 40, 0},
				{"cost", "flash", "(direct)", "(none)", "ZZ", nov21 + 15*3600 + 30*60, 1, 7_250_000},
				{"impression", "flash", "(direct)", "(none)", "ZZ", nov21 + 15*3600 + 30*60, 900, 0},
			},
			accepted: 2, ignoredColumns: []string{"extra"},
		},
		{
			name: "NDJSON, mixed-case keys, exponent", file: "cost_ndjson/rows.ndjson", contentType: "application/x-ndjson",
			want: []row{
				{"cost", "spring_sale", "google", "cpc", "DE", nov21, 1, 1_234_560_000},
				{"impression", "spring_sale", "google", "cpc", "DE", nov21, 120_000, 0},
				{"click", "spring_sale", "google", "cpc", "DE", nov21, 3400, 0},
				{"cost", "old", "(direct)", "(none)", "ZZ", nov19, 1, 100_000_000},
			},
			accepted: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			w, res := post(t, f.h.Cost(), CostPath, readFixture(t, tc.file), "Content-Type", tc.contentType)
			if w.Code != http.StatusAccepted {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if res.Accepted != tc.accepted || res.Rejected != 0 || res.Summed != tc.summed || res.Events != len(tc.want) {
				t.Fatalf("result %+v", res)
			}
			if !slices.Equal(res.IgnoredColumns, tc.ignoredColumns) {
				t.Errorf("ignored columns %q, want %q", res.IgnoredColumns, tc.ignoredColumns)
			}
			evs := f.sink.last()
			if got := rowsOf(evs); !slices.Equal(got, tc.want) {
				t.Fatalf("events\n got %+v\nwant %+v", got, tc.want)
			}
			for _, e := range evs {
				if e.Row>>62 != 3 || e.RowVersion != uint64(testNow.UnixMilli()) || e.Visitor != 0 || e.Bot != "" ||
					e.Series.Region != "eu" || e.Series.Device != event.NoDevice {
					t.Errorf("event %+v: want a row id, the import version, no visitor, no bot, region eu", e)
				}
			}
			if n := counter(t, f.h.rows, "cost", "accepted"); n != float64(tc.accepted) {
				t.Errorf("rows{cost,accepted} = %v", n)
			}
		})
	}
}

// TestCostRowErrors: every bad row is rejected on its own, with the line
// it starts on, and good rows still count.
func TestCostRowErrors(t *testing.T) {
	f := newFixture(t, nil)
	w, res := post(t, f.h.Cost(), CostPath, readFixture(t, "cost_errors/report.csv"), "Content-Type", "text/csv")
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := []struct {
		line int
		msg  string
	}{
		{3, "campaign: required"},
		{4, `cost: "abc" is not a decimal number`}, // a quoted field spans lines 4-5
		{6, `impressions: "-5": must not be negative`},
		{7, `date: "21/11/2026" is not a date in the form YYYY-MM-DD`},
		{8, "thousands separators are not supported"},
		{9, "a comma in a comma-delimited report reads as a thousands separator"},
		{10, "3 fields, the header has 6"},
		{11, "date: older than the accepted age"},
		{12, `bare " in non-quoted-field`},
		{13, `clicks: "1.5": want a whole number`},
	}
	if res.Accepted != 1 || res.Rejected != len(want) || len(res.Errors) != len(want) {
		t.Fatalf("result %+v", res)
	}
	for i, w := range want {
		got := res.Errors[i]
		if got.Line != w.line || got.Index != i+1 || !strings.Contains(got.Error, w.msg) {
			t.Errorf("error %d = %+v, want line %d index %d containing %q", i, got, w.line, i+1, w.msg)
		}
	}
	if got := rowsOf(f.sink.last()); len(got) != 3 || got[0].campaign != "ok" {
		t.Fatalf("accepted events %+v", got)
	}
	if n := counter(t, f.h.rows, "cost", "rejected"); n != float64(len(want)) {
		t.Errorf("rows{cost,rejected} = %v", n)
	}
}

func TestCostJSONRowErrors(t *testing.T) {
	f := newFixture(t, nil)
	body := `[
  {"date":"2026-11-21","campaign":"a","cost":1},
  {"date":"2026-11-21","cost":1},
  {"date":"2026-11-21","campaign":"c","cost":true},
  {"date":"2026-11-21","campaign":"d","cost":"1","spend":"2"},
  "not an object",
  {"date":"2026-11-21","campaign":"f","cost":"12,50","clicks":-1}
]`
	w, res := post(t, f.h.Cost(), CostPath, []byte(body))
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := []RowError{
		{3, 1, "campaign: required"},
		{4, 2, "cost: want a string or a number"},
		{5, 3, `"cost" and "spend" both give cost: keep one`},
		{6, 4, "want a JSON object"},
		{7, 5, `clicks: "-1": must not be negative`},
	}
	if res.Accepted != 1 || !slices.Equal(res.Errors, want) {
		t.Fatalf("result %+v\nwant errors %+v", res, want)
	}
}

func TestCostWholeBodyFailures(t *testing.T) {
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		code              int
		msg               string
	}{
		{"empty", "text/csv", []byte(" \n"), 400, "empty body"},
		{"excel workbook", "application/octet-stream", []byte("PK\x03\x04\x14\x00\x06\x00"), 400, "Excel workbook"},
		{"utf-16", "text/csv", []byte("\xff\xfed\x00a\x00"), 400, "UTF-16"},
		{"latin-1", "text/csv", []byte("date,campaign,cost\n2026-11-21,caf\xe9,1\n"), 400, "not UTF-8"},
		{"form upload", "multipart/form-data; boundary=x", []byte("--x\r\n"), 415, "multipart/form-data is not accepted here"},
		{"text/plain", "text/plain", []byte("date,campaign,cost\n2026-11-21,a,1\n"), 415, "text/plain is not accepted here"},
		{"prose", "text/csv", []byte("hello, this is not a report\n"), 400, "not a spend report: the header (line 1, delimiter ',') has no campaign, no cost (or spend), no date (or ts) column"},
		{"two cost columns", "text/csv", []byte("date,campaign,cost,spend\n"), 400, `both give cost: keep one`},
		{"broken JSON array", "", []byte("[{\"campaign\":\"a\"},\n{"), 400, "not a valid JSON array (line 2)"},
		{"NDJSON without JSON", "application/x-ndjson", []byte("a\nb\n"), 400, "neither a JSON array nor NDJSON"},
		{"too many rows", "text/csv", []byte("date,campaign,cost\n2026-11-21,a,1\n2026-11-21,b,1\n2026-11-21,c,1\n"), 413, "more than 2 rows"},
		{"too many JSON rows", "", []byte(`[{},{},{}]`), 413, "more than 2 rows"},
		{"too large", "text/csv", bytes.Repeat([]byte("x"), 2<<10), 413, "exceeds the limit of 1024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.MaxRows, c.MaxBodyBytes = 2, 1<<10 })
			w, _ := post(t, f.h.Cost(), CostPath, tc.body, "Content-Type", tc.contentType)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.msg) {
				t.Fatalf("got %d %s, want %d with %q", w.Code, w.Body, tc.code, tc.msg)
			}
			if len(f.sink.batches) != 0 {
				t.Fatal("a failed body journaled events")
			}
		})
	}
}

// TestRowKeys: the row id of a row is derived from its normalised natural
// key, whatever the format, column names, order and spelling, and is the
// documented string; an id column replaces it.
func TestRowKeys(t *testing.T) {
	rowIDs := func(body, contentType string) map[string]uint64 {
		t.Helper()
		f := newFixture(t, nil)
		w, res := post(t, f.h.Cost(), CostPath, []byte(body), "Content-Type", contentType)
		if w.Code != http.StatusAccepted || res.Rejected != 0 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		out := map[string]uint64{}
		for _, e := range f.sink.last() {
			out[e.Series.Campaign+"/"+e.Series.Type] = e.Row
		}
		return out
	}
	want := map[string]uint64{
		"spring_sale/cost":       event.RowID("cost|2026-11-21|spring_sale|google|cpc|DE|cost"),
		"spring_sale/impression": event.RowID("cost|2026-11-21|spring_sale|google|cpc|DE|impression"),
		"spring_sale/click":      event.RowID("cost|2026-11-21|spring_sale|google|cpc|DE|click"),
		"promo/cost":             event.RowID("cost|2026-11-21T10:15:00.000Z|promo|(direct)|(none)|ZZ|cost"),
		"tablets/cost":           event.RowID("cost|2026-11-21|tablets|google|cpc|ZZ|tablet|cost"),
		"explicit/cost":          event.RowID("AD-42|cost"),
	}
	for name, in := range map[string]struct{ body, ct string }{
		"csv": {"date,ts,campaign,source,medium,country,cost,impressions,clicks,device,id\n" +
			"2026-11-21,,spring_sale,google,cpc,DE,1.5,10,2,,\n" +
			",2026-11-21T10:15:00Z,promo,,,,1,,,,\n" +
			"2026-11-21,,tablets,google,cpc,,1,,,tablet,\n" +
			"2026-11-21,,explicit,google,cpc,,1,,,,AD-42\n", "text/csv"},
		"semicolons, aliases, spaces, other order": {"Country ; Spend ; Impr. ; Link Clicks ; UTM_Source ; UTM_Medium ; Day ; Timestamp ; Campaign Name ; Device ; Row ID\n" +
			" de ; 1,5 ; 10 ; 2 ; google ; cpc ; 2026-11-21 ; ; spring_sale ; ; \n" +
			"; 1 ; ; ; ; ; 2026-11-20 ; 2026-11-21T11:15:00+01:00 ; promo ; ; \n" + // ts wins over date
			"; 1 ; ; ; google ; cpc ; 2026-11-21 ; ; tablets ; tablet ; \n" +
			"; 1 ; ; ; google ; cpc ; 2026-11-21 ; ; explicit ; ; AD-42\n", ""},
		"ndjson": {`{"date":"2026-11-21","campaign":"spring_sale","source":"google","medium":"cpc","country":"DE","cost":1.5,"impressions":10,"clicks":2}` + "\n" +
			`{"ts":1795256100000,"campaign":"promo","cost":1}` + "\n" +
			`{"date":"2026-11-21","campaign":"tablets","source":"google","medium":"cpc","device":"tablet","cost":1}` + "\n" +
			`{"date":"2026-11-21","campaign":"explicit","source":"google","medium":"cpc","cost":1,"id":"AD-42"}` + "\n", ""},
	} {
		if got := rowIDs(in.body, in.ct); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: row ids\n got %v\nwant %v", name, got, want)
		}
	}
}

// TestReimportIsAReplacement: the same report twice yields the same row
// ids with a higher version, which receivers take as a replacement.
func TestReimportIsAReplacement(t *testing.T) {
	f := newFixture(t, nil)
	body := readFixture(t, "cost_google_ads/report.csv")
	post(t, f.h.Cost(), CostPath, body)
	first := f.sink.last()
	*f.clock = testNow.Add(time.Minute)
	post(t, f.h.Cost(), CostPath, body)
	second := f.sink.last()
	if len(first) != len(second) {
		t.Fatalf("%d then %d events", len(first), len(second))
	}
	for i := range first {
		a, b := first[i], second[i]
		if a.Row != b.Row || b.RowVersion <= a.RowVersion || a.Count() != b.Count() || a.CostMicros != b.CostMicros || a.Key() != b.Key() {
			t.Fatalf("event %d: %+v then %+v", i, a, b)
		}
	}
}

func TestCostCurrencyAndTime(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Currency = "EUR" })
	body := "date,campaign,cost,currency\n" +
		"2026-11-21,eur,1,EUR\n" +
		"2026-11-21,lower,1,eur\n" +
		"2026-11-21,none,1,\n" +
		"2026-11-21,usd,1,USD\n" +
		"2026-11-23,tomorrow,1,\n" + // the day has begun east of UTC
		"2026-11-24,day_after,1,\n"
	_, res := post(t, f.h.Cost(), CostPath, []byte(body))
	if res.Accepted != 4 || res.Rejected != 2 ||
		!strings.Contains(res.Errors[0].Error, `currency: "USD", but this deployment holds costs in EUR`) ||
		!strings.Contains(res.Errors[1].Error, "date: more than") {
		t.Fatalf("result %+v", res)
	}
	body = "ts,campaign,cost\n" +
		"2026-11-22T12:04:00Z,soon,1\n" +
		"2026-11-22T13:00:00Z,later,1\n"
	_, res = post(t, f.h.Cost(), CostPath, []byte(body))
	if res.Accepted != 1 || res.Rejected != 1 || !strings.Contains(res.Errors[0].Error, "ts: more than 5m0s in the future") {
		t.Fatalf("result %+v", res)
	}
}

func TestParseMicros(t *testing.T) {
	for _, tc := range []struct {
		in           string
		commaDecimal bool
		want         int64
		err          string
	}{
		{"12.34", false, 12_340_000, ""},
		{"12,34", true, 12_340_000, ""},
		{"0", false, 0, ""},
		{".5", false, 500_000, ""},
		{"5.", false, 5_000_000, ""},
		{"-3.25", false, -3_250_000, ""},
		{"+3", false, 3_000_000, ""},
		{"0.1234565", false, 123_457, ""},   // half away from zero
		{"-0.1234565", false, -123_457, ""}, // symmetric
		{"0.1234564999", false, 123_456, ""},
		{"999999999999.999999", false, 999_999_999_999_999_999, ""},
		{"1000000000000", false, 1e18, ""},
		{"1000000000000.000001", false, 0, "above 1e12"},
		{"12,34", false, 0, "comma-delimited"},
		{"1,234.56", true, 0, "more than one separator"},
		{"1.234.567", true, 0, "more than one separator"},
		{"€12", false, 0, "not a decimal number"},
		{"12 345", false, 0, "not a decimal number"},
		{"1e3", false, 0, "not a decimal number"},
		{"", false, 0, "not a decimal number"},
		{"-", false, 0, "not a decimal number"},
		{".", false, 0, "not a decimal number"},
	} {
		got, err := parseMicros(tc.in, tc.commaDecimal)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseMicros(%q) = %d, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseMicros(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseCountAndDelimiter(t *testing.T) {
	for in, want := range map[string]string{"0": "0", "120000": "120000", "1,234": "without separators",
		"1.0": "without separators", "-1": "negative", "abc": "not a whole number", "1e3": "not a whole number",
		"1000000000001": "above 1e12"} {
		n, err := parseCount(in)
		got := fmt.Sprint(n)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) {
			t.Errorf("parseCount(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]rune{"a,b;c,d\n": ',', "a;b;c\n1,2": ';', "a\tb\tc": '\t', `"a;b",c`: ',', "abc": ',', "": ','} {
		if got := detectDelimiter([]byte(in)); got != want {
			t.Errorf("detectDelimiter(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzCost: no body makes the handler panic, and every answer is one of
// the documented ones.
func FuzzCost(f *testing.F) {
	for _, s := range []string{"cost_semicolon_bom/report.csv", "cost_google_ads/report.csv", "cost_json/rows.json",
		"cost_ndjson/rows.ndjson", "cost_errors/report.csv"} {
		f.Add(readFixture(f, s))
	}
	fx := newFixture(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		fx.sink.batches = nil
		w, res := post(t, fx.h.Cost(), CostPath, body)
		switch w.Code {
		case http.StatusAccepted:
			if res.Events > 3*res.Accepted {
				t.Fatalf("%d events from %d rows", res.Events, res.Accepted)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}

// BenchmarkCostCSV imports a 10,000-row report (one row per campaign,
// source and day) per iteration.
//
//	go test -run='^$' -bench=CostCSV -benchmem ./agent/imports/
func BenchmarkCostCSV(b *testing.B) {
	var body bytes.Buffer
	body.WriteString("date,campaign,source,medium,country,cost,impressions,clicks\n")
	for i := range 10_000 {
		fmt.Fprintf(&body, "2026-11-%02d,campaign_%d,source_%d,cpc,DE,%d.%02d,%d,%d\n", 1+i%21, i%500, i%20, i%1000, i%100, i*10, i)
	}
	f := newFixture(b, nil)
	b.SetBytes(int64(body.Len()))
	b.ReportAllocs()
	for b.Loop() {
		f.sink.batches = nil
		if w, res := post(b, f.h.Cost(), CostPath, body.Bytes()); w.Code != http.StatusAccepted || res.Accepted != 10_000 {
			b.Fatalf("%d %+v", w.Code, res)
		}
	}
	b.ReportMetric(float64(10_000*b.N)/b.Elapsed().Seconds(), "rows/s")
}

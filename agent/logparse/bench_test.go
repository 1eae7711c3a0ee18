package logparse

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// benchLines returns n generated lines with the realistic mix of gen.kind
// (about 60 % events, the rest assets, 404s and HEADs).
func benchLines(n int, line func(g *gen, i int, k genKind) string) [][]byte {
	g := newGen(7)
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(line(g, i, g.kind()))
	}
	return out
}

// benchParse runs p over lines and reports ns/line and lines/s; allocs/op
// is per line.
func benchParse(b *testing.B, p *Parser, lines [][]byte) {
	total := 0
	for _, l := range lines {
		total += len(l)
	}
	var r event.Raw
	// Check the corpus once: a benchmark of errors measures nothing useful.
	for _, l := range lines {
		if err := p.Parse(l, &r); err != nil && Reason(err)[:5] != "skip_" {
			b.Fatalf("Parse(%s): %v", l, err)
		}
	}
	b.SetBytes(int64(total / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = p.Parse(lines[i%len(lines)], &r)
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(ns, "ns/line")
	b.ReportMetric(1e9/ns, "lines/s")
}

// BenchmarkParseCombined measures the combined format, the agent's
// import-log default, with the standard default rule and two path rules.
//
//	go test -run='^$' -bench='^BenchmarkParse' -benchmem ./agent/logparse/
func BenchmarkParseCombined(b *testing.B) {
	s := specOf(FormatCombined)
	s.Site = "www.example.com"
	benchParse(b, mustCompile(b, s), benchLines(4096, (*gen).combined))
}

// BenchmarkParseNginxFormat measures a longer custom log_format (the
// official image's "main" plus host and timings) with trusted proxies, so
// every line also walks X-Forwarded-For.
//
//	go test -run='^$' -bench='^BenchmarkParseNginxFormat$' -benchmem ./agent/logparse/
func BenchmarkParseNginxFormat(b *testing.B) {
	s := specOf(FormatNginx)
	s.NginxFormat = genNginxFormat
	s.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	benchParse(b, mustCompile(b, s), benchLines(4096, (*gen).nginx))
}

// BenchmarkParseJSON measures nginx escape=json lines with the default
// key mapping.
//
//	go test -run='^$' -bench='^BenchmarkParseJSON$' -benchmem ./agent/logparse/
func BenchmarkParseJSON(b *testing.B) {
	benchParse(b, mustCompile(b, specOf(FormatJSON)), benchLines(4096, (*gen).json))
}

// BenchmarkParseNormalize measures combined lines through Parse and then
// event.Normalize (with a trivial hasher and no bot filter): the share of
// the agent's per-line budget the two take together.
//
//	go test -run='^$' -bench='^BenchmarkParseNormalize$' -benchmem ./agent/logparse/
func BenchmarkParseNormalize(b *testing.B) {
	s := specOf(FormatCombined)
	s.Site = "www.example.com"
	p := mustCompile(b, s)
	lines := benchLines(4096, (*gen).combined)
	ctx := event.Context{Now: genTime(0), Region: "bench", MaxAge: 24 * time.Hour, MaxSkew: 24 * time.Hour, Hasher: fuzzHasher{}, TrustBody: true}
	var r event.Raw
	var e event.Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if p.Parse(lines[i%len(lines)], &r) == nil {
			if err := event.Normalize(&r, &ctx, &e); err != nil {
				b.Fatal(err)
			}
		}
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(ns, "ns/line")
	b.ReportMetric(1e9/ns, "lines/s")
}

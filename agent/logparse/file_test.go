package logparse

import (
	"bufio"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tally-edge/tally/agent/event"
)

// TestParseFile reads a generated 10,000-line combined log with 100
// malformed lines the way import-log will (bufio.Scanner, one Parser): the
// 9,900 good lines all parse (as events or skips, exactly as generated),
// and the 100 bad ones are errors with the reason their damage calls for.
func TestParseFile(t *testing.T) {
	const lines, bad = 10_000, 100
	g := newGen(42)
	// Damage that turns a good line into a malformed one, by reason.
	damage := []struct {
		reason string
		apply  func(string) string
	}{
		{CodeNoMatch, func(l string) string { return l[:len(l)/3] }},                                         // torn write
		{CodeBadTime, func(l string) string { return strings.Replace(l, "/Mar/", "/Mrz/", 1) }},              // localised month
		{CodeBadStatus, func(l string) string { return strings.Replace(l, `HTTP/1.1" `, `HTTP/1.1" x`, 1) }}, // status "x200"
		{CodeBadRequest, func(l string) string {
			return strings.Replace(l, `"GET `, `"\x16\x03\x01 `, 1)
		}},
	}
	isBad := make(map[int]int) // line index -> damage index
	for len(isBad) < bad {
		isBad[g.rng.IntN(lines)] = len(isBad) % len(damage)
	}
	var sb strings.Builder
	wantEvents, wantSkips := 0, 0
	wantReasons := map[string]int{}
	for i := range lines {
		k := g.kind()
		if d, ok := isBad[i]; ok {
			k = genPageview // HTTP/1.1 in the request, for the status damage
			sb.WriteString(damage[d].apply(g.combined(i, k)))
			wantReasons[damage[d].reason]++
		} else {
			sb.WriteString(g.combined(i, k))
			if genIsEvent(k) {
				wantEvents++
			} else {
				wantSkips++
			}
		}
		sb.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := mustCompile(t, specOf(FormatCombined))
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), MaxLineBytes+2)
	var events, skips, n int
	reasons := map[string]int{}
	for sc.Scan() {
		n++
		var r event.Raw
		err := p.Parse(sc.Bytes(), &r)
		switch {
		case err == nil:
			events++
			if r.Type == "" || !r.TS.Set || r.IP == "" {
				t.Fatalf("line %d: incomplete event %+v", n, r)
			}
		case errors.Is(err, ErrSkip):
			skips++
		default:
			reasons[Reason(err)]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != lines || events+skips != lines-bad || events != wantEvents || skips != wantSkips {
		t.Fatalf("lines %d, events %d (want %d), skips %d (want %d): %d good lines, want %d",
			n, events, wantEvents, skips, wantSkips, events+skips, lines-bad)
	}
	if !maps.Equal(reasons, wantReasons) {
		t.Fatalf("error reasons %v, want %v", reasons, wantReasons)
	}
}

package collector

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
	"github.com/tally-edge/tally/sketch"
)

var update = flag.Bool("update", false, "rewrite the golden files of the current format versions")

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenEvents are the events of journal-record-v1.bin: one of every
// shape the journal keeps (plain, valued, imported row, vote, bot).
var goldenEvents = []event.Event{
	{Series: sketch.Series{Campaign: "spring", Source: "google", Medium: "cpc", Type: "click", Country: "DE", Device: "mobile", Region: "eu"},
		UnixMillis: 1735812090000, Visitor: 42},
	{Series: sketch.Series{Campaign: "spring", Source: "google", Medium: "cpc", Type: "conversion", Country: "DE", Device: "mobile", Region: "eu"},
		UnixMillis: 1735812091000, Visitor: 43, ValueMicros: 19_990_000, HasValue: true},
	{Series: sketch.Series{Campaign: "ads", Source: "net", Medium: "cpc", Type: "cost", Country: "ZZ", Device: "unknown", Region: "eu"},
		UnixMillis: 1735812092000, CostMicros: 5_000_000, Weight: 120, Row: event.RowID("cost|x"), RowVersion: 9},
	{Series: sketch.Series{Campaign: "poll", Source: "(direct)", Medium: "(none)", Type: "poll_vote", Country: "FR", Device: "desktop", Region: "eu"},
		UnixMillis: 1735812093000, Visitor: 44, Vote: sketch.VoteKey("launch", "yes")},
	{Series: sketch.Series{Campaign: "spring", Source: "google", Medium: "cpc", Type: "pageview", Country: "US", Device: "bot", Region: "eu"},
		UnixMillis: 1735812094000, Visitor: 45, Bot: "crawler"},
}

var goldenPos = source.Position{Source: "tail:/var/log/nginx/access.log", File: "2049:1234", Offset: 8192}

// TestJournalRecordVersion1 pins the journal record: the files were
// written by 388fe42, today's encoder writes the same bytes (version 1 is
// still the current version), and they decode to the same events.
func TestJournalRecordVersion1(t *testing.T) {
	for _, tc := range []struct {
		file   string
		pos    *source.Position
		events []event.Event
	}{
		{"journal-record-v1.bin", &goldenPos, goldenEvents},
		{"journal-record-v1-nopos.bin", nil, goldenEvents[:1]},
	} {
		rec := readGolden(t, tc.file)
		if got := event.AppendEvents(appendRecordHeader(nil, tc.pos), tc.events); !bytes.Equal(got, rec) {
			t.Fatalf("%s: today's encoder writes\n% x\nthe file holds\n% x", tc.file, got, rec)
		}
		pos, body, err := splitRecord(rec)
		if err != nil || !reflect.DeepEqual(pos, tc.pos) {
			t.Fatalf("%s: position %+v, %v", tc.file, pos, err)
		}
		evs, err := event.DecodeEvents(body, nil)
		if err != nil || !reflect.DeepEqual(evs, tc.events) {
			t.Fatalf("%s: events %+v, %v", tc.file, evs, err)
		}
	}
	// A record of a later version is refused, not misread.
	rec := readGolden(t, "journal-record-v1.bin")
	rec[0] |= 1 << recVersionShift
	if _, _, err := splitRecord(rec); err == nil {
		t.Fatal("a version 2 record was read")
	}
}

// TestPositionFormats reads positions as 388fe42 committed them (version
// 1) and pins version 2.
func TestPositionFormats(t *testing.T) {
	v1, err := decodePositions(readGolden(t, "positions-v1.msgpack"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]trackedPosition{
		goldenPos.Source:     {Position: goldenPos},
		"import:/data/a.log": {Position: source.Position{Source: "import:/data/a.log", File: "2049:777", Offset: 300}},
	}
	if !reflect.DeepEqual(v1, want) {
		t.Fatalf("version 1 decoded to %+v", v1)
	}
	for k, p := range want {
		p.Seen = 1735812090
		want[k] = p
	}
	b, err := encodePositions(want)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "golden", "positions-v2.bin")
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if g := readGolden(t, "positions-v2.bin"); !bytes.Equal(b, g) {
		t.Fatalf("positions version 2 changed:\n got % x\nwant % x", b, g)
	}
	v2, err := decodePositions(b)
	if err != nil || !reflect.DeepEqual(v2, want) {
		t.Fatalf("version 2 decoded to %+v, %v", v2, err)
	}
}

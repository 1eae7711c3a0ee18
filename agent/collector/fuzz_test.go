package collector

import (
	"testing"

	"github.com/tally-edge/tally/agent/event"
)

// FuzzJournalRecord: no bytes make the journal's record or event
// decoders panic, and what decodes re-encodes to a record that decodes
// alike (a damaged journal is refused, never half read).
//
//	go test -run='^$' -fuzz='^FuzzJournalRecord$' -fuzztime=30s ./agent/collector/
func FuzzJournalRecord(f *testing.F) {
	f.Add(readGolden(f, "journal-record-v1.bin"))
	f.Add(readGolden(f, "journal-record-v1-nopos.bin"))
	f.Add([]byte{0})
	f.Add([]byte{1, 0xff})
	f.Fuzz(func(t *testing.T, rec []byte) {
		pos, body, err := splitRecord(rec)
		if err != nil {
			return
		}
		evs, err := event.DecodeEvents(body, nil)
		if err != nil {
			return
		}
		again := event.AppendEvents(appendRecordHeader(nil, pos), evs)
		pos2, body2, err := splitRecord(again)
		if err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
		evs2, err := event.DecodeEvents(body2, nil)
		if err != nil || len(evs2) != len(evs) || (pos == nil) != (pos2 == nil) || (pos != nil && *pos != *pos2) {
			t.Fatalf("round trip changed the record: %v", err)
		}
	})
}

// FuzzPositions: no commit meta makes the positions decoder panic, and
// what decodes re-encodes losslessly.
//
//	go test -run='^$' -fuzz='^FuzzPositions$' -fuzztime=30s ./agent/collector/
func FuzzPositions(f *testing.F) {
	f.Add(readGolden(f, "positions-v1.msgpack"))
	f.Add(readGolden(f, "positions-v2.bin"))
	f.Add([]byte{positionsV2, 0x91})
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := decodePositions(b)
		if err != nil {
			return
		}
		enc, err := encodePositions(ps)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodePositions(enc)
		if err != nil || len(back) != len(ps) {
			t.Fatalf("round trip: %d → %d, %v", len(ps), len(back), err)
		}
	})
}

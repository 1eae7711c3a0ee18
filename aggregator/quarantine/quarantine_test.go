package quarantine

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

var update = flag.Bool("update", false, "rewrite testdata/record_v1.q from the current encoder")

func goldenRecord(t *testing.T) *Record {
	t.Helper()
	s := sketch.Series{Campaign: "spring", Source: "google", Medium: "cpc", Type: "click", Country: "DE", Device: "mobile", Region: "eu"}
	st := sketch.State{Count: 4}
	st.AddBot("crawler")
	st.AddVisitor(0x1111111111111111)
	enc, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &Record{Time: time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC), Node: "agg-1", Reason: "beyond_retention",
		Error: "partial write: points beyond retention policy dropped=1", Measurement: "tally", Series: s, Minute: 1_709_287_200,
		Contribs: []AgentContribs{{Agent: "edge-1", Contribs: []wire.Contribution{{Series: s, Minute: 1_709_287_200, CID: 1 << 32, Version: 3, State: enc}}}}}
}

// TestFormat1Golden pins the bytes of a record file and reads them back.
func TestFormat1Golden(t *testing.T) {
	b, err := Encode(goldenRecord(t))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "record_v1.q")
	if *update {
		if err := os.WriteFile(golden, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pinned, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if !bytes.Equal(b, pinned) {
		t.Fatal("record bytes differ from testdata/record_v1.q: a format change must bump FormatVersion")
	}
	got, err := Decode(pinned)
	if err != nil {
		t.Fatal(err)
	}
	want := goldenRecord(t)
	if !got.Time.Equal(want.Time) || got.Reason != want.Reason || got.Series != want.Series || got.Minute != want.Minute ||
		len(got.Contribs) != 1 || got.Contribs[0].Agent != "edge-1" || got.Contribs[0].Contribs[0].CID != 1<<32 {
		t.Fatalf("decoded %+v", got)
	}
	if again, err := Encode(got); err != nil || !bytes.Equal(again, pinned) {
		t.Fatalf("decoded record encodes to other bytes (%v)", err)
	}
	if got.Count() != 4 {
		t.Fatalf("Count = %d", got.Count())
	}
	// Damage and unknown versions are refused, not misread.
	bad := bytes.Clone(pinned)
	bad[len(bad)-1] ^= 1
	if _, err := Decode(bad); err == nil {
		t.Fatal("a damaged record decoded")
	}
	bad = bytes.Clone(pinned)
	bad[2] = 9
	if _, err := Decode(bad); err == nil {
		t.Fatal("a record of format 9 decoded")
	}
}

// TestBoundedAndReplayed: the directory refuses records beyond its bound;
// a replay removes what the node acknowledged and gives back the rest.
func TestBoundedAndReplayed(t *testing.T) {
	rec := goldenRecord(t)
	b, _ := Encode(rec)
	d, err := Open(t.TempDir(), int64(2*len(b)+10))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := d.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Add(rec); !errors.Is(err, ErrFull) {
		t.Fatalf("third Add = %v, want ErrFull", err)
	}
	if n, size, err := d.Stats(); n != 2 || size != int64(2*len(b)) || err != nil {
		t.Fatalf("Stats = %d, %d, %v", n, size, err)
	}
	calls := 0
	fail := errors.New("node unreachable")
	send := func(_ context.Context, agent string, cs []wire.Contribution) error {
		calls++
		if calls == 1 {
			return fail
		}
		if agent != "edge-1" || len(cs) != 1 || cs[0].State.Count != 4 {
			t.Errorf("sent %s %+v", agent, cs)
		}
		return nil
	}
	replayed, failed, err := d.Replay(context.Background(), send, nil)
	if err != nil || replayed != 1 || failed != 1 {
		t.Fatalf("Replay = %d replayed, %d failed, %v", replayed, failed, err)
	}
	entries, _ := d.List()
	if len(entries) != 1 {
		t.Fatalf("%d records left, want the one that failed", len(entries))
	}
	if replayed, failed, _ := d.Replay(context.Background(), send, nil); replayed != 1 || failed != 0 {
		t.Fatalf("second Replay = %d, %d", replayed, failed)
	}
	if n, _, _ := d.Stats(); n != 0 {
		t.Fatalf("%d records after every replay succeeded", n)
	}
	// A claim left by a killed replay is given back.
	name, _ := d.Add(rec)
	if _, err := d.Claim(name); err != nil {
		t.Fatal(err)
	}
	if entries, _ := d.List(); len(entries) != 0 {
		t.Fatal("List shows a claimed record")
	}
	if n, err := d.RecoverClaims(); n != 1 || err != nil {
		t.Fatalf("RecoverClaims = %d, %v", n, err)
	}
	if entries, _ := d.List(); len(entries) != 1 {
		t.Fatal("the claim was not given back")
	}
}

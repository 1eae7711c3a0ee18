package archive

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// goldenMinutes are the minutes of testdata/part-v1.parquet.
func goldenMinutes() []Minute {
	conv := &sketch.State{Count: 3}
	for i := range uint64(3) {
		conv.AddVisitor(0x9E3779B97F4A7C15 * (i + 1))
		conv.AddValue(int64(i+1) * 19_990_000)
	}
	conv.AddBot("crawler")
	poll := &sketch.State{Count: 5}
	poll.AddVotes(sketch.VoteKey("launch poll", "yes"), 3)
	poll.AddVotes(sketch.VoteKey("launch poll", "no"), 2)
	poll.AddVisitor(7)
	cost := &sketch.State{CostMicros: 12_500_000}
	t := day1.Add(13*time.Hour + 7*time.Minute).Unix()
	return []Minute{
		{Series: sketch.Series{Campaign: "spring_sale", Source: "google", Medium: "cpc", Type: "conversion", Country: "DE", Device: "mobile", Region: "eu-west"}, Minute: t, State: conv},
		{Series: sketch.Series{Campaign: "spring_sale", Source: "google", Medium: "cpc", Type: "cost", Region: "eu-west"}, Minute: t, State: cost},
		{Series: sketch.Series{Campaign: "spring_sale", Type: "poll_vote", Region: "eu-west"}, Minute: t + 60, State: poll},
	}
}

// goldenParts are the golden parts of format version 1, one per sketch
// encoding: each stays readable by every later build. Only the part of
// this build's encoding is rewritten by -update.
var goldenParts = []struct {
	path     string
	encoding int32
}{
	{"testdata/part-v1.parquet", 1},
	{"testdata/part-v1-sketch2.parquet", 2},
}

// TestGoldenPart reads the parts written by format version 1 in each
// sketch encoding and checks every value, so archives written today stay
// readable (run with -update only for a deliberate format change).
func TestGoldenPart(t *testing.T) {
	want := goldenMinutes()
	for _, gp := range goldenParts {
		t.Run(filepath.Base(gp.path), func(t *testing.T) {
			if *update && gp.encoding == SketchEncoding {
				writeGoldenPart(t, gp.path, want)
			}
			b, err := os.ReadFile(gp.path)
			if err != nil {
				t.Fatal(err)
			}
			var got []Minute
			var uniques []int64
			err = eachRow(bytes.NewReader(b), int64(len(b)), func(r *Row) error {
				if r.SketchEncoding != gp.encoding {
					return fmt.Errorf("row of sketch encoding %d, want %d", r.SketchEncoding, gp.encoding)
				}
				m, err := toMinute(*r)
				uniques = append(uniques, r.Uniques)
				got = append(got, m)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			checkGoldenMinutes(t, want, got, uniques)
		})
	}
}

func writeGoldenPart(t *testing.T, path string, minutes []Minute) {
	t.Helper()
	var buf bytes.Buffer
	w := newPartWriter(&buf, "2026-03-01")
	for _, m := range minutes {
		r, err := toRow(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.write([]Row{r}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func checkGoldenMinutes(t *testing.T, want, got []Minute, uniques []int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		rw, _ := toRow(w)
		rg, _ := toRow(g)
		if w.Series != g.Series || w.Minute != g.Minute || countersHash(&rw) != countersHash(&rg) {
			t.Fatalf("row %d: %+v, want %+v", i, rg, rw)
		}
		if same, err := sketchesEqual(&rw, &rg); err != nil || !same {
			t.Fatalf("row %d: sketches differ (%v)", i, err)
		}
		if uniques[i] != int64(w.State.UniquesEstimate()) {
			t.Fatalf("row %d: uniques %d, want %d", i, uniques[i], w.State.UniquesEstimate())
		}
	}
	if g := got[0].State; g.Quantile(0.5) < 39.5 || g.Quantile(0.5) > 40.4 || g.Bots["crawler"] != 1 {
		t.Fatalf("conversion row decoded as %+v", g)
	}
	if g := got[2].State; g.Votes[sketch.VoteKey("launch poll", "no")] != 2 {
		t.Fatalf("poll row decoded as %+v", g)
	}
}

// TestSketchEncodingsAgree: the same minutes in sketch encodings 1 and 2
// decode to the same registers and bins, and encoding 2 refuses bytes of
// encoding 1 (a row says what its bytes are).
func TestSketchEncodingsAgree(t *testing.T) {
	for i, m := range goldenMinutes() {
		r2, err := toRow(m)
		if err != nil {
			t.Fatal(err)
		}
		r1 := r2
		r1.SketchEncoding = 1
		if r1.HLL, r1.Quantiles, err = encodeSketchesV1(m.State); err != nil {
			t.Fatal(err)
		}
		if same, err := sketchesEqual(&r1, &r2); err != nil || !same {
			t.Fatalf("minute %d: encodings 1 and 2 differ (%v)", i, err)
		}
		if r1.HLL != nil && len(r2.HLL) >= len(r1.HLL) {
			t.Errorf("minute %d: hll %d bytes in encoding 2, %d in encoding 1", i, len(r2.HLL), len(r1.HLL))
		}
		if r1.HLL != nil {
			bad := r1
			bad.SketchEncoding = 2
			if _, err := toMinute(bad); err == nil {
				t.Fatalf("minute %d: encoding 2 read encoding 1's bytes", i)
			}
		}
	}
}

package anomaly

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// csvOf writes a CSV of 5-minute rows from t0 + 7 s, in the given layout.
func csvOf(vals []float64, layout string) string {
	var b strings.Builder
	b.WriteString("timestamp,value\n")
	for i, v := range vals {
		fmt.Fprintf(&b, "%s,%g\n", t0.Add(7*time.Second+time.Duration(i)*step5).Format(layout), v)
	}
	return b.String()
}

// TestReplayMatchesDetector: the replay prints exactly the alerts a Count
// detector fed the same points fires, with the CSV's own timestamps.
func TestReplayMatchesDetector(t *testing.T) {
	vals := make([]float64, threeDays+40)
	for i := range vals {
		vals[i] = 100
		if i >= threeDays+10 && i < threeDays+20 {
			vals[i] = 500
		}
		if i >= threeDays+30 {
			vals[i] = 0
		}
	}
	for _, layout := range []string{"2006-01-02 15:04:05", time.RFC3339} {
		var out bytes.Buffer
		st, err := Replay(DefaultConfig(), strings.NewReader(csvOf(vals, layout)), &out)
		if err != nil {
			t.Fatal(err)
		}
		if st.Rows != len(vals) || st.Step != step5 || st.Alerts != 2 {
			t.Fatalf("stats %+v", st)
		}
		d := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
		var want []ReplayAlert
		for i, v := range vals {
			at := t0.Add(7*time.Second + time.Duration(i)*step5)
			r, err := d.Observe(at, Obs{Num: v})
			if err != nil {
				t.Fatal(err)
			}
			if r.Transition != nil && r.Transition.State == Firing {
				want = append(want, ReplayAlert{TS: at.Format(layout), Direction: r.Transition.Direction.String(),
					Score: math.Round(r.Transition.Score*1000) / 1000})
			}
		}
		var got []ReplayAlert
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var a ReplayAlert
			if err := json.Unmarshal([]byte(line), &a); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			got = append(got, a)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || len(got) != 2 || got[0].Direction != "spike" || got[1].Direction != "drop" {
			t.Fatalf("%s: replay %+v, detector %+v", layout, got, want)
		}
		if !strings.HasPrefix(out.String(), `{"ts":"`+want[0].TS+`","direction":"spike","score":`) {
			t.Fatalf("line format: %q", out.String())
		}
	}
}

// TestReplayOldTimes: times before 1970 (negative step indexes) replay.
func TestReplayOldTimes(t *testing.T) {
	var b strings.Builder
	b.WriteString("timestamp,value\n")
	start := time.Date(1901, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range threeDays + 6 {
		v := 100
		if i >= threeDays {
			v = 800
		}
		fmt.Fprintf(&b, "%s,%d\n", start.Add(time.Duration(i)*step5).Format(time.RFC3339), v)
	}
	st, err := Replay(DefaultConfig(), strings.NewReader(b.String()), &bytes.Buffer{})
	if err != nil || st.Alerts != 1 {
		t.Fatalf("1901: %+v, %v; want one alert", st, err)
	}
}

// TestReplayStepFromFirstRows: a gap among the first rows does not make the
// step; gaps count as steps without events.
func TestReplayStepFromFirstRows(t *testing.T) {
	in := "timestamp,value\r\n2026-03-02 00:00:00,1\r\n2026-03-02 00:10:00,1\r\n2026-03-02 00:15:00,1\r\n2026-03-02 01:00:00,2\r\n"
	st, err := Replay(DefaultConfig(), strings.NewReader(in), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Step != step5 || st.Rows != 4 {
		t.Fatalf("stats %+v, want step 5m and 4 rows", st)
	}
}

func TestReplayRejects(t *testing.T) {
	long := "timestamp,value\n2026-03-02 00:00:00," + strings.Repeat("1", MaxReplayLine) + "\n"
	for name, tc := range map[string]struct{ in, want string }{
		"empty":      {"", "empty input"},
		"header":     {"time,count\n2026-03-02 00:00:00,1\n", "header"},
		"one row":    {"timestamp,value\n2026-03-02 00:00:00,1\n", "two rows"},
		"fields":     {"timestamp,value\n2026-03-02 00:00:00,1,2\n", "line 2: want 2 fields"},
		"time":       {"timestamp,value\nyesterday,1\n2026-03-02 00:05:00,1\n", "line 2: timestamp"},
		"value":      {"timestamp,value\n2026-03-02 00:00:00,NaN\n", "line 2: value"},
		"order":      {"timestamp,value\n2026-03-02 00:05:00,1\n2026-03-02 00:00:00,1\n", "ascending"},
		"same time":  {"timestamp,value\n2026-03-02 00:05:00,1\n2026-03-02 00:05:00,1\n", "ascending"},
		"off grid":   {csvOf(make([]float64, 70), "2006-01-02 15:04:05") + "2026-03-02 23:59:01,1\n", "line 72"},
		"late order": {csvOf(make([]float64, 70), "2006-01-02 15:04:05") + "2026-03-02 00:00:07,1\n", "line 72"},
		"long line":  {long, "too long"},
		"year 9999":  {"timestamp,value\n9999-01-01 00:00:00,1\n9999-01-01 00:05:00,1\n", "outside the years"},
	} {
		_, err := Replay(DefaultConfig(), strings.NewReader(tc.in), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

// FuzzReplay: no input makes the replay panic or print anything but
// well-formed alert lines.
func FuzzReplay(f *testing.F) {
	f.Add("timestamp,value\n2026-03-02 00:00:00,1\n2026-03-02 00:05:00,2\n")
	f.Add("timestamp,value\n2026-03-02T00:00:00Z,1\n2026-03-02T00:00:01Z,-1e308\n2026-03-02T00:00:03Z,1e308\n")
	f.Add("timestamp,value\n1900-01-01 00:00:00,0\n2200-12-31 23:59:59,5\n")
	f.Add(csvOf([]float64{1, 2, 3, 500, 500, 500, 0, 0}, "2006-01-02 15:04:05"))
	f.Fuzz(func(t *testing.T, in string) {
		var out bytes.Buffer
		cfg := DefaultConfig()
		cfg.MinHistory = 0
		Replay(cfg, strings.NewReader(in), &out)
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if line == "" {
				continue
			}
			var a ReplayAlert
			if err := json.Unmarshal([]byte(line), &a); err != nil || (a.Direction != "spike" && a.Direction != "drop") {
				t.Fatalf("line %q: %v", line, err)
			}
		}
	})
}

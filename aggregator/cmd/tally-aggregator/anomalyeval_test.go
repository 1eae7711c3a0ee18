package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAnomalyEval runs the subcommand on a CSV with a spike after three
// quiet days and checks the JSON line it prints; usage and input errors
// exit 2 and 1.
func TestAnomalyEval(t *testing.T) {
	var csv strings.Builder
	csv.WriteString("timestamp,value\n")
	start := time.Date(2015, 3, 2, 0, 0, 0, 0, time.UTC)
	for i := range 3*288 + 6 {
		v := 100
		if i >= 3*288 {
			v = 600
		}
		fmt.Fprintf(&csv, "%s,%d\n", start.Add(time.Duration(i)*5*time.Minute).Format("2006-01-02 15:04:05"), v)
	}
	path := filepath.Join(t.TempDir(), "series.csv")
	if err := os.WriteFile(path, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := anomalyEval([]string{"-csv", path}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var a struct {
		TS        string  `json:"ts"`
		Direction string  `json:"direction"`
		Score     float64 `json:"score"`
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &a) != nil || a.TS != "2015-03-05 00:05:00" || a.Direction != "spike" || a.Score < 8 {
		t.Fatalf("output %q", out.String())
	}
	out.Reset()
	if code := anomalyEval([]string{"-csv", "-"}, strings.NewReader(csv.String()), &out, &errOut); code != 0 || out.Len() == 0 {
		t.Fatalf("stdin: exit %d, output %q", code, out.String())
	}
	if code := anomalyEval(nil, nil, &out, &errOut); code != 2 {
		t.Fatalf("no -csv: exit %d", code)
	}
	errOut.Reset()
	if code := anomalyEval([]string{"-csv", "-"}, strings.NewReader("time,count\n"), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "header") {
		t.Fatalf("bad header: exit %d, %q", code, errOut.String())
	}
}

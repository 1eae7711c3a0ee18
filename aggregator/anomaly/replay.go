package anomaly

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Limits of Replay's input.
const (
	// MaxReplayLine bounds one CSV line.
	MaxReplayLine = 4 << 10
	// MaxReplayRows bounds the rows of one CSV.
	MaxReplayRows = 50_000_000
	// stepProbe is how many leading rows fix the step (the smallest gap
	// between their timestamps); later rows must keep to its grid.
	stepProbe = 64
)

// ReplayAlert is one line of Replay's output.
type ReplayAlert struct {
	// TS is the timestamp of the point that fired, as the CSV wrote it.
	TS        string  `json:"ts"`
	Direction string  `json:"direction"`
	Score     float64 `json:"score"`
}

// ReplayStats summarises a replay.
type ReplayStats struct {
	Rows   int
	Step   time.Duration
	Alerts int
}

// Replay reads a CSV of timestamp,value (a header line, then one row per
// step in ascending time; timestamps as 2006-01-02 15:04:05, taken as UTC,
// or RFC 3339; any regular step, gaps allowed) and feeds it, row by row and
// without look-ahead, to one detector of kind Count: the series is a count
// of events of one campaign metric, judged by exactly the code that judges
// live minutes. Each alert that fires is written to w as one JSON line
// {"ts":…,"direction":"spike"|"drop","score":…}.
func Replay(cfg Config, r io.Reader, w io.Writer) (ReplayStats, error) {
	var st ReplayStats
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxReplayLine)
	line := 0
	next := func() (string, bool) {
		for sc.Scan() {
			line++
			s := strings.TrimSpace(sc.Text())
			if line == 1 {
				s = strings.TrimPrefix(s, "\ufeff")
			}
			if s != "" {
				return s, true
			}
		}
		return "", false
	}
	head, ok := next()
	if !ok {
		if err := sc.Err(); err != nil {
			return st, fmt.Errorf("line %d: %w", line+1, err)
		}
		return st, errors.New("empty input: want a header line timestamp,value")
	}
	if h := strings.ReplaceAll(strings.ToLower(head), " ", ""); h != "timestamp,value" && h != `"timestamp","value"` {
		return st, fmt.Errorf("line %d: header %q: want timestamp,value", line, head)
	}

	type row struct {
		text string
		t    time.Time
		v    float64
		line int
	}
	parse := func(s string) (row, error) {
		ts, vs, ok := strings.Cut(s, ",")
		if !ok || strings.Contains(vs, ",") {
			return row{}, fmt.Errorf("line %d: want 2 fields: %q", line, s)
		}
		ts, vs = unquote(ts), unquote(vs)
		t, err := parseReplayTime(ts)
		if err != nil {
			return row{}, fmt.Errorf("line %d: %w", line, err)
		}
		v, err := strconv.ParseFloat(vs, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return row{}, fmt.Errorf("line %d: value %q is not a finite number", line, vs)
		}
		return row{text: ts, t: t, v: v, line: line}, nil
	}

	// The step is the smallest gap among the first rows.
	var probe []row
	for len(probe) < stepProbe {
		s, ok := next()
		if !ok {
			break
		}
		rw, err := parse(s)
		if err != nil {
			return st, err
		}
		if n := len(probe); n > 0 && !rw.t.After(probe[n-1].t) {
			return st, fmt.Errorf("line %d: %s is not after the previous row's %s (rows must be in ascending time)", rw.line, rw.text, probe[n-1].text)
		}
		probe = append(probe, rw)
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("line %d: %w", line+1, err)
	}
	if len(probe) < 2 {
		return st, errors.New("need at least two rows to know the step")
	}
	step := time.Duration(math.MaxInt64)
	for i := 1; i < len(probe); i++ {
		step = min(step, probe[i].t.Sub(probe[i-1].t))
	}
	st.Step = step
	det, err := New(cfg, step, Spec{Kind: Count})
	if err != nil {
		return st, err
	}

	out := bufio.NewWriter(w)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	feed := func(rw row) error {
		if st.Rows >= MaxReplayRows {
			return fmt.Errorf("line %d: more than %d rows", rw.line, MaxReplayRows)
		}
		st.Rows++
		res, err := det.Observe(rw.t, Obs{Num: rw.v})
		if errors.Is(err, ErrOffGrid) {
			return fmt.Errorf("line %d: %s is off the %v step grid of the first rows", rw.line, rw.text, step)
		}
		if errors.Is(err, ErrOutOfOrder) {
			return fmt.Errorf("line %d: %s is not after the previous row (rows must be in ascending time)", rw.line, rw.text)
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", rw.line, err)
		}
		if tr := res.Transition; tr != nil && tr.State == Firing {
			st.Alerts++
			buf.Reset()
			if err := enc.Encode(ReplayAlert{TS: rw.text, Direction: tr.Direction.String(), Score: round3(tr.Score)}); err != nil {
				return err
			}
			if _, err := out.Write(buf.Bytes()); err != nil {
				return err
			}
		}
		return nil
	}
	for _, rw := range probe {
		if err := feed(rw); err != nil {
			return st, err
		}
	}
	for {
		s, ok := next()
		if !ok {
			break
		}
		rw, err := parse(s)
		if err != nil {
			return st, err
		}
		if err := feed(rw); err != nil {
			return st, err
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("line %d: %w", line+1, err)
	}
	return st, out.Flush()
}

func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

// parseReplayTime reads 2006-01-02 15:04:05 (UTC) or RFC 3339.
func parseReplayTime(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05", time.RFC3339Nano, "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("timestamp %q: want 2006-01-02 15:04:05 or RFC 3339", s)
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

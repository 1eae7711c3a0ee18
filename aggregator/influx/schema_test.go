package influx

import (
	"bytes"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

func TestTagValue(t *testing.T) {
	for in, want := range map[string]string{
		"":               NoneTag,
		"plain":          "plain",
		`a,b c=d`:        `a,b c=d`, // escaping is the encoder's job
		`back\slash`:     `back\slash`,
		`trail\`:         "trail\uFFFD",
		`trail\\`:        "trail\uFFFD\uFFFD",
		"new\nline":      "new\uFFFDline",
		"tab\t\x7f":      "tab\uFFFD\uFFFD",
		"bad\xffutf8":    "bad\uFFFDutf8",
		"日本語":            "日本語",
		NoneTag:          NoneTag,
		`\`:              "\uFFFD",
		`mid\,dle\ \=ok`: `mid\,dle\ \=ok`,
	} {
		if got := TagValue(in); got != want {
			t.Fatalf("TagValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAppendMinuteLine(t *testing.T) {
	st := &sketch.State{Count: 3, ValueMicros: 12_500_000, CostMicros: 1_000_000}
	st.AddBot("ua")
	p := sketch.Minute{Series: sketch.Series{Campaign: `a,b c=d\x`, Source: "google", Type: "click", Region: "eu"}, Minute: 1_700_000_040, State: st}
	b, err := appendMinute(nil, &p)
	if err != nil {
		t.Fatalf("appendMinute: %v", err)
	}
	want := `tally,campaign=a\,b\ c\=d\x,country=(none),device=(none),medium=(none),region=eu,source=google,type=click ` +
		`count=3i,value_micros=12500000i,cost_micros=1000000i,revenue=12.5,cost=1,bots=1i,bots_ua=1i 1700000040` + "\n"
	if string(b) != want {
		t.Fatalf("line =\n%s\nwant\n%s", b, want)
	}
}

// TestSparseFields: a point carries the money, bots and uniques fields
// once its state ever had them, zero or not, and leaves them out before.
func TestSparseFields(t *testing.T) {
	refunded := &sketch.State{Count: 2}
	refunded.AddValue(5_000_000)
	refunded.AddValue(-5_000_000)
	seen := &sketch.State{Count: 1}
	seen.AddVisitor(0x9E3779B97F4A7C15)
	for _, c := range []struct {
		typ  string
		st   *sketch.State
		want []string
	}{
		{"impression", &sketch.State{Count: 1}, nil},
		{"impression", seen, []string{FieldUniques}},
		{"conversion", &sketch.State{Count: 1}, nil},
		{"conversion", refunded, []string{FieldValueMicros, FieldRevenue}},
		{"click", &sketch.State{Count: 1, CostMicros: 300_000}, []string{FieldCostMicros, FieldCost}},
		{"cost", &sketch.State{Count: 2}, []string{FieldCostMicros, FieldCost}},
		{"click", &sketch.State{Bots: map[string]uint64{"ua": 2}}, []string{FieldBots}},
		{"click", &sketch.State{Count: 2, Bots: map[string]uint64{"ua": 0}}, []string{FieldBots}}, // a row no longer a bot
	} {
		p := sketch.Minute{Series: sketch.Series{Campaign: "c", Type: c.typ}, Minute: 1_700_000_040, State: c.st}
		b, err := appendMinute(nil, &p)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range []string{FieldValueMicros, FieldRevenue, FieldCostMicros, FieldCost, FieldBots, FieldUniques} {
			if bytes.Contains(b, []byte(","+f+"=")) || bytes.Contains(b, []byte(" "+f+"=")) {
				got = append(got, f)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s %+v: optional fields %v, want %v\n%s", c.typ, c.st, got, c.want, b)
		}
	}
}

func TestAppendMinuteSketches(t *testing.T) {
	st := newState(1, 10, 100, 10)
	b, err := appendMinute(nil, &sketch.Minute{Series: sketch.Series{Campaign: "c"}, Minute: 60, State: st})
	if err != nil {
		t.Fatalf("appendMinute: %v", err)
	}
	line := string(b)
	for _, f := range []string{"value_p50=", "value_p90=", "value_p99=", `hll="`, `quantiles="`, "uniques="} {
		if !strings.Contains(line, f) {
			t.Fatalf("line lacks %s: %s", f, line)
		}
	}
	if strings.Contains(line, "e+") || strings.Contains(line, "e-") {
		t.Fatalf("line has an exponent float: %s", line)
	}
}

func TestAppendContribLine(t *testing.T) {
	s := sketch.Series{Campaign: "c", Region: "eu"}
	cs := []wire.Contribution{newContribution(s, 60, 1, 2, &sketch.State{Count: 4}), newContribution(s, 60, 2, 1, &sketch.State{Count: 5})}
	b, err := appendContrib(nil, &ContribPoint{Series: s, Minute: 60, Agent: "edge 1", Contribs: cs})
	if err != nil {
		t.Fatalf("appendContrib: %v", err)
	}
	line := string(b)
	prefix := `tally_contrib,agent=edge\ 1,campaign=c,country=(none),device=(none),format=3,medium=(none),region=eu,source=(none),type=(none) count=9i,contribs="`
	if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, "\" 60\n") {
		t.Fatalf("line = %s", line)
	}
	field := line[len(prefix) : len(line)-len("\" 60\n")]
	raw, err := base64.StdEncoding.DecodeString(field)
	if err != nil {
		t.Fatalf("contribs field is not standard base64: %v", err)
	}
	got, err := wireContribs(raw, s, 60)
	if err != nil || !contribsEqual(got, cs) {
		t.Fatalf("wireContribs = %+v, %v; want %+v", got, err, cs)
	}
}

// TestFluxString checks that quoted values hold only plain characters
// and \xNN escapes, and decode back to the input.
func TestFluxString(t *testing.T) {
	for _, in := range []string{
		"", "plain-value_1.0", `"`, `\`, `${x}`, "$", "new\nline", `" or true or "`, "日本", "\x00\xff",
	} {
		q := fluxString(in)
		if q[0] != '"' || q[len(q)-1] != '"' {
			t.Fatalf("fluxString(%q) = %s, not quoted", in, q)
		}
		body := q[1 : len(q)-1]
		var dec []byte
		for i := 0; i < len(body); i++ {
			c := body[i]
			switch {
			case c == '\\':
				if i+3 >= len(body) || body[i+1] != 'x' {
					t.Fatalf("fluxString(%q) = %s: bad escape at %d", in, q, i)
				}
				var v byte
				for _, h := range body[i+2 : i+4] {
					v <<= 4
					switch {
					case '0' <= h && h <= '9':
						v |= byte(h - '0')
					case 'a' <= h && h <= 'f':
						v |= byte(h - 'a' + 10)
					default:
						t.Fatalf("fluxString(%q) = %s: bad hex", in, q)
					}
				}
				dec = append(dec, v)
				i += 3
			case c == '"' || c == '$' || c < 0x20 || c >= 0x7f:
				t.Fatalf("fluxString(%q) = %s: raw %q", in, q, c)
			default:
				dec = append(dec, c)
			}
		}
		if string(dec) != in {
			t.Fatalf("fluxString(%q) decodes to %q", in, dec)
		}
	}
}

func TestMinutesQueryShape(t *testing.T) {
	q := minutesQuery("db/rp", MinuteQuery{Campaign: "c", Country: "DE",
		From: time.Unix(60, 0), To: time.Unix(180, 0)})
	for _, want := range []string{
		`from(bucket: "db/rp")`,
		`range(start: 1970-01-01T00:01:00Z, stop: 1970-01-01T00:02:59.999999999Z)`,
		`r._measurement == "tally" and r.campaign == "c" and r.country == "DE" and r._field =~ /^(`,
		`|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`,
	} {
		if !strings.Contains(q, want) {
			t.Fatalf("query lacks %q:\n%s", want, q)
		}
	}
	if strings.Contains(q, "r.source") {
		t.Fatalf("query filters on an unset dimension:\n%s", q)
	}
}

func TestVoteFieldRoundTrip(t *testing.T) {
	for _, kv := range [][3]string{
		{"launch", "yes", "vote_launch/yes"},
		{"a/b", "c d", "vote_a%2Fb/c%20d"},
		{"", "50%", "vote_/50%25"},
		{"日本", "x=y,z", "vote_%E6%97%A5%E6%9C%AC/x=y%2Cz"},
	} {
		key := sketch.VoteKey(kv[0], kv[1])
		f := VoteField(key)
		if f != kv[2] {
			t.Errorf("VoteField(%q, %q) = %q, want %q", kv[0], kv[1], f, kv[2])
		}
		back, err := voteFromField(f)
		if err != nil || back != key {
			t.Errorf("voteFromField(%q) = %q, %v; want %q", f, back, err, key)
		}
	}
	for _, bad := range []string{"vote_noslash", "vote_%zz/a"} {
		if _, err := voteFromField(bad); err == nil {
			t.Errorf("voteFromField(%q) accepted a malformed field", bad)
		}
	}
}

package imports

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
)

// TestPollReport: rows become poll_vote events weighted by their votes
// (1 without a votes column), with poll and answer in the vote key, the
// voter hashed; bad rows are named; a spend report's columns are not read.
func TestPollReport(t *testing.T) {
	f := newFixture(t, nil)
	body := "date;campaign;poll;answer;votes;cost\n" +
		"2026-11-21;spring;Colour?;Red;7;1\n" +
		"2026-11-21;spring;Colour?;Blue;0;\n" + // no votes: accepted, nothing to count
		"2026-11-21;spring;Colour?;;3;\n" +
		"2026-11-21;spring;Colour?;Green;-1;\n" +
		"2026-11-21;spring;;Yes;2;\n"
	w, res := post(t, f.h.Polls(), PollsPath, []byte(body), "Content-Type", "text/csv")
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := []RowError{{4, 2, "answer: required"}, {5, 3, `votes: "-1": must not be negative`}}
	if res.Accepted != 3 || !slices.Equal(res.Errors, want) || !slices.Equal(res.IgnoredColumns, []string{"cost"}) {
		t.Fatalf("result %+v\nwant errors %+v", res, want)
	}
	evs := f.sink.last()
	got := map[string]uint64{}
	for _, e := range evs {
		if e.Series.Type != event.PollVote || e.CostMicros != 0 || e.Row == 0 {
			t.Errorf("event %+v", e)
		}
		got[e.Vote] += e.Count()
	}
	if len(evs) != 2 || got[sketch.VoteKey("Colour?", "Red")] != 7 || got[sketch.VoteKey(event.NoPoll, "Yes")] != 2 {
		t.Fatalf("votes %v", got)
	}

	// A row per vote, voters named: each voter is a visitor hash.
	f = newFixture(t, nil)
	body = `{"ts":"2026-11-21T10:00:00Z","campaign":"c","poll":"p","answer":"a","voter":"ann@example.com"}
{"ts":"2026-11-21T10:00:00Z","campaign":"c","poll":"p","answer":"a","voter":"bob@example.com"}
`
	if w, res := post(t, f.h.Polls(), PollsPath, []byte(body)); w.Code != http.StatusAccepted || res.Accepted != 2 || res.Events != 2 {
		t.Fatalf("%d %+v", w.Code, res)
	}
	evs = f.sink.last()
	if evs[0].Visitor == 0 || evs[0].Visitor == evs[1].Visitor || evs[0].Row == evs[1].Row {
		t.Fatalf("voters are not told apart: %+v", evs)
	}

	// A poll tool's webhook: one object per vote, retried.
	f = newFixture(t, nil)
	vote := []byte(`{
  "id": "resp-7", "ts": "2026-11-21T10:00:00Z", "campaign": "c",
  "question": "Colour?", "choice": "Red", "respondent": "cy@example.com"
}`)
	var rows []uint64
	for range 2 {
		if w, res := post(t, f.h.Polls(), PollsPath, vote); w.Code != http.StatusAccepted || res.Accepted != 1 || res.Events != 1 {
			t.Fatalf("webhook: %d %+v", w.Code, res)
		}
		e := f.sink.last()[0]
		if e.Vote != sketch.VoteKey("Colour?", "Red") || e.Visitor == 0 {
			t.Fatalf("webhook vote %+v", e)
		}
		rows = append(rows, e.Row)
	}
	if rows[0] != rows[1] {
		t.Fatal("a retried webhook got a new row id: it would count twice")
	}

	// Not a poll report.
	f = newFixture(t, nil)
	w, _ = post(t, f.h.Polls(), PollsPath, []byte("date,campaign,cost\n2026-11-21,a,1\n"), "Content-Type", "text/csv")
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "not a poll report: the header (line 1, delimiter ',') has no answer column") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

// FuzzPolls: no poll report (CSV or JSON) makes the handler panic or
// answer outside its contract.
//
//	go test -run='^$' -fuzz='^FuzzPolls$' -fuzztime=30s ./agent/imports/
func FuzzPolls(f *testing.F) {
	for _, s := range []string{"date,campaign,poll,answer,votes\n2026-11-21,spring,launch,yes,12\n",
		"campaign;poll;answer;votes\nspring;launch;\"no, never\";3\n",
		`[{"campaign":"c","poll":"p","answer":"a","votes":"7","date":"2026-11-21"}]`,
		`{"campaign":"c","poll":"p","answer":"a","ts":"2026-11-21T10:00:00Z"}`, "votes\n-1\n"} {
		f.Add([]byte(s))
	}
	fx := newFixture(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		fx.sink.batches = nil
		w, _ := post(t, fx.h.Polls(), PollsPath, body)
		switch w.Code {
		case http.StatusAccepted, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}

package merge

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

var series = sketch.Series{Campaign: "c", Source: "s", Medium: "m", Type: "click", Country: "DE", Device: "mobile", Region: "eu"}

// mix spreads small test ids like the agent's salted hash does.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func contribution(t *testing.T, cid, version, count uint64, visitors ...uint64) wire.Contribution {
	t.Helper()
	st := &sketch.State{Count: count, ValueMicros: int64(count) * 1000}
	for _, v := range visitors {
		st.AddVisitor(mix(v))
	}
	enc, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return wire.Contribution{Series: series, Minute: 600, CID: cid, Version: version, State: enc}
}

func apply(t *testing.T, s *Store, agent string, cs ...wire.Contribution) {
	t.Helper()
	var ds []Decoded
	for i := range cs {
		d, err := Decode(agent, &cs[i])
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if _, err := s.Apply(ds, 0); err != nil {
		t.Fatal(err)
	}
}

func merged(t *testing.T, s *Store) *sketch.State {
	t.Helper()
	sn, err := s.TakeDirty(0, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(sn.Minutes) != 1 {
		t.Fatalf("%d dirty minutes", len(sn.Minutes))
	}
	return sn.Minutes[0].State
}

func TestVersionsReplaceAndDeltasUnion(t *testing.T) {
	s := New()
	// Agent a, one CID, three flushes: counters cumulative, HLL deltas.
	v1 := contribution(t, 1, 1, 2, 11, 12)
	v2 := contribution(t, 1, 2, 5, 13)
	v3 := contribution(t, 1, 3, 6, 14)
	// Agent b and a second CID of agent a (after a restart) add up.
	b := contribution(t, 1, 1, 10, 11, 99)
	a2 := contribution(t, 2<<32|1, 1, 1, 15)
	// Deliver out of order, with duplicates.
	apply(t, s, "a", v3, v1, v2, v1, v3)
	apply(t, s, "b", b, b)
	apply(t, s, "a", a2)
	got := merged(t, s)
	if got.Count != 6+10+1 || got.ValueMicros != 17_000 {
		t.Fatalf("count %d value %d, want 17 17000", got.Count, got.ValueMicros)
	}
	// Visitors 11..15 and 99: six distinct.
	if u := got.UniquesEstimate(); u != 6 {
		t.Fatalf("uniques %d, want 6", u)
	}
}

func TestDirtyGenerations(t *testing.T) {
	s := New()
	apply(t, s, "a", contribution(t, 1, 1, 1, 1))
	sn, _ := s.TakeDirty(0, nil, 0)
	if len(sn.Contribs) != 1 || sn.Contribs[0].Agent != "a" || len(sn.Contribs[0].Entries) != 1 || sn.Contribs[0].Count != 1 {
		t.Fatalf("contrib points %+v", sn.Contribs)
	}
	// A change between snapshot and write keeps the minute dirty.
	apply(t, s, "a", contribution(t, 1, 2, 3, 2))
	s.MarkWritten(sn)
	if st := s.Stats(); st.DirtyMinutes != 1 {
		t.Fatalf("dirty minutes %d after concurrent change", st.DirtyMinutes)
	}
	sn2, _ := s.TakeDirty(0, nil, 0)
	s.MarkWritten(sn2)
	if st := s.Stats(); st.DirtyMinutes != 0 {
		t.Fatalf("dirty minutes %d", st.DirtyMinutes)
	}
	// A stale re-delivery without a new HLL delta changes nothing.
	stale := contribution(t, 1, 1, 1)
	apply(t, s, "a", stale)
	if st := s.Stats(); st.DirtyMinutes != 0 || st.Stale != 1 {
		t.Fatalf("stale delivery: %+v", st)
	}
}

func TestLoadRebuildsAndEvictKeepsDirty(t *testing.T) {
	now := time.Unix(10_000, 0)
	s := New()
	s.now = func() time.Time { return now }
	// A rebuild from storage: cumulative state, counts as written.
	loaded := contribution(t, 1, 4, 8, 1, 2, 3)
	d, _ := Decode("a", &loaded)
	if err := s.Load([]Decoded{d}); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.DirtyMinutes != 0 || st.Contributions != 1 {
		t.Fatalf("after load %+v", st)
	}
	// An older version arriving late must not win over the loaded one.
	apply(t, s, "a", contribution(t, 1, 3, 7))
	// A newer one from another agent adds.
	apply(t, s, "b", contribution(t, 5, 1, 2, 4))
	got := merged(t, s)
	if got.Count != 10 || got.UniquesEstimate() != 4 {
		t.Fatalf("count %d uniques %d, want 10 4", got.Count, got.UniquesEstimate())
	}
	now = now.Add(time.Hour)
	if n := s.Evict(now); n != 0 {
		t.Fatalf("evicted %d dirty minutes", n)
	}
	sn, _ := s.TakeDirty(0, nil, 0)
	s.MarkWritten(sn)
	if n := s.Evict(now); n != 1 {
		t.Fatalf("evicted %d clean minutes, want 1", n)
	}
}

func TestSubsetMergedAndDropClean(t *testing.T) {
	s := liveStore()
	other := series
	other.Campaign = "d"
	c1 := contribution(t, 1, 1, 5, 1, 2)
	c2 := contribution(t, 2, 1, 7, 3)
	c2.Series = other
	apply(t, s, "a", c1, c2)
	apply(t, s, "b", contribution(t, 9, 1, 3, 2))

	sn, err := s.TakeDirty(0, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	isC := func(k sketch.Key) bool { return k.Series.Campaign == "c" }
	part := sn.Subset(isC)
	if part.Len() != 1 || len(part.Contribs) != 2 {
		t.Fatalf("subset has %d minutes and %d contribution points, want 1 and 2", part.Len(), len(part.Contribs))
	}
	// Only the subset becomes clean; the other campaign stays dirty and
	// DropClean keeps it.
	s.MarkWritten(part)
	if n := s.DropClean(func(sketch.Key) bool { return true }); n != 1 {
		t.Fatalf("DropClean dropped %d, want the 1 clean minute", n)
	}
	if s.Contains(sketch.Key{Series: series, Minute: 600}) || !s.Contains(sketch.Key{Series: other, Minute: 600}) {
		t.Fatal("DropClean dropped the wrong minute")
	}
	ms, _ := view(t, s, CampaignMinute{Campaign: "d", Minute: 600})
	if len(ms) != 1 || ms[0].State.Count != 7 || ms[0].State.UniquesEstimate() != 1 {
		t.Fatalf("view = %+v", ms)
	}
	// The dropped minute is gone from the index too.
	if ms, _ := view(t, s, CampaignMinute{Campaign: "c", Minute: 600}); len(ms) != 0 {
		t.Fatalf("view of a dropped campaign-minute = %+v", ms)
	}
}

// view returns the live view of one campaign-minute.
func view(t *testing.T, s *Store, cm CampaignMinute) ([]sketch.Minute, uint64) {
	t.Helper()
	var out []sketch.Minute
	var uniques uint64
	if err := s.CampaignView([]CampaignMinute{cm}, func(_ CampaignMinute, ms []sketch.Minute, u uint64) {
		out, uniques = append(out, ms...), u
	}); err != nil {
		t.Fatal(err)
	}
	return out, uniques
}

// liveStore is a store whose clock puts minute 600 in the live window.
func liveStore() *Store {
	s := New()
	s.now = func() time.Time { return time.Unix(660, 0) }
	return s
}

// TestMergedFollowsEveryChange: the merged value is computed once per
// change and shared, and every kind of change (a newer version, register
// updates, a load from storage) is seen by the next reader.
func TestMergedFollowsEveryChange(t *testing.T) {
	s := liveStore()
	read := func() *sketch.State {
		t.Helper()
		ms, _ := view(t, s, CampaignMinute{Campaign: series.Campaign, Minute: 600})
		if len(ms) != 1 {
			t.Fatalf("view = %+v", ms)
		}
		return ms[0].State
	}
	apply(t, s, "a", contribution(t, 1, 1, 5, 1, 2))
	first := read()
	if again := read(); again != first {
		t.Fatal("an unchanged minute was merged again")
	}
	if sn, _ := s.TakeDirty(0, nil, 0); sn.Minutes[0].State != first {
		t.Fatal("the write round and the live view merged the same minute twice")
	}
	apply(t, s, "a", contribution(t, 1, 2, 7, 3)) // newer version, a new visitor
	if got := read(); got.Count != 7 || got.UniquesEstimate() != 3 {
		t.Fatalf("after a newer version: count %d uniques %d, want 7 3", got.Count, got.UniquesEstimate())
	}
	loaded := contribution(t, 9, 1, 4, 4, 5)
	d, _ := Decode("b", &loaded)
	if err := s.Load([]Decoded{d}); err != nil {
		t.Fatal(err)
	}
	if got := read(); got.Count != 11 || got.UniquesEstimate() != 5 {
		t.Fatalf("after a load: count %d uniques %d, want 11 5", got.Count, got.UniquesEstimate())
	}
	if first.Count != 5 || first.UniquesEstimate() != 2 {
		t.Fatalf("a reader's earlier value changed under it: %+v", first)
	}
}

// contributionAt is contribution for another series and minute.
func contributionAt(t *testing.T, s sketch.Series, minute int64, cid, version, count uint64, visitors ...uint64) wire.Contribution {
	t.Helper()
	c := contribution(t, cid, version, count, visitors...)
	c.Series, c.Minute = s, minute
	return c
}

func decodeAll(t *testing.T, agent string, cs ...wire.Contribution) []Decoded {
	t.Helper()
	var ds []Decoded
	for i := range cs {
		d, err := Decode(agent, &cs[i])
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

// TestPendingMinutesWaitForTheirLoad: a minute older than the rebuilt
// window, or evicted, is not written until what storage holds of its
// campaign-minute has been merged; a foreign one may be handed over.
func TestPendingMinutesWaitForTheirLoad(t *testing.T) {
	s := New()
	s.Rebuilt(1200)
	res, err := s.Apply(decodeAll(t, "a", contributionAt(t, series, 600, 1, 1, 2, 1), contributionAt(t, series, 1200, 2, 1, 3, 2)), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := CampaignMinute{Campaign: series.Campaign, Minute: 600}
	if len(res.Late) != 1 || res.Late[0] != want {
		t.Fatalf("late = %+v, want only %+v", res.Late, want)
	}
	// A second series of the same campaign-minute is pending too, but
	// the campaign-minute is reported once.
	other := series
	other.Source = "other"
	res, _ = s.Apply(decodeAll(t, "a", contributionAt(t, other, 600, 3, 1, 4)), 0)
	if len(res.Late) != 0 {
		t.Fatalf("campaign-minute reported twice: %+v", res.Late)
	}
	if got := s.PendingLoads(0); len(got) != 1 || got[0] != want {
		t.Fatalf("pending = %+v", got)
	}
	sn, _ := s.TakeDirty(0, nil, 0)
	if sn.Len() != 1 || sn.Minutes[0].Minute != 1200 {
		t.Fatalf("snapshot has %d minutes (%+v); want only the minute of the rebuilt window", sn.Len(), sn.Minutes)
	}
	if sn, _ := s.TakeDirty(0, func(string) bool { return true }, 0); sn.Len() != 3 {
		t.Fatalf("a foreign campaign's pending minutes are not handed out: %d", sn.Len())
	}
	if n := s.Evict(time.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("evicted %d dirty or pending minutes", n)
	}
	// Storage held another agent's contribution to the first series.
	stored := decodeAll(t, "b", contributionAt(t, series, 600, 9, 5, 10, 3))
	if err := s.FinishLoad([]CampaignMinute{want}, stored); err != nil {
		t.Fatal(err)
	}
	sn, _ = s.TakeDirty(0, nil, 0)
	var total uint64
	for _, m := range sn.Minutes {
		if m.Minute == 600 {
			total += m.State.Count
		}
	}
	if sn.Len() != 3 || total != 2+4+10 {
		t.Fatalf("after the load: %d minutes, minute 600 counts %d; want 3 and 16", sn.Len(), total)
	}
	if st := s.Stats(); st.PendingLoads != 0 {
		t.Fatalf("%d loads still pending", st.PendingLoads)
	}
	// After an eviction, a minute at or before the evicted one is
	// pending again.
	s.MarkWritten(sn)
	s.Evict(time.Now().Add(time.Hour))
	res, _ = s.Apply(decodeAll(t, "a", contributionAt(t, series, 1200, 2, 2, 5)), 0)
	if len(res.Late) != 1 || res.Late[0].Minute != 1200 {
		t.Fatalf("late after eviction = %+v", res.Late)
	}
}

// TestLiveUnionEqualsFullMerge: the campaign-minute's visitors kept as
// contributions arrive estimate exactly what merging every series'
// sketch (cost series left out) estimates.
func TestLiveUnionEqualsFullMerge(t *testing.T) {
	s := liveStore()
	rng := rand.New(rand.NewPCG(1, 2))
	types := []string{"click", "impression", "cost", "pageview"}
	for round := range 20 {
		var cs []wire.Contribution
		for i := range 30 {
			sr := series
			sr.Type = types[i%len(types)]
			sr.Source = fmt.Sprintf("s%d", i%7)
			var visitors []uint64
			for range rng.IntN(50) {
				visitors = append(visitors, rng.Uint64N(5000))
			}
			cs = append(cs, contributionAt(t, sr, 600, uint64(i%5), uint64(round+1), uint64(round), visitors...))
		}
		apply(t, s, fmt.Sprintf("agent-%d", round%3), cs...)
	}
	ms, uniques := view(t, s, CampaignMinute{Campaign: series.Campaign, Minute: 600})
	var full sketch.State
	for _, m := range ms {
		if m.Series.Type != "cost" {
			if err := full.MergeUniques(m.State.Uniques); err != nil {
				t.Fatal(err)
			}
		}
	}
	if want := full.UniquesEstimate(); uniques != want || want == 0 {
		t.Fatalf("live union estimates %d, the full merge %d", uniques, want)
	}
}

// TestWriteRoundsReencodeOnlyChangedContributions: a round encodes the
// contributions that changed since the last one; the others are reused.
func TestWriteRoundsReencodeOnlyChangedContributions(t *testing.T) {
	s := New()
	apply(t, s, "a", contribution(t, 1, 1, 1, 1, 2), contribution(t, 2, 1, 1, 3, 4))
	first, _ := s.TakeDirty(0, nil, 0)
	s.MarkWritten(first)
	apply(t, s, "a", contribution(t, 1, 2, 2, 5))
	second, _ := s.TakeDirty(0, nil, 0)
	if len(first.Contribs) != 1 || len(second.Contribs) != 1 || len(second.Contribs[0].Entries) != 2 {
		t.Fatalf("contribution points %+v then %+v", first.Contribs, second.Contribs)
	}
	a, b := first.Contribs[0].Entries, second.Contribs[0].Entries
	if &a[1][0] != &b[1][0] {
		t.Fatal("an unchanged contribution was encoded again")
	}
	if &a[0][0] == &b[0][0] || second.Contribs[0].Count != 2+1 {
		t.Fatalf("the changed contribution was not encoded again: count %d", second.Contribs[0].Count)
	}
	// Handed over (another node owns the campaign), the same
	// contributions come in the wire's form.
	apply(t, s, "a", contribution(t, 2, 2, 4, 6))
	third, _ := s.TakeDirty(0, func(string) bool { return true }, 0)
	if len(third.Contribs) != 1 || len(third.Contribs[0].Contribs) != 2 || third.Contribs[0].Entries != nil ||
		third.Contribs[0].Contribs[1].Version != 2 || third.Contribs[0].Contribs[1].State.Count != 4 || third.Minutes[0].Ledger != nil {
		t.Fatalf("hand-over snapshot %+v", third.Contribs)
	}
}

// TestLedgerListsEveryContribution: a written minute carries the ledger
// of all its contributions (not only the changed ones), without the
// folded one a load stands on, and the ledger merges to the minute's
// counters.
func TestLedgerListsEveryContribution(t *testing.T) {
	s := New()
	folded := &sketch.State{}
	folded.AddVisitor(777)
	if err := s.Load([]Decoded{{Key: sketch.Key{Series: series, Minute: 600}, ID: ContribID{Agent: FoldedAgent}, State: folded}}); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "b", contribution(t, 9, 3, 7, 1))
	apply(t, s, "a", contribution(t, 2, 1, 2, 2), contribution(t, 1, 4, 3, 3))
	sn, _ := s.TakeDirty(0, nil, 0)
	if len(sn.Minutes) != 1 {
		t.Fatalf("%d minutes", len(sn.Minutes))
	}
	ls, err := sketch.DecodeStoredContribs(sn.Minutes[0].Ledger)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var count uint64
	for _, l := range ls {
		got = append(got, fmt.Sprintf("%s/%d/v%d", l.Agent, l.CID, l.Version))
		count += l.State.Count
		if l.State.Uniques != nil {
			t.Fatal("a ledger entry kept its HyperLogLog")
		}
	}
	if fmt.Sprint(got) != "[a/1/v4 a/2/v1 b/9/v3]" || count != sn.Minutes[0].State.Count || count != 12 {
		t.Fatalf("ledger %v (count %d), minute count %d", got, count, sn.Minutes[0].State.Count)
	}
	for _, ac := range sn.Contribs {
		if ac.Agent == FoldedAgent {
			t.Fatal("the folded contribution is written as a contribution point")
		}
	}
	// The folded visitors are in the merged minute.
	if u := sn.Minutes[0].State.UniquesEstimate(); u != 4 {
		t.Fatalf("uniques %d, want 4 (three contributed, one folded)", u)
	}
}

func TestContributionsOf(t *testing.T) {
	s := New()
	apply(t, s, "b", contribution(t, 1, 1, 1, 1))
	apply(t, s, "a", contribution(t, 2, 1, 2), contribution(t, 1, 1, 3))
	acs, err := s.ContributionsOf(sketch.Key{Series: series, Minute: 600})
	if err != nil {
		t.Fatal(err)
	}
	if len(acs) != 2 || acs[0].Agent != "a" || len(acs[0].Contribs) != 2 || acs[0].Contribs[0].CID != 1 || acs[1].Agent != "b" {
		t.Fatalf("ContributionsOf = %+v", acs)
	}
}

// TestReleasePointFollowsUnwrittenChanges: the write-ahead log may be
// released only before the earliest change that is not yet written:
// minutes skipped (pending) or not handed over hold it, minutes that
// changed again after a cut hold it only from the cut.
func TestReleasePointFollowsUnwrittenChanges(t *testing.T) {
	s := New()
	other := series
	other.Campaign = "d"
	at := func(pos uint64, c wire.Contribution) {
		t.Helper()
		if _, err := s.Apply(decodeAll(t, "a", c), pos); err != nil {
			t.Fatal(err)
		}
	}
	at(100, contributionAt(t, series, 600, 1, 1, 1))
	at(200, contributionAt(t, other, 600, 2, 1, 1))
	if got := s.ReleasePoint(300); got != 100 {
		t.Fatalf("release point %d before anything is written, want 100", got)
	}
	sn, _ := s.TakeDirty(0, nil, 300)
	at(350, contributionAt(t, series, 600, 1, 2, 2)) // changes again after the cut
	s.MarkWritten(sn.Subset(func(k sketch.Key) bool { return k.Series.Campaign == "c" }))
	if got := s.ReleasePoint(300); got != 200 {
		t.Fatalf("release point %d while d is unwritten, want 200", got)
	}
	s.MarkWritten(sn)
	if got := s.ReleasePoint(400); got != 300 {
		t.Fatalf("release point %d with c changed after the cut at 300, want 300", got)
	}
	sn, _ = s.TakeDirty(0, nil, 400)
	s.MarkWritten(sn)
	if got := s.ReleasePoint(400); got != 400 {
		t.Fatalf("release point %d with everything written, want the cut's 400", got)
	}
	// A pending minute is not handed out and holds the log.
	s.Rebuilt(1200)
	late := series
	late.Campaign = "late"
	at(500, contributionAt(t, late, 60, 3, 1, 1))
	sn, _ = s.TakeDirty(0, nil, 600)
	s.MarkWritten(sn)
	if got := s.ReleasePoint(600); got != 500 {
		t.Fatalf("release point %d with a pending minute from 500, want 500", got)
	}
}

// TestReplayRewritesWhatStorageHoldsAhead: a node that died between a
// write round's contribution points and its merged points finds the
// contributions in storage at start (Load: written) and the same
// contributions in its log. Replaying them must mark their minutes
// changed, those without visitors (bots, spend) too, and hold the log
// until they are written; a stale delivery from the wire still changes
// nothing.
func TestReplayRewritesWhatStorageHoldsAhead(t *testing.T) {
	botSeries, costSeries := series, series
	botSeries.Device, costSeries.Type = "bot", "cost"
	encode := func(s sketch.Series, st *sketch.State) wire.Contribution {
		t.Helper()
		enc, err := st.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return wire.Contribution{Series: s, Minute: 600, CID: 7, Version: 3, State: enc}
	}
	bots := encode(botSeries, &sketch.State{Bots: map[string]uint64{"crawler": 70}})
	spend := encode(costSeries, &sketch.State{Count: 2, CostMicros: 2_500_000})

	s := New()
	if err := s.Load(decodeAll(t, "a", bots, spend)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(decodeAll(t, "a", bots, spend), 100); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.DirtyMinutes != 0 {
		t.Fatalf("a stale delivery from the wire made %d minutes dirty", st.DirtyMinutes)
	}

	if _, err := s.Replay(decodeAll(t, "a", bots, spend), 200); err != nil {
		t.Fatal(err)
	}
	sn, err := s.TakeDirty(0, nil, 300)
	if err != nil {
		t.Fatal(err)
	}
	got := map[sketch.Series]*sketch.State{}
	for _, m := range sn.Minutes {
		got[m.Series] = m.State
	}
	if len(sn.Minutes) != 2 || got[botSeries] == nil || got[botSeries].Bots["crawler"] != 70 ||
		got[costSeries] == nil || got[costSeries].Count != 2 || got[costSeries].CostMicros != 2_500_000 {
		t.Fatalf("after replaying the log the cut holds %+v, want the bot and the spend minute as stored", sn.Minutes)
	}
	if len(sn.Contribs) != 2 {
		t.Fatalf("after replaying the log the cut rewrites %d contribution points, want 2", len(sn.Contribs))
	}
	if rp := s.ReleasePoint(300); rp != 200 {
		t.Fatalf("release point %d before the replayed minutes are written, want 200", rp)
	}
	s.MarkWritten(sn)
	if rp := s.ReleasePoint(300); rp != 300 {
		t.Fatalf("release point %d once they are written, want 300", rp)
	}
}

// TestNewerVersionKeepsReasonsAtZero: an imported row counted as a bot,
// then imported again as a human (the bot rules changed), leaves its bot
// reason at zero in the merge rather than gone, whichever version
// arrives first, so the point stores bots_<reason> = 0 instead of keeping
// the old count; a vote answer a newer import no longer has, likewise.
func TestNewerVersionKeepsReasonsAtZero(t *testing.T) {
	row := func(version uint64, st *sketch.State) wire.Contribution {
		enc, err := st.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return wire.Contribution{Series: series, Minute: 600, CID: 77, Version: version, State: enc}
	}
	asBot := row(1, &sketch.State{Bots: map[string]uint64{"crawler": 2}, Votes: map[string]uint64{"p\x1fyes": 2}})
	asHuman := row(2, &sketch.State{Count: 2, Votes: map[string]uint64{"p\x1fno": 2}})
	for _, order := range [][]wire.Contribution{{asBot, asHuman}, {asHuman, asBot}} {
		s := New()
		for _, c := range order {
			apply(t, s, "edge", c)
		}
		got := merged(t, s)
		if got.Count != 2 || len(got.Bots) != 1 || got.Bots["crawler"] != 0 || got.BotTotal() != 0 {
			t.Errorf("version %d first: count %d bots %v", order[0].Version, got.Count, got.Bots)
		}
		if n, ok := got.Votes["p\x1fyes"]; !ok || n != 0 || got.Votes["p\x1fno"] != 2 {
			t.Errorf("version %d first: votes %v", order[0].Version, got.Votes)
		}
	}
	// Loaded from storage after the newer one arrived (a late minute).
	s := New()
	apply(t, s, "edge", asHuman)
	d, err := Decode("edge", &asBot)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.FinishLoad([]CampaignMinute{{series.Campaign, 600}}, []Decoded{d}); err != nil {
		t.Fatal(err)
	}
	if got := merged(t, s); len(got.Bots) != 1 || got.Bots["crawler"] != 0 {
		t.Errorf("older version loaded after the newer: bots %v", got.Bots)
	}
}

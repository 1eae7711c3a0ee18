package merge

import (
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
	if _, err := s.Apply(ds); err != nil {
		t.Fatal(err)
	}
}

func merged(t *testing.T, s *Store) *sketch.State {
	t.Helper()
	sn, err := s.TakeDirty(0)
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
	sn, _ := s.TakeDirty(0)
	if len(sn.Contribs) != 1 || sn.Contribs[0].Agent != "a" || sn.Contribs[0].Contribs[0].State.Count != 1 {
		t.Fatalf("contrib points %+v", sn.Contribs)
	}
	// A change between snapshot and write keeps the minute dirty.
	apply(t, s, "a", contribution(t, 1, 2, 3, 2))
	s.MarkWritten(sn)
	if st := s.Stats(); st.DirtyMinutes != 1 {
		t.Fatalf("dirty minutes %d after concurrent change", st.DirtyMinutes)
	}
	sn2, _ := s.TakeDirty(0)
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
	sn, _ := s.TakeDirty(0)
	s.MarkWritten(sn)
	if n := s.Evict(now); n != 1 {
		t.Fatalf("evicted %d clean minutes, want 1", n)
	}
}

func TestSubsetMergedAndDropClean(t *testing.T) {
	s := New()
	other := series
	other.Campaign = "d"
	c1 := contribution(t, 1, 1, 5, 1, 2)
	c2 := contribution(t, 2, 1, 7, 3)
	c2.Series = other
	apply(t, s, "a", c1, c2)
	apply(t, s, "b", contribution(t, 9, 1, 3, 2))

	sn, err := s.TakeDirty(0)
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
	ms, err := s.MergedOf([]CampaignMinute{{Campaign: "d", Minute: 600}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].State.Count != 7 || ms[0].State.UniquesEstimate() != 1 {
		t.Fatalf("MergedOf = %+v", ms)
	}
	// The dropped minute is gone from the index too.
	if ms, err := s.MergedOf([]CampaignMinute{{Campaign: "c", Minute: 600}}); err != nil || len(ms) != 0 {
		t.Fatalf("MergedOf a dropped campaign-minute = %+v, %v", ms, err)
	}
}

// TestMergedFollowsEveryChange: the merged value is computed once per
// change and shared, and every kind of change (a newer version, register
// updates, a load from storage) is seen by the next reader.
func TestMergedFollowsEveryChange(t *testing.T) {
	s := New()
	cm := []CampaignMinute{{Campaign: series.Campaign, Minute: 600}}
	read := func() *sketch.State {
		t.Helper()
		ms, err := s.MergedOf(cm)
		if err != nil || len(ms) != 1 {
			t.Fatalf("MergedOf = %+v, %v", ms, err)
		}
		return ms[0].State
	}
	apply(t, s, "a", contribution(t, 1, 1, 5, 1, 2))
	first := read()
	if again := read(); again != first {
		t.Fatal("an unchanged minute was merged again")
	}
	if sn, _ := s.TakeDirty(0); sn.Minutes[0].State != first {
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

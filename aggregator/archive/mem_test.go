package archive

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// memSource is an in-memory Source and Sink: the unit tests' storage.
type memSource struct {
	mu      sync.Mutex
	minutes map[sketch.Key]*sketch.State
	reads   int
	// onRead runs after each full (non-counters) read has taken its
	// minutes, under no lock.
	onRead func(n int)
}

func newMem() *memSource { return &memSource{minutes: map[sketch.Key]*sketch.State{}} }

func (m *memSource) EachMinute(ctx context.Context, q Query, fn func(Minute) error) error {
	m.mu.Lock()
	m.reads++
	n, hook := m.reads, m.onRead
	var out []Minute
	for k, st := range m.minutes {
		if (!q.All && k.Series.Campaign != q.Campaign) || k.Minute < q.From.Unix() || k.Minute >= q.To.Unix() {
			continue
		}
		s := st.Clone()
		if q.CountersOnly {
			s = countersOf(s)
		}
		out = append(out, Minute{Series: k.Series, Minute: k.Minute, State: s})
	}
	m.mu.Unlock()
	if hook != nil && !q.CountersOnly {
		hook(n)
	}
	// Any order: shuffle, so nothing depends on the source's.
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	for _, mi := range out {
		if err := fn(mi); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (m *memSource) WriteMinutes(ctx context.Context, ms []Minute) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mi := range ms {
		m.minutes[sketch.Key{Series: mi.Series, Minute: mi.Minute}] = mi.State.Clone()
	}
	return nil
}

func (m *memSource) get(k sketch.Key) *sketch.State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.minutes[k]
}

func (m *memSource) set(k sketch.Key, st *sketch.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.minutes[k] = st
}

var day1 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// fill generates minutes of the given campaigns over [from, from+span):
// sparse and dense HLLs, values, costs, bots and votes, an empty
// dimension and awkward strings.
func fill(m *memSource, seed uint64, from time.Time, span time.Duration, campaigns ...string) {
	r := rand.New(rand.NewPCG(seed, 1))
	for _, c := range campaigns {
		for _, typ := range []string{"pageview", "click", "conversion", "cost", "poll_vote"} {
			s := sketch.Series{Campaign: c, Source: "google", Medium: "cpc", Type: typ, Country: []string{"DE", "", "FR"}[r.IntN(3)],
				Device: "mobile", Region: "eu, \"west\""}
			for t := from; t.Before(from.Add(span)); t = t.Add(time.Duration(1+r.IntN(20)) * time.Minute) {
				st := &sketch.State{}
				visitors := 1 + r.IntN(40)
				if r.IntN(400) == 0 {
					visitors = 20_000 // a dense sketch now and then
				}
				for range visitors {
					st.Count++
					st.AddVisitor(r.Uint64() | 1)
				}
				switch typ {
				case "conversion":
					for range 1 + r.IntN(3) {
						st.AddValue(int64(r.IntN(100_000_000)))
					}
				case "cost":
					st.CostMicros = int64(r.IntN(5_000_000))
				case "poll_vote":
					st.AddVotes(sketch.VoteKey("launch poll", []string{"yes", "no"}[r.IntN(2)]), 3)
				}
				if r.IntN(3) == 0 {
					st.AddBot("crawler")
					st.AddBot("datacenter")
				}
				m.set(sketch.Key{Series: s, Minute: t.Unix()}, st)
			}
		}
	}
}

func newTestArchiver(t *testing.T, src Source, sink Sink, store Store) *Archiver {
	t.Helper()
	a, err := New(Options{Store: store, Source: src, Sink: sink, Node: "test", TempDir: t.TempDir(),
		Now: func() time.Time { return time.Date(2026, 3, 5, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// sameMinutes fails unless want and got hold the same minutes of
// [from, to), counters exactly and sketches register for register.
func sameMinutes(t *testing.T, want, got *memSource, from, to time.Time) int {
	t.Helper()
	n := 0
	var keys []sketch.Key
	want.mu.Lock()
	for k := range want.minutes {
		if k.Minute >= from.Unix() && k.Minute < to.Unix() {
			keys = append(keys, k)
		}
	}
	want.mu.Unlock()
	for _, k := range keys {
		w, g := want.get(k), got.get(k)
		if g == nil {
			t.Fatalf("%s minute %d: missing after restore", k.Series, k.Minute)
		}
		rw, err := toRow(Minute{Series: k.Series, Minute: k.Minute, State: w})
		if err != nil {
			t.Fatal(err)
		}
		rg, err := toRow(Minute{Series: k.Series, Minute: k.Minute, State: g})
		if err != nil {
			t.Fatal(err)
		}
		if countersHash(&rw) != countersHash(&rg) || rw.Uniques != rg.Uniques {
			t.Fatalf("%s minute %d: %+v, want %+v", k.Series, k.Minute, rg, rw)
		}
		hw, _ := canonicalHLL(w.Uniques)
		hg, _ := canonicalHLL(g.Uniques)
		if !slices.Equal(hw, hg) || !slices.Equal(canonicalQuantiles(w), canonicalQuantiles(g)) {
			t.Fatalf("%s minute %d: sketches differ after the round trip", k.Series, k.Minute)
		}
		n++
	}
	got.mu.Lock()
	extra := 0
	for k := range got.minutes {
		if k.Minute >= from.Unix() && k.Minute < to.Unix() && want.minutes[k] == nil {
			extra++
		}
	}
	got.mu.Unlock()
	if extra > 0 {
		t.Fatalf("%d minutes appeared that were never there", extra)
	}
	return n
}

func keyOf(c, typ string, t time.Time) sketch.Key {
	return sketch.Key{Series: sketch.Series{Campaign: c, Type: typ}, Minute: t.Unix()}
}

func (m *memSource) String() string { return fmt.Sprintf("mem(%d)", len(m.minutes)) }

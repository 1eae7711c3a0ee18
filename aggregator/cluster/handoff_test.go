package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tally-edge/tally/wire"
)

// fakeMembership is a membership the test changes by hand.
type fakeMembership struct {
	name    string
	mu      sync.Mutex
	view    View
	changes chan struct{}
}

func newFakeMembership(self string, members ...string) *fakeMembership {
	f := &fakeMembership{name: self, changes: make(chan struct{}, 1)}
	f.set(members...)
	return f
}

func (f *fakeMembership) Name() string             { return f.name }
func (f *fakeMembership) Changes() <-chan struct{} { return f.changes }
func (f *fakeMembership) View() View {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view
}

// set changes the members and signals a change.
func (f *fakeMembership) set(members ...string) {
	var ms []wire.Member
	for _, m := range members {
		ms = append(ms, wire.Member{Name: m, Addr: m + ":7400"})
	}
	f.mu.Lock()
	f.view = View{Members: ms, Epoch: wire.MembershipEpoch(ms)}
	f.mu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

// fakeRebuilder records what the handoff asked for, over a fixed set of
// campaigns.
type fakeRebuilder struct {
	campaigns []string
	mu        sync.Mutex
	fails     int        // TakeOver fails this many more times
	takeovers [][]string // campaigns selected, per successful TakeOver
	drops     [][]string // campaigns selected, per DropForeign
	attempts  int
}

func (r *fakeRebuilder) select_(f func(string) bool) []string {
	var out []string
	for _, c := range r.campaigns {
		if f(c) {
			out = append(out, c)
		}
	}
	return out
}

func (r *fakeRebuilder) TakeOver(_ context.Context, owns func(string) bool) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	if r.fails > 0 {
		r.fails--
		return 0, errors.New("storage unreachable")
	}
	sel := r.select_(owns)
	r.takeovers = append(r.takeovers, sel)
	return len(sel), nil
}

func (r *fakeRebuilder) DropForeign(foreign func(string) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	sel := r.select_(foreign)
	r.drops = append(r.drops, sel)
	return len(sel)
}

func (r *fakeRebuilder) state() (takeovers, drops [][]string, attempts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string{}, r.takeovers...), append([][]string{}, r.drops...), r.attempts
}

func campaigns(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("campaign-%02d", i))
	}
	return out
}

// owned lists the campaigns node owns among cs with these members.
func owned(node string, cs []string, members ...string) map[string]bool {
	var ms []wire.Member
	for _, m := range members {
		ms = append(ms, wire.Member{Name: m, Addr: m + ":7400"})
	}
	out := map[string]bool{}
	for _, c := range cs {
		if o, _ := wire.Owner(ms, c); o.Name == node {
			out[c] = true
		}
	}
	return out
}

func set(cs []string) map[string]bool {
	out := map[string]bool{}
	for _, c := range cs {
		out[c] = true
	}
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// TestHandoffTakesOverWhatWasGained: after the settle delay a node
// rebuilds everything it owns at start, then only what each membership
// change gave it, and forgets what it lost; nothing happens before the
// delay, and changes within it are handled together.
func TestHandoffTakesOverWhatWasGained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cs := campaigns(40)
		m := newFakeMembership("a", "a", "b")
		r := &fakeRebuilder{campaigns: cs}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() {
			defer close(done)
			RunHandoff(ctx, m, r, HandoffConfig{Settle: 2 * time.Second})
		}()

		time.Sleep(1900 * time.Millisecond)
		synctest.Wait()
		if tk, _, _ := r.state(); len(tk) != 0 {
			t.Fatalf("took over %v before the settle delay", tk)
		}
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		tk, dr, _ := r.state()
		if len(tk) != 1 || !sameSet(set(tk[0]), owned("a", cs, "a", "b")) {
			t.Fatalf("first pass took over %v, want every campaign a owns", tk)
		}
		if len(dr) != 1 || !sameSet(set(dr[0]), owned("b", cs, "a", "b")) {
			t.Fatalf("first pass dropped %v, want b's campaigns", dr)
		}

		// b leaves, c joins, both within one settle delay: one pass, for
		// the final view.
		m.set("a")
		time.Sleep(time.Second)
		m.set("a", "c")
		time.Sleep(3 * time.Second)
		synctest.Wait()
		tk, dr, _ = r.state()
		if len(tk) != 2 {
			t.Fatalf("%d takeovers after two quick changes, want one more", len(tk))
		}
		before, now := owned("a", cs, "a", "b"), owned("a", cs, "a", "c")
		want := map[string]bool{}
		for c := range now {
			if !before[c] {
				want[c] = true
			}
		}
		if len(want) == 0 || !sameSet(set(tk[1]), want) {
			t.Fatalf("took over %v, want exactly what a gained: %v", tk[1], want)
		}
		if !sameSet(set(dr[1]), owned("c", cs, "a", "c")) {
			t.Fatalf("dropped %v, want c's campaigns", dr[1])
		}

		// A change that leaves the view as it was costs nothing.
		m.set("a", "c")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if tk, _, _ := r.state(); len(tk) != 2 {
			t.Fatalf("a change to the same view took over again: %v", tk)
		}
	})
}

// TestHandoffRetriesUntilRebuilt: a rebuild that fails is retried with
// backoff; nothing is dropped before it succeeds.
func TestHandoffRetriesUntilRebuilt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cs := campaigns(20)
		m := newFakeMembership("a", "a", "b")
		r := &fakeRebuilder{campaigns: cs, fails: 3}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() {
			defer close(done)
			RunHandoff(ctx, m, r, HandoffConfig{Settle: time.Second, RetryMax: 2 * time.Second})
		}()
		// Attempts at 1 s (after the settle delay), 2 s, 4 s and 6 s:
		// backoff 1 s, 2 s, then capped at 2 s.
		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		tk, dr, attempts := r.state()
		if attempts != 2 || len(tk) != 0 || len(dr) != 0 {
			t.Fatalf("after 3.5 s: %d attempts, %d takeovers, %d drops; want 2 failed attempts and nothing dropped", attempts, len(tk), len(dr))
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		tk, dr, attempts = r.state()
		if attempts != 4 || len(tk) != 1 || len(dr) != 1 {
			t.Fatalf("%d attempts, %d takeovers, %d drops; want the 4th attempt to succeed and drop once", attempts, len(tk), len(dr))
		}
	})
}

package wire

import (
	"fmt"
	"testing"
)

func members(names ...string) []Member {
	ms := make([]Member, len(names))
	for i, n := range names {
		ms[i] = Member{Name: n, Addr: "127.0.0.1:" + fmt.Sprint(7400+i)}
	}
	return ms
}

func TestOwnerIsOrderIndependentAndBalanced(t *testing.T) {
	a := members("agg-1", "agg-2", "agg-3")
	b := []Member{a[2], a[0], a[1]}
	count := map[string]int{}
	const n = 3000
	for i := range n {
		c := fmt.Sprintf("campaign-%d", i)
		oa, _ := Owner(a, c)
		ob, _ := Owner(b, c)
		if oa != ob {
			t.Fatalf("%s: owner depends on member order: %v vs %v", c, oa, ob)
		}
		count[oa.Name]++
	}
	for name, k := range count {
		if k < n/3*8/10 || k > n/3*12/10 {
			t.Errorf("%s owns %d of %d campaigns, want about %d", name, k, n, n/3)
		}
	}
}

func TestOwnerMovesOnlyWhatMustMove(t *testing.T) {
	three := members("agg-1", "agg-2", "agg-3")
	four := append(members("agg-1", "agg-2", "agg-3"), Member{Name: "agg-4", Addr: "127.0.0.1:7500"})
	moved := 0
	const n = 4000
	for i := range n {
		c := fmt.Sprintf("c%d", i)
		o3, _ := Owner(three, c)
		o4, _ := Owner(four, c)
		if o3 != o4 {
			if o4.Name != "agg-4" {
				t.Fatalf("%s moved from %s to %s when agg-4 joined", c, o3.Name, o4.Name)
			}
			moved++
		}
		// Removing a member moves only that member's campaigns.
		o2, _ := Owner(three[:2], c)
		if o3.Name != "agg-3" && o2 != o3 {
			t.Fatalf("%s moved from %s to %s when agg-3 left", c, o3.Name, o2.Name)
		}
	}
	if moved < n/4*8/10 || moved > n/4*12/10 {
		t.Errorf("%d of %d campaigns moved to the new member, want about %d", moved, n, n/4)
	}
}

func TestOwnerEmpty(t *testing.T) {
	if _, ok := Owner(nil, "c"); ok {
		t.Fatal("owner of an empty cluster")
	}
}

func TestMembershipEpoch(t *testing.T) {
	a := members("agg-1", "agg-2", "agg-3")
	b := []Member{a[1], a[2], a[0]}
	if MembershipEpoch(a) != MembershipEpoch(b) {
		t.Fatal("epoch depends on order")
	}
	if MembershipEpoch(a) == MembershipEpoch(a[:2]) {
		t.Fatal("epoch unchanged after a member left")
	}
	moved := members("agg-1", "agg-2", "agg-3")
	moved[1].Addr = "127.0.0.1:9999"
	if MembershipEpoch(a) == MembershipEpoch(moved) {
		t.Fatal("epoch unchanged after a member's address changed")
	}
	if MembershipEpoch(nil) != 0 {
		t.Fatal("epoch of no members is not 0")
	}
}

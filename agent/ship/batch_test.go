package ship

import (
	"fmt"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// TestBatcherKeepsOneOwnerPerBatch: every batch holds contributions of
// the single owner it names, at most Per of them, all full but each
// owner's last; nothing is lost or repeated, and a Take with nothing new
// returns nothing.
func TestBatcherKeepsOneOwnerPerBatch(t *testing.T) {
	members := []wire.Member{{Name: "node-a", Addr: "a:1"}, {Name: "node-b", Addr: "b:1"}, {Name: "node-c", Addr: "c:1"}}
	routes := &Membership{}
	routes.set(members)
	const per, n = 7, 400
	b := NewBatcher(per, routes)
	for i := range n {
		b.Add(&wire.Contribution{Series: sketch.Series{Campaign: fmt.Sprint("c", i%60), Type: "click"},
			Minute: 60, CID: uint64(i + 1), Version: 1, State: sketch.Encoded{Count: uint64(i)}})
	}
	batches, total := b.Take()
	if total != n {
		t.Fatalf("Take says %d contributions, want %d", total, n)
	}
	seen := map[uint64]bool{}
	byOwner := map[string][]int{}
	for _, bt := range batches {
		var cs []wire.Contribution
		if err := msgpack.Unmarshal(bt.Payload, &cs); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			owner, _ := wire.Owner(members, c.Series.Campaign)
			if owner.Name != bt.Owner {
				t.Fatalf("batch for %s holds %s, owned by %s", bt.Owner, c.Series.Campaign, owner.Name)
			}
			if seen[c.CID] {
				t.Fatalf("contribution %d twice", c.CID)
			}
			seen[c.CID] = true
		}
		byOwner[bt.Owner] = append(byOwner[bt.Owner], len(cs))
	}
	if len(seen) != n {
		t.Fatalf("%d contributions in batches, want %d", len(seen), n)
	}
	for owner, sizes := range byOwner {
		for i, k := range sizes {
			if k == 0 || k > per || (i < len(sizes)-1 && k != per) {
				t.Fatalf("owner %s: batch sizes %v, want full batches of %d then one partial", owner, sizes, per)
			}
		}
	}
	if again, m := b.Take(); len(again) != 0 || m != 0 {
		t.Fatalf("second Take returned %d batches of %d contributions", len(again), m)
	}
}

// TestBatcherWithoutMembership groups everything under owner "".
func TestBatcherWithoutMembership(t *testing.T) {
	b := NewBatcher(2, &Membership{})
	for i := range 5 {
		b.Add(&wire.Contribution{Series: sketch.Series{Campaign: fmt.Sprint("c", i)}, CID: uint64(i + 1), Version: 1})
	}
	batches, n := b.Take()
	if n != 5 || len(batches) != 3 {
		t.Fatalf("%d contributions in %d batches, want 5 in 3", n, len(batches))
	}
	for _, bt := range batches {
		if bt.Owner != "" {
			t.Fatalf("owner %q without a membership", bt.Owner)
		}
	}
}

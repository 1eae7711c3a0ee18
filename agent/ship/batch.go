package ship

import (
	"slices"
	"sync/atomic"

	"github.com/tally-edge/tally/agent/spool"
	"github.com/tally-edge/tally/wire"
)

// Membership is the cluster as the last ack described it: which node owns
// which campaign, and where each node listens. The shipper updates it; the
// Batcher reads it to group a flush by owner. Safe for concurrent use.
type Membership struct {
	members atomic.Pointer[[]wire.Member]
}

// set records the members an ack reported (an empty list changes nothing:
// a single node reports none).
func (m *Membership) set(ms []wire.Member) {
	if len(ms) > 0 {
		ms = slices.Clone(ms)
		m.members.Store(&ms)
	}
}

// Owner returns the name of the node that owns campaign, or "" when no
// membership is known.
func (m *Membership) Owner(campaign string) string {
	ms := m.members.Load()
	if ms == nil {
		return ""
	}
	o, _ := wire.Owner(*ms, campaign)
	return o.Name
}

// addr returns the address of the member named name, if it is one.
func (m *Membership) addr(name string) (string, bool) {
	ms := m.members.Load()
	if ms == nil || name == "" {
		return "", false
	}
	for _, x := range *ms {
		if x.Name == name {
			return x.Addr, x.Addr != ""
		}
	}
	return "", false
}

// size returns the number of members known.
func (m *Membership) size() int {
	if ms := m.members.Load(); ms != nil {
		return len(*ms)
	}
	return 0
}

// Batcher groups the contributions of a flush into spool batches of at
// most Per contributions, one owner per batch, so each batch can be sent
// straight to the node that owns its campaigns. It encodes every
// contribution as it comes (the rollup reuses their buffers), in the form a
// wire frame carries them, so the shipper frames a batch without decoding
// it (wire.RawBatch). It is not safe for concurrent use: the collector
// calls it under its lock.
type Batcher struct {
	per    int
	routes *Membership // nil: one owner, ""
	owners map[string]string
	by     map[string]*batcher
	order  []string
}

// DefaultBatchContributions is the Per of NewBatcher(0, …).
const DefaultBatchContributions = 2000

// NewBatcher returns a Batcher of at most per contributions a batch
// (0: DefaultBatchContributions). With routes, batches are grouped by the
// owner routes names for each campaign; with nil, all have owner "".
func NewBatcher(per int, routes *Membership) *Batcher {
	if per <= 0 {
		per = DefaultBatchContributions
	}
	return &Batcher{per: per, routes: routes, by: map[string]*batcher{}}
}

// Add encodes c into the batch of its owner (rollup.Output).
func (b *Batcher) Add(c *wire.Contribution) {
	owner := ""
	if b.routes != nil {
		var ok bool
		if owner, ok = b.owners[c.Series.Campaign]; !ok {
			if b.owners == nil {
				b.owners = map[string]string{}
			}
			owner = b.routes.Owner(c.Series.Campaign)
			b.owners[c.Series.Campaign] = owner
		}
	}
	bt := b.by[owner]
	if bt == nil {
		bt = &batcher{per: b.per}
		b.by[owner] = bt
		b.order = append(b.order, owner)
	}
	bt.add(c)
}

// Take returns the batches made since the last Take, owners in name
// order, and the number of contributions they hold. It forgets the owners
// looked up: membership may change before the next flush.
func (b *Batcher) Take() ([]spool.Batch, int) {
	slices.Sort(b.order)
	var out []spool.Batch
	n := 0
	keep := b.order[:0]
	for _, owner := range b.order {
		bt := b.by[owner]
		payloads, m := bt.take()
		if m == 0 {
			delete(b.by, owner) // an owner of a past membership
			continue
		}
		keep = append(keep, owner)
		for _, p := range payloads {
			out = append(out, spool.Batch{Owner: owner, Payload: p})
		}
		n += m
	}
	b.order = keep
	b.owners = nil
	return out, n
}

// batcher encodes one owner's contributions into payloads of at most per.
type batcher struct {
	per  int
	body []byte // headerRoom bytes, then the contributions of the batch being filled
	n    int    // contributions in body
	full [][]byte
	all  int
	hint int // the size of the last full batch, to size the next
}

// headerRoom is left at the start of a batch for its array header, which
// is written when the batch is complete and its length known.
const headerRoom = 5

func (b *batcher) add(c *wire.Contribution) {
	if b.body == nil {
		b.body = make([]byte, headerRoom, max(4<<10, b.hint))
	}
	b.body = wire.AppendContribution(b.body, c)
	b.n++
	b.all++
	if b.n == b.per {
		b.seal()
	}
}

func (b *batcher) seal() {
	if b.n == 0 {
		return
	}
	var h [headerRoom]byte
	hdr := wire.AppendContributionsHeader(h[:0], b.n)
	start := headerRoom - len(hdr)
	copy(b.body[start:], hdr)
	if b.n == b.per {
		b.hint = len(b.body) + len(b.body)/8
	}
	b.full = append(b.full, b.body[start:])
	b.body, b.n = nil, 0
}

// take returns the payloads and their number of contributions, and
// empties b.
func (b *batcher) take() ([][]byte, int) {
	b.seal()
	out, n := b.full, b.all
	b.full, b.all = nil, 0
	return out, n
}

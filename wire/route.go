package wire

// Owner returns the member that owns campaign by rendezvous (highest
// random weight) hashing: every member gets a score from the pair
// (member name, campaign) and the highest score wins. Agents and
// aggregators compute it alike from the same member list, so an agent can
// send a batch straight to its owner. When a member leaves, only its own
// campaigns move; when one joins, it takes about 1/n of every other's.
// The routing key is the campaign alone, so every series of a campaign,
// which its KPIs and campaign-wide uniques need together, meets at one
// owner. ok is false when members is empty.
func Owner(members []Member, campaign string) (m Member, ok bool) {
	var best uint64
	for i, cand := range members {
		s := RendezvousScore(cand.Name, campaign)
		if i == 0 || s > best || (s == best && cand.Name < m.Name) {
			best, m, ok = s, cand, true
		}
	}
	return m, ok
}

// RendezvousScore is the weight of (member, campaign): FNV-1a over both,
// separated by a zero byte, finished with a 64-bit mixer so that similar
// names spread evenly. It is part of the protocol: every agent and node
// must compute the same value.
func RendezvousScore(member, campaign string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(member); i++ {
		h = (h ^ uint64(member[i])) * prime
	}
	h = (h ^ 0) * prime
	for i := 0; i < len(campaign); i++ {
		h = (h ^ uint64(campaign[i])) * prime
	}
	// splitmix64 finaliser
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// MembershipEpoch is a fingerprint of a member list (names and
// addresses, in any order): nodes that see the same members report the
// same epoch, and agents re-send their open minutes when it changes.
func MembershipEpoch(members []Member) uint64 {
	var x uint64
	for _, m := range members {
		// Order-independent: sum of per-member hashes.
		x += RendezvousScore(m.Name, m.Addr)
	}
	if x == 0 && len(members) > 0 {
		x = 1
	}
	return x
}

package botfilter

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
)

// rangeSet is an immutable set of IP addresses, kept as sorted, merged,
// non-overlapping ranges per family, so a lookup is one binary search:
// O(log n), no allocation, and overlapping or adjacent networks from
// different lists cost nothing. 100,000 cloud networks take about 1 MiB.
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are IPv4 here, both in the
// lists and in lookups.
type rangeSet struct {
	v4 []v4Range
	v6 []v6Range
}

type v4Range struct{ lo, hi uint32 }

// u128 is an IPv6 address as a number.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) next() (u128, bool) {
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	if a.hi != ^uint64(0) {
		return u128{a.hi + 1, 0}, true
	}
	return a, false
}

type v6Range struct{ lo, hi u128 }

// newRangeSet builds the set of the given networks.
func newRangeSet(nets []netip.Prefix) *rangeSet {
	s := &rangeSet{}
	for _, p := range nets {
		p = normalizeNet(p)
		if p.Addr().Is4() {
			lo := binary.BigEndian.Uint32(p.Addr().AsSlice())
			host := uint32(0)
			if p.Bits() < 32 {
				host = ^uint32(0) >> p.Bits()
			}
			s.v4 = append(s.v4, v4Range{lo, lo | host})
			continue
		}
		b := p.Addr().As16()
		lo := u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
		hi := lo
		switch bits := p.Bits(); {
		case bits == 0:
			hi = u128{^uint64(0), ^uint64(0)}
		case bits < 64:
			hi = u128{lo.hi | ^uint64(0)>>bits, ^uint64(0)}
		case bits < 128:
			hi = u128{lo.hi, lo.lo | ^uint64(0)>>(bits-64)}
		}
		s.v6 = append(s.v6, v6Range{lo, hi})
	}
	slices.SortFunc(s.v4, func(a, b v4Range) int { return cmp.Compare(a.lo, b.lo) })
	s.v4 = mergeRanges(s.v4, func(prev, r v4Range) (v4Range, bool) {
		if prev.hi == ^uint32(0) || r.lo <= prev.hi+1 {
			return v4Range{prev.lo, max(prev.hi, r.hi)}, true
		}
		return prev, false
	})
	slices.SortFunc(s.v6, func(a, b v6Range) int {
		if a.lo.less(b.lo) {
			return -1
		}
		if b.lo.less(a.lo) {
			return 1
		}
		return 0
	})
	s.v6 = mergeRanges(s.v6, func(prev, r v6Range) (v6Range, bool) {
		end, ok := prev.hi.next()
		if !ok || !end.less(r.lo) {
			if prev.hi.less(r.hi) {
				prev.hi = r.hi
			}
			return prev, true
		}
		return prev, false
	})
	return s
}

// mergeRanges folds sorted ranges: merge returns the union of prev and r
// and true when they overlap or touch.
func mergeRanges[R any](rs []R, merge func(prev, r R) (R, bool)) []R {
	if len(rs) == 0 {
		return nil
	}
	out := rs[:1]
	for _, r := range rs[1:] {
		if m, ok := merge(out[len(out)-1], r); ok {
			out[len(out)-1] = m
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// normalizeNet masks p and turns IPv4-mapped networks into IPv4 ones.
func normalizeNet(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

// contains reports whether a is in the set. The zero Addr is in no set.
func (s *rangeSet) contains(a netip.Addr) bool {
	if s == nil || !a.IsValid() {
		return false
	}
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		x := binary.BigEndian.Uint32(b[:])
		rs := s.v4
		// Find the first range starting after x; x is in the one before
		// it or in none, since ranges do not overlap.
		lo, hi := 0, len(rs)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if rs[m].lo <= x {
				lo = m + 1
			} else {
				hi = m
			}
		}
		return lo > 0 && x <= rs[lo-1].hi
	}
	b := a.As16()
	x := u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	rs := s.v6
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !x.less(rs[m].lo) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo > 0 && !rs[lo-1].hi.less(x)
}

// size is the number of merged ranges in the set.
func (s *rangeSet) size() int {
	if s == nil {
		return 0
	}
	return len(s.v4) + len(s.v6)
}

// parseNet parses a network (CIDR) or a single address, which stands for
// itself (/32 or /128).
func parseNet(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR network: %w", s, err)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR network nor an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: an address with a zone is not a network", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseNets parses inline networks (already checked by Validate).
func parseNets(list []string) ([]netip.Prefix, error) {
	nets := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := parseNet(s)
		if err != nil {
			return nil, err
		}
		nets = append(nets, p)
	}
	return nets, nil
}

// readNetFile reads a CIDR list: one network or address per line, blank
// lines ignored, `#` starting a comment anywhere on a line.
func readNetFile(path string) ([]netip.Prefix, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("open CIDR list: %w", err)
	}
	defer f.Close()
	var nets []netip.Prefix
	var date time.Time
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, comment, _ := strings.Cut(sc.Text(), "#")
		if d, ok := strings.CutPrefix(strings.TrimSpace(comment), DataDateComment); ok {
			t, err := parseDataDate(strings.TrimSpace(d))
			if err != nil {
				return nil, time.Time{}, fmt.Errorf("%s:%d: %w", path, n, err)
			}
			date = t
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.ContainsAny(line, " \t,;") {
			return nil, time.Time{}, fmt.Errorf("%s:%d: %q: want one network per line", path, n, line)
		}
		p, err := parseNet(line)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		nets = append(nets, p)
	}
	if err := sc.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("read CIDR list %s: %w", path, err)
	}
	return nets, date, nil
}

// DataDateComment starts the comment of a CIDR list that says when its
// data was published ("# data-date: 2026-06-17T19:00:00Z"); the datacenter
// refresh command writes it, and /metrics shows the oldest date of the
// files loaded (tally_agent_bots_datacenter_data_timestamp_seconds).
const DataDateComment = "data-date:"

// parseDataDate reads an RFC 3339 time or a date.
func parseDataDate(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("data-date %q: want an RFC 3339 time or a date (2006-01-02)", s)
	}
	return t, nil
}

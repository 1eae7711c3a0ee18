package sketch

import (
	"fmt"
	"slices"
	"sync"

	"github.com/axiomhq/hyperloglog"
)

// Union is the union of many HyperLogLogs, kept for one estimate: what
// an answer folds the uniques of one bucket into. Its estimate is the one
// State.MergeUniques followed by State.UniquesEstimate gives for the same
// sketches, bit for bit, at a fraction of the cost for stored sketches:
// MergeStored reads their registers straight from the stored encoding,
// where decoding builds a library sketch per point and merging sparse
// sketches sorts and re-encodes the library's sparse list again and again.
//
// Why this is exact: the library estimates only from a dense sketch
// (State.UniquesEstimate merges into one), and a dense sketch holds for
// each register the largest rho any merged sketch put there. Union keeps
// exactly that, (index, rho) pairs, and estimates from those registers as
// the library's dense sketch does (estimateRegisters).
//
// Memory follows what it holds, as a sparse sketch's does: registers from
// stored sketches are a list (4 bytes each, at most 16 KiB) until it
// holds denseUnionAfter distinct registers, then an array of every
// register (16 KiB). The zero value is empty and ready. Union is not
// safe for concurrent use.
type Union struct {
	// packed holds index<<8 | rho of registers read from stored sketches:
	// appended unsorted, sorted with one entry per index (the largest rho)
	// up to compacted.
	packed    []uint32
	compacted int
	// lib holds the library sketches merged in (MergeSketch), merged as
	// State.MergeUniques does, until dense exists.
	lib *hyperloglog.Sketch
	// dense replaces packed and lib once packed is large: every register;
	// while it exists, packed and lib stay empty.
	dense *registerArray
	// any is whether anything, even an empty sketch, was merged: the
	// estimate of nothing is 0 without asking the library.
	any bool
}

// A Union's list is compacted (sorted, one entry per register) only once
// it holds listUnionMax entries (16 KiB, a dense sketch's size) and twice
// as many as after the last compaction, so a bucket of a few points is
// never sorted; it turns dense when compacting leaves denseUnionAfter
// distinct registers (8 KiB of list).
const (
	listUnionMax    = numRegisters / 4
	denseUnionAfter = numRegisters / 8
)

// MergeSketch merges a library sketch into u; nil merges nothing.
func (u *Union) MergeSketch(h *hyperloglog.Sketch) error {
	if h == nil {
		return nil
	}
	u.any = true
	if u.dense != nil {
		return maxRegistersOf(u.dense, h)
	}
	if u.lib == nil {
		u.lib = h.Clone()
		return nil
	}
	return u.lib.Merge(h)
}

// MergeStored merges a HyperLogLog in a stored encoding (what
// DecodeStoredHLL accepts) into u. A StoredHLLV1 sketch's registers are
// read straight into u; the libraries' encodings of the first release
// are decoded and merged as sketches. On error u is unchanged.
func (u *Union) MergeStored(b []byte) error {
	if len(b) == 0 || b[0] != StoredHLLV1 {
		h, err := DecodeStoredHLL(b)
		if err != nil {
			return err
		}
		return u.MergeSketch(h)
	}
	before := len(u.packed)
	_, err := eachStoredRegister(b, func(n uint64) { u.packed = slices.Grow(u.packed, int(n)) },
		func(idx int, rho uint8) { u.packed = append(u.packed, uint32(idx)<<8|uint32(rho)) })
	if err != nil {
		u.packed = u.packed[:before]
		return err
	}
	u.any = true
	if u.dense != nil {
		maxPacked(u.dense, u.packed[before:])
		u.packed = u.packed[:before]
		return nil
	}
	if len(u.packed) >= max(2*u.compacted, listUnionMax) {
		u.compact()
		if len(u.packed) >= denseUnionAfter {
			return u.toDense()
		}
	}
	return nil
}

// compact sorts packed and keeps the largest rho of every index.
func (u *Union) compact() {
	if len(u.packed) == u.compacted {
		return
	}
	slices.Sort(u.packed)
	out := u.packed[:0]
	for i, v := range u.packed {
		if i+1 < len(u.packed) && u.packed[i+1]>>8 == v>>8 {
			continue // sorted by index then rho: the last of an index is its largest
		}
		out = append(out, v)
	}
	u.packed, u.compacted = out, len(out)
}

// toDense moves packed and lib into a register array.
func (u *Union) toDense() error {
	d := new(registerArray)
	if err := u.fill(d); err != nil {
		return err
	}
	u.dense, u.lib, u.packed, u.compacted = d, nil, nil, 0
	return nil
}

// fill raises the registers of d to what u holds before it is dense: lib
// and packed (once dense exists, both are empty and dense holds all).
func (u *Union) fill(d *registerArray) error {
	if u.lib != nil {
		if err := maxRegistersOf(d, u.lib); err != nil {
			return err
		}
	}
	maxPacked(d, u.packed)
	return nil
}

// maxPacked raises the registers of d to the index<<8 | rho entries of packed.
func maxPacked(d *registerArray, packed []uint32) {
	for _, v := range packed {
		i := uint16(v >> 8)
		d[i] = max(d[i], uint8(v))
	}
}

// maxRegistersOf raises the registers of d to those of the library sketch h.
func maxRegistersOf(d *registerArray, h *hyperloglog.Sketch) error {
	regs, put, err := registersOf(h)
	if err != nil {
		return fmt.Errorf("merge uniques: %w", err)
	}
	defer put()
	for i, rho := range regs {
		d[i] = max(d[i], rho)
	}
	return nil
}

// Estimate returns the estimated number of distinct visitors in the
// union: State.UniquesEstimate of the same sketches merged. It leaves u
// unchanged.
func (u *Union) Estimate() uint64 {
	if !u.any {
		return 0
	}
	if u.dense != nil {
		return estimateRegisters(u.dense)
	}
	d := registerPool.Get().(*registerArray)
	defer registerPool.Put(d)
	*d = registerArray{}
	if err := u.fill(d); err != nil {
		return 0 // precision mismatch: as estimate, which DecodeHLL makes impossible
	}
	return estimateRegisters(d)
}

// registerPool recycles the register arrays estimates are taken from.
var registerPool = sync.Pool{New: func() any { return new(registerArray) }}

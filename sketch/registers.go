package sketch

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sync"

	"github.com/axiomhq/hyperloglog"
)

// Registers is what an agent ships for uniques: the HyperLogLog register
// updates (index, rho) at HLLPrecision that raise a register above what
// earlier flushes of the same series-minute already shipped.
//
// Why not the library's own sparse sketch: its encoding keeps 25-bit
// indexes for precision at small cardinalities and costs about 4 bytes per
// distinct visitor per series. A register update costs an index gap
// (mostly one byte) and a rho (whose skewed distribution compresses to a
// few bits), and sending only increases means a returning visitor costs
// nothing. The receiver folds each update into a library sketch with a
// hash crafted to land on exactly that register and rho (craftHash), and
// every estimate is taken from a dense sketch (State.UniquesEstimate),
// where crafted and original hashes are indistinguishable.
//
// Index and rho are derived exactly as axiomhq/hyperloglog's dense
// representation does: the index is the top HLLPrecision bits of the
// hash, rho one more than the number of leading zeros of the rest. The
// tests pin this equivalence.
//
// The zero value is empty and ready. Registers is not safe for concurrent use.
type Registers struct {
	// packed holds pending index<<8 | rho: unsorted after Add, sorted and
	// unique (max rho per index) after compact.
	packed    []uint32
	compacted int // length after the last compact
	// dense replaces packed once a flush interval touches more registers
	// than a sorted list handles cheaply: a 16 KiB array, allocated only
	// for such heavy series and dropped at the next AppendUpdates.
	dense *[numRegisters]uint8
	// compactions since the last AppendUpdates: a series that keeps
	// needing them sees thousands of events per flush and is cheaper with
	// the dense array.
	compactions int
	// shipped is every register already shipped with its rho, sorted by
	// index: updates that do not raise it are not sent again.
	shipped []uint32
}

const (
	numRegisters = 1 << HLLPrecision
	maxRho       = 64 - HLLPrecision + 1
	// denseAfter is the number of distinct pending registers at which
	// Registers switches from a sorted list to a dense array (it also
	// switches after four compactions, i.e. ≥ 16k events in one flush).
	denseAfter = 2048
)

// RegisterOf returns the register index and rho of a hash.
func RegisterOf(h uint64) (index uint16, rho uint8) {
	index = uint16(h >> (64 - HLLPrecision))
	w := h<<HLLPrecision | 1<<(HLLPrecision-1)
	return index, uint8(bits.LeadingZeros64(w)) + 1
}

// craftHash returns a hash whose register is (index, rho).
func craftHash(index uint16, rho uint8) uint64 {
	h := uint64(index) << (64 - HLLPrecision)
	if rho < maxRho {
		h |= 1 << (64 - HLLPrecision - uint64(rho))
	}
	return h
}

// Add records a visitor hash. A zero hash means "no visitor".
func (r *Registers) Add(h uint64) {
	if h == 0 {
		return
	}
	i, rho := RegisterOf(h)
	if r.dense != nil {
		r.dense[i] = max(r.dense[i], rho)
		return
	}
	r.packed = append(r.packed, uint32(i)<<8|uint32(rho))
	// Keep memory bounded by the register count, not the event count.
	if len(r.packed) >= 4096 && len(r.packed) >= 2*r.compacted {
		r.compact()
		r.compactions++
		if len(r.packed) >= denseAfter || r.compactions >= 4 {
			r.dense = new([numRegisters]uint8)
			for _, v := range r.packed {
				r.dense[v>>8] = uint8(v)
			}
			r.packed, r.compacted = r.packed[:0], 0
		}
	}
}

func (r *Registers) compact() {
	if len(r.packed) == r.compacted {
		return
	}
	slices.Sort(r.packed)
	// Sorted by index then rho: keep the last entry of every index.
	out := r.packed[:0]
	for i, v := range r.packed {
		if i+1 < len(r.packed) && r.packed[i+1]>>8 == v>>8 {
			continue
		}
		out = append(out, v)
	}
	r.packed, r.compacted = out, len(out)
}

// pending returns the pending updates, sorted and unique.
func (r *Registers) pending() []uint32 {
	if r.dense == nil {
		r.compact()
		return r.packed
	}
	out := r.packed[:0]
	for i, rho := range r.dense {
		if rho != 0 {
			out = append(out, uint32(i)<<8|uint32(rho))
		}
	}
	r.packed = out
	return out
}

// Shipped returns how many registers have been shipped.
func (r *Registers) Shipped() int { return len(r.shipped) }

// AppendUpdates appends the encoding of every pending update that raises
// a register above what was shipped before, records those as shipped and
// clears the pending set. It returns b unchanged when nothing rises.
//
// Encoding: uvarint count n, then n uvarint index gaps (the first from 0),
// then n rho bytes. Gaps and rhos are kept apart because they compress
// very differently.
func (r *Registers) AppendUpdates(b []byte) []byte {
	ups := r.rising()
	merged := make([]uint32, 0, len(r.shipped)+len(ups))
	i, j := 0, 0
	for i < len(r.shipped) || j < len(ups) {
		switch {
		case j == len(ups) || (i < len(r.shipped) && r.shipped[i]>>8 < ups[j]>>8):
			merged = append(merged, r.shipped[i])
			i++
		case i == len(r.shipped) || ups[j]>>8 < r.shipped[i]>>8:
			merged = append(merged, ups[j])
			j++
		default: // same index: the update rises above what was shipped
			merged = append(merged, ups[j])
			i++
			j++
		}
	}
	r.shipped = merged
	b = appendUpdates(b, ups)
	r.packed, r.compacted, r.dense, r.compactions = r.packed[:0], 0, nil, 0
	return b
}

// AppendFinal is AppendUpdates for the last updates of a series-minute:
// the same bytes, without remembering what was shipped. r is empty after.
func (r *Registers) AppendFinal(b []byte) []byte {
	b = appendUpdates(b, r.rising())
	*r = Registers{}
	return b
}

// rising returns the pending updates that raise a register above what was
// shipped, sorted by index. It filters the pending list in place.
func (r *Registers) rising() []uint32 {
	pend := r.pending()
	ups := pend[:0]
	i := 0
	for _, v := range pend {
		for i < len(r.shipped) && r.shipped[i]>>8 < v>>8 {
			i++
		}
		if i < len(r.shipped) && r.shipped[i]>>8 == v>>8 && uint8(v) <= uint8(r.shipped[i]) {
			continue
		}
		ups = append(ups, v)
	}
	return ups
}

// AppendAll is AppendUpdates that encodes every register shipped so far
// (this call's included), not only the increases: what a receiver that
// never saw the earlier flushes needs, e.g. a new owner after a
// membership change.
func (r *Registers) AppendAll(b []byte) []byte {
	r.AppendUpdates(nil)
	return appendUpdates(b, r.shipped)
}

// appendUpdates encodes sorted, unique index<<8|rho values (see
// AppendUpdates); nothing for none.
func appendUpdates(b []byte, vs []uint32) []byte {
	if len(vs) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(vs)))
	prev := uint32(0)
	for _, v := range vs {
		b = binary.AppendUvarint(b, uint64(v>>8-prev))
		prev = v >> 8
	}
	for _, v := range vs {
		b = append(b, byte(v))
	}
	return b
}

// DecodeRegisters calls fn for every register update in b, validating
// the encoding first so fn never sees part of a corrupt input.
func DecodeRegisters(b []byte, fn func(index uint16, rho uint8)) error {
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || n > numRegisters || n > uint64(len(b)) {
		return fmt.Errorf("%w: registers: bad count", ErrCorrupt)
	}
	gaps := b[k:]
	// Walk the gaps once to find where the rhos start and validate.
	off, idx := 0, uint64(0)
	for i := range n {
		gap, k := binary.Uvarint(gaps[off:])
		if k <= 0 {
			return fmt.Errorf("%w: registers: truncated gap %d", ErrCorrupt, i)
		}
		if i > 0 && gap == 0 {
			return fmt.Errorf("%w: registers: index repeated at entry %d", ErrCorrupt, i)
		}
		idx += gap
		if idx >= numRegisters {
			return fmt.Errorf("%w: registers: index %d out of range at entry %d", ErrCorrupt, idx, i)
		}
		off += k
	}
	rhos := gaps[off:]
	if uint64(len(rhos)) != n {
		return fmt.Errorf("%w: registers: %d rho bytes for %d entries", ErrCorrupt, len(rhos), n)
	}
	for i, rho := range rhos {
		if rho == 0 || rho > maxRho {
			return fmt.Errorf("%w: registers: rho %d out of range at entry %d", ErrCorrupt, rho, i)
		}
	}
	off, idx = 0, 0
	for i := range n {
		gap, k := binary.Uvarint(gaps[off:])
		off += k
		idx += gap
		fn(uint16(idx), rhos[i])
	}
	return nil
}

// MergeRegisters folds encoded register updates into s's uniques.
func (s *State) MergeRegisters(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if s.Uniques == nil {
		s.Uniques = NewHLL()
	}
	return DecodeRegisters(b, func(i uint16, rho uint8) { s.Uniques.InsertHash(craftHash(i, rho)) })
}

// densePool recycles the 16 KiB dense library sketches registersOf reads registers from.
var densePool = sync.Pool{New: func() any { return hyperloglog.NewNoSparse() }}

// estimate returns the cardinality of h from its registers, as the
// library's dense sketch estimates: the sparse estimator assumes 25-bit
// indexes, which register updates do not carry.
func estimate(h *hyperloglog.Sketch) uint64 {
	regs, put, err := registersOf(h)
	if err != nil {
		return 0 // precision mismatch: DecodeHLL refuses such sketches
	}
	defer put()
	return estimateRegisters((*registerArray)(regs))
}

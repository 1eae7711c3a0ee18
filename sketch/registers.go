package sketch

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sync"

	"github.com/axiomhq/hyperloglog"
)

// Registers is what an agent ships for uniques between two flushes: the
// HyperLogLog register updates (index, rho) at HLLPrecision that the
// flush's visitor hashes produce, instead of the library's sparse sketch.
//
// Why: the library's sparse encoding keeps 25-bit indexes for precision
// at small cardinalities and costs about 4 bytes per distinct visitor per
// series; a register update needs an index gap (mostly one byte) and a
// rho (one byte that compresses to a few bits), which cuts the bytes on
// the wire for uniques by half or more. The receiver folds each update
// into a library sketch with a hash crafted to land on exactly that
// register and rho (see craftHash), and every estimate is taken from a
// dense sketch (see State.UniquesEstimate), where the crafted and the
// original hashes are indistinguishable.
//
// Index and rho are derived exactly as axiomhq/hyperloglog's dense
// representation does: the index is the top HLLPrecision bits of the
// hash, rho one more than the number of leading zeros of the rest. The
// tests pin this equivalence.
//
// The zero value is empty and ready. Registers is not safe for concurrent use.
type Registers struct {
	// packed holds index<<8 | rho, unsorted after Add, sorted and unique
	// (max rho per index) after compact.
	packed    []uint32
	compacted int // length after the last compact
	// dense replaces packed once a flush interval touches more registers
	// than a sorted list handles cheaply: a 16 KiB array, allocated only
	// for such heavy series and dropped by Reset.
	dense *[numRegisters]uint8
	// compactions since Reset: a series that keeps needing them sees
	// thousands of events per flush and is cheaper with the dense array.
	compactions int
}

// denseAfter is the number of distinct registers at which Registers
// switches from a sorted list to a dense array (it also switches after
// four compactions, i.e. ≥ 16k events in one flush interval).
const denseAfter = 2048

const (
	numRegisters = 1 << HLLPrecision
	maxRho       = 64 - HLLPrecision + 1
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

// Len returns the number of distinct registers recorded.
func (r *Registers) Len() int {
	if r.dense != nil {
		n := 0
		for _, v := range r.dense {
			if v != 0 {
				n++
			}
		}
		return n
	}
	r.compact()
	return len(r.packed)
}

// Reset empties r, keeping its list memory and dropping a dense array.
func (r *Registers) Reset() {
	r.packed, r.compacted, r.dense, r.compactions = r.packed[:0], 0, nil, 0
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

// AppendBinary appends the encoding: uvarint count, then per register in
// index order, uvarint(index gap) and one byte rho.
func (r *Registers) AppendBinary(b []byte) []byte {
	if r.dense != nil {
		b = binary.AppendUvarint(b, uint64(r.Len()))
		prev := 0
		for i, rho := range r.dense {
			if rho != 0 {
				b = binary.AppendUvarint(b, uint64(i-prev))
				b = append(b, rho)
				prev = i
			}
		}
		return b
	}
	r.compact()
	b = binary.AppendUvarint(b, uint64(len(r.packed)))
	prev := uint32(0)
	for _, v := range r.packed {
		idx := v >> 8
		b = binary.AppendUvarint(b, uint64(idx-prev))
		b = append(b, byte(v))
		prev = idx
	}
	return b
}

// DecodeRegisters calls fn for every register update in b, validating
// the encoding first so fn never sees part of a corrupt input.
func DecodeRegisters(b []byte, fn func(index uint16, rho uint8)) error {
	if err := walkRegisters(b, nil); err != nil {
		return err
	}
	return walkRegisters(b, fn)
}

func walkRegisters(b []byte, fn func(uint16, uint8)) error {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > numRegisters || n > uint64(len(b)) {
		return fmt.Errorf("%w: registers: bad count", ErrCorrupt)
	}
	b = b[k:]
	idx := uint64(0)
	for i := range n {
		gap, k := binary.Uvarint(b)
		if k <= 0 || len(b) < k+1 {
			return fmt.Errorf("%w: registers: truncated at entry %d", ErrCorrupt, i)
		}
		if i > 0 && gap == 0 {
			return fmt.Errorf("%w: registers: index repeated at entry %d", ErrCorrupt, i)
		}
		idx += gap
		rho := b[k]
		if idx >= numRegisters || rho == 0 || rho > maxRho {
			return fmt.Errorf("%w: registers: entry %d out of range (index %d, rho %d)", ErrCorrupt, i, idx, rho)
		}
		b = b[k+1:]
		if fn != nil {
			fn(uint16(idx), rho)
		}
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: registers: %d trailing bytes", ErrCorrupt, len(b))
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

// densePool recycles the 16 KiB dense sketches used for estimates.
var densePool = sync.Pool{New: func() any { return hyperloglog.NewNoSparse() }}

// estimate returns the cardinality of h from a dense copy: the sparse
// estimator assumes 25-bit indexes, which register updates do not carry.
func estimate(h *hyperloglog.Sketch) uint64 {
	d := densePool.Get().(*hyperloglog.Sketch)
	defer densePool.Put(d)
	d.Reset()
	if err := d.Merge(h); err != nil {
		return 0 // precision mismatch: DecodeHLL refuses such sketches
	}
	return d.Estimate()
}

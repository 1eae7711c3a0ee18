package sketch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"sync"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/axiomhq/hyperloglog"
)

// Stored encodings: sketch state at rest (InfluxDB fields, archive
// files). Every stored value starts with a version byte that names its
// encoding, and every decoder dispatches on it, so data written by an
// earlier release stays readable: the libraries' own encodings, which
// the first release stored, begin with bytes no version here uses
// (axiomhq/hyperloglog's with 1 or 2, a DDSketch's with a flag in
// 0x04–0x0f).
//
// One codec serves every store (InfluxDB, the Parquet archive): a store
// keeps the bytes and, where it has a column for it, the version byte.
const (
	// StoredHLLV1 is a HyperLogLog as the list of its non-zero registers,
	// the same (index, rho) updates the wire carries (Registers), coded
	// with Rice codes instead of bytes (see AppendStoredHLL).
	StoredHLLV1 byte = 0x10
	// StoredQuantilesV1 is a DDSketch's bins in the library's encoding
	// without its index mapping (the deployment's mapping is fixed,
	// QuantileAccuracy), behind the version byte.
	StoredQuantilesV1 byte = 0x20
	// StoredContribsV1 is a list of contributions: their identity,
	// version, counters and, where kept, their sketches (see
	// AppendStoredContribs).
	StoredContribsV1 byte = 0x30
)

// Legacy version bytes: what the first release stored, read only.
const (
	legacyHLLv1, legacyHLLv2 = 1, 2 // axiomhq/hyperloglog's MarshalBinary
	legacyQuantilesMin       = 0x04 // a DDSketch flag: features or store
	legacyQuantilesMax       = 0x0f
)

// ErrUnknownEncoding reports stored bytes whose version byte this
// release does not know: written by a newer release, or not a sketch.
var ErrUnknownEncoding = errors.New("unknown stored sketch encoding")

// regBuf is a scratch dense encoding: the library's version-2 dense
// payload (8 header bytes then one byte per register).
type regBuf struct{ b []byte }

var regBufPool = sync.Pool{New: func() any { return &regBuf{b: make([]byte, 0, 8+numRegisters)} }}

// registersOf returns every register of h (one byte each, 0 for unset),
// in a pooled buffer the caller returns with put. It reads them from the
// library's documented dense encoding of a dense copy of h.
func registersOf(h *hyperloglog.Sketch) (regs []uint8, put func(), err error) {
	d := densePool.Get().(*hyperloglog.Sketch)
	defer densePool.Put(d)
	d.Reset()
	if err := d.Merge(h); err != nil {
		return nil, nil, fmt.Errorf("encode uniques: %w", err)
	}
	rb := regBufPool.Get().(*regBuf)
	b, err := d.AppendBinary(rb.b[:0])
	if err != nil || len(b) != 8+numRegisters || b[3] != 0 {
		regBufPool.Put(rb)
		if err == nil {
			err = fmt.Errorf("unexpected dense encoding of %d bytes", len(b))
		}
		return nil, nil, fmt.Errorf("encode uniques: %w", err)
	}
	rb.b = b
	return b[8:], func() { regBufPool.Put(rb) }, nil
}

// riceCost is the number of bits Rice coding with parameter k spends on
// the values vs.
func riceCost(vs []uint16, k uint) int {
	n := 0
	for _, v := range vs {
		n += int(v>>k) + 1 + int(k)
	}
	return n
}

// bestRice returns the Rice parameter in [0, maxK] that codes vs in the
// fewest bits.
func bestRice(vs []uint16, maxK uint) uint {
	best, bestCost := uint(0), riceCost(vs, 0)
	for k := uint(1); k <= maxK; k++ {
		if c := riceCost(vs, k); c < bestCost {
			best, bestCost = k, c
		}
	}
	return best
}

// bitWriter appends bits, most significant first.
type bitWriter struct {
	b    []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) write(v uint64, n uint) {
	for n > 0 {
		take := min(n, 56-w.nacc)
		w.acc = w.acc<<take | (v>>(n-take))&(1<<take-1)
		w.nacc += take
		n -= take
		for w.nacc >= 8 {
			w.b = append(w.b, byte(w.acc>>(w.nacc-8)))
			w.nacc -= 8
		}
	}
}

// rice writes v as (v >> k) ones, a zero, and the k low bits of v.
func (w *bitWriter) rice(v uint16, k uint) {
	for q := v >> k; q > 0; {
		n := min(uint(q), 32)
		w.write(1<<n-1, n)
		q -= uint16(n)
	}
	w.write(0, 1)
	w.write(uint64(v), k)
}

func (w *bitWriter) flush() []byte {
	if w.nacc > 0 {
		w.b = append(w.b, byte(w.acc<<(8-w.nacc)))
		w.nacc = 0
	}
	return w.b
}

// bitReader reads what bitWriter wrote, up to 64 bits at a time.
type bitReader struct {
	b   []byte
	pos uint // bits consumed
}

var (
	errShort = errors.New("truncated")
	errRange = errors.New("value out of range")
)

// peek returns the bits from pos on, left-aligned (57 or more of them
// unless the input ends first), and how many of them the input holds;
// bits past its end read as zeros.
func (r *bitReader) peek() (w uint64, n uint) {
	i := r.pos >> 3
	if i+8 <= uint(len(r.b)) {
		w, n = binary.BigEndian.Uint64(r.b[i:]), 64
	} else {
		for j, c := range r.b[i:] {
			w |= uint64(c) << (56 - 8*uint(j))
		}
		n = 8 * (uint(len(r.b)) - i)
	}
	sh := r.pos & 7
	return w << sh, n - sh
}

// rice reads a Rice-coded value whose quotient is at most maxQ: the
// quotient in ones ended by a zero, then k low bits. A quotient past
// maxQ is out of range even where the input ends before its zero, as
// reading a bit at a time finds.
func (r *bitReader) rice(k uint, maxQ uint64) (uint64, error) {
	var q uint64
	for {
		w, n := r.peek()
		if n == 0 {
			return 0, errShort
		}
		ones := min(uint(bits.LeadingZeros64(^w)), n)
		if q+uint64(ones) > maxQ {
			return 0, errRange
		}
		q += uint64(ones)
		r.pos += ones
		if ones < n {
			r.pos++ // the zero that ends the quotient
			if k == 0 {
				return q, nil
			}
			if ones+1+k <= n { // the low bits are in this window too
				r.pos += k
				return q<<k | w<<(ones+1)>>(64-k), nil
			}
			break
		}
	}
	if k == 0 {
		return q, nil
	}
	w, n := r.peek()
	if n < k {
		return 0, errShort
	}
	r.pos += k
	return q<<k | w>>(64-k), nil
}

// AppendStoredHLL appends h in the StoredHLLV1 encoding:
//
//	0x10, uvarint n (non-zero registers), and when n > 0:
//	one byte kg | kr<<4 (Rice parameters), one byte base (smallest rho),
//	then a bit stream, most significant bit first, padded with zeros to
//	a whole byte: for each register in index order, its index gap
//	(index − previous index − 1, the first from index −1) Rice-coded
//	with kg, then its rho − base Rice-coded with kr.
//
// These are the register updates the wire carries (Registers): a sparse
// sketch stays a short list (a register costs about 12 bits at a few
// dozen visitors, where the wire's bytes cost 24 and the library's
// sparse encoding 32), and a dense one costs about 5 bits a register
// (10 KB rather than 16). The encoding is canonical: sketches with the
// same registers encode to the same bytes, whatever their history.
func AppendStoredHLL(b []byte, h *hyperloglog.Sketch) ([]byte, error) {
	regs, put, err := registersOf(h)
	if err != nil {
		return b, err
	}
	defer put()
	return appendStoredRegisters(b, regs), nil
}

// AppendStoredHLLEstimate is AppendStoredHLL that also returns h's
// estimate (State.UniquesEstimate of a State holding h), reading h's
// registers once for both: what a writer storing a point with its
// uniques estimate needs.
func AppendStoredHLLEstimate(b []byte, h *hyperloglog.Sketch) ([]byte, uint64, error) {
	regs, put, err := registersOf(h)
	if err != nil {
		return b, 0, err
	}
	defer put()
	return appendStoredRegisters(b, regs), estimateRegisters((*registerArray)(regs)), nil
}

// appendStoredRegisters appends the StoredHLLV1 encoding of regs, every
// register of a sketch.
func appendStoredRegisters(b []byte, regs []uint8) []byte {
	n := 0
	base := uint8(maxRho)
	for _, r := range regs {
		if r != 0 {
			n++
			base = min(base, r)
		}
	}
	b = append(b, StoredHLLV1)
	b = binary.AppendUvarint(b, uint64(n))
	if n == 0 {
		return b
	}
	gaps := make([]uint16, 0, n)
	rhos := make([]uint16, 0, n)
	prev := -1
	for i, r := range regs {
		if r != 0 {
			gaps = append(gaps, uint16(i-prev-1))
			rhos = append(rhos, uint16(r-base))
			prev = i
		}
	}
	kg, kr := bestRice(gaps, 13), bestRice(rhos, 5)
	b = append(b, byte(kg|kr<<4), base)
	w := bitWriter{b: b}
	for i := range gaps {
		w.rice(gaps[i], kg)
		w.rice(rhos[i], kr)
	}
	return w.flush()
}

// denseDecodeAfter is the register count from which DecodeStoredHLL
// builds a dense sketch directly rather than folding each register into
// a sparse one; both hold the same registers.
const denseDecodeAfter = 1024

// DecodeStoredHLL decodes a HyperLogLog stored by AppendStoredHLL, or by
// the first release (the library's own encoding, checked by DecodeHLL).
// Registers are folded in exactly as the wire's register updates are
// (State.MergeRegisters): a sketch of a few registers stays sparse; one
// of many is built dense, with the same registers.
func DecodeStoredHLL(b []byte) (*hyperloglog.Sketch, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: hll: empty", ErrCorrupt)
	}
	switch b[0] {
	case legacyHLLv1, legacyHLLv2:
		return DecodeHLL(b)
	case StoredHLLV1:
	default:
		return nil, fmt.Errorf("%w: hll version byte %#x", ErrUnknownEncoding, b[0])
	}
	var dense []byte
	var sparse *hyperloglog.Sketch
	n, err := eachStoredRegister(b, func(n uint64) {
		if n >= denseDecodeAfter {
			dense = make([]byte, 8+numRegisters)
			dense[0], dense[1] = legacyHLLv2, HLLPrecision
			binary.BigEndian.PutUint32(dense[4:], numRegisters)
		} else {
			sparse = NewHLL()
		}
	}, func(idx int, rho uint8) {
		if dense != nil {
			dense[8+idx] = rho
		} else {
			sparse.InsertHash(craftHash(uint16(idx), rho))
		}
	})
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return NewHLL(), nil
	case dense == nil:
		return sparse, nil
	}
	h := NewHLL()
	if err := h.UnmarshalBinary(dense); err != nil {
		return nil, fmt.Errorf("%w: stored hll: %v", ErrCorrupt, err)
	}
	return h, nil
}

// eachStoredRegister walks a StoredHLLV1 encoding (b[0] is its version
// byte): it calls start with the register count once the header is
// read, then reg for every register in index order, and returns the
// count. Either may be nil. On error (ErrCorrupt), reg may have seen
// some of the registers.
func eachStoredRegister(b []byte, start func(n uint64), reg func(idx int, rho uint8)) (uint64, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: stored hll: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > numRegisters {
		return 0, bad("bad register count")
	}
	rest := b[1+k:]
	if n == 0 {
		if len(rest) != 0 {
			return 0, bad("%d bytes after an empty sketch", len(rest))
		}
		return 0, nil
	}
	if len(rest) < 2 {
		return 0, bad("truncated header")
	}
	kg, kr, base := uint(rest[0]&0x0f), uint(rest[0]>>4), rest[1]
	if kg > 13 || kr > 5 || base == 0 || base > maxRho {
		return 0, bad("bad parameters %#x, base %d", rest[0], base)
	}
	if start != nil {
		start(n)
	}
	r := bitReader{b: rest[2:]}
	idx := -1
	for i := range n {
		gap, err := r.rice(kg, numRegisters>>kg)
		if err != nil {
			return 0, bad("register %d: gap: %v", i, err)
		}
		idx += int(gap) + 1
		if idx >= numRegisters {
			return 0, bad("register %d: index %d out of range", i, idx)
		}
		d, err := r.rice(kr, maxRho>>kr)
		if err != nil {
			return 0, bad("register %d: rho: %v", i, err)
		}
		rho := uint64(base) + d
		if rho > maxRho {
			return 0, bad("register %d: rho %d out of range", i, rho)
		}
		if reg != nil {
			reg(idx, uint8(rho))
		}
	}
	// The stream ends within its last byte, padded with zeros.
	if used := (r.pos + 7) / 8; used != uint(len(r.b)) {
		return 0, bad("%d bytes after the registers", uint(len(r.b))-used)
	}
	if pad := r.pos & 7; pad != 0 && r.b[len(r.b)-1]&(1<<(8-pad)-1) != 0 {
		return 0, bad("non-zero padding")
	}
	return n, nil
}

// AppendStoredQuantiles appends q in the StoredQuantilesV1 encoding: the
// version byte, then the library's encoding of the bins without the
// index mapping, which is already minimal for our sketches (an index
// delta and a count per non-empty bin, about 1.7 bytes a value for a few
// dozen values).
func AppendStoredQuantiles(b []byte, q *ddsketch.DDSketch) []byte {
	b = append(b, StoredQuantilesV1)
	q.Encode(&b, true)
	return b
}

// DecodeStoredQuantiles decodes a value sketch stored by
// AppendStoredQuantiles, or by the first release (the library's encoding
// without version byte), with DecodeQuantiles' checks.
func DecodeStoredQuantiles(b []byte) (*ddsketch.DDSketch, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: quantiles: empty", ErrCorrupt)
	}
	switch v := b[0]; {
	case v == StoredQuantilesV1:
		return DecodeQuantiles(b[1:])
	case v >= legacyQuantilesMin && v <= legacyQuantilesMax:
		return DecodeQuantiles(b)
	default:
		return nil, fmt.Errorf("%w: quantiles version byte %#x", ErrUnknownEncoding, v)
	}
}

// StoredContrib is one contribution at rest: who made it (Agent, CID),
// its Version, and its cumulative State. Whether the State's sketches
// are kept depends on the store: the ledger of a merged minute keeps
// counters and quantiles only (its HyperLogLog is the minute's), a
// contribution point keeps its HyperLogLog too.
type StoredContrib struct {
	Agent   string
	CID     uint64
	Version uint64
	// Series is the exact series when it differs from the one the store
	// files the contribution under (an InfluxDB tag had to alter a
	// dimension); nil otherwise.
	Series *Series
	State  *State
}

// Flags of an entry of StoredContribsV1.
const (
	scSeries = 1 << iota
	scHLL
	scQuantiles
	scValue
	scCost
	scBots
	scVotes
	scAll = scSeries | scHLL | scQuantiles | scValue | scCost | scBots | scVotes
)

// AppendStoredContribs appends cs in the StoredContribsV1 encoding:
//
//	0x30, uvarint a, a agent names (uvarint length, bytes),
//	uvarint n, then n entries:
//	  uvarint agent index, uvarint flags,
//	  uvarint CID>>32, uvarint CID&0xffffffff (restart epoch and counter),
//	  uvarint version, uvarint count,
//	  [zigzag varint value micros] [zigzag varint cost micros]
//	  [uvarint m, m × (string reason, uvarint n)]      bots
//	  [uvarint m, m × (string vote key, uvarint n)]    votes
//	  [7 strings: campaign, source, medium, type, country, device, region]
//	  [uvarint length, stored HLL]  [uvarint length, stored quantiles]
//
// where brackets are present when their flag is set and a string is a
// uvarint length and its bytes. withHLL keeps each state's HyperLogLog;
// without it only counters and quantiles are written (a ledger).
func AppendStoredContribs(b []byte, cs []StoredContrib, withHLL bool) ([]byte, error) {
	var agents []string
	index := map[string]int{}
	for _, c := range cs {
		if _, ok := index[c.Agent]; !ok {
			index[c.Agent] = len(agents)
			agents = append(agents, c.Agent)
		}
	}
	b = AppendStoredContribsHeader(b, agents, len(cs))
	var err error
	for i := range cs {
		if b, err = AppendStoredContribEntry(b, &cs[i], index[cs[i].Agent], withHLL); err != nil {
			return b, err
		}
	}
	return b, nil
}

// AppendStoredContribsHeader appends the start of a StoredContribsV1
// value: the version byte, the agents and the number of entries. Followed
// by n AppendStoredContribEntry, it makes what AppendStoredContribs
// makes; a store that caches each contribution's entry (agent index 0)
// builds one agent's list from the cached entries this way.
func AppendStoredContribsHeader(b []byte, agents []string, n int) []byte {
	b = append(b, StoredContribsV1)
	b = binary.AppendUvarint(b, uint64(len(agents)))
	for _, a := range agents {
		b = appendString(b, a)
	}
	return binary.AppendUvarint(b, uint64(n))
}

// AppendStoredContribEntry appends one entry of a StoredContribsV1 value
// (see AppendStoredContribs), for the agent at agentIndex of the header.
func AppendStoredContribEntry(b []byte, c *StoredContrib, agentIndex int, withHLL bool) ([]byte, error) {
	st := c.State
	if st == nil {
		st = &State{}
	}
	flags := 0
	if c.Series != nil {
		flags |= scSeries
	}
	if withHLL && st.Uniques != nil {
		flags |= scHLL
	}
	if st.Values != nil && !st.Values.IsEmpty() {
		flags |= scQuantiles
	}
	if st.ValueMicros != 0 {
		flags |= scValue
	}
	if st.CostMicros != 0 {
		flags |= scCost
	}
	if len(st.Bots) > 0 {
		flags |= scBots
	}
	if len(st.Votes) > 0 {
		flags |= scVotes
	}
	b = binary.AppendUvarint(b, uint64(agentIndex))
	b = binary.AppendUvarint(b, uint64(flags))
	b = binary.AppendUvarint(b, c.CID>>32)
	b = binary.AppendUvarint(b, c.CID&0xffffffff)
	b = binary.AppendUvarint(b, c.Version)
	b = binary.AppendUvarint(b, st.Count)
	if flags&scValue != 0 {
		b = binary.AppendVarint(b, st.ValueMicros)
	}
	if flags&scCost != 0 {
		b = binary.AppendVarint(b, st.CostMicros)
	}
	if flags&scBots != 0 {
		b = appendCounts(b, st.Bots)
	}
	if flags&scVotes != 0 {
		b = appendCounts(b, st.Votes)
	}
	if flags&scSeries != 0 {
		s := c.Series
		for _, v := range [...]string{s.Campaign, s.Source, s.Medium, s.Type, s.Country, s.Device, s.Region} {
			b = appendString(b, v)
		}
	}
	var err error
	if flags&scHLL != 0 {
		if b, err = appendLenPrefixed(b, func(b []byte) ([]byte, error) { return AppendStoredHLL(b, st.Uniques) }); err != nil {
			return b, err
		}
	}
	if flags&scQuantiles != 0 {
		b, _ = appendLenPrefixed(b, func(b []byte) ([]byte, error) { return AppendStoredQuantiles(b, st.Values), nil })
	}
	return b, nil
}

// appendLenPrefixed appends what enc appends, behind its uvarint length.
func appendLenPrefixed(b []byte, enc func([]byte) ([]byte, error)) ([]byte, error) {
	var tmp [binary.MaxVarintLen64]byte
	start := len(b)
	b = append(b, tmp[:]...) // room for the longest length
	b, err := enc(b)
	if err != nil {
		return b[:start], err
	}
	body := len(b) - start - len(tmp)
	n := binary.PutUvarint(tmp[:], uint64(body))
	copy(b[start+n:], b[start+len(tmp):])
	copy(b[start:], tmp[:n])
	return b[:start+n+body], nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendCounts appends a map of counts in key order (canonical bytes).
func appendCounts(b []byte, m map[string]uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, m[k])
	}
	return b
}

// storedReader reads StoredContribsV1, refusing anything that runs past
// the input or claims more items than bytes remain.
type storedReader struct {
	b   []byte
	err error
}

func (r *storedReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: stored contributions: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
}

func (r *storedReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.fail("truncated %s", what)
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *storedReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Varint(r.b)
	if k <= 0 {
		r.fail("truncated %s", what)
		return 0
	}
	r.b = r.b[k:]
	return v
}

// count reads a number of items, each at least one byte long.
func (r *storedReader) count(what string) int {
	n := r.uvarint(what)
	if n > uint64(len(r.b)) {
		r.fail("%s %d is more than the %d bytes left", what, n, len(r.b))
		return 0
	}
	return int(n)
}

func (r *storedReader) bytes(what string) []byte {
	n := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("%s of %d bytes, %d left", what, n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *storedReader) counts(what string) map[string]uint64 {
	n := r.count(what)
	m := make(map[string]uint64, n)
	for range n {
		k := string(r.bytes(what))
		v := r.uvarint(what)
		if r.err != nil {
			return nil
		}
		if _, dup := m[k]; dup {
			r.fail("%s %q repeated", what, k)
			return nil
		}
		m[k] = v
	}
	return m
}

// DecodeStoredContribs decodes what AppendStoredContribs wrote.
func DecodeStoredContribs(b []byte) ([]StoredContrib, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: stored contributions: empty", ErrCorrupt)
	}
	if b[0] != StoredContribsV1 {
		return nil, fmt.Errorf("%w: contributions version byte %#x", ErrUnknownEncoding, b[0])
	}
	r := &storedReader{b: b[1:]}
	agents := make([]string, r.count("agent count"))
	for i := range agents {
		agents[i] = string(r.bytes("agent"))
	}
	n := r.count("entry count")
	out := make([]StoredContrib, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		ai := r.uvarint("agent index")
		flags := r.uvarint("flags")
		hi, lo := r.uvarint("cid"), r.uvarint("cid")
		c := StoredContrib{Version: r.uvarint("version"), State: &State{Count: r.uvarint("count")}}
		if r.err != nil {
			break
		}
		if ai >= uint64(len(agents)) || flags&^scAll != 0 || hi > 0xffffffff || lo > 0xffffffff {
			r.fail("entry %d: agent %d of %d, flags %#x, cid %#x/%#x", i, ai, len(agents), flags, hi, lo)
			break
		}
		c.Agent, c.CID = agents[ai], hi<<32|lo
		st := c.State
		if flags&scValue != 0 {
			st.ValueMicros = r.varint("value")
		}
		if flags&scCost != 0 {
			st.CostMicros = r.varint("cost")
		}
		if flags&scBots != 0 {
			st.Bots = r.counts("bots")
		}
		if flags&scVotes != 0 {
			st.Votes = r.counts("votes")
		}
		if flags&scSeries != 0 {
			var f [7]string
			for j := range f {
				f[j] = string(r.bytes("series"))
			}
			c.Series = &Series{Campaign: f[0], Source: f[1], Medium: f[2], Type: f[3], Country: f[4], Device: f[5], Region: f[6]}
		}
		if flags&scHLL != 0 {
			if hb := r.bytes("hll"); r.err == nil {
				h, err := DecodeStoredHLL(hb)
				if err != nil {
					return nil, fmt.Errorf("stored contribution %d: %w", i, err)
				}
				st.Uniques = h
			}
		}
		if flags&scQuantiles != 0 {
			if qb := r.bytes("quantiles"); r.err == nil {
				q, err := DecodeStoredQuantiles(qb)
				if err != nil {
					return nil, fmt.Errorf("stored contribution %d: %w", i, err)
				}
				st.Values = q
			}
		}
		out = append(out, c)
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d bytes after the last entry", len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}

package sketch

import (
	"bytes"
	"testing"
)

// FuzzDecodeEncoded feeds arbitrary HLL, quantile and register bytes to
// the decoder the aggregator runs on every contribution it receives. It
// must return an error or a usable state, never panic or blow up memory.
//
//	go test -run='^$' -fuzz=FuzzDecodeEncoded -fuzztime=30s ./sketch/
func FuzzDecodeEncoded(f *testing.F) {
	var st State
	for i := range 300 {
		st.AddVisitor(uint64(i+1) * 0x9E3779B97F4A7C15)
		st.AddValue(int64(i) * 1_000_000)
	}
	enc, err := st.Encode()
	if err != nil {
		f.Fatal(err)
	}
	var regs Registers
	for i := range 40 {
		regs.Add(uint64(i+7) * 0xBF58476D1CE4E5B9)
	}
	f.Add(enc.HLL, enc.Quantiles, regs.AppendUpdates(nil))
	f.Add([]byte{}, []byte{}, []byte{})
	f.Add(enc.HLL[:len(enc.HLL)/2], enc.Quantiles[:len(enc.Quantiles)/2], []byte{1, 0, 1})
	f.Fuzz(func(t *testing.T, hll, quantiles, registers []byte) {
		e := Encoded{Count: 1, HLL: hll, Quantiles: quantiles, Registers: registers}
		s, err := e.Decode()
		if err != nil {
			return
		}
		_ = s.UniquesEstimate()
		_ = s.Quantile(0.5)
		if _, err := s.Encode(); err != nil {
			t.Fatalf("a decoded state does not encode: %v", err)
		}
		if err := s.Merge(s.Clone()); err != nil {
			t.Fatalf("a decoded state does not merge with itself: %v", err)
		}
	})
}

// FuzzDecodeStored feeds arbitrary bytes to the decoders of the stored
// encodings, which read what InfluxDB and archive files hand back: an
// error or a usable value, never a panic; what decodes re-encodes and
// decodes again to the same registers.
//
//	go test -run='^$' -fuzz=FuzzDecodeStored -fuzztime=30s ./sketch/
func FuzzDecodeStored(f *testing.F) {
	for _, n := range []int{0, 1, 30, 3000} {
		b, err := AppendStoredHLL(nil, randomHLL(uint64(n), n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	cs, _ := AppendStoredContribs(nil, sampleContribs(), true)
	f.Add(cs)
	var st State
	st.AddValue(5_000_000)
	f.Add(AppendStoredQuantiles(nil, st.Values))
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := DecodeStoredHLL(b); err == nil {
			again, err := AppendStoredHLL(nil, h)
			if err != nil {
				t.Fatalf("a decoded sketch does not encode: %v", err)
			}
			h2, err := DecodeStoredHLL(again)
			if err != nil {
				t.Fatalf("a re-encoded sketch does not decode: %v", err)
			}
			if !bytes.Equal(registerBytes(t, h), registerBytes(t, h2)) {
				t.Fatal("registers change through a re-encoding")
			}
		}
		if q, err := DecodeStoredQuantiles(b); err == nil {
			_ = (&State{Values: q}).Quantile(0.5)
		}
		if cs, err := DecodeStoredContribs(b); err == nil {
			if _, err := AppendStoredContribs(nil, cs, true); err != nil {
				t.Fatalf("decoded contributions do not encode: %v", err)
			}
		}
	})
}

package sketch

import (
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

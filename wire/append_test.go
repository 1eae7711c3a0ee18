package wire

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tally-edge/tally/sketch"
)

// The hand-written encoder must give the bytes of the reflection encoder
// (marshal) and decode to the same contributions, at every length and
// integer boundary msgpack switches encodings at.
func TestAppendContributionsMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	ints := []int64{0, 1, 31, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64}
	lengths := []int{0, 1, 31, 32, 255, 256, 65535, 65536}
	str := func() string { return strings.Repeat("é", lengths[rng.IntN(len(lengths))]/2) + "x"[:rng.IntN(2)] }
	bin := func() []byte {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return []byte{}
		}
		b := make([]byte, lengths[rng.IntN(len(lengths))])
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	anInt := func() int64 { return ints[rng.IntN(len(ints))] }
	for _, n := range []int{0, 1, 15, 16, 300} {
		cs := make([]Contribution, n)
		for i := range cs {
			c := &cs[i]
			c.Series = sketch.Series{Campaign: str(), Source: str(), Medium: str(), Type: str(), Country: str(), Device: str(), Region: str()}
			c.Minute, c.CID, c.Version = anInt(), uint64(anInt()), uint64(anInt())
			c.State = sketch.Encoded{Count: uint64(anInt()), ValueMicros: anInt(), CostMicros: anInt(),
				HLL: bin(), Quantiles: bin(), Registers: bin()}
			switch rng.IntN(3) {
			case 1:
				c.State.Bots = map[string]uint64{}
			case 2:
				c.State.Bots = map[string]uint64{str(): uint64(anInt())}
			}
			if rng.IntN(2) == 1 {
				c.State.Votes = map[string]uint64{sketch.VoteKey(str(), str()): uint64(anInt())}
			}
		}
		var want bytes.Buffer
		if err := marshal(&want, cs); err != nil {
			t.Fatal(err)
		}
		got := AppendContributions([]byte("prefix"), cs)
		if !bytes.Equal(got[:6], []byte("prefix")) || !bytes.Equal(got[6:], want.Bytes()) {
			t.Fatalf("%d contributions: hand-written encoding differs from msgpack's (%d vs %d bytes)", n, len(got)-6, want.Len())
		}
	}
	var nilBuf bytes.Buffer
	if err := marshal(&nilBuf, []Contribution(nil)); err != nil {
		t.Fatal(err)
	}
	if got := AppendContributions(nil, nil); !bytes.Equal(got, nilBuf.Bytes()) {
		t.Fatalf("nil slice: %x, msgpack gives %x", got, nilBuf.Bytes())
	}
}

// Several bot reasons are written sorted; they decode to the same map.
func TestAppendContributionsBotReasonsSorted(t *testing.T) {
	c := Contribution{Series: sketch.Series{Campaign: "c", Region: "eu"}, Minute: 60, CID: 1, Version: 2,
		State: sketch.Encoded{Count: 3, Bots: map[string]uint64{"ua": 4, "datacenter": 300, "rate_ip": 1, "deny": 70000}}}
	got := AppendContributions(nil, []Contribution{c})
	var back []Contribution
	if err := msgpack.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || !reflect.DeepEqual(back[0], c) {
		t.Fatalf("decoded %+v, want %+v", back, c)
	}
	if i, j, k, l := bytes.Index(got, []byte("datacenter")), bytes.Index(got, []byte("deny")), bytes.Index(got, []byte("rate_ip")),
		bytes.Index(got, []byte("\xa2ua")); !(i < j && j < k && k < l) {
		t.Fatalf("bot reasons not in sorted order: %q", got)
	}
}

func BenchmarkEncodeContributions(b *testing.B) {
	cs := buildBatch(b, 2000, 1).Contributions
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeContributions(cs); err != nil {
			b.Fatal(err)
		}
	}
}

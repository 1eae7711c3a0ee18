package anomaly

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMiddle: the selection median equals the sorted one, for every length
// and with many ties.
func TestMiddle(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var buf []float64
	for n := 1; n < 200; n++ {
		for _, ties := range []int{3, 1000000} {
			xs := make([]float64, n)
			for i := range xs {
				xs[i] = float64(rng.IntN(ties))
			}
			s := slices.Sorted(slices.Values(xs))
			want := s[n/2]
			if n%2 == 0 {
				want = (s[n/2-1] + s[n/2]) / 2
			}
			if got := median(xs, &buf); got != want {
				t.Fatalf("n=%d: median %v, want %v", n, got, want)
			}
		}
	}
}

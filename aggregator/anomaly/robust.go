package anomaly

// median returns the median of xs, selecting in a copy in *buf.
func median(xs []float64, buf *[]float64) float64 {
	b := append((*buf)[:0], xs...)
	*buf = b
	return middle(b)
}

// mad returns the median absolute deviation of xs from c.
func mad(xs []float64, c float64, buf *[]float64) float64 {
	b := (*buf)[:0]
	for _, x := range xs {
		if x >= c {
			b = append(b, x-c)
		} else {
			b = append(b, c-x)
		}
	}
	*buf = b
	return middle(b)
}

// middle is the median of b, which it reorders: the element of rank n/2
// (and, for an even n, the largest below it) by selection, without a sort.
func middle(b []float64) float64 {
	n := len(b)
	if n == 0 {
		return 0
	}
	hi := selectRank(b, n/2)
	if n%2 == 1 {
		return hi
	}
	lo := b[0]
	for _, x := range b[1 : n/2] {
		lo = max(lo, x)
	}
	return (lo + hi) / 2
}

// selectRank reorders b so that b[k] is the element of rank k, everything
// before it no larger and everything after it no smaller, and returns it
// (quickselect with a median-of-three pivot; b holds finite numbers).
func selectRank(b []float64, k int) float64 {
	lo, hi := 0, len(b)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if b[mid] < b[lo] {
			b[mid], b[lo] = b[lo], b[mid]
		}
		if b[hi] < b[lo] {
			b[hi], b[lo] = b[lo], b[hi]
		}
		if b[hi] < b[mid] {
			b[hi], b[mid] = b[mid], b[hi]
		}
		pivot := b[mid]
		i, j := lo, hi
		for i <= j {
			for b[i] < pivot {
				i++
			}
			for b[j] > pivot {
				j--
			}
			if i <= j {
				b[i], b[j] = b[j], b[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return b[k]
		}
	}
	return b[k]
}

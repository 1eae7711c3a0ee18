package anomaly

import "slices"

// median returns the median of xs, sorting a copy in *buf.
func median(xs []float64, buf *[]float64) float64 {
	b := append((*buf)[:0], xs...)
	slices.Sort(b)
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
	slices.Sort(b)
	*buf = b
	return middle(b)
}

func middle(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

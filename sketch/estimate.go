package sketch

import "math"

// registerArray holds every register of a HyperLogLog at HLLPrecision,
// one byte each (its rho, 0 for a register never set): what the
// library's dense sketch keeps.
type registerArray = [numRegisters]uint8

// inversePowers[v] is 2^-v, exactly.
var inversePowers = func() (t [maxRho + 1]float64) {
	for v := range t {
		t[v] = math.Ldexp(1, -v)
	}
	return t
}()

// exactSumMaxRho bounds the registers for which the sum of 2^-rho over
// all registers is exact in float64 whatever the order of the additions:
// every partial sum is then a multiple of 2^-38 no larger than 2^14, a
// 52-bit integer times a power of two.
const exactSumMaxRho = 52 - HLLPrecision

// betaCoefficients are LogLog-Beta's bias-correction coefficients for
// precision 14 (Qin, Kim and Tung, "LogLog-Beta and More: A New
// Algorithm for Cardinality Estimation Based on LogLog Counting", 2016),
// as axiomhq/hyperloglog's dense estimator uses them: beta(z) =
// c0·z + c1·l + c2·l² + … + c7·l⁷ with l = ln(z+1), z the zero registers.
var betaCoefficients = [8]float64{
	-0.371009760230692,
	0.00978811941207509,
	0.185796293324165,
	0.203015527328432,
	-0.116710521803686,
	0.0431106699492820,
	-0.00599583540511831,
	0.000449704299509437,
}

// estimateRegisters returns the cardinality estimate of regs, bit for bit
// what axiomhq/hyperloglog's dense sketch holding them estimates (the
// tests compare both on random registers of every range), in a fraction
// of its time: the library raises 2 to each register's power, 16,384
// calls of math.Pow an estimate, which dominated a year-long daily
// series (365 estimates). This sums a histogram of the registers
// instead, which gives the same sum whenever that sum is exact
// (exactSumMaxRho), and otherwise adds 2^-rho register by register, in
// the library's order.
func estimateRegisters(regs *registerArray) uint64 {
	// Four histograms, so that runs of equal registers do not wait on
	// each other's increments.
	var hists [4][maxRho + 1]uint32
	for i := 0; i < len(regs); i += 4 {
		hists[0][regs[i]]++
		hists[1][regs[i+1]]++
		hists[2][regs[i+2]]++
		hists[3][regs[i+3]]++
	}
	hist := hists[0]
	for v := range hist {
		hist[v] += hists[1][v] + hists[2][v] + hists[3][v]
	}
	top := len(hist) - 1
	for top > 0 && hist[top] == 0 {
		top--
	}
	var sum float64
	if top <= exactSumMaxRho {
		for v, n := range hist[:top+1] {
			sum += float64(n) * inversePowers[v]
		}
	} else {
		for _, r := range regs {
			sum += inversePowers[r]
		}
	}
	zeros := float64(hist[0])
	m := float64(numRegisters)
	alpha := 0.7213 / (1 + 1.079/m)
	est := alpha * m * (m - zeros) / (sum + beta(zeros))
	return uint64(est + 0.5)
}

// beta is LogLog-Beta's bias correction for the given number of zero
// registers, its terms added in the library's order.
func beta(zeros float64) float64 {
	l := math.Log(zeros + 1)
	b := betaCoefficients[0] * zeros
	for i, c := range betaCoefficients[1:] {
		b += c * math.Pow(l, float64(i+1))
	}
	return b
}

package harness

import "slices"

// Percentile is the p-th (0..1) of xs, by rank (0.5: the median, the upper
// middle of an even count); 0 without samples.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(int(p*float64(len(s))), len(s)-1)]
}

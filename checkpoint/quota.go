package checkpoint

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Replicas that poll one account and region share its API quota through
// the store they share: before each call, a replica takes one call from
// the quota's key with Take (Redis.Take, KV.Take), which admits it now or
// says how long to wait. Both stores run the same generic cell rate
// algorithm (GCRA), that of github.com/go-redis/redis_rate: one value per
// key, the quota's theoretical arrival time (TAT), so a group of any size
// costs one small value per key and one round trip per admitted call.
//
// A quota of perSecond calls per second with burst cells lets burst calls
// go at once after a pause, and then one every 1/perSecond seconds (the
// emission interval), however many replicas ask.

// quotaInterval validates a quota and returns its emission interval: the
// time one call uses of the quota, 1/perSecond rounded to the nanosecond.
func quotaInterval(perSecond float64, burst int) (time.Duration, error) {
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		return 0, fmt.Errorf("checkpoint: a quota's rate must be positive and finite, got %v per second", perSecond)
	}
	if burst < 1 {
		return 0, fmt.Errorf("checkpoint: a quota's burst must be at least 1, got %d", burst)
	}
	interval := float64(time.Second) / perSecond
	// burst+1 intervals are added to a time: keep them far from overflow.
	if interval*float64(burst+1) > float64(math.MaxInt64/4) {
		return 0, fmt.Errorf("checkpoint: a quota of %v per second with burst %d is too slow to measure", perSecond, burst)
	}
	return max(time.Duration(math.Round(interval)), time.Nanosecond), nil
}

// gcra decides one call under the generic cell rate algorithm, exactly as
// redis_rate's script does (AllowN with n=1), so that both stores admit
// the same calls. tat is the stored theoretical arrival time (zero when
// the key has none); a call is admitted when the TAT, brought forward to
// now, is no more than burst-1 intervals ahead. Admitted (wait 0), next is
// the TAT to store; refused, nothing changes and wait is how long until
// the call would be admitted.
func gcra(tat, now time.Time, interval time.Duration, burst int) (next time.Time, wait time.Duration) {
	if tat.Before(now) {
		tat = now
	}
	next = tat.Add(interval)
	allowAt := next.Add(-time.Duration(burst) * interval)
	if now.Before(allowAt) {
		return tat, allowAt.Sub(now)
	}
	return next, 0
}

// kvQuotaKey names a quota's value in a key-value bucket: "quota." and
// the key escaped, since bucket keys allow only [-/_=.a-zA-Z0-9] and no
// empty token. Letters, digits, '-' and '/' are kept (account/region/action
// stays readable); every other byte, '_' included, becomes '_' and two hex
// digits, so the escape is reversible and two keys never share a value.
func kvQuotaKey(key string) (string, error) {
	if key == "" {
		return "", errors.New("checkpoint: a quota key is required")
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.WriteString("quota.")
	for i := range len(key) {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '/':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	return b.String(), nil
}

package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
)

// redisRateLimit maps a quota onto redis_rate's integer Limit. Its script
// uses Rate and Period only as the emission interval Period/Rate, so one
// call per emission interval (Rate 1, Period 1/perSecond to the
// nanosecond) is any fractional rate exactly — where calls per minute
// would round 1/7 per second, 8.57 a minute, to 9. Burst is the same.
func redisRateLimit(perSecond float64, burst int) (redis_rate.Limit, error) {
	interval, err := quotaInterval(perSecond, burst)
	if err != nil {
		return redis_rate.Limit{}, err
	}
	return redis_rate.Limit{Rate: 1, Period: interval, Burst: burst}, nil
}

// quotaKey is the key a quota's GCRA state lives under before redis_rate
// puts its own "rate:" in front: "rate:<prefix>quota:<key>". It is one
// key, so the script is fine in a Redis Cluster; it expires by itself
// once the quota is idle (redis_rate sets a TTL to its reset time).
func (r *Redis) quotaKey(key string) string {
	return r.opts.KeyPrefix + "quota:" + key
}

// Take takes one call from the quota named key (shared by every store on
// the same Redis and key prefix), which lets perSecond calls a second go
// with burst at once. Wait 0 means the call is admitted; otherwise nothing
// was taken and the caller should come back after wait. It is redis_rate's
// GCRA, one Lua script on one key. now is ignored: the script reads the
// server's clock (TIME), which all replicas share, so their own clocks
// cannot skew the quota.
func (r *Redis) Take(ctx context.Context, key string, perSecond float64, burst int, now time.Time) (time.Duration, error) {
	if key == "" {
		return 0, errors.New("checkpoint: a quota key is required")
	}
	limit, err := redisRateLimit(perSecond, burst)
	if err != nil {
		return 0, err
	}
	res, err := redis_rate.NewLimiter(r.client).Allow(ctx, r.quotaKey(key), limit)
	if err != nil {
		return 0, fmt.Errorf("checkpoint: take a call from quota %s in redis: %w", key, err)
	}
	if res.Allowed > 0 {
		return 0, nil
	}
	return max(res.RetryAfter, time.Nanosecond), nil // refused is never "now", even rounded
}

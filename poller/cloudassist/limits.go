package cloudassist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// LimitsOptions configures [Limits].
type LimitsOptions struct {
	// QPS is the most calls per second capoller makes to one API in one
	// region; default 10. Alibaba's quotas are per account, region, API and
	// minute, and shared with the console: keep this below the quota.
	QPS float64
	// Burst is how many calls may go at once; default 1.
	Burst int
}

// Limits is the token buckets of one process (one account): one per region
// and API action, shared by every lister. A bucket halves its rate when the
// API throttles — once per throttling window, since every call refused in
// one window is the same news — never below a sixteenth of QPS, and climbs
// back by a tenth of QPS every 20 calls that pass.
type Limits struct {
	opts    LimitsOptions
	mu      sync.Mutex
	buckets map[limitKey]*bucket
}

type limitKey struct{ region, action string }

type bucket struct {
	lim    *rate.Limiter
	passed int
	calm   time.Time // when a throttle may halve the rate again
}

// NewLimits builds a registry of token buckets.
func NewLimits(opts LimitsOptions) (*Limits, error) {
	if opts.QPS == 0 {
		opts.QPS = 10
	}
	if opts.Burst == 0 {
		opts.Burst = 1
	}
	if opts.QPS < 0 || opts.Burst < 0 {
		return nil, errors.New("cloudassist: QPS and burst must be positive")
	}
	return &Limits{opts: opts, buckets: map[limitKey]*bucket{}}, nil
}

func (l *Limits) bucket(region, action string) *bucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := limitKey{region, action}
	b, ok := l.buckets[k]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(l.opts.QPS), l.opts.Burst)}
		l.buckets[k] = b
	}
	return b
}

// wait blocks until the call may go, or ctx ends. The wait is progress
// (see [WithProgress]).
func (l *Limits) wait(ctx context.Context, region, action string) error {
	if l == nil {
		return nil
	}
	r := l.bucket(region, action).lim.Reserve()
	if !r.OK() {
		return fmt.Errorf("wait for the %s rate limit: burst %d admits no call", action, l.opts.Burst)
	}
	if d := r.Delay(); d > 0 {
		if err := quotaWait(ctx, d); err != nil {
			r.Cancel()
			return fmt.Errorf("wait for the %s rate limit: %w", action, err)
		}
	}
	return nil
}

// throttled lowers the bucket's rate after the API refused a call at now,
// unless it did so already within the last window.
func (l *Limits) throttled(region, action string, now time.Time, window time.Duration) {
	if l == nil {
		return
	}
	b := l.bucket(region, action)
	l.mu.Lock()
	defer l.mu.Unlock()
	b.passed = 0
	if now.Before(b.calm) {
		return
	}
	b.calm = now.Add(window)
	b.lim.SetLimit(max(b.lim.Limit()/2, rate.Limit(l.opts.QPS/16)))
}

// passed raises the bucket's rate back towards QPS as calls go through.
func (l *Limits) passed(region, action string) {
	if l == nil {
		return
	}
	b := l.bucket(region, action)
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.passed++; b.passed >= 20 && float64(b.lim.Limit()) < l.opts.QPS {
		b.passed = 0
		b.lim.SetLimit(min(b.lim.Limit()+rate.Limit(l.opts.QPS/10), rate.Limit(l.opts.QPS)))
	}
}

// Rate is the current rate of a bucket, in calls per second.
func (l *Limits) Rate(region, action string) float64 {
	return float64(l.bucket(region, action).lim.Limit())
}

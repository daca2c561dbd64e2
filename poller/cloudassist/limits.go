package cloudassist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/capoller/capoller/diff"
)

// SharedQuota is an API quota that the replicas polling one account share
// through their checkpoint store; checkpoint.Redis and checkpoint.KV
// implement it. Take takes one call from the quota named key, which lets
// perSecond calls a second go, burst at once, across every replica: wait
// 0 admits the call now; otherwise nothing was taken and the caller comes
// back after wait.
type SharedQuota interface {
	Take(ctx context.Context, key string, perSecond float64, burst int, now time.Time) (wait time.Duration, err error)
}

// sharedTimeout bounds one Take, so that a store that hangs delays a call
// by at most this much before it goes on the local bucket alone. A Take
// that works is one round trip.
const sharedTimeout = time.Second

// After the shared quota failed, calls go on the local bucket alone for
// sharedRetryMin, then one call tries it again; while it keeps failing,
// the pause doubles up to sharedRetryMax. A long outage thus costs one
// failed Take every half minute, not one per call.
const (
	sharedRetryMin = time.Second
	sharedRetryMax = 30 * time.Second
)

// LimitsOptions configures [Limits].
type LimitsOptions struct {
	// QPS is the most calls per second capoller makes to one API in one
	// region; default 10. Alibaba's quotas are per account, region, API and
	// minute, and shared with the console: keep this below the quota.
	QPS float64
	// Burst is how many calls may go at once; default 1.
	Burst int
	// Shared, if set, is the quota of every replica polling this account:
	// a call that the local bucket let go then takes one call from the
	// shared quota <account>/<region>/<action> at QPS and Burst, which are
	// then the whole group's, so that R replicas together stay under the
	// account's quota (each alone may still use all of it). If the store
	// fails, calls go on the local bucket alone — polling does not stop —
	// and the shared quota is tried again a second later, then less and
	// less often while it keeps failing.
	Shared SharedQuota
	// Account names the account in the shared quota's keys, since Alibaba's
	// quotas are per account, region and API; default "default".
	Account string
	// OnShared, if set, hears when the shared quota fails (the error) and
	// when it works again (nil): once per change, not per call.
	OnShared func(err error)
	// Now is the clock given to the shared quota and that paces its
	// retries after a failure; default time.Now.
	Now func() time.Time
}

// Limits is the token buckets of one process (one account): one per region
// and API action, shared by every lister. A bucket halves its rate when the
// API throttles — once per throttling window, since every call refused in
// one window is the same news — never below a sixteenth of QPS, and climbs
// back by a tenth of QPS every 20 calls that pass. With a shared quota
// (LimitsOptions.Shared), a call that its bucket let go also waits for the
// quota that all replicas share. That quota keeps its rate: when the API
// throttles, each replica's bucket halves, and the group slows with them.
type Limits struct {
	opts    LimitsOptions
	mu      sync.Mutex
	buckets map[limitKey]*bucket

	sharedMu sync.Mutex
	// sharedErr is the shared quota's last failure, nil while it works;
	// until retryAt, calls skip it, and pause is the wait before that.
	sharedErr error
	retryAt   time.Time
	pause     time.Duration
}

type limitKey struct{ region, action string }

type bucket struct {
	lim    *rate.Limiter
	passed int
	calm   time.Time // when a throttle may halve the rate again
}

// NewLimits builds a registry of token buckets, and of the shared quota's
// state if opts.Shared is set.
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
	opts.Account = diff.AccountOf(opts.Account)
	if opts.Now == nil {
		opts.Now = time.Now
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

// wait blocks until the call may go — by the local bucket, then by the
// shared quota if there is one — or ctx ends. The wait is progress (see
// [WithProgress]).
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
	if l.opts.Shared == nil {
		return nil
	}
	return l.waitShared(ctx, region, action)
}

// waitShared takes the call from the shared quota, waiting as often as it
// says. A failing store lets the call go: the local bucket has already
// paced it.
func (l *Limits) waitShared(ctx context.Context, region, action string) error {
	key := l.opts.Account + "/" + region + "/" + action
	for l.sharedDue() {
		tctx, cancel := context.WithTimeout(ctx, sharedTimeout)
		wait, err := l.opts.Shared.Take(tctx, key, l.opts.QPS, l.opts.Burst, l.opts.Now())
		timedOut := tctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return fmt.Errorf("wait for the shared %s quota: %w", action, ctx.Err())
		}
		if err != nil && timedOut { // the client then says only "context deadline exceeded"
			err = fmt.Errorf("cloudassist: the shared quota did not answer within %v: %w", sharedTimeout, err)
		}
		l.sharedResult(err)
		if err != nil || wait == 0 {
			return nil
		}
		if err := quotaWait(ctx, wait); err != nil {
			return fmt.Errorf("wait for the shared %s quota: %w", action, err)
		}
	}
	return nil
}

// sharedDue reports whether the shared quota should be asked: always while
// it works; after a failure, by one call once retryAt has passed.
func (l *Limits) sharedDue() bool {
	l.sharedMu.Lock()
	defer l.sharedMu.Unlock()
	if l.sharedErr == nil {
		return true
	}
	now := l.opts.Now()
	if now.Before(l.retryAt) {
		return false
	}
	l.retryAt = now.Add(l.pause) // the others wait for this call's verdict
	return true
}

// sharedResult records how a Take went, and tells OnShared when that
// changed: a failure, a failure of another cause than the last, or
// recovery. Causes are compared, not errors, since an error names the
// quota's key, which differs by region and action.
func (l *Limits) sharedResult(err error) {
	l.sharedMu.Lock()
	was := l.sharedErr
	l.sharedErr = err
	switch {
	case err == nil:
		l.pause = 0
	case was == nil:
		l.pause = sharedRetryMin
	default:
		l.pause = min(2*l.pause, sharedRetryMax)
	}
	if err != nil {
		l.retryAt = l.opts.Now().Add(l.pause)
	}
	l.sharedMu.Unlock()
	changed := (was == nil) != (err == nil) || err != nil && cause(was) != cause(err)
	if changed && l.opts.OnShared != nil {
		l.opts.OnShared(err)
	}
}

// cause is the text of the innermost error err wraps.
func cause(err error) string {
	for next := errors.Unwrap(err); next != nil; next = errors.Unwrap(err) {
		err = next
	}
	return err.Error()
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

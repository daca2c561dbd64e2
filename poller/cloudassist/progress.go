package cloudassist

import (
	"context"
	"time"
)

type progressKey struct{}

// progressEvery is how often a wait for the API's quota reports progress
// while it lasts.
const progressEvery = 100 * time.Millisecond

// WithProgress returns a context under which the listers report waiting
// for the API's quota — a throttled call's wait for the next window, the
// rate limit's wait for a token — as progress: progress is called when
// such a wait begins, at least every 100ms while it lasts, and when it
// ends. A caller that fails a listing which made no progress for a while
// (a stall) thus tells a throttled API, which is slow, from a hung one.
// Other waits (the backoff after a transient error) and the calls
// themselves report nothing.
func WithProgress(ctx context.Context, progress func()) context.Context {
	return context.WithValue(ctx, progressKey{}, progress)
}

// quotaWait waits d, or until ctx ends, reporting progress to ctx's
// WithProgress function throughout.
func quotaWait(ctx context.Context, d time.Duration) error {
	progress, _ := ctx.Value(progressKey{}).(func())
	if progress == nil {
		return sleep(ctx, d)
	}
	progress()
	defer progress()
	timer := time.NewTimer(d)
	defer timer.Stop()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return nil
		case <-tick.C:
			progress()
		}
	}
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// reportsWaits gives a lister the WithProgress method of
// poller.ProgressReporter: its waits for the API's quota are progress.
type reportsWaits struct{}

// WithProgress returns ctx under which the lister reports its waits for
// the API's quota to progress (see the package's WithProgress).
func (reportsWaits) WithProgress(ctx context.Context, progress func()) context.Context {
	return WithProgress(ctx, progress)
}

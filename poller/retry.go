package poller

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
)

// Run polls now and then every interval until ctx ends, and returns nil
// then. Failed cycles are retried after a pause chosen by the error's
// class — except a cycle that found its claim on the shard gone (see
// [Options.Claim]) or its write refused by a newer owner
// ([checkpoint.ErrFenced]): Run returns that error, for retrying would
// write over the new owner.
func (p *Poller) Run(ctx context.Context) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = time.Second, p.opts.MaxBackoff, 0
	bo.Reset()
	var failures int
	var lastErr string
	timer := time.NewTimer(0)
	defer timer.Stop()
	p.opts.Metrics.takeSummary(p.opts.Shard) // a period begins with this owner
	p.summarySince = p.opts.Now()
	hints := newHintLoop(p.hints)
	defer hints.stop()
	for {
		select {
		case <-ctx.Done():
			p.log.Info("poller stopped")
			return nil
		case <-timer.C:
		case <-hints.ready():
			if err := p.lookUpHinted(ctx, hints); err != nil {
				return err
			}
			continue
		}
		start := p.opts.Now()
		rep := p.RunOnce(ctx)
		if every := p.opts.SummaryEvery; every > 0 && p.opts.Now().Sub(p.summarySince) >= every {
			p.logSummary(p.opts.Now())
		}
		// Before the check of ctx: the group cancels a poller whose lease it
		// found taken at about the moment the store refuses its commit, and
		// the refusal must still be told.
		if errors.Is(rep.Err, checkpoint.ErrFenced) || errors.Is(rep.Err, ErrClaimExpired) {
			p.log.Warn("the shard is no longer this replica's; stopping its poller", zap.Error(rep.Err))
			return rep.Err
		}
		if ctx.Err() != nil {
			continue // shutting down: the cancelled cycle is not an error
		}
		if rep.Err == nil {
			if failures > 0 {
				p.log.Info("poller recovered", zap.Int("failed_cycles", failures))
			}
			failures, lastErr = 0, ""
			bo.Reset()
			if len(rep.Transitions) > 0 {
				p.log.Debug("cycle published", zap.Int("events", len(rep.Transitions)), zap.Int("records", rep.Records))
			}
			timer.Reset(max(p.opts.Interval-p.opts.Now().Sub(start), 0))
			continue
		}
		failures++
		class, wait := p.retryAfter(rep.Err, bo)
		p.opts.Metrics.backoff(p.opts.Shard, class, wait)
		fields := []zap.Field{zap.Error(rep.Err), zap.String("class", class), zap.Duration("retry_in", wait), zap.Int("failures", failures)}
		if msg := failureSignature(rep.Err); msg != lastErr {
			lastErr = msg
			if class == "permanent" {
				p.log.Error("cycle failed; check the configuration", fields...)
			} else {
				p.log.Warn("cycle failed", fields...)
			}
		} else {
			p.log.Debug("cycle failed again", fields...)
		}
		timer.Reset(wait)
	}
}

// failureSignature is what tells one failure from another in the logs:
// the error's text without its request ids (each try has a new one), so
// that a failure repeated is logged once per change.
func failureSignature(err error) string {
	msg := err.Error()
	var b strings.Builder
	for {
		i := strings.Index(msg, "(request ")
		if i < 0 {
			break
		}
		j := strings.IndexByte(msg[i:], ')')
		if j < 0 {
			break
		}
		b.WriteString(msg[:i])
		msg = msg[i+j+1:]
	}
	b.WriteString(msg)
	return strings.Join(strings.FieldsFunc(b.String(), func(r rune) bool { return r == ' ' }), " ")
}

// retryAfter classifies a failed cycle and picks the pause before the next.
func (p *Poller) retryAfter(err error, bo backoff.BackOff) (string, time.Duration) {
	var cycleErr *CycleError
	if errors.As(err, &cycleErr) && cycleErr.Stage == StageFetch {
		if rc, ok := errors.AsType[RetryClasser](err); ok {
			switch {
			case rc.Throttled():
				return "throttled", untilNextMinute(p.opts.Now())
			case rc.Permanent():
				return "permanent", p.opts.PermanentRetry
			}
		}
	}
	return "transient", bo.NextBackOff()
}

// untilNextMinute waits past the next minute boundary — the API throttles
// in one-minute windows — plus up to 5s of jitter so that shards do not
// return together.
func untilNextMinute(now time.Time) time.Duration {
	next := now.Truncate(time.Minute).Add(time.Minute)
	return next.Sub(now) + time.Duration(rand.Int64N(int64(5*time.Second)))
}

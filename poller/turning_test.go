package poller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/testenv"
)

// wedgedLister lists nothing until released, whatever its context says:
// a call that ignores cancellation.
type wedgedLister struct{ entered, release chan struct{} }

func (l wedgedLister) Snapshot(context.Context) (diff.Snapshot, error) {
	close(l.entered)
	<-l.release
	return diff.Snapshot{}, context.Canceled
}

// TestPollerTurningSaysWhenACycleIsWedged: a cycle that makes no progress
// well past its stall timeout (its cancellation ignored) makes Turning
// fail, and Turning is fine again once the cycle returns.
func TestPollerTurningSaysWhenACycleIsWedged(t *testing.T) {
	h := newHarness(t)
	_, st, pub := h.parts(50)
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	lister := wedgedLister{entered: make(chan struct{}), release: make(chan struct{})}
	p := h.poller(lister, st, pub, func(o *poller.Options) { o.Now, o.StallTimeout = clock.Now, time.Minute })
	if err := p.Turning(clock.Now().Add(time.Hour)); err != nil {
		t.Errorf("between cycles: %v", err)
	}
	done := make(chan poller.Report, 1)
	go func() { done <- p.RunOnce(t.Context()) }()
	<-lister.entered
	clock.Add(2 * time.Minute) // past the stall timeout, within the grace
	if err := p.Turning(clock.Now()); err != nil {
		t.Errorf("two minutes into a cycle with a one-minute stall timeout: %v", err)
	}
	clock.Add(time.Minute)
	err := p.Turning(clock.Now())
	if err == nil || !strings.Contains(err.Error(), "stuck") || !strings.Contains(err.Error(), shard.String()) {
		t.Errorf("three minutes without progress: %v", err)
	}
	close(lister.release)
	<-done
	if err := p.Turning(clock.Now()); err != nil {
		t.Errorf("after the cycle returned: %v", err)
	}
}

// TestGroupTurningSaysWhenItsRoundsStop: Turning fails once no round has
// ended for three lease TTLs (at least a minute), and is fine after the
// next one.
func TestGroupTurningSaysWhenItsRoundsStop(t *testing.T) {
	client, prefix := testenv.Redis(t)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	r := newGroupReplica(t, "r1", store, []diff.Shard{shard}, clock)
	if err := r.g.Turning(clock.Now().Add(time.Hour)); err != nil {
		t.Errorf("before the first round: %v", err)
	}
	r.g.Step(t.Context())
	clock.Add(55 * time.Second)
	if err := r.g.Turning(clock.Now()); err != nil {
		t.Errorf("55s after a round (lease TTL 15s): %v", err)
	}
	clock.Add(10 * time.Second)
	if err := r.g.Turning(clock.Now()); err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Errorf("65s after a round: %v", err)
	}
	r.g.Step(t.Context())
	if err := r.g.Turning(clock.Now()); err != nil {
		t.Errorf("after the next round: %v", err)
	}
}

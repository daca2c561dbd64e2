package poller_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/testenv"
)

// fakeClock is a controlled clock shared by the replicas of a test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// storeClock is a store whose own clock, told by its heartbeats, is the
// test's controlled clock (Redis tells its real one).
type storeClock struct {
	poller.LeaseStore
	clock *fakeClock
}

func (s storeClock) Heartbeat(ctx context.Context, m checkpoint.Member, ttl time.Duration, now time.Time) (checkpoint.Roster, error) {
	r, err := s.LeaseStore.Heartbeat(ctx, m, ttl, now)
	r.Now = s.clock.Now()
	return r, err
}

// groupReplica is one replica of a test group: a Group whose pollers only
// wait for their context, counting how many run.
type groupReplica struct {
	id      string
	g       *poller.Group
	polling atomic.Int32
	claims  sync.Map // shard -> *poller.Claim
	// expire makes its pollers stop when their claim expires, as a real
	// poller's next cycle does; by default they wait for their context.
	expire atomic.Bool
}

func newGroupReplica(t *testing.T, id string, store poller.LeaseStore, shards []diff.Shard, clock *fakeClock, with ...func(*poller.GroupOptions)) *groupReplica {
	t.Helper()
	r := &groupReplica{id: id}
	opts := poller.GroupOptions{
		Replica: checkpoint.Member{ID: id}, Store: storeClock{store, clock}, Shards: shards, LeaseTTL: 15 * time.Second, Now: clock.Now,
		Poll: func(ctx context.Context, shard diff.Shard, claim *poller.Claim) error {
			r.polling.Add(1)
			defer r.polling.Add(-1)
			r.claims.Store(shard, claim)
			check := time.NewTicker(time.Millisecond)
			defer check.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-check.C:
					if err := claim.Valid(); err != nil && r.expire.Load() {
						return err // as a poller's next cycle finds it
					}
				}
			}
		},
	}
	for _, w := range with {
		w(&opts)
	}
	g, err := poller.NewGroup(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.g = g
	return r
}

// settle steps the live replicas until every shard has exactly one owner
// and the loads are as wanted, or fails after a deadline. Stepping is
// what a tick does; the deadline only bounds pollers noticing their
// cancelled context.
func settle(t *testing.T, live []*groupReplica, shards int, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		owned := map[diff.Shard]string{}
		loads := map[string]int{}
		double := ""
		for _, r := range live {
			r.g.Step(t.Context())
			for _, s := range r.g.Owned() {
				if owned[s] != "" {
					double = fmt.Sprintf("%s owned by %s and %s", s, owned[s], r.id)
				}
				owned[s] = r.id
				loads[r.id]++
			}
		}
		if double != "" {
			t.Fatal(double)
		}
		ok := len(owned) == shards
		for id, n := range want {
			ok = ok && loads[id] == n
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: %d of %d shards owned, loads %v, want %v", len(owned), shards, loads, want)
		}
		time.Sleep(5 * time.Millisecond) // let cancelled pollers return; the clock does not move
	}
}

// TestGroupSharesShardsAndMovesThemOnFailure runs replicas on a real
// Redis store with a controlled clock: three share 12 shards 4/4/4; one
// stops (killed: no more steps) and, once a TTL has passed, the two others
// take its shards; a fourth joins and the shards rebalance; a graceful
// stop hands its shards over at once.
func TestGroupSharesShardsAndMovesThemOnFailure(t *testing.T) {
	client, prefix := testenv.Redis(t)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var shards []diff.Shard
	for _, account := range []string{"prod", "staging"} {
		for _, region := range []string{"cn-hangzhou", "cn-shanghai", "cn-beijing"} {
			for _, src := range []diff.Source{diff.SourceECS, diff.SourceSWAS} {
				shards = append(shards, diff.Shard{Account: account, Source: src, Region: region})
			}
		}
	}
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	r1, r2, r3 := newGroupReplica(t, "r1", store, shards, clock), newGroupReplica(t, "r2", store, shards, clock), newGroupReplica(t, "r3", store, shards, clock)
	settle(t, []*groupReplica{r1, r2, r3}, 12, map[string]int{"r1": 4, "r2": 4, "r3": 4})

	// r2 is killed. Until its leases expire its shards stay its own: nobody else
	// may poll them while its lease could be live.
	clock.Add(10 * time.Second)
	for _, r := range []*groupReplica{r1, r3} {
		r.g.Step(t.Context())
		if n := len(r.g.Owned()); n != 4 {
			t.Fatalf("%s owns %d shards before r2's leases expired, want 4", r.id, n)
		}
	}
	clock.Add(3 * time.Second) // r2's heartbeat and leases (written for 12 s) are 13 s old
	settle(t, []*groupReplica{r1, r3}, 12, map[string]int{"r1": 6, "r3": 6})
	var r2Claim *poller.Claim
	r2.claims.Range(func(_, v any) bool { r2Claim = v.(*poller.Claim); return false })
	if err := r2Claim.Valid(); !errors.Is(err, poller.ErrClaimExpired) {
		t.Fatalf("the killed replica's claim is still valid: %v", err)
	}
	leases, err := store.Leases(t.Context(), shards)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.Owner == "r2" || l.Token == 0 {
			t.Errorf("lease of %s: %+v", l.Shard, l)
		}
	}

	// A fourth replica joins: about a third of the shards move to it.
	r4 := newGroupReplica(t, "r4", store, shards, clock)
	settle(t, []*groupReplica{r1, r3, r4}, 12, map[string]int{"r1": 4, "r3": 4, "r4": 4})
	for _, l := range mustLeases(t, store, shards) {
		if l.Owner == "r4" && l.Token < 2 {
			t.Errorf("%s moved to r4 with token %d: a new owner needs a larger token", l.Shard, l.Token)
		}
	}

	// r4 stops gracefully: its leases are released at once, so the others
	// take its shards without waiting for a TTL (the clock does not move).
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r4.g.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := r4.polling.Load(); n != 0 {
		t.Fatalf("%d pollers of r4 still run after it stopped", n)
	}
	settle(t, []*groupReplica{r1, r3}, 12, map[string]int{"r1": 6, "r3": 6})
}

func mustLeases(t *testing.T, s *checkpoint.Redis, shards []diff.Shard) []checkpoint.Lease {
	t.Helper()
	leases, err := s.Leases(t.Context(), shards)
	if err != nil {
		t.Fatal(err)
	}
	return leases
}

// TestClaimExpiresBeforeTheLease: a replica whose renewals stop (paused,
// cut off from the store) finds its claim invalid a third of the TTL
// before its lease could be taken over.
func TestClaimExpiresBeforeTheLease(t *testing.T) {
	client, prefix := testenv.Redis(t)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	r := newGroupReplica(t, "r1", store, []diff.Shard{shard}, clock)
	settle(t, []*groupReplica{r}, 1, map[string]int{"r1": 1})
	deadline := time.Now().Add(5 * time.Second)
	var claim *poller.Claim
	for claim == nil && time.Now().Before(deadline) {
		if v, ok := r.claims.Load(shard); ok {
			claim = v.(*poller.Claim)
		}
		time.Sleep(time.Millisecond)
	}
	if claim == nil {
		t.Fatal("the poller never started")
	}
	// A 15 s TTL with a 3 s tick writes 12 s leases; a claim lasts two
	// thirds of that.
	clock.Add(7 * time.Second)
	if err := claim.Valid(); err != nil {
		t.Fatalf("claim invalid 7 s into a 12 s lease: %v", err)
	}
	clock.Add(time.Second + time.Millisecond)
	if err := claim.Valid(); !errors.Is(err, poller.ErrClaimExpired) {
		t.Fatalf("claim still valid 8 s into a 12 s lease: %v", err)
	}
	r.g.Step(t.Context()) // a renewal brings it back
	if err := claim.Valid(); err != nil {
		t.Fatalf("claim invalid after a renewal: %v", err)
	}
}

// TestAFencedPollerStopsAndPublishesNothing: a poller whose lease was taken
// over (a newer owner acquired the shard) has its next write refused by
// the store, publishes nothing, and ends Run with ErrFenced instead of
// retrying over the new owner; the new owner then announces the change.
func TestAFencedPollerStopsAndPublishesNothing(t *testing.T) {
	h := newHarness(t)
	lister, old, pub := h.parts(50)
	t0 := time.Now()
	lease, err := old.Acquire(t.Context(), shard, "old", 15*time.Second, t0)
	if err != nil {
		t.Fatal(err)
	}
	old.Fence(shard, lease.Token)
	p := h.poller(lister, old, pub, nil)
	mustRunOnce(t, p) // the baseline, under the old owner's lease

	newer := h.store()
	taken, err := newer.Acquire(t.Context(), shard, "new", 15*time.Second, t0.Add(16*time.Second))
	if err != nil || taken.Token <= lease.Token {
		t.Fatalf("take-over: %+v %v", taken, err)
	}
	newer.Fence(shard, taken.Token)
	invoke := h.run("exit 3", 0, h.instances[0])
	eventually(t, 10*time.Second, "the command to fail", func() bool {
		for _, e := range h.sim.Truth() {
			if e.InvokeID == invoke && e.InstanceID == "" && e.To == "Failed" {
				return true
			}
		}
		return false
	})
	err = p.Run(t.Context())
	if !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("Run of a fenced poller returned %v, want ErrFenced", err)
	}
	if evs := h.events(); len(evs) != 0 {
		t.Fatalf("a fenced poller published %d events", len(evs))
	}
	lister2, _, _ := h.parts(50)
	mustRunOnce(t, h.poller(lister2, newer, pub, nil))
	final := finalFromEvents(h.events())
	if got := final[diff.Key{InvokeID: invoke}].Status; got != "Failed" {
		t.Fatalf("the new owner announced %q for the failed invocation", got)
	}
}

package poller_test

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/capoller/capoller/poller"
)

// TestABusOutageMovesNothingWithClocksHalfASecondApart: when NATS goes
// down for every replica, nothing moves (the group's rule: nobody can do
// better). A replica steps back when another's last good probe was sent
// after its own first failed one, comparing two replicas' clocks: with
// b's clock half a second ahead of a's (NTP keeps far less; the brief
// allows "well within a TTL"), b's last good probe, sent just before the
// outage, looks sent after a's first failed one, sent just after it, and
// a steps back, handing its shards to b, which cannot publish either.
func TestABusOutageMovesNothingWithClocksHalfASecondApart(t *testing.T) {
	t.Skip("design decision (review of issue 18): stepping back compares a peer's BusOK, on its clock, with this replica's firstFail, on its own, to the millisecond: a skew of a fraction of a tick moves every shard of a replica in a whole-NATS outage. Needs a margin (a tick: one round slower to step back) or one clock (Redis TIME, KV entry times)")
	store := redisStore(t)
	shards := regionShards("a", "r1", "r2", "r3", "r4", "r5", "r6")
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	pa, pb := &gatedProbe{}, &gatedProbe{}
	a := newGroupReplica(t, "a", store, shards, clock, func(o *poller.GroupOptions) { o.Probe = pa.probe })
	b := newGroupReplica(t, "b", store, shards, clock, func(o *poller.GroupOptions) {
		o.Probe = pb.probe
		o.Now = func() time.Time { return clock.Now().Add(500 * time.Millisecond) }
	})
	settle(t, []*groupReplica{a, b}, 6, map[string]int{"a": 3, "b": 3})
	for range 3 { // a's rounds come 100ms after b's
		clock.Add(2900 * time.Millisecond)
		b.g.Step(t.Context())
		clock.Add(100 * time.Millisecond)
		a.g.Step(t.Context())
	}
	// b's round: a good probe. Then NATS goes down for both, and a's
	// round 100ms later fails its probe.
	clock.Add(2900 * time.Millisecond)
	b.g.Step(t.Context())
	pa.down.Store(true)
	pb.down.Store(true)
	for range 4 {
		clock.Add(100 * time.Millisecond)
		a.g.Step(t.Context())
		clock.Add(2900 * time.Millisecond)
		b.g.Step(t.Context())
		waitPollers(t, a, b)
	}
	if la, lb := len(a.g.Owned()), len(b.g.Owned()); la != 3 || lb != 3 {
		t.Errorf("with NATS down for every replica, the shards moved: a owns %d, b %d", la, lb)
	}
}

// TestAnExclusionLastsAtLeastItsFirstTime: a shard whose lease this
// replica's store keeps refusing is left to the others for 10 lease TTLs,
// doubled each time it fails again, up to 160. The doubling is a shift
// by the exclusions so far: past about 60 of them (a slot this replica
// can never reach: 37 hours of 160-TTL exclusions; 3 rounds each while it
// is the only one listing the shard) it overflowed, and the exclusion
// ended as it began, handing the shard back to a replica that cannot take
// it every few rounds.
func TestAnExclusionLastsAtLeastItsFirstTime(t *testing.T) {
	store := redisStore(t)
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	core, logs := observer.New(zapcore.WarnLevel)
	bad := newGroupReplica(t, "bad", failingAcquire{store}, regionShards("a", "cn-hangzhou"), clock,
		func(o *poller.GroupOptions) { o.Logger = zap.New(core) })
	const ttl = 15 * time.Second
	exclusions := 0
	for range 3 * 70 {
		now := clock.Now()
		bad.g.Step(t.Context())
		clock.Add(3 * time.Second)
		for _, e := range logs.FilterMessageSnippet("leaving it to the other replicas").All()[exclusions:] {
			exclusions++
			until, _ := e.ContextMap()["until"].(time.Time)
			want := 160 * ttl
			if exclusions <= 4 {
				want = []time.Duration{10 * ttl, 20 * ttl, 40 * ttl, 80 * ttl}[exclusions-1]
			}
			if d := until.Sub(now); d != want {
				t.Errorf("exclusion %d lasts %v, want %v", exclusions, d, want)
			}
		}
	}
	if exclusions < 65 {
		t.Fatalf("%d exclusions in 210 rounds", exclusions)
	}
}

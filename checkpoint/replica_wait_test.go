package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

var waitShard = diff.Shard{Account: "acme", Source: diff.SourceECS, Region: "cn-hangzhou"}

// commitStatus commits key at status (a batch with one event), fenced.
func commitStatus(ctx context.Context, s *checkpoint.Redis, shard diff.Shard, key diff.Key, status diff.Status) error {
	tr := diff.Transition{Source: shard.Source, Region: shard.Region, Previous: diff.StatusRunning,
		Record: diff.Record{Key: key, Status: status}}
	tr.ID = diff.EventID(tr)
	return s.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: status}}}, []diff.Transition{tr})
}

// statusOf is the checkpointed status of key, "" if none.
func statusOf(t *testing.T, s *checkpoint.Redis, shard diff.Shard, key diff.Key) diff.Status {
	t.Helper()
	prev, err := s.Load(t.Context(), shard, []diff.Key{key})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return prev.States[key].Status
}

// promote makes a replica a master (REPLICAOF NO ONE, what a failover
// does) and returns a store on it.
func promote(t *testing.T, replica *testenv.RedisProcess, prefix string) *checkpoint.Redis {
	t.Helper()
	c := replica.Client()
	if err := c.ReplicaOf(t.Context(), "NO", "ONE").Err(); err != nil {
		t.Fatalf("promote %s: %v", replica.Addr, err)
	}
	s, err := checkpoint.NewRedis(c, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRedisWriteLostInAFailover shows what a failover does to a write
// Redis acknowledged before its replica had it, with the wait off and
// with a wait that counts only the replicas listed online: the replica,
// paused, is cut from the master (CLIENT KILL), the commit is
// acknowledged, the master dies, the replica is promoted — and the
// commit is gone: the checkpoint is back behind what the stream
// announced. With the grace (the default), the replica that just left is
// still waited for, and the commit fails instead of being acknowledged.
func TestRedisWriteLostInAFailover(t *testing.T) {
	for _, tc := range []struct {
		name        string
		wait, grace time.Duration
		lost        bool
	}{
		{"wait off", -1, 0, true},
		{"wait without grace", 300 * time.Millisecond, -1, true},
		{"wait with grace", 300 * time.Millisecond, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, replicas := testenv.RedisReplicated(t, 1)
			ctx := t.Context()
			prefix := testenv.Name("capoller_test") + ":"
			s, err := checkpoint.NewRedis(master.Client(), checkpoint.RedisOptions{KeyPrefix: prefix, ReplicaWait: tc.wait, ReplicaGrace: tc.grace})
			if err != nil {
				t.Fatal(err)
			}
			l := acquireAndFence(t, s, waitShard, "a", leaseEpoch())
			key := diff.Key{InvokeID: "t-1"}
			if err := commitStatus(ctx, s, waitShard, key, diff.StatusRunning); err != nil {
				t.Fatalf("first commit, the replica up: %v", err)
			}
			first := recordsOn(t, master, prefix, waitShard)
			testenv.WaitFor(t, 10*time.Second, "the first commit on the replica", func() error {
				if got := recordsOn(t, replicas[0], prefix, waitShard); !maps.Equal(got, first) {
					return fmt.Errorf("the replica holds %v", got)
				}
				return nil
			})
			replicas[0].Pause()
			if err := master.Client().ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
				t.Fatal(err)
			}
			master.WaitReplicas(0)
			err = commitStatus(ctx, s, waitShard, key, diff.StatusSuccess)
			if tc.lost && err != nil {
				t.Fatalf("the commit was refused: %v", err)
			}
			if !tc.lost && !errors.Is(err, checkpoint.ErrNotReplicated) {
				t.Fatalf("the commit that no replica has: %v, want ErrNotReplicated", err)
			}
			if got := statusOf(t, s, waitShard, key); got != diff.StatusSuccess {
				t.Fatalf("the master holds %q: the commit ran there either way", got)
			}
			master.Kill()
			replicas[0].Resume()
			promoted := promote(t, replicas[0], prefix)
			if got := statusOf(t, promoted, waitShard, key); got != diff.StatusRunning {
				t.Fatalf("the promoted replica holds %q, want the first commit's %q", got, diff.StatusRunning)
			}
			leases, err := promoted.Leases(ctx, []diff.Shard{waitShard})
			if err != nil || leases[0].Token != l.Token {
				t.Fatalf("the promoted replica's lease %+v (%v), want token %d", leases, err, l.Token)
			}
		})
	}
}

// TestRedisWaitsForTheReplica: with a replica paused (its link up, so the
// master lists it online), every write that matters fails with
// ErrNotReplicated — lease taken and renewed, staged batch, commit, known
// mark, and the staged read's barrier — though it ran on the master; once
// the replica resumes they succeed. A commit that waited for the
// replica, acknowledged once the replica resumed, survives the master's
// death and the replica's promotion.
func TestRedisWaitsForTheReplica(t *testing.T) {
	master, replicas := testenv.RedisReplicated(t, 1)
	ctx := t.Context()
	prefix := testenv.Name("capoller_test") + ":"
	const wait = 250 * time.Millisecond
	s, err := checkpoint.NewRedis(master.Client(), checkpoint.RedisOptions{KeyPrefix: prefix, ReplicaWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	t0 := leaseEpoch()
	l := acquireAndFence(t, s, waitShard, "a", t0)
	key := diff.Key{InvokeID: "t-1"}
	if err := commitStatus(ctx, s, waitShard, key, diff.StatusRunning); err != nil {
		t.Fatal(err)
	}
	if got, want := recordsOn(t, replicas[0], prefix, waitShard), recordsOn(t, master, prefix, waitShard); !maps.Equal(got, want) {
		t.Fatalf("the replica holds %v right after an acknowledged commit, the master %v", got, want)
	}

	replicas[0].Pause()
	other := diff.Shard{Account: "acme", Source: diff.SourceSWAS, Region: "cn-hangzhou"}
	for _, w := range []struct {
		what string
		err  func() error
	}{
		{"acquire", func() error { _, err := s.Acquire(ctx, other, "a", ttl, t0); return err }},
		{"renew", func() error { _, err := s.Renew(ctx, l, ttl, t0.Add(time.Second)); return err }},
		{"stage", func() error { return s.Stage(ctx, waitShard, batchOf(waitShard, key, diff.StatusSuccess, "e1")) }},
		{"staged", func() error { _, _, err := s.Staged(ctx, waitShard); return err }},
		{"commit", func() error { return commitStatus(ctx, s, waitShard, key, diff.StatusSuccess) }},
		{"mark known", func() error { return s.MarkKnown(ctx, waitShard) }},
	} {
		if err := w.err(); !errors.Is(err, checkpoint.ErrNotReplicated) {
			t.Errorf("%s with the replica paused: %v, want ErrNotReplicated", w.what, err)
		}
	}
	if n := s.Unreplicated(); n != 6 {
		t.Errorf("%d writes counted unreplicated, want the 6 refused", n)
	}
	if got := statusOf(t, s, waitShard, key); got != diff.StatusSuccess {
		t.Fatalf("the master holds %q: the commit ran there", got)
	}

	// A commit that is acknowledged only once the replica has it.
	done := make(chan error, 1)
	slow, err := checkpoint.NewRedis(master.Client(), checkpoint.RedisOptions{KeyPrefix: prefix, ReplicaWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	slow.Fence(waitShard, l.Token)
	go func() { done <- commitStatus(ctx, slow, waitShard, key, diff.StatusFailed) }()
	testenv.WaitFor(t, 10*time.Second, "the commit to run on the master", func() error {
		if got := statusOf(t, s, waitShard, key); got != diff.StatusFailed {
			return fmt.Errorf("the master holds %q", got)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("the commit returned (%v) while the replica is paused", err)
	default:
	}
	replicas[0].Resume()
	if err := <-done; err != nil {
		t.Fatalf("the commit, the replica resumed: %v", err)
	}
	master.Kill()
	promoted := promote(t, replicas[0], prefix)
	if got := statusOf(t, promoted, waitShard, key); got != diff.StatusFailed {
		t.Fatalf("the promoted replica holds %q, want the acknowledged commit's %q", got, diff.StatusFailed)
	}
	promoted.Fence(waitShard, l.Token)
	if err := commitStatus(ctx, promoted, waitShard, key, diff.StatusSuccess); err != nil {
		t.Fatalf("a commit on the promoted replica, with the lease's token: %v", err)
	}
}

// recordsOn reads a shard's records hash straight from the server p (a
// replica, or one node of a cluster), as stored.
func recordsOn(t *testing.T, p *testenv.RedisProcess, prefix string, shard diff.Shard) map[string]string {
	t.Helper()
	h, err := p.Client().HGetAll(t.Context(), prefix+"records:{"+shard.String()+"}").Result()
	if err != nil {
		t.Fatalf("read the records of %s on %s: %v", shard, p.Addr, err)
	}
	return h
}

// TestClusterRedisWaitsForEachMastersReplica: in a Redis Cluster with a
// replica per master, a write waits for the replica of its own slot's
// master only; after CLUSTER FAILOVER FORCE on that replica, the store
// follows the slot to its new master and every acknowledged commit and
// the lease's token are there.
func TestClusterRedisWaitsForEachMastersReplica(t *testing.T) {
	client, prefix, nodes := testenv.RedisClusterWithReplicas(t)
	ctx := t.Context()
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix, ReplicaWait: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// One shard on the first master, one elsewhere.
	var here, there diff.Shard
	for shard, addr := range masters(t, client, prefix, clusterShards(24)) {
		if addr == nodes.Masters[0].Addr {
			here = shard
		} else {
			there = shard
		}
	}
	if here.Region == "" || there.Region == "" {
		t.Fatal("no shard on the first master, or none elsewhere")
	}
	t0 := leaseEpoch()
	lHere := acquireAndFence(t, s, here, "a", t0)
	acquireAndFence(t, s, there, "a", t0)
	key := diff.Key{InvokeID: "t-1"}
	for _, shard := range []diff.Shard{here, there} {
		if err := commitStatus(ctx, s, shard, key, diff.StatusRunning); err != nil {
			t.Fatalf("commit %s: %v", shard, err)
		}
	}

	nodes.Replicas[0].Pause()
	if err := commitStatus(ctx, s, here, key, diff.StatusSuccess); !errors.Is(err, checkpoint.ErrNotReplicated) {
		t.Errorf("a commit on the master whose replica is paused: %v, want ErrNotReplicated", err)
	}
	if err := commitStatus(ctx, s, there, key, diff.StatusSuccess); err != nil {
		t.Errorf("a commit on another master: %v", err)
	}
	nodes.Replicas[0].Resume()
	testenv.WaitFor(t, 10*time.Second, "a commit once the replica resumed", func() error {
		return commitStatus(ctx, s, here, key, diff.StatusSuccess)
	})

	if err := nodes.Replicas[0].Client().Do(ctx, "CLUSTER", "FAILOVER", "FORCE").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "the replica taking the slot over", func() error {
		addr, err := testenv.MasterOf(ctx, client, prefix+"records:{"+here.String()+"}")
		if err == nil && addr != nodes.Replicas[0].Addr {
			err = fmt.Errorf("the slot is on %s", addr)
		}
		return err
	})
	testenv.WaitFor(t, 30*time.Second, "a commit on the new master", func() error {
		return commitStatus(ctx, s, here, key, diff.StatusFailed)
	})
	if got := statusOf(t, s, here, key); got != diff.StatusFailed {
		t.Errorf("the store reads %q after the failover, want %q", got, diff.StatusFailed)
	}
	if leases, err := s.Leases(ctx, []diff.Shard{here}); err != nil || leases[0].Token != lHere.Token {
		t.Errorf("the lease after the failover: %+v (%v), want token %d", leases, err, lHere.Token)
	}
}

// TestSentinelFailoverKeepsAcknowledgedWrites: a master with two replicas
// and three sentinels; the master is killed right after an acknowledged
// commit, the sentinels promote a replica, and the store, through the
// failover client, finds the commit and the lease there and goes on.
func TestSentinelFailoverKeepsAcknowledgedWrites(t *testing.T) {
	sen := testenv.RedisSentinelWithReplicas(t)
	ctx := t.Context()
	prefix := testenv.Name("capoller_test") + ":"
	s, err := checkpoint.NewRedis(sen.Client(t), checkpoint.RedisOptions{KeyPrefix: prefix, ReplicaWait: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l := acquireAndFence(t, s, waitShard, "a", leaseEpoch())
	var keys []diff.Key
	for i := range 50 {
		key := diff.Key{InvokeID: fmt.Sprintf("t-%d", i)}
		keys = append(keys, key)
		if err := commitStatus(ctx, s, waitShard, key, diff.StatusSuccess); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	sen.Master.Kill()
	next := diff.Key{InvokeID: "after"}
	testenv.WaitFor(t, 30*time.Second, "a commit on the promoted replica", func() error {
		return commitStatus(ctx, s, waitShard, next, diff.StatusSuccess)
	})
	prev, err := s.Load(ctx, waitShard, keys)
	if err != nil || len(prev.States) != len(keys) {
		t.Fatalf("after the failover %d of %d commits are there (%v)", len(prev.States), len(keys), err)
	}
	if leases, err := s.Leases(ctx, []diff.Shard{waitShard}); err != nil || leases[0].Token != l.Token || leases[0].Owner != "a" {
		t.Errorf("the lease after the failover: %+v (%v), want a's token %d", leases, err, l.Token)
	}
	promoted := 0
	for _, r := range sen.Replicas {
		info, err := r.Client().Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "role:master\r\n") {
			promoted++
		}
	}
	if promoted != 1 {
		t.Errorf("%d replicas are masters, want the one promoted", promoted)
	}
}

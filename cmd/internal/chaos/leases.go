package chaos

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
)

// leaseWatch reads the shards' leases from the store, over the harness's
// own connection, every 100ms, and keeps each shard's owners over time.
type leaseWatch struct {
	read   func(ctx context.Context) ([]checkpoint.Lease, error)
	slotOf func(owner string) int

	mu      sync.Mutex
	owners  map[diff.Shard][]ownerSince // each shard's owner (a slot, or -1: none live) from when
	current map[diff.Shard]int
	reads   int
	errs    int
	lastErr string
	stopped time.Time
}

type ownerSince struct {
	at   time.Time
	slot int
}

func newLeaseWatch(read func(ctx context.Context) ([]checkpoint.Lease, error), slotOf func(string) int) *leaseWatch {
	return &leaseWatch{read: read, slotOf: slotOf, owners: map[diff.Shard][]ownerSince{}, current: map[diff.Shard]int{}}
}

// run reads until ctx ends.
func (w *leaseWatch) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		leases, err := w.read(rctx)
		cancel()
		now := time.Now()
		w.mu.Lock()
		w.reads++
		if err != nil {
			w.errs++
			w.lastErr = err.Error()
		}
		for _, l := range leases {
			s, slot := l.Shard.Canonical(), -1
			if l.Live(now) {
				slot = w.slotOf(l.Owner)
			}
			if cur, ok := w.current[s]; !ok || cur != slot {
				w.current[s] = slot
				w.owners[s] = append(w.owners[s], ownerSince{at: now, slot: slot})
			}
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.stopped = time.Now()
			w.mu.Unlock()
			return
		case <-tick.C:
		}
	}
}

// heldBy returns the shards slot holds now, as last read.
func (w *leaseWatch) heldBy(slot int) []diff.Shard {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []diff.Shard
	for s, cur := range w.current {
		if cur == slot {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// takenAt returns when shard was first seen held by a slot other than
// from at or after since, and whether it was.
func (w *leaseWatch) takenAt(shard diff.Shard, from int, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return firstSince(w.owners[shard], since, func(slot int) bool { return slot >= 0 && slot != from })
}

// lostAt returns when shard was first seen not held by slot (free, or
// another's) at or after since, and whether it was.
func (w *leaseWatch) lostAt(shard diff.Shard, slot int, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return firstSince(w.owners[shard], since, func(owner int) bool { return owner != slot })
}

// ownsAt returns when slot was first seen holding a shard at or after
// since, and whether it was.
func (w *leaseWatch) ownsAt(slot int, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first time.Time
	found := false
	for _, owners := range w.owners {
		if at, ok := firstSince(owners, since, func(owner int) bool { return owner == slot }); ok && (!found || at.Before(first)) {
			first, found = at, true
		}
	}
	return first, found
}

// firstSince returns when a shard's owners (in time order) first had one
// that is accepts at or after since (since itself when one held it
// then), and whether they did.
func firstSince(owners []ownerSince, since time.Time, is func(slot int) bool) (time.Time, bool) {
	for i, o := range owners {
		if !is(o.slot) {
			continue
		}
		if !o.at.Before(since) {
			return o.at, true
		}
		if i+1 == len(owners) || owners[i+1].at.After(since) {
			return since, true // already one at since
		}
	}
	return time.Time{}, false
}

// end is when the watch stopped.
func (w *leaseWatch) end() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped
}

// leaseReader reads the leases of shards from the run's store,
// over the harness's own connection (never through a proxy).
func leaseReader(o Options, redisURL string, js jetstream.JetStream, bucket, keyPrefix string, shards []diff.Shard) (func(context.Context) ([]checkpoint.Lease, error), func(), error) {
	if o.Checkpoint == "natskv" {
		var kv *checkpoint.KV
		return func(ctx context.Context) ([]checkpoint.Lease, error) {
			if kv == nil {
				k, err := checkpoint.NewKV(ctx, js, checkpoint.KVOptions{Bucket: bucket, OpenOnly: true})
				if err != nil {
					return nil, err // no replica created it yet, or NATS is down
				}
				kv = k
			}
			return kv.Leases(ctx, shards)
		}, func() {}, nil
	}
	client, err := checkpoint.OpenRedis(redisURL, checkpoint.RedisAuth{}) // one server, a Cluster or Sentinel (--redis)
	if err != nil {
		return nil, nil, fmt.Errorf("lease watch: %w", err)
	}
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: keyPrefix})
	if err != nil {
		_ = client.Close()
		return nil, nil, err
	}
	return func(ctx context.Context) ([]checkpoint.Lease, error) {
			leases, err := store.Leases(ctx, shards)
			if reloader, ok := client.(interface{ ReloadState(context.Context) }); ok && err != nil {
				reloader.ReloadState(ctx) // a master failed over: read the slots again, not the dead node
			}
			return leases, err
		},
		func() { _ = client.Close() }, nil
}

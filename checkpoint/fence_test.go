package checkpoint_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// batchOf is a staged batch of one event per id about key.
func batchOf(shard diff.Shard, key diff.Key, status diff.Status, ids ...string) diff.Result {
	var b diff.Result
	for _, id := range ids {
		b.Transitions = append(b.Transitions, diff.Transition{ID: id, Source: shard.Source, Region: shard.Region,
			Record: diff.Record{Key: key, Status: status}, Previous: diff.StatusRunning})
	}
	b.Updates = []diff.Update{{Key: key, State: diff.State{Status: status}}}
	return b
}

func stagedIDs(t *testing.T, s store, shard diff.Shard) string {
	t.Helper()
	b, ok, err := s.Staged(t.Context(), shard)
	if err != nil {
		t.Fatalf("staged: %v", err)
	}
	if !ok {
		return "none"
	}
	var ids []string
	for _, tr := range b.Transitions {
		ids = append(ids, tr.ID)
	}
	return strings.Join(ids, ",")
}

// acquireAndFence takes the shard for owner at now and fences the store
// with the lease's token.
func acquireAndFence(t *testing.T, s replicaStore, shard diff.Shard, owner string, now time.Time) checkpoint.Lease {
	t.Helper()
	l, err := s.Acquire(t.Context(), shard, owner, ttl, now)
	if err != nil {
		t.Fatalf("%s acquires: %v", owner, err)
	}
	s.Fence(shard, l.Token)
	return l
}

// TestFencing: owner A commits under token 1; B takes the shard over
// after A's lease expired; A, paused meanwhile, then tries every kind of
// write, each refused with ErrFenced, and a fresh process sees only what
// B saw and wrote: nothing moved backwards.
func TestFencing(t *testing.T) {
	t0 := leaseEpoch()
	shard := diff.Shard{Account: "acme", Source: diff.SourceECS, Region: "cn-hangzhou"}
	key := diff.Key{InvokeID: "t-1", InstanceID: "i-1"}
	// A's late commit also touches records in segments (KV) that nobody
	// wrote since the takeover, some that never existed.
	var spread []diff.Key
	for i := range 40 {
		spread = append(spread, diff.Key{InvokeID: fmt.Sprintf("t-spread-%d", i)})
	}
	at := func(sec int) diff.State {
		return diff.State{Status: diff.StatusRunning, Repeats: sec, ObservedAt: time.Unix(int64(sec), 0).UTC()}
	}
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			opener := open(t)
			a, b := opener(), opener()
			fenced := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, checkpoint.ErrFenced) {
					t.Fatalf("A's %s after the takeover: %v, want ErrFenced", what, err)
				}
			}
			la := acquireAndFence(t, a, shard, "a", t0)
			if la.Token != tokenAt(t0) {
				t.Fatalf("A's token %d", la.Token)
			}
			if _, err := a.Load(ctx, shard, []diff.Key{key}); err != nil {
				t.Fatal(err)
			}
			if err := a.Commit(ctx, shard, []diff.Update{{Key: key, State: at(1)}}, nil); err != nil {
				t.Fatal(err)
			}
			if err := a.Stage(ctx, shard, batchOf(shard, key, diff.StatusSuccess, "a-1")); err != nil {
				t.Fatal(err)
			}

			lb := acquireAndFence(t, b, shard, "b", la.Expires)
			if lb.Token <= la.Token {
				t.Fatalf("B's token %d", lb.Token)
			}
			prev, err := b.Load(ctx, shard, append([]diff.Key{key}, spread...))
			if err != nil || prev.States[key] != at(1) || len(prev.States) != 1 || prev.Known {
				t.Fatalf("B loads what A committed: %+v, %v", prev, err)
			}
			if got := stagedIDs(t, b, shard); got != "a-1" {
				t.Fatalf("B finds A's staged batch %q", got)
			}

			var late []diff.Update
			for _, k := range append([]diff.Key{key}, spread...) {
				late = append(late, diff.Update{Key: k, State: at(2)})
			}
			fenced("commit", a.Commit(ctx, shard, late, []diff.Transition{{ID: "a-2"}}))
			fenced("stage", a.Stage(ctx, shard, batchOf(shard, key, diff.StatusFailed, "a-2")))
			fenced("known mark", a.MarkKnown(ctx, shard))
			fenced("second commit", a.Commit(ctx, shard, late[:1], nil))

			fresh := opener()
			prev, err = fresh.Load(ctx, shard, append([]diff.Key{key}, spread...))
			if err != nil || prev.States[key] != at(1) || len(prev.States) != 1 || prev.Known {
				t.Fatalf("a fresh process after A's refused writes: %+v, %v", prev, err)
			}
			if got := stagedIDs(t, fresh, shard); got != "a-1" {
				t.Fatalf("A's refused stage replaced the batch B must finish: %q", got)
			}

			// B finishes A's batch, and writes on.
			staged, _, _ := b.Staged(ctx, shard)
			if err := b.Commit(ctx, shard, []diff.Update{{Key: key, State: at(3)}}, staged.Transitions); err != nil {
				t.Fatalf("B's commit: %v", err)
			}
			if err := b.MarkKnown(ctx, shard); err != nil {
				t.Fatalf("B's known mark: %v", err)
			}
			if err := b.Stage(ctx, shard, batchOf(shard, key, diff.StatusSuccess, "b-1", "b-2")); err != nil {
				t.Fatalf("B's stage: %v", err)
			}
			fenced("stage after B staged", a.Stage(ctx, shard, batchOf(shard, key, diff.StatusFailed, "a-3")))
			fenced("commit after B staged", a.Commit(ctx, shard, late, []diff.Transition{{ID: "a-3"}}))

			fresh = opener()
			prev, err = fresh.Load(ctx, shard, append([]diff.Key{key}, spread...))
			if err != nil || prev.States[key] != at(3) || len(prev.States) != 1 || !prev.Known {
				t.Fatalf("a fresh process after B's writes: %+v, %v", prev, err)
			}
			if got := stagedIDs(t, fresh, shard); got != "b-1,b-2" {
				t.Fatalf("B's staged batch: %q", got)
			}
		})
	}
}

// TestFencingUnderConcurrentWrites: A commits as fast as it can while B
// takes the shard over. Every commit A was told had succeeded is in what
// B loaded, and nothing A wrote lands after it: B's view is exactly A's
// last acknowledged commit, and stays the shard's.
func TestFencingUnderConcurrentWrites(t *testing.T) {
	t0 := leaseEpoch()
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	key := diff.Key{InvokeID: "t-1"}
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			opener := open(t)
			a, b := opener(), opener()
			la := acquireAndFence(t, a, shard, "a", t0)
			if _, err := a.Load(ctx, shard, []diff.Key{key}); err != nil {
				t.Fatal(err)
			}
			var lastOK atomic.Int64
			running := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				refused := 0
				for i := 1; refused < 5; i++ {
					err := a.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: diff.StatusRunning, Repeats: i}}}, nil)
					switch {
					case err == nil:
						if refused > 0 {
							done <- fmt.Errorf("commit %d succeeded after a refusal", i)
							return
						}
						lastOK.Store(int64(i))
						if i == 3 {
							close(running)
						}
					case errors.Is(err, checkpoint.ErrFenced):
						refused++
					default:
						done <- fmt.Errorf("commit %d: %w", i, err)
						return
					}
				}
				done <- nil
			}()
			<-running
			acquireAndFence(t, b, shard, "b", la.Expires)
			prev, err := b.Load(ctx, shard, []diff.Key{key})
			if err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := prev.States[key].Repeats; int64(got) != lastOK.Load() {
				t.Fatalf("B loaded commit %d, A's last acknowledged one is %d", got, lastOK.Load())
			}
			if final, err := opener().Load(ctx, shard, []diff.Key{key}); err != nil || final.States[key] != prev.States[key] {
				t.Fatalf("the shard after A stopped: %+v, %v; B loaded %+v", final.States[key], err, prev.States[key])
			}
			if err := b.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: diff.StatusSuccess}}}, nil); err != nil {
				t.Fatalf("B's commit: %v", err)
			}
		})
	}
}

// TestFenceZeroIsUnfenced: a store fenced with token 0 writes as a
// single process without leases does, whatever the lease says.
func TestFenceZeroIsUnfenced(t *testing.T) {
	t0 := leaseEpoch()
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	key := diff.Key{InvokeID: "t-1"}
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			opener := open(t)
			s := opener()
			if _, err := opener().Acquire(ctx, shard, "someone-else", ttl, t0); err != nil {
				t.Fatal(err)
			}
			s.Fence(shard, 7)
			s.Fence(shard, 0)
			if _, err := s.Load(ctx, shard, []diff.Key{key}); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: diff.StatusRunning}}}, nil); err != nil {
				t.Fatalf("unfenced commit: %v", err)
			}
			if err := s.Stage(ctx, shard, batchOf(shard, key, diff.StatusSuccess, "e")); err != nil {
				t.Fatalf("unfenced stage: %v", err)
			}
			if err := s.MarkKnown(ctx, shard); err != nil {
				t.Fatalf("unfenced known mark: %v", err)
			}
		})
	}
}

// TestKVStaleStagingCannotCorruptTheNewOwnersBatch: a stale owner that
// still holds its copy of the shard stages a batch larger than a value
// (several chunks) after the new owner took over, once while the batch
// it staged itself is the one the new owner must finish, once after the
// new owner staged its own. The staged batch reads back whole each time.
func TestKVStaleStagingCannotCorruptTheNewOwnersBatch(t *testing.T) {
	t0 := leaseEpoch()
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	big := func(prefix string) diff.Result {
		var b diff.Result
		for i := range 100 { // over a megabyte: three chunks
			k := diff.Key{InvokeID: prefix + fmt.Sprintf("%03d", i) + strings.Repeat("i", 6000), InstanceID: strings.Repeat("n", 6000)}
			b.Transitions = append(b.Transitions, diff.Transition{ID: fmt.Sprintf("%s%d", prefix, i), Record: diff.Record{Key: k}})
			b.Updates = append(b.Updates, diff.Update{Key: k, State: diff.State{Status: diff.StatusRunning}})
		}
		return b
	}
	firstAndLast := func(s store) string {
		t.Helper()
		b, ok, err := s.Staged(t.Context(), shard)
		if err != nil || !ok {
			t.Fatalf("staged: %v %v", ok, err)
		}
		return b.Transitions[0].ID + ".." + b.Transitions[len(b.Transitions)-1].ID + fmt.Sprint(len(b.Transitions))
	}
	opener := backends()["natskv"](t)
	ctx := t.Context()
	a, b := opener(), opener()
	la := acquireAndFence(t, a, shard, "a", t0)
	if _, err := a.Load(ctx, shard, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Stage(ctx, shard, big("a")); err != nil {
		t.Fatal(err)
	}
	lb := acquireAndFence(t, b, shard, "b", la.Expires)
	if _, err := b.Load(ctx, shard, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Stage(ctx, shard, big("z")); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("A's stage over its own batch after the takeover: %v", err)
	}
	if got := firstAndLast(opener()); got != "a0..a99100" {
		t.Fatalf("the batch B must finish after A's refused stage: %s", got)
	}

	// A again holds a copy from before a takeover: C takes the shard from B.
	if _, err := b.Load(ctx, shard, nil); err != nil {
		t.Fatal(err)
	}
	c := opener()
	acquireAndFence(t, c, shard, "c", lb.Expires)
	if _, err := c.Load(ctx, shard, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Stage(ctx, shard, big("c")); err != nil {
		t.Fatal(err)
	}
	if err := b.Stage(ctx, shard, big("y")); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("B's stage after C staged: %v", err)
	}
	if got := firstAndLast(opener()); got != "c0..c99100" {
		t.Fatalf("C's batch after B's refused stage: %s", got)
	}
	if _, _, err := b.Staged(ctx, shard); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("B reading the batch C staged: %v, want ErrFenced", err)
	}
}

// TestKVFencedStagingTidiesUp: a fenced owner finishes a batch an
// unfenced process staged in the older header format, and the chunks of
// every batch it no longer needs are deleted.
func TestKVFencedStagingTidiesUp(t *testing.T) {
	t0 := leaseEpoch()
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	key := diff.Key{InvokeID: "t-1"}
	bucket := testenv.Name("CAPOLLER_CKPT")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	open := func() *checkpoint.KV {
		s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	unfenced := open() // creates the bucket
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	chunks := func() []string {
		t.Helper()
		lister, err := kv.ListKeysFiltered(ctx, "default.ecs.r.outbox.>")
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return keys
	}
	if err := unfenced.Stage(ctx, shard, batchOf(shard, key, diff.StatusSuccess, "old")); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(chunks()); got != "[default.ecs.r.outbox.0]" {
		t.Fatalf("an unfenced stage wrote %s", got)
	}
	s := open()
	s.Fence(shard, acquireKV(t, s, shard, t0).Token)
	if _, err := s.Load(ctx, shard, []diff.Key{key}); err != nil {
		t.Fatal(err)
	}
	staged, ok, err := s.Staged(ctx, shard)
	if err != nil || !ok || staged.Transitions[0].ID != "old" {
		t.Fatalf("the fenced owner finds %+v %v %v", staged, ok, err)
	}
	if err := s.Commit(ctx, shard, staged.Updates, staged.Transitions); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Staged(ctx, shard); ok || err != nil {
		t.Fatalf("after the commit: staged %v, %v", ok, err)
	}
	if got := chunks(); len(got) != 0 {
		t.Fatalf("chunks left after the commit: %v", got)
	}
	tok := tokenAt(t0)
	for i, want := range []string{fmt.Sprintf("[default.ecs.r.outbox.%d.1.0]", tok), fmt.Sprintf("[default.ecs.r.outbox.%d.0.0]", tok)} {
		if err := s.Stage(ctx, shard, batchOf(shard, key, diff.StatusFailed, fmt.Sprint("new", i))); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(chunks()); got != want {
			t.Fatalf("stage %d: chunks %s, want %s (the replaced batch's deleted)", i, got, want)
		}
		if got := stagedIDs(t, open(), shard); got != fmt.Sprint("new", i) {
			t.Fatalf("stage %d reads back %q", i, got)
		}
	}
	if err := s.Commit(ctx, shard, nil, []diff.Transition{{ID: "new1"}}); err != nil {
		t.Fatal(err)
	}
	if got := chunks(); len(got) != 0 {
		t.Fatalf("chunks left after the last commit: %v", got)
	}
}

func acquireKV(t *testing.T, s *checkpoint.KV, shard diff.Shard, now time.Time) checkpoint.Lease {
	t.Helper()
	l, err := s.Acquire(t.Context(), shard, "owner", ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// countingHook counts the requests a Redis client sends.
type countingHook struct{ n *atomic.Int64 }

func (h countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}

func (h countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// TestRedisFencedCommitOfABaseline: 100,000 records, thousands of
// forgotten ones and of history entries, committed fenced in one request
// (the script passes them to Redis in chunks Lua can unpack).
func TestRedisFencedCommitOfABaseline(t *testing.T) {
	t0 := leaseEpoch()
	client, prefix := testenv.Redis(t)
	var requests atomic.Int64
	client.AddHook(countingHook{&requests})
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	shard := diff.Shard{Account: "acme", Source: diff.SourceECS, Region: "cn-hangzhou"}
	l, err := s.Acquire(ctx, shard, "a", ttl, t0)
	if err != nil {
		t.Fatal(err)
	}
	s.Fence(shard, l.Token)
	var old []diff.Update
	for i := range 5000 {
		old = append(old, diff.Update{Key: diff.Key{InvokeID: fmt.Sprintf("old-%d", i)}, State: diff.State{Status: diff.StatusRunning}})
	}
	if err := s.Commit(ctx, shard, old, nil); err != nil { // loads the script too
		t.Fatal(err)
	}
	var updates []diff.Update
	for i := range 100_000 {
		updates = append(updates, diff.Update{Key: diff.Key{InvokeID: fmt.Sprintf("t-%d", i), InstanceID: "i-1"},
			State: diff.State{Status: diff.StatusSuccess, Repeats: i, ObservedAt: t0}})
	}
	for _, u := range old[:3000] {
		updates = append(updates, diff.Update{Key: u.Key, Forget: true})
	}
	var transitions []diff.Transition
	for i := range 2500 {
		transitions = append(transitions, diff.Transition{ID: fmt.Sprint("e", i), Source: shard.Source, Region: shard.Region,
			Record: diff.Record{Key: updates[i].Key, Status: diff.StatusSuccess}, ObservedAt: t0})
	}
	before := requests.Load()
	if err := s.Commit(ctx, shard, updates, transitions); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load() - before; n != 1 {
		t.Errorf("the commit took %d requests, want 1", n)
	}
	tag := "{acme/ecs/cn-hangzhou}"
	if n := client.HLen(ctx, prefix+"records:"+tag).Val(); n != 100_000+2000 {
		t.Errorf("%d records, want %d", n, 100_000+2000)
	}
	if h, _, err := s.History(ctx, shard, "", 10); err != nil || len(h) != 2500 || h[2499].ID != "e2499" {
		t.Errorf("%d transitions in the history, want 2500 (%v)", len(h), err)
	}
	if n := client.HGet(ctx, prefix+"meta:"+tag, "commits").Val(); n != "2" {
		t.Errorf("commits %q, want 2", n)
	}
	prev, err := s.Load(ctx, shard, []diff.Key{updates[99_999].Key, old[2999].Key, old[3000].Key})
	if err != nil || prev.States[updates[99_999].Key] != updates[99_999].State || len(prev.States) != 2 {
		t.Fatalf("read back: %+v, %v", prev.States, err)
	}
	if _, gone := prev.States[old[2999].Key]; gone {
		t.Error("a forgotten record is still there")
	}
	lease := client.HGetAll(ctx, prefix+"lease:"+tag).Val()
	if lease["owner"] != "a" || lease["token"] != fmt.Sprint(t0.UnixMilli()) || lease["expires"] != fmt.Sprint(t0.Add(ttl).UnixMilli()) {
		t.Errorf("the lease key in the shard's hash tag holds %v", lease)
	}
}

// TestKVFencedTakeoverMigrates: a fenced owner's first access is a
// takeover, and it still moves a shard from the layouts before accounts
// (values <source>.<region>.…) and the first one (one value
// <source>.<region>), staged batch and known flag included.
func TestKVFencedTakeoverMigrates(t *testing.T) {
	t0 := leaseEpoch()
	bucket := testenv.Name("CAPOLLER_CKPT")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	open := func() *checkpoint.KV {
		s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := t.Context()
	moved := diff.Shard{Source: diff.SourceECS, Region: "r"}
	writeShard(t, open(), moved)
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeysFiltered(ctx, "default.ecs.r.>")
	if err != nil {
		t.Fatal(err)
	}
	for name := range lister.Keys() {
		entry, err := kv.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, strings.TrimPrefix(name, "default."), entry.Value()); err != nil {
			t.Fatal(err)
		}
		if err := kv.Purge(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	s := open()
	s.Fence(moved, acquireKV(t, s, moved, t0).Token)
	checkMoved(t, s, moved)
	if err := s.Commit(ctx, moved, []diff.Update{{Key: diff.Key{InvokeID: "t-2"}, State: diff.State{Status: diff.StatusRunning}}}, nil); err != nil {
		t.Fatalf("a fenced commit after the move: %v", err)
	}

	var legacy bytes.Buffer
	zw := gzip.NewWriter(&legacy)
	fmt.Fprint(zw, "!known\t1\nt-1\tRunning|0|1000\nt-1/i-1\tSuccess|2|2000\n")
	_ = zw.Close()
	if _, err := kv.Put(ctx, "ecs.first", legacy.Bytes()); err != nil {
		t.Fatal(err)
	}
	first := diff.Shard{Source: diff.SourceECS, Region: "first"}
	s.Fence(first, acquireKV(t, s, first, t0).Token)
	keys := []diff.Key{{InvokeID: "t-1"}, {InvokeID: "t-1", InstanceID: "i-1"}}
	prev, err := s.Load(ctx, first, keys)
	if err != nil || !prev.Known || len(prev.States) != 2 || prev.States[keys[1]].Repeats != 2 {
		t.Fatalf("the first layout under a fence: %+v, %v", prev, err)
	}
	if err := s.MarkKnown(ctx, first); err != nil {
		t.Fatalf("a fenced known mark after the migration: %v", err)
	}
}

package checkpoint_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// pauseRestore blocks the first RESTORE this client sends until release is closed.
type pauseRestore struct {
	reached chan struct{}
	release chan struct{}
	done    bool
}

func (h *pauseRestore) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *pauseRestore) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "restore") && !h.done {
			h.done = true
			close(h.reached)
			<-h.release
		}
		return next(ctx, cmd)
	}
}
func (h *pauseRestore) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

var _ = net.Dial

// TestARedisMigrationPausedPastItsLeaseWritesNothingBack: a stale owner
// paused inside the one-time move of the pre-accounts layout (between
// DUMP and RESTORE) resumes after the new owner moved the shard and
// committed; its RESTORE must not put the old records back (it used to,
// with REPLACE, moving the checkpoint backwards).
func TestARedisMigrationPausedPastItsLeaseWritesNothingBack(t *testing.T) {
	client, prefix := testenv.Redis(t)
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	key := diff.Key{InvokeID: "t-1", InstanceID: "i-1"}
	ctx := t.Context()
	// The pre-accounts layout, with R Pending.
	seed := newRedis(t, client, prefix)
	if err := seed.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: diff.StatusPending, ObservedAt: time.Unix(7, 0).UTC()}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := seed.MarkKnown(ctx, shard); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"records", "meta"} {
		if err := client.Rename(ctx, prefix+kind+":{default/ecs/r}", prefix+kind+":ecs:r").Err(); err != nil {
			t.Fatal(err)
		}
	}

	// Stale owner A: its own client, paused at its first RESTORE.
	opts := *client.Options()
	aClient := redis.NewClient(&opts)
	defer aClient.Close()
	hook := &pauseRestore{reached: make(chan struct{}), release: make(chan struct{})}
	aClient.AddHook(hook)
	a, _ := checkpoint.NewRedis(aClient, checkpoint.RedisOptions{KeyPrefix: prefix})
	b := newRedis(t, client, prefix)
	t0 := time.Now()
	acquireAndFence(t, a, shard, "a", t0)
	aDone := make(chan error, 1)
	go func() { _, err := a.Load(context.Background(), shard, []diff.Key{key}); aDone <- err }()
	<-hook.reached

	// A's lease expires; B takes over, moves the layout itself, commits Success.
	acquireAndFence(t, b, shard, "b", t0.Add(2*ttl))
	if _, err := b.Load(ctx, shard, []diff.Key{key}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: diff.StatusSuccess, ObservedAt: time.Unix(9, 0).UTC()}}}, nil); err != nil {
		t.Fatal(err)
	}

	close(hook.release) // A resumes
	t.Logf("stale owner's Load: %v", <-aDone)

	prev, err := b.Load(ctx, shard, []diff.Key{key})
	if err != nil {
		t.Fatal(err)
	}
	if got := prev.States[key].Status; got != diff.StatusSuccess {
		t.Fatalf("the new owner's committed Success was overwritten by a fenced replica's migration: now %q", got)
	}
}

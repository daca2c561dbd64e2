package checkpoint_test

import (
	"testing"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// The meta's historyLen is trusted even when the stream no longer holds
// what it counts (the history key deleted by an operator to reclaim
// memory, evicted, or XTRIMmed by hand): every later commit then deletes
// its own, just written entry, and the history stays empty for good.
func TestRedisHistoryDeletedByHandStartsAgain(t *testing.T) {
	client, prefix := testenv.Redis(t)
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix, HistoryMaxLen: 3})
	if err != nil {
		t.Fatal(err)
	}
	shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	if err := s.Commit(t.Context(), shard, nil, transitionsFor(shard, 0, 3)); err != nil {
		t.Fatal(err)
	}
	if err := client.Del(t.Context(), prefix+"history:{prod/ecs/cn-hangzhou}").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Commit(t.Context(), shard, nil, transitionsFor(shard, 10+i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	commits, err := s.Commits(t.Context(), shard, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(commits) != 3 {
		t.Errorf("%d commits in the history after 3 new commits of 1 transition (keep 3), want 3", len(commits))
	}
}

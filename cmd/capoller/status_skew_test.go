package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/testenv"
)

// TestStatusOfAGroupRolledBackToAnEarlierVersion: after a rollback, the
// live replicas are of an earlier version, whose heartbeats list no shard
// (the group takes each to list what a replica of this version lists),
// while the group still remembers the shards the newer replicas listed.
// Status must not flag those shards as polled by nobody while an earlier
// replica holds them: it reads such a replica as the group does, listing
// status's own configuration.
func TestStatusOfAGroupRolledBackToAnEarlierVersion(t *testing.T) {
	client, prefix := testenv.Redis(t)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	now := time.Now()
	hz := diff.Shard{Account: "default", Source: diff.SourceECS, Region: "cn-hangzhou"}
	if _, err := store.Heartbeat(ctx, checkpoint.Member{ID: "newer", Lists: []diff.Shard{hz}}, time.Second, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	// An earlier version's heartbeat: a digest, no list.
	if _, err := store.Heartbeat(ctx, checkpoint.Member{ID: "earlier", Shards: "0123abcd"}, time.Minute, now); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Acquire(ctx, hz, "earlier", time.Minute, now); err != nil {
		t.Fatal(err)
	}
	rep, err := poller.ReadGroupStatus(ctx, store, []diff.Shard{hz}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Shards) != 1 || rep.Shards[0].Owner != "earlier" {
		t.Fatalf("shards: %+v", rep.Shards)
	}
	if s := rep.Shards[0]; fmt.Sprint(s.ListedBy) != "[earlier]" {
		t.Errorf("the shard held by the earlier replica is listed by %v", s.ListedBy)
	}
	var text bytes.Buffer
	printStatus(&text, rep)
	if strings.Contains(text.String(), "listed by no live replica") {
		t.Errorf("status flags a shard an earlier replica polls as listed by nobody:\n%s", text.String())
	}
}

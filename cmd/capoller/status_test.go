package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/testenv"
)

// TestStatusOnlyReads: capoller status needs no running replica and never
// writes; with natskv it does not create a missing bucket (a daemon
// started later with --stream-replicas 3 would keep that one as it is),
// and says the bucket is missing.
func TestStatusOnlyReads(t *testing.T) {
	url := testenv.NATSURL(t)
	bucket := testenv.Name("CAPOLLER_STATUS")
	_, js := testenv.NATS(t, url, bucket)
	var out, errOut bytes.Buffer
	rc := statusCommand(t.Context(), []string{"--checkpoint", "natskv", "--nats-url", url, "--bucket", bucket, "--json"}, &out, &errOut)
	if rc != 1 || !strings.Contains(errOut.String(), bucket) {
		t.Fatalf("status of a missing bucket: exit %d, %q", rc, errOut.String())
	}
	if _, err := js.KeyValue(t.Context(), bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("status created bucket %s (%v)", bucket, err)
	}
}

// TestStatusOfAHeterogeneousGroup: replicas configured differently each
// show how many shards they list; a shard listed only by a replica that
// is gone is flagged, with who listed it last; status shows every shard
// the group knows, not only those of its own configuration.
func TestStatusOfAHeterogeneousGroup(t *testing.T) {
	client, prefix := testenv.Redis(t)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	now := time.Now()
	hz := diff.Shard{Account: "default", Source: diff.SourceECS, Region: "cn-hangzhou"}
	sh := diff.Shard{Account: "default", Source: diff.SourceECS, Region: "cn-shanghai"}
	bj := diff.Shard{Account: "default", Source: diff.SourceSWAS, Region: "cn-beijing"}
	if _, err := store.Heartbeat(ctx, checkpoint.Member{ID: "gone", Lists: []diff.Shard{bj}}, time.Second, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Heartbeat(ctx, checkpoint.Member{ID: "wide", Lists: []diff.Shard{hz, sh}, Excluded: []diff.Shard{sh}}, time.Minute, now); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Heartbeat(ctx, checkpoint.Member{ID: "narrow", Lists: []diff.Shard{hz}, Withdrawn: "cannot reach the bus: nats: timeout"}, time.Minute, now); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Acquire(ctx, hz, "wide", time.Minute, now); err != nil {
		t.Fatal(err)
	}
	rep, err := poller.ReadGroupStatus(ctx, store, []diff.Shard{hz}, now) // its own configuration lists only hz
	if err != nil {
		t.Fatal(err)
	}
	lists := map[string]string{}
	for _, r := range rep.Replicas {
		lists[r.ID] = fmt.Sprintf("%d %d %q %v", *r.Lists, r.Shards, r.Withdrawn, r.Excluded)
	}
	if want := map[string]string{"wide": `2 1 "" [default/ecs/cn-shanghai]`, "narrow": `1 0 "cannot reach the bus: nats: timeout" []`}; fmt.Sprint(lists) != fmt.Sprint(want) {
		t.Errorf("replicas: %v, want %v", lists, want)
	}
	shards := map[string]poller.GroupShard{}
	for _, s := range rep.Shards {
		shards[s.Shard] = s
	}
	if len(shards) != 3 {
		t.Fatalf("status shows %d shards, want 3 (its own, another replica's, and a gone replica's): %+v", len(shards), rep.Shards)
	}
	if s := shards[bj.String()]; len(s.ListedBy) != 0 || s.LastLister != "gone" || s.LastListed.IsZero() {
		t.Errorf("the gone replica's shard: %+v", s)
	}
	if s := shards[hz.String()]; fmt.Sprint(s.ListedBy) != "[narrow wide]" || s.Owner != "wide" {
		t.Errorf("the shared shard: %+v", s)
	}
	var text bytes.Buffer
	printStatus(&text, rep)
	for _, want := range []string{"LISTS", "(listed by no live replica; last by gone", "stepped back: cannot reach the bus", "leaves to the others: default/ecs/cn-shanghai"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, text.String())
		}
	}
}

// TestStatusShowsTheWholeGroup, through the binary: a replica holding
// default/ecs/cn-shanghai is shown with that shard and its owner, though
// status's own configuration lists only cn-hangzhou, and a shard that no
// live replica lists says so.
func TestStatusShowsTheWholeGroup(t *testing.T) {
	url := testenv.RedisURL(t) // one server for this process and the binary
	client, prefix := testenv.RedisAt(t, url)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sh := diff.Shard{Account: "default", Source: diff.SourceECS, Region: "cn-shanghai"}
	bj := diff.Shard{Account: "default", Source: diff.SourceSWAS, Region: "cn-beijing"}
	if _, err := store.Heartbeat(t.Context(), checkpoint.Member{ID: "gone", Lists: []diff.Shard{bj}}, time.Second, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Heartbeat(t.Context(), checkpoint.Member{ID: "shanghai-1", Lists: []diff.Shard{sh}}, time.Minute, now); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Acquire(t.Context(), sh, "shanghai-1", time.Minute, now); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runBinaryEnv(t, cleanEnv(t), "status", "--redis-url", url, "--key-prefix", prefix)
	if code != 0 || stderr != "" {
		t.Fatalf("status: exit %d, stderr %q", code, stderr)
	}
	var shRow, bjRow, replicaRow string
	for _, line := range strings.Split(stdout, "\n") {
		switch {
		case strings.HasPrefix(line, sh.String()):
			shRow = line
		case strings.HasPrefix(line, bj.String()):
			bjRow = line
		case strings.HasPrefix(line, "shanghai-1"):
			replicaRow = line
		}
	}
	if !strings.Contains(shRow, "shanghai-1") || !strings.Contains(bjRow, "listed by no live replica") || !strings.Contains(replicaRow, " 1 ") {
		t.Errorf("status does not show the whole group:\n%s", stdout)
	}
}

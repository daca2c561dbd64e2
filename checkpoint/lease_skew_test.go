package checkpoint_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// rawGroup is a group's store with a hand on its raw member records, as
// another version of capoller writes and reads them.
type rawGroup struct {
	leases checkpoint.Leases
	// put writes id's record as raw JSON; get reads it back.
	put func(t *testing.T, id, record string)
	get func(t *testing.T, id string) string
}

func rawGroups() map[string]func(t *testing.T) rawGroup {
	return map[string]func(t *testing.T) rawGroup{
		"redis": func(t *testing.T) rawGroup {
			client, prefix := testenv.Redis(t)
			s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			key := prefix + "group:members"
			return rawGroup{leases: s,
				put: func(t *testing.T, id, record string) {
					if err := client.HSet(t.Context(), key, id, record).Err(); err != nil {
						t.Fatal(err)
					}
				},
				get: func(t *testing.T, id string) string {
					v, err := client.HGet(t.Context(), key, id).Result()
					if err != nil {
						t.Fatal(err)
					}
					return v
				}}
		},
		"natskv": func(t *testing.T) rawGroup {
			s, kv := newKVBucket(t)
			all := func(t *testing.T) map[string]json.RawMessage {
				out := map[string]json.RawMessage{}
				if e, err := kv.Get(t.Context(), "group.members"); err == nil {
					if err := json.Unmarshal(e.Value(), &out); err != nil {
						t.Fatal(err)
					}
				}
				return out
			}
			return rawGroup{leases: s,
				put: func(t *testing.T, id, record string) {
					m := all(t)
					m[id] = json.RawMessage(record)
					b, _ := json.Marshal(m)
					if _, err := kv.Put(t.Context(), "group.members", b); err != nil {
						t.Fatal(err)
					}
				},
				get: func(t *testing.T, id string) string { return string(all(t)[id]) }}
		},
	}
}

// TestAMemberOfAnotherVersionDoesNotStopTheGroup: a live member whose
// record another version wrote — a field of a type this one does not
// know, junk among its shard ids, fields this one has never heard of —
// does not fail the others' heartbeats (which would leave every shard
// assigned to them unpolled) nor `capoller status`: it is read as far as
// it can be, and its record is kept as written.
func TestAMemberOfAnotherVersionDoesNotStopTheGroup(t *testing.T) {
	t0 := leaseEpoch()
	a := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	expires := float64(t0.Add(time.Minute).UnixMilli())
	later := fmt.Sprintf(`{"id":"later","version":"9.0","pid":"4242","shards":%q,"listing":true,`+
		`"excluded":{"prod/ecs/cn-hangzhou":"slot moved"},"weight":3,"zones":["a","b"],"started":%.0f,"seen":%.0f,"expires":%.0f}`,
		checkpoint.ShardsDigest([]diff.Shard{a}), float64(t0.UnixMilli()), float64(t0.UnixMilli()), expires)
	for name, open := range rawGroups() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			g := open(t)
			g.put(t, "later", later)
			roster, err := g.leases.Heartbeat(ctx, checkpoint.Member{ID: "now", Lists: []diff.Shard{a}}, ttl, t0)
			if err != nil {
				t.Fatalf("a later version's member failed this one's heartbeat: %v", err)
			}
			var got *checkpoint.Member
			for i, m := range roster.Members {
				if m.ID == "later" {
					got = &roster.Members[i]
				}
			}
			if got == nil {
				t.Fatalf("the later version's member is not in the roster %+v", roster.Members)
			}
			if fmt.Sprint(got.Lists) != fmt.Sprint([]diff.Shard{a}) || got.Version != "9.0" || !got.Expires.Equal(t0.Add(time.Minute)) {
				t.Errorf("the later version's member read as %+v", *got)
			}
			members, err := g.leases.Members(ctx)
			if err != nil || len(members) != 2 {
				t.Errorf("Members (for status): %d, %v", len(members), err)
			}
			// This version's heartbeats keep what the later one wrote.
			if _, err := g.leases.Heartbeat(ctx, checkpoint.Member{ID: "now", Lists: []diff.Shard{a}}, ttl, t0.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if raw := g.get(t, "later"); !strings.Contains(raw, `"weight":3`) || !strings.Contains(raw, `"zones":["a","b"]`) || !strings.Contains(raw, `"slot moved"`) {
				t.Errorf("a heartbeat of this version rewrote the later version's record as %s", raw)
			}
			// Once it expired, it is pruned like any other.
			roster, err = g.leases.Heartbeat(ctx, checkpoint.Member{ID: "now", Lists: []diff.Shard{a}}, ttl, t0.Add(2*time.Minute))
			if err != nil || len(roster.Members) != 1 {
				t.Errorf("after the later member expired: %+v, %v", roster.Members, err)
			}
		})
	}
}

// TestAListedRecordOfAnotherVersionDoesNotStopTheGroup: in KV, the
// configurations listed are one JSON object; a value of it that another
// version wrote in another form is dropped, as Redis's script drops a stamp it cannot read,
// rather than failing every heartbeat (it was written after the member's
// record, so the others saw a live replica that never took a shard).
func TestAListedRecordOfAnotherVersionDoesNotStopTheGroup(t *testing.T) {
	t0 := leaseEpoch()
	a := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	s, kv := newKVBucket(t)
	other := checkpoint.ShardsDigest([]diff.Shard{{Account: "default", Source: diff.SourceECS, Region: "cn-beijing"}})
	if _, err := kv.Put(t.Context(), "group.config."+other, []byte(`["default/ecs/cn-beijing"]`)); err != nil {
		t.Fatal(err)
	}
	value := fmt.Sprintf(`{"0123456789abcdef":{"at":%d,"by":"later"},%q:"%d|other"}`, t0.UnixMilli(), other, t0.UnixMilli())
	if _, err := kv.Put(t.Context(), "group.listed", []byte(value)); err != nil {
		t.Fatal(err)
	}
	roster, err := s.Heartbeat(t.Context(), checkpoint.Member{ID: "now", Lists: []diff.Shard{a}}, ttl, t0.Add(time.Second))
	if err != nil {
		t.Fatalf("a listed value of another version failed the heartbeat: %v", err)
	}
	var got []string
	for _, l := range roster.Listed {
		got = append(got, l.Shard.String()+" by "+l.By)
	}
	if fmt.Sprint(got) != "[default/ecs/cn-beijing by other prod/ecs/cn-hangzhou by now]" {
		t.Errorf("listed: %v", got)
	}
	if ls, err := s.Listed(t.Context(), t0.Add(time.Second)); err != nil || len(ls) != 2 {
		t.Errorf("Listed (for status): %v, %v", ls, err)
	}
}

// TestAKVGroupOfManyReplicasListingManyShards: in KV the whole group's
// membership is one value, rewritten by each heartbeat. With every
// member's list of shards in it, 40 replicas each listing the same 1000
// shards (40 accounts of 25 regions) made a value of about 1.3 MB, past
// NATS's default max_payload of 1 MB: from the replica that crossed it,
// every heartbeat failed, and the group stopped assigning. A list is now
// kept once per configuration, apart from the heartbeats.
func TestAKVGroupOfManyReplicasListingManyShards(t *testing.T) {
	t0 := leaseEpoch()
	var shards []diff.Shard
	for a := range 40 {
		for r := range 25 {
			shards = append(shards, diff.Shard{Account: fmt.Sprintf("production-%02d", a), Source: diff.SourceECS, Region: fmt.Sprintf("cn-region-%02d", r)})
		}
	}
	bucket := testenv.Name("CAPOLLER_CKPT")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		id := fmt.Sprintf("capoller-%02d.example.internal-12345-abcdef", i)
		if _, err := s.Heartbeat(t.Context(), checkpoint.Member{ID: id, Lists: shards}, time.Minute, t0); err != nil {
			t.Fatalf("the heartbeat of replica %d failed: %v", i+1, err)
		}
	}
}

package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
)

// The partition checks, on made-up lease timelines and publishes: a
// replica cut from Redis for 10s from 10s with a TTL of 4s (a tick of
// 800ms, claims valid 2.13s after the last renewal).
func TestCheckPartitions(t *testing.T) {
	for _, tc := range checkPartitionsCases() {
		t.Run(tc.name, func(t *testing.T) { tc.run(t) })
	}
}

// sec is s seconds into a made-up run.
func sec(s float64) time.Time {
	return time.Unix(1_700_000_000, 0).Add(time.Duration(s * float64(time.Second)))
}

// testShard is the prod account's ECS shard of region.
func testShard(region string) diff.Shard {
	return diff.Shard{Account: "prod", Source: diff.SourceECS, Region: region}
}

// owned is a shard's owner (a slot, or -1: none live) from at seconds on.
type owned struct {
	at   float64
	slot int
}

// checkPartitionsCase is a lease timeline, the publishes and the slot
// events of a partition of slot 0, and what the checks find in them.
type checkPartitionsCase struct {
	name   string
	link   string // default redis
	leases map[diff.Shard][]owned
	pubs   []float64
	events []slotEvent
	// applied are the faults applied (an engine's restart).
	applied []appliedFault
	want    []string // in the violations, in order; none: it passes
	check   func(t *testing.T, r PartitionCheck)
}

func checkPartitionsCases() []checkPartitionsCase {
	s1, s2, s3 := testShard("r1"), testShard("r2"), testShard("r3")
	good := map[diff.Shard][]owned{
		s1: {{0, 0}, {13.5, 1}},
		s2: {{0, 0}, {13.2, -1}, {14, 2}},
		s3: {{0, 1}, {16, 1}, {21, 0}}, // given back to the replica after the partition
	}
	return []checkPartitionsCase{
		{name: "behaved", leases: good, pubs: []float64{9, 10.5, 12.3}, check: func(t *testing.T, r PartitionCheck) {
			if r.LostSeconds != 3.5 || r.TakeoverSeconds != 4 || r.RejoinSeconds != 1 || r.LastPublishSeconds != 2.3 || r.Held != 2 {
				t.Errorf("lost %v, taken over %v, rejoined %v, last publish %v, held %d", r.LostSeconds, r.TakeoverSeconds, r.RejoinSeconds, r.LastPublishSeconds, r.Held)
			}
		}},
		{name: "published late", leases: good, pubs: []float64{10.5, 12.5, 19.9, 20.5},
			want: []string{"chaos-1: partition-blackhole of redis at 10s for 10s: 2 publishes after its claims expired (the lease two thirds old at 12.1s, 2.133333333s after the start, +250ms): the first at 12.5s, the last at 19.9s"}},
		{name: "kept a shard", leases: map[diff.Shard][]owned{s1: {{0, 0}, {15, 1}}, s2: good[s2], s3: good[s3]},
			want: []string{"kept 1 of the 2 shards it held past the TTL (4s, by 14s): prod/ecs/r1", "1 of the 2 shards it held were not taken by another replica within 4.8s of the start (by 14.8s): prod/ecs/r1"}},
		{name: "not taken", leases: map[diff.Shard][]owned{s1: good[s1], s2: {{0, 0}, {13, -1}, {19, 1}}, s3: good[s3]},
			events: []slotEvent{{at: sec(12), slot: 2, what: "killed"}},
			want:   []string{"1 of the 2 shards it held were not taken by another replica within 6.8s of the start (by 16.8s) (pushed back by chaos-3 killed at 12s): prod/ecs/r2"}},
		{name: "others disturbed until the end", leases: map[diff.Shard][]owned{s1: good[s1], s2: {{0, 0}, {13, -1}}, s3: good[s3]},
			events: []slotEvent{{at: sec(12), slot: 2, what: "killed"}, {at: sec(16), slot: 1, what: "stopped"}},
			check: func(t *testing.T, r PartitionCheck) {
				if !strings.HasPrefix(r.Takeover, "not judged") || r.TakeoverSeconds != -1 {
					t.Errorf("take-over %q, %v", r.Takeover, r.TakeoverSeconds)
				}
			}},
		{name: "killed in the partition", leases: map[diff.Shard][]owned{s1: {{0, 0}, {15, 1}}, s2: good[s2], s3: good[s3]},
			// Killed, it cannot step back: its leases expire a TTL after the kill.
			events: []slotEvent{{at: sec(11.5), slot: 0, what: "killed"}},
			check: func(t *testing.T, r PartitionCheck) {
				if r.Lost != "judged" || r.LostSeconds != 5 || r.Takeover != "judged" {
					t.Errorf("lost %q %v, take-over %q", r.Lost, r.LostSeconds, r.Takeover)
				}
			}},
		{name: "cut from NATS while another served", link: linkNATS, leases: map[diff.Shard][]owned{s1: {{0, 0}, {19, 1}}, s2: good[s2], s3: good[s3]},
			// One other replica stopped, the third reached the bus: it should have stepped back.
			events: []slotEvent{{at: sec(9), slot: 1, what: "stopped"}},
			want:   []string{"kept 1 of the 2 shards it held past the TTL (4s, by 14s): prod/ecs/r1", "1 of the 2 shards it held were not taken by another replica within 4.8s of the start (by 14.8s) (pushed back by chaos-2 stopped at 9s): prod/ecs/r1"}},
		{name: "cut from NATS while the others were stopped", link: linkNATS, leases: map[diff.Shard][]owned{s1: {{0, 0}, {19, 1}}, s2: good[s2], s3: good[s3]},
			// It steps back only once another replica reaches the bus.
			events: []slotEvent{{at: sec(9), slot: 1, what: "stopped"}, {at: sec(11), slot: 2, what: "stopped"}},
			check: func(t *testing.T, r PartitionCheck) {
				if !strings.HasPrefix(r.Lost, "not judged") || !strings.HasPrefix(r.Takeover, "not judged") || !strings.Contains(r.Lost, "chaos-2 stopped at 9s") {
					t.Errorf("lost %q, take-over %q", r.Lost, r.Takeover)
				}
			}},
		{name: "rejoin after an engine's restart", leases: map[diff.Shard][]owned{s1: good[s1], s2: good[s2], s3: {{0, 1}, {16, 1}, {40, 0}}},
			// NATS restarted 2s after the partition: the replica waits it out too.
			applied: []appliedFault{{at: sec(22), kind: FaultNATS}},
			check: func(t *testing.T, r PartitionCheck) {
				if r.Rejoin != "judged" || r.RejoinSeconds != 20 {
					t.Errorf("rejoin %q after %vs", r.Rejoin, r.RejoinSeconds)
				}
			}},
		{name: "no rejoin", leases: map[diff.Shard][]owned{s1: good[s1], s2: good[s2], s3: {{0, 1}}},
			events: []slotEvent{{at: sec(21), slot: 0, what: "exited by itself (exit status 1)", unexpected: true}},
			// The exit gives it six TTLs from then.
			want: []string{"exited by itself (exit status 1) at 21s", "held no shard within 25s after the partition ended (by 45s)"}},
	}
}

// run checks the partition of slot 0 from 10s to 20s, which held s1 and
// s2 at its start.
func (tc checkPartitionsCase) run(t *testing.T) {
	t0 := sec(0)
	s1, s2 := testShard("r1"), testShard("r2")
	c := &run{o: Options{LeaseTTL: 4 * time.Second, Replicas: 3}, start: t0, events: tc.events, applied: tc.applied}
	for i := range 3 {
		c.slots = append(c.slots, &replicaSlot{id: fmt.Sprintf("chaos-%d", i+1)})
	}
	c.links = &links{pubs: []*publishLog{{}, {}, {}}}
	for _, p := range tc.pubs {
		c.links.pubs[0].add(sec(p))
	}
	c.leases = newLeaseWatch(nil, nil)
	c.leases.stopped = sec(60)
	for s, os := range tc.leases {
		for _, o := range os {
			c.leases.owners[s] = append(c.leases.owners[s], ownerSince{at: sec(o.at), slot: o.slot})
		}
	}
	link := linkRedis
	if tc.link != "" {
		link = tc.link
	}
	f := &Fault{Kind: FaultPartitionHole, Link: link, For: 10 * time.Second}
	c.partitions = []*partitionRun{{fault: f, slots: []int{0}, start: sec(10), end: sec(20), held: map[int][]diff.Shard{0: {s1, s2}}}}
	var rep PartitionReport
	c.checkPartitions(&rep)
	if len(rep.Checks) != 1 {
		t.Fatalf("%d checks", len(rep.Checks))
	}
	if len(rep.Violations) != len(tc.want) {
		t.Fatalf("violations:\n%s\nwant %d", strings.Join(rep.Violations, "\n"), len(tc.want))
	}
	for i, w := range tc.want {
		if !strings.HasSuffix(rep.Violations[i], w) || !strings.HasPrefix(rep.Violations[i], "chaos-1: partition-blackhole of "+link+" at 10s for 10s: ") {
			t.Errorf("violation %d:\n%s\nwant it to end in\n%s", i, rep.Violations[i], w)
		}
	}
	if tc.check != nil {
		tc.check(t, rep.Checks[0])
	}
}

package chaos

import (
	"reflect"
	"testing"
	"time"

	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/truthcheck"
)

// TestChaosScheduleReplays: a seed gives the same faults and hooks; the
// engines' restarts are scheduled only when the harness runs them.
func TestChaosScheduleReplays(t *testing.T) {
	o := Options{Duration: 10 * time.Minute, Seed: 7, Replicas: 3, LeaseTTL: 4 * time.Second, FaultEvery: 3 * time.Second, Checkpoint: "redis"}
	a, b := drawSchedule(o, true, true), drawSchedule(o, true, true)
	if !reflect.DeepEqual(a, b) || len(a) < 100 {
		t.Fatalf("two schedules from one seed differ, or are short (%d faults)", len(a))
	}
	kinds := checkScheduleSpacing(t, o, a)
	for _, k := range []string{FaultKill, FaultStop, FaultRedis, FaultNATS, FaultThrottle, FaultServerError, FaultSlow, FaultMalformed, FaultInvalidToken, FaultBehaviour,
		FaultPartitionHole, FaultPartitionReset, FaultPartitionLatency, FaultPartitionHole + " " + linkRedis, FaultPartitionHole + " " + linkNATS,
		FaultPartitionHole + " " + linkBoth, FaultPartitionHole + " all", FaultPartitionReset + " all"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in 10 minutes: %v", k, kinds)
		}
	}
	for _, f := range drawSchedule(o, false, false) {
		if f.Kind == FaultRedis || f.Kind == FaultNATS || f.Kind == FaultNATSNode || isPartition(f.Kind) {
			t.Fatalf("%s scheduled against engines the harness did not start", f.Kind)
		}
	}
	checkPartitionPlacement(t, o)
	if b := drawSchedule(Options{Duration: o.Duration, Seed: 8, Replicas: 3, LeaseTTL: o.LeaseTTL, FaultEvery: o.FaultEvery, Checkpoint: "redis"}, true, true); reflect.DeepEqual(a, b) {
		t.Error("two seeds give the same schedule")
	}
	checkHooksReplay(t)
	if len(truthcheck.Kinds()) != 5 {
		t.Errorf("kinds %v", truthcheck.Kinds())
	}
}

// checkScheduleSpacing checks the faults of schedule a in turn: in time
// order, within the run, a stop outlasting the lease, partitions one at a
// time and apart from engine restarts (and drawn as checkPartitionDraw
// wants); it counts the kinds, partitions by link and of every replica.
func checkScheduleSpacing(t *testing.T, o Options, a []Fault) map[string]int {
	t.Helper()
	kinds := map[string]int{}
	var prev Fault
	var partitionEnd, engineEnd time.Duration
	for i, f := range a {
		if i > 0 && f.At < prev.At {
			t.Errorf("%s at %v after %s at %v", f.Kind, f.At, prev.Kind, prev.At)
		}
		prev = f
		if isPartition(f.Kind) {
			if f.At < partitionEnd+2*o.LeaseTTL || f.At < engineEnd+o.LeaseTTL || f.At+f.For > o.Duration {
				t.Errorf("%s at %v for %v: the last partition ended at %v, the last engine restart at %v", f.Kind, f.At, f.For, partitionEnd, engineEnd)
			}
			partitionEnd = f.At + f.For
		}
		if f.Kind == FaultRedis || f.Kind == FaultNATS {
			if f.At < partitionEnd {
				t.Errorf("%s at %v, during a partition (until %v)", f.Kind, f.At, partitionEnd)
			}
			engineEnd = max(engineEnd, f.At+f.For)
		}
		kinds[f.Kind]++
		if f.At <= 0 || f.At >= o.Duration {
			t.Errorf("fault at %v, outside the run", f.At)
		}
		if f.Kind == FaultStop && f.For <= o.LeaseTTL {
			t.Errorf("a stop of %v does not outlast the lease TTL %v", f.For, o.LeaseTTL)
		}
		if isPartition(f.Kind) {
			kinds[f.Kind+" "+f.Link]++
			if f.AllReplicas {
				kinds[f.Kind+" all"]++
			}
			checkPartitionDraw(t, o, f)
		}
	}
	return kinds
}

// checkPartitionPlacement: partitions only where a proxy can cut the
// link: not of a NATS cluster, not of Redis when checkpoints are in
// JetStream KV, none with --partitions off; only partitions with
// --partitions only.
func checkPartitionPlacement(t *testing.T, o Options) {
	t.Helper()
	for _, tc := range []struct {
		name       string
		o          Options
		kinds      func(Fault) bool
		partitions bool
	}{
		{"nats cluster", Options{NATSCluster: true, Checkpoint: "redis"}, func(f Fault) bool { return f.Link == linkRedis }, true},
		{"natskv", Options{Checkpoint: "natskv"}, func(f Fault) bool { return f.Link == linkNATS }, true},
		{"off", Options{Checkpoint: "redis", Partitions: "off"}, func(Fault) bool { return true }, false},
		{"only", Options{Checkpoint: "redis", Partitions: "only"}, func(f Fault) bool { return isPartition(f.Kind) }, true},
	} {
		if tc.o.Partitions == "only" {
			// It opens with a hole of one replica, past its lease.
			for seed := range int64(50) {
				oo := tc.o
				oo.Duration, oo.Seed, oo.Replicas, oo.LeaseTTL, oo.FaultEvery = time.Minute, seed, 3, o.LeaseTTL, 5*time.Second
				first := drawSchedule(oo, true, true)[0]
				if first.Kind != FaultPartitionHole || first.AllReplicas || first.For < o.LeaseTTL {
					t.Errorf("seed %d: the partitions open with %+v", seed, first)
				}
			}
		}
		oo := tc.o
		oo.Duration, oo.Seed, oo.Replicas, oo.LeaseTTL, oo.FaultEvery = o.Duration, o.Seed, o.Replicas, o.LeaseTTL, o.FaultEvery
		n := 0
		for _, f := range drawSchedule(oo, true, true) {
			if !isPartition(f.Kind) {
				if tc.o.Partitions == "only" {
					t.Errorf("%s: %s scheduled", tc.name, f.Kind)
				}
				continue
			}
			n++
			if !tc.partitions || !tc.kinds(f) {
				t.Errorf("%s: %s of %s scheduled", tc.name, f.Kind, f.Link)
			}
		}
		if tc.partitions != (n > 0) {
			t.Errorf("%s: %d partitions", tc.name, n)
		}
	}
}

// checkHooksReplay: a seed gives the same hooks, over the four steps and
// none.
func checkHooksReplay(t *testing.T) {
	t.Helper()
	armA, armB := drawHooks(7), drawHooks(7)
	steps := map[poller.Step]bool{}
	for range 200 {
		x, y := armA(), armB()
		if x != y {
			t.Fatalf("arms differ: %v, %v", x, y)
		}
		steps[x.step] = true
	}
	if len(steps) != 5 { // the four steps and none
		t.Errorf("arms cover %v", steps)
	}
}

// checkPartitionDraw checks a partition's target and length: a hole or
// a reset of one replica lasts at least a TTL (so that its shards move),
// of every replica at most one.
func checkPartitionDraw(t *testing.T, o Options, f Fault) {
	t.Helper()
	if f.Link != linkRedis && f.Link != linkNATS && f.Link != linkBoth {
		t.Errorf("%s of link %q", f.Kind, f.Link)
	}
	if f.Replica < 0 || f.Replica >= o.Replicas || (f.AllReplicas && f.Replica != 0) {
		t.Errorf("%s of replica %d (all %v)", f.Kind, f.Replica, f.AllReplicas)
	}
	switch {
	case f.Kind == FaultPartitionLatency:
		d, err := time.ParseDuration(f.Detail)
		if err != nil || d <= 0 || d > o.LeaseTTL/5 || f.For < 2*time.Second {
			t.Errorf("latency %q for %v", f.Detail, f.For)
		}
	case f.AllReplicas && (f.For < o.LeaseTTL/4 || f.For > o.LeaseTTL):
		t.Errorf("%s of every replica for %v", f.Kind, f.For)
	case !f.AllReplicas && (f.For < o.LeaseTTL || f.For > 3*o.LeaseTTL):
		t.Errorf("%s of one replica for %v", f.Kind, f.For)
	}
}

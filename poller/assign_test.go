package poller

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/capoller/capoller/diff"
)

func shardsN(n int) []diff.Shard {
	var out []diff.Shard
	for i := range n {
		src := diff.SourceECS
		if i%2 == 1 {
			src = diff.SourceSWAS
		}
		out = append(out, diff.Shard{Account: fmt.Sprintf("acct%d", i%3), Source: src, Region: fmt.Sprintf("cn-region-%d", i/2)})
	}
	return out
}

// uniform is every member listing every shard.
func uniform(shards []diff.Shard, members ...string) map[string][]diff.Shard {
	can := map[string][]diff.Shard{}
	for _, m := range members {
		can[m] = shards
	}
	return can
}

func loads(a map[diff.Shard]string) map[string]int {
	out := map[string]int{}
	for _, m := range a {
		out[m]++
	}
	return out
}

func moved(a, b map[diff.Shard]string) int {
	n := 0
	for s, m := range a {
		if b[s] != m {
			n++
		}
	}
	return n
}

// TestAssignIsFair: with S shards and R members each owns floor or ceil
// of S/R, and every shard has an owner.
func TestAssignIsFair(t *testing.T) {
	for _, c := range []struct{ shards, members int }{{60, 3}, {60, 4}, {7, 3}, {2, 5}, {1, 1}, {100, 7}} {
		var members []string
		for i := range c.members {
			members = append(members, fmt.Sprintf("replica-%d", i))
		}
		a := Assign(uniform(shardsN(c.shards), members...))
		if len(a) != c.shards {
			t.Fatalf("%d shards over %d: %d assigned", c.shards, c.members, len(a))
		}
		ceil := (c.shards + c.members - 1) / c.members
		for m, n := range loads(a) {
			if n > ceil || n < c.shards/c.members-1 {
				t.Errorf("%d shards over %d: %s owns %d (loads %v)", c.shards, c.members, m, n, loads(a))
			}
		}
	}
	if a := Assign(nil); len(a) != 0 {
		t.Errorf("no members: %v", a)
	}
	if a := Assign(map[string][]diff.Shard{"idle": nil}); len(a) != 0 {
		t.Errorf("a member listing nothing: %v", a)
	}
}

// TestAssignIsTheSameEverywhere: replicas see members and shards in any
// order, duplicated, and compute one assignment.
func TestAssignIsTheSameEverywhere(t *testing.T) {
	shards := shardsN(30)
	can := map[string][]diff.Shard{"a": shards, "b": shards[:20], "c": shards[10:], "d": shards[5:25]}
	want := Assign(can)
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		again := map[string][]diff.Shard{}
		for m, l := range can {
			l = append(slices.Clone(l), l[0])
			r.Shuffle(len(l), func(i, j int) { l[i], l[j] = l[j], l[i] })
			again[m] = l
		}
		if got := Assign(again); moved(want, got) != 0 || len(got) != len(want) {
			t.Fatalf("another order gave another assignment: %d shards differ", moved(want, got))
		}
	}
}

// TestAssignMovesFewShards: a member joining or leaving moves about S/R
// shards, not most of them as a modulo would.
func TestAssignMovesFewShards(t *testing.T) {
	shards := shardsN(60)
	three := Assign(uniform(shards, "r1", "r2", "r3"))
	four := Assign(uniform(shards, "r1", "r2", "r3", "r4"))
	if n := moved(three, four); n > 60/4+60/10 {
		t.Errorf("a fourth member moved %d of 60 shards; about 15 must move", n)
	}
	if loads(four)["r4"] != 15 {
		t.Errorf("the new member owns %d shards, want 15", loads(four)["r4"])
	}
	two := Assign(uniform(shards, "r1", "r3"))
	t.Logf("moved: join %d, leave %d", moved(three, four), moved(three, two))
	if n := moved(three, two); n > 20+60/10 {
		t.Errorf("a member leaving moved %d of 60 shards; about 20 (its own) must move", n)
	}
}

// earlierAssign is the assignment of the versions before replicas said
// which shards they list: every member takes every shard.
func earlierAssign(shards []diff.Shard, members []string) map[diff.Shard]string {
	out := map[diff.Shard]string{}
	members = slices.Compact(slices.Sorted(slices.Values(members)))
	sorted := slices.Clone(shards)
	slices.SortFunc(sorted, func(a, b diff.Shard) int { return strings.Compare(a.String(), b.String()) })
	capacity := (len(sorted) + len(members) - 1) / len(members)
	load := map[string]int{}
	for _, s := range sorted {
		ranked := slices.Clone(members)
		slices.SortStableFunc(ranked, func(a, b string) int {
			ra, rb := rank(s.String(), a), rank(s.String(), b)
			switch {
			case ra > rb:
				return -1
			case ra < rb:
				return 1
			}
			return strings.Compare(a, b)
		})
		for _, m := range ranked {
			if load[m] < capacity {
				out[s] = m
				load[m]++
				break
			}
		}
	}
	return out
}

// TestAssignUniformIsTheEarlierAssignment: replicas that list the same
// shards assign them as the earlier versions did, so a rolling upgrade
// from one moves nothing.
func TestAssignUniformIsTheEarlierAssignment(t *testing.T) {
	for _, c := range []struct{ shards, members int }{{60, 3}, {12, 3}, {7, 2}, {100, 7}, {3, 5}, {1, 1}} {
		var members []string
		for i := range c.members {
			members = append(members, fmt.Sprintf("capoller-%d-x%d", i, i*7))
		}
		want := earlierAssign(shardsN(c.shards), members)
		if got := Assign(uniform(shardsN(c.shards), members...)); moved(want, got) != 0 || len(got) != len(want) {
			t.Errorf("%d shards over %d: %d shards differ from the earlier assignment", c.shards, c.members, moved(want, got))
		}
	}
}

// TestAssignShardsListedByOneGoToIt: a rolling deploy adding regions —
// two replicas list A and B, one restarted with A to F: C to F are the
// new one's, and A and B are shared.
func TestAssignShardsListedByOneGoToIt(t *testing.T) {
	regions := func(rs ...string) []diff.Shard {
		var out []diff.Shard
		for _, r := range rs {
			out = append(out, diff.Shard{Account: "prod", Source: diff.SourceECS, Region: r})
		}
		return out
	}
	old := regions("a", "b")
	wide := regions("a", "b", "c", "d", "e", "f")
	a := Assign(map[string][]diff.Shard{"old-1": old, "new-2": wide})
	for _, s := range wide[2:] {
		if a[s] != "new-2" {
			t.Errorf("%s, listed by new-2 alone, went to %q", s, a[s])
		}
	}
	if l := loads(a); l["old-1"] != 2 || l["new-2"] != 4 {
		t.Errorf("loads %v: the old replica should keep both shared shards, the new one having 4 of its own", l)
	}
	for _, s := range old {
		if a[s] == "" {
			t.Errorf("%s has no owner", s)
		}
	}
	// Disjoint deployments on one store: each is assigned as if alone.
	east, west := shardsN(10), regions("w1", "w2")
	both := Assign(map[string][]diff.Shard{"e1": east, "e2": east, "w1": west})
	alone := Assign(uniform(east, "e1", "e2"))
	for s, m := range alone {
		if both[s] != m {
			t.Errorf("%s: %s alone, %s beside another deployment", s, m, both[s])
		}
	}
	for _, s := range west {
		if both[s] != "w1" {
			t.Errorf("%s went to %q", s, both[s])
		}
	}
}

// TestAssignSharedShardsSpreadWithBoundedLoads: over random lists, every
// shard goes to a member that lists it, and no member carries more than
// one above the best possible maximum load (found by brute force).
func TestAssignSharedShardsSpreadWithBoundedLoads(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	worst := 0
	for trial := range 400 {
		nm, ns := 2+r.IntN(3), 1+r.IntN(8)
		shards := shardsN(ns)
		can := map[string][]diff.Shard{}
		lister := map[diff.Shard][]string{}
		for i := range nm {
			m := fmt.Sprintf("m%d", i)
			for _, s := range shards {
				if r.IntN(3) > 0 {
					can[m] = append(can[m], s)
					lister[s] = append(lister[s], m)
				}
			}
		}
		a := Assign(can)
		for _, s := range shards {
			if len(lister[s]) == 0 {
				if _, ok := a[s]; ok {
					t.Fatalf("trial %d: %s, listed by nobody, went to %s", trial, s, a[s])
				}
				continue
			}
			if !slices.Contains(lister[s], a[s]) {
				t.Fatalf("trial %d: %s went to %q, which does not list it (%v)", trial, s, a[s], lister[s])
			}
		}
		best := bestMaxLoad(shards, lister)
		got := 0
		for _, n := range loads(a) {
			got = max(got, n)
		}
		if got > best+1 {
			t.Fatalf("trial %d: a member carries %d shards where %d is possible: lists %v, assignment %v", trial, got, best, can, a)
		}
		worst = max(worst, got-best)
	}
	t.Logf("worst excess over the best maximum load: %d", worst)
}

// bestMaxLoad is the least maximum load over every assignment of the
// shards to members that list them (exhaustive: a few shards only).
func bestMaxLoad(shards []diff.Shard, lister map[diff.Shard][]string) int {
	best := len(shards)
	load := map[string]int{}
	var try func(i, high int)
	try = func(i, high int) {
		if high >= best {
			return
		}
		if i == len(shards) {
			best = high
			return
		}
		ls := lister[shards[i]]
		if len(ls) == 0 {
			try(i+1, high)
			return
		}
		for _, m := range ls {
			load[m]++
			try(i+1, max(high, load[m]))
			load[m]--
		}
	}
	try(0, 0)
	return best
}

// TestAssignSupersetJoinMovesOnlyWhatItMust: a replica joining with a
// superset of the others' shards takes its own shards and only as many
// shared ones as even the loads; nothing else moves between the others.
func TestAssignSupersetJoinMovesOnlyWhatItMust(t *testing.T) {
	shared := shardsN(20)
	for _, extra := range []int{10, 14, 2, 0} {
		var own []diff.Shard
		for i := range extra {
			own = append(own, diff.Shard{Account: "new", Source: diff.SourceECS, Region: fmt.Sprintf("ap-new-%d", i)})
		}
		before := Assign(uniform(shared, "r1", "r2"))
		after := Assign(map[string][]diff.Shard{"r1": shared, "r2": shared, "r3": append(slices.Clone(shared), own...)})
		for _, s := range own {
			if after[s] != "r3" {
				t.Errorf("extra %d: %s, listed by r3 alone, went to %q", extra, s, after[s])
			}
		}
		// r3's share: the level that evens the loads once it has its own.
		level := 0
		for room := 0; room < len(shared); {
			level++
			room = 2*level + max(0, level-extra)
		}
		took := max(0, level-extra)
		n := moved(before, after)
		t.Logf("extra %d: r3 took %d shared shards, %d moved (loads %v)", extra, loads(after)["r3"]-extra, n, loads(after))
		if got := loads(after)["r3"] - extra; got > took {
			t.Errorf("extra %d: r3 took %d shared shards, its share is %d", extra, got, took)
		}
		if n != loads(after)["r3"]-extra {
			t.Errorf("extra %d: %d shared shards moved, r3 took %d: the others reshuffled", extra, n, loads(after)["r3"]-extra)
		}
	}
}

// TestAssignLeavesAShardListedByNobody: a shard no member lists has no
// owner (the group releases it rather than give it to a replica that
// cannot poll it).
func TestAssignLeavesAShardListedByNobody(t *testing.T) {
	shards := shardsN(4)
	a := Assign(map[string][]diff.Shard{"r1": shards[:2], "r2": shards[1:3]})
	if _, ok := a[shards[3]]; ok || len(a) != 3 {
		t.Errorf("assignment %v: want shards 0 to 2 only", a)
	}
}

// BenchmarkAssign: 1000 shards over 30 replicas that list them all, as
// each replica computes it every round.
func BenchmarkAssign(b *testing.B) {
	shards := shardsN(1000)
	var members []string
	for i := range 30 {
		members = append(members, fmt.Sprintf("capoller-%02d-abcdef", i))
	}
	can := uniform(shards, members...)
	for b.Loop() {
		Assign(can)
	}
}

package poller

import (
	"fmt"
	"math/rand/v2"
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
		a := Assign(shardsN(c.shards), members)
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
	if a := Assign(shardsN(3), nil); len(a) != 0 {
		t.Errorf("no members: %v", a)
	}
}

// TestAssignIsTheSameEverywhere: replicas see members and shards in any
// order, duplicated, and compute one assignment.
func TestAssignIsTheSameEverywhere(t *testing.T) {
	shards := shardsN(30)
	members := []string{"a", "b", "c", "d"}
	want := Assign(shards, members)
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		s := append([]diff.Shard(nil), shards...)
		m := append([]string(nil), members...)
		r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
		r.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
		if got := Assign(s, append(m, m[0])); moved(want, got) != 0 {
			t.Fatalf("another order gave another assignment: %d shards differ", moved(want, got))
		}
	}
}

// TestAssignMovesFewShards: a member joining or leaving moves about S/R
// shards, not most of them as a modulo would.
func TestAssignMovesFewShards(t *testing.T) {
	shards := shardsN(60)
	three := Assign(shards, []string{"r1", "r2", "r3"})
	four := Assign(shards, []string{"r1", "r2", "r3", "r4"})
	if n := moved(three, four); n > 60/4+60/10 {
		t.Errorf("a fourth member moved %d of 60 shards; about 15 must move", n)
	}
	if loads(four)["r4"] != 15 {
		t.Errorf("the new member owns %d shards, want 15", loads(four)["r4"])
	}
	two := Assign(shards, []string{"r1", "r3"})
	t.Logf("moved: join %d, leave %d", moved(three, four), moved(three, two))
	if n := moved(three, two); n > 20+60/10 {
		t.Errorf("a member leaving moved %d of 60 shards; about 20 (its own) must move", n)
	}
}

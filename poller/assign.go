package poller

import (
	"hash/fnv"
	"slices"
	"strings"

	"github.com/capoller/capoller/diff"
)

// Assign spreads shards over the group's members: each shard goes to the
// member that ranks it highest (rendezvous hashing), unless that member
// already has its share, ceil(shards/members); then to the next in its
// ranking (bounded loads). Every replica computes the same assignment
// from the same members and shards, whatever their order. A member
// joining or leaving moves few shards: about shards/members, where a
// modulo would move nearly all of them.
func Assign(shards []diff.Shard, members []string) map[diff.Shard]string {
	out := make(map[diff.Shard]string, len(shards))
	if len(members) == 0 {
		return out
	}
	members = slices.Clone(members)
	slices.Sort(members)
	members = slices.Compact(members)
	sorted := slices.Clone(shards)
	slices.SortFunc(sorted, func(a, b diff.Shard) int { return strings.Compare(a.String(), b.String()) })
	sorted = slices.Compact(sorted)
	capacity := (len(sorted) + len(members) - 1) / len(members)
	load := make(map[string]int, len(members))
	ranked := make([]string, len(members))
	for _, s := range sorted {
		copy(ranked, members)
		id := s.String()
		slices.SortStableFunc(ranked, func(a, b string) int {
			ra, rb := rank(id, a), rank(id, b)
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

// rank is the rendezvous score of a member for a shard.
func rank(shard, member string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(shard))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(member))
	// FNV's low bits mix poorly for inputs that differ only at the end;
	// a final avalanche (from SplitMix64) spreads them.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

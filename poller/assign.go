package poller

import (
	"cmp"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/capoller/capoller/diff"
)

// Assign gives each shard to one of the members that can take it. can
// maps each member's id to the shards it can take: the group passes each
// live replica's configured shards (see [Group]), so replicas configured
// differently — a rolling deploy adding regions, two deployments on one
// store — share what they have in common, and a shard only one lists is
// that one's.
//
// Members and shards fall into independent parts: two members are in the
// same part when a chain of shared shards links them (two deployments
// with disjoint shards are two parts, each assigned as if alone). Within
// a part, each shard goes to the member that ranks it highest
// (rendezvous hashing) among those that can take it, unless that member
// already has its share; then to the next in its ranking (bounded loads);
// if every one of them is full, to the least loaded. A member's share is
// the level that spreads the part's shards evenly once each member has
// the shards that only it can take: ceil(shards/members) when every
// member can take every shard. Shards are placed fewest candidates
// first, then by id.
//
// Every replica computes the same assignment from the same members and
// lists, whatever their order. A member joining or leaving moves few
// shards: about shards/members, where a modulo would move nearly all of
// them; one joining with shards of its own moves only what evens the
// loads.
func Assign(can map[string][]diff.Shard) map[diff.Shard]string {
	out := map[diff.Shard]string{}
	for _, part := range parts(can) {
		part.assign(out)
	}
	return out
}

// part is a set of members and the shards they can take, linked by
// shared shards; candidates lists, per shard, the members that can take
// it, sorted.
type part struct {
	members    []string
	shards     []diff.Shard
	candidates map[diff.Shard][]string
}

// parts splits can into its independent parts, in a deterministic order.
func parts(can map[string][]diff.Shard) []*part {
	candidates := map[diff.Shard][]string{}
	ids := make([]string, 0, len(can))
	for id := range can {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// Union-find over members: a shard links every member that can take it.
	parent := map[string]string{}
	var find func(string) string
	find = func(m string) string {
		if parent[m] == m {
			return m
		}
		parent[m] = find(parent[m])
		return parent[m]
	}
	for _, id := range ids {
		for _, s := range can[id] {
			s = s.Canonical()
			if c := candidates[s]; len(c) == 0 || c[len(c)-1] != id {
				candidates[s] = append(c, id) // ids are visited sorted
			}
		}
		if len(can[id]) > 0 {
			parent[id] = id
		}
	}
	for _, c := range candidates {
		for _, m := range c[1:] {
			if a, b := find(c[0]), find(m); a != b {
				parent[max(a, b)] = min(a, b) // the smallest id is the root: deterministic
			}
		}
	}
	byRoot := map[string]*part{}
	var out []*part
	for _, id := range ids {
		if _, ok := parent[id]; !ok {
			continue // takes nothing
		}
		root := find(id)
		p := byRoot[root]
		if p == nil {
			p = &part{candidates: map[diff.Shard][]string{}}
			byRoot[root] = p
			out = append(out, p)
		}
		p.members = append(p.members, id)
	}
	for s, c := range candidates {
		p := byRoot[find(c[0])]
		p.shards = append(p.shards, s)
		p.candidates[s] = c
	}
	return out
}

// assign places the part's shards into out (see Assign).
func (p *part) assign(out map[diff.Shard]string) {
	slices.SortFunc(p.shards, func(a, b diff.Shard) int {
		return cmp.Or(cmp.Compare(len(p.candidates[a]), len(p.candidates[b])), strings.Compare(a.String(), b.String()))
	})
	share := p.shares()
	load := make(map[string]int, len(p.members))
	for _, s := range p.shards {
		id := s.String()
		ranks := make(map[string]uint64, len(p.candidates[s])) // once each, not in the comparator
		for _, m := range p.candidates[s] {
			ranks[m] = rank(id, m)
		}
		ranked := slices.Clone(p.candidates[s])
		slices.SortStableFunc(ranked, func(a, b string) int {
			return cmp.Or(cmp.Compare(ranks[b], ranks[a]), strings.Compare(a, b))
		})
		pick := ""
		for _, m := range ranked {
			if load[m] < share[m] {
				pick = m
				break
			}
		}
		if pick == "" { // all full: the least over its share
			pick = ranked[0]
			for _, m := range ranked[1:] {
				if load[m]-share[m] < load[pick]-share[pick] {
					pick = m
				}
			}
		}
		out[s] = pick
		load[pick]++
	}
}

// shares returns each member's share of the part: the shards only it can
// take are its own, and the others are spread to an even level L, the
// least with sum over members of max(0, L - own) >= the shards left.
func (p *part) shares() map[string]int {
	own := map[string]int{}
	shared := 0
	for _, s := range p.shards {
		if c := p.candidates[s]; len(c) == 1 {
			own[c[0]]++
		} else {
			shared++
		}
	}
	level := 0
	for room := 0; room < shared; {
		level++
		room = 0
		for _, m := range p.members {
			room += max(0, level-own[m])
		}
	}
	share := make(map[string]int, len(p.members))
	for _, m := range p.members {
		share[m] = max(level, own[m])
	}
	return share
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

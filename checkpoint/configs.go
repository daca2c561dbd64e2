package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/capoller/capoller/diff"
)

// A member's heartbeat names its configuration's shards by a digest
// (memberRecord.Shards); the list itself is kept once per configuration,
// under its digest, beside the members (Redis: the hash
// {<prefix>group:members}configs; KV: the value group.config.<digest>).
// Replicas of one configuration share it, a list never changes under its
// digest, and each process reads each list once: a heartbeat stays the
// size of a few fields per member, however many shards the replicas
// list. The group remembers, by digest, when each configuration was last
// listed and by whom (Redis: {<prefix>group:members}listed; KV:
// group.listed), for ListedMemory; a configuration forgotten goes with
// its list.

// ShardsDigest is the digest of a configuration's shards, as members
// name it: the first 8 bytes of the SHA-256 of their sorted ids, one per
// line, in hex (as earlier versions computed it).
func ShardsDigest(shards []diff.Shard) string {
	ids := shardIDs(shards)
	sum := sha256.New()
	for _, id := range ids {
		sum.Write([]byte(id + "\n"))
	}
	return hex.EncodeToString(sum.Sum(nil)[:8])
}

// listIDs encodes a configuration's list as a store keeps it.
func listIDs(shards []diff.Shard) []byte {
	b, _ := json.Marshal(append([]string{}, shardIDs(shards)...)) // strings: cannot fail
	return b
}

// configs caches the configurations' lists by digest, for one process.
type configs struct {
	mu    sync.Mutex
	lists map[string][]diff.Shard
	// stored says which digests' lists this process wrote, or found, in
	// the store: a heartbeat sends its list only while the store may lack
	// it.
	stored map[string]bool
}

func newConfigs() *configs {
	return &configs{lists: map[string][]diff.Shard{}, stored: map[string]bool{}}
}

// list returns a configuration's list, and whether it is known.
func (c *configs) list(digest string) ([]diff.Shard, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.lists[digest]
	return l, ok
}

// put caches a list read from the store (nil value: none there).
func (c *configs) put(digest string, value []byte) {
	if value == nil {
		return
	}
	var ids idList
	if json.Unmarshal(value, &ids) != nil {
		return // unreadable: as if missing
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lists[digest] = append([]diff.Shard{}, parseShardIDs(ids)...)
}

// missing returns the digests whose lists are not cached.
func (c *configs) missing(digests []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, d := range digests {
		if _, ok := c.lists[d]; !ok && d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// own records m's own list (it is its configuration's), and reports
// whether its heartbeat must send it to the store.
func (c *configs) own(digest string, shards []diff.Shard) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lists[digest] = append([]diff.Shard{}, parseShardIDs(shardIDs(shards))...) // sorted, as read back
	return !c.stored[digest]
}

// storedAs records whether the store holds the list of digest.
func (c *configs) storedAs(digest string, held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stored[digest] = held
}

// keep forgets the lists of digests not in use (a configuration gone
// for ListedMemory), so that the cache stays the size of the group's.
func (c *configs) keep(digests []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d := range c.lists {
		if !slices.Contains(digests, d) {
			delete(c.lists, d)
		}
	}
}

// usedConfigs returns the digests in use: the members', those listed,
// and own ("" for none).
func usedConfigs(records []memberRecord, listed map[string]string, own string) []string {
	var used []string
	if own != "" {
		used = append(used, own)
	}
	for _, rec := range records {
		if rec.Listing {
			used = append(used, rec.Shards)
		}
	}
	for d := range listed {
		used = append(used, d)
	}
	return used
}

// roster builds a roster from the live members' records and the
// configurations listed (digest -> "<Unix ms>|<member>"), with the lists
// cached: a member's Lists is its configuration's (nil for a member of an
// earlier version, or one whose list the store lacks), and Listed is
// every shard of a configuration listed, with the latest listing.
func (c *configs) roster(records []memberRecord, listed map[string]string) Roster {
	var roster Roster
	for _, rec := range records {
		m := rec.member()
		if rec.Listing {
			if l, ok := c.list(rec.Shards); ok {
				m.Lists = slices.Clone(l)
			}
		}
		roster.Members = append(roster.Members, m)
	}
	sortMembers(roster.Members)
	roster.Listed = c.listedShards(listed)
	return roster
}

// listedShards expands the configurations listed into their shards,
// each with its latest listing.
func (c *configs) listedShards(listed map[string]string) []ListedShard {
	latest := map[diff.Shard]ListedShard{}
	for digest, stamp := range listed {
		at, by, ok := parseStamp(stamp)
		if !ok {
			continue
		}
		l, _ := c.list(digest)
		for _, s := range l {
			if prev, ok := latest[s]; !ok || at.After(prev.At) {
				latest[s] = ListedShard{Shard: s, By: by, At: at}
			}
		}
	}
	out := make([]ListedShard, 0, len(latest))
	for _, l := range latest {
		out = append(out, l)
	}
	sortListed(out)
	return out
}

// stamp writes a configuration's listing: "<Unix ms>|<member id>".
func stamp(member string, now time.Time) string {
	return strings.Join([]string{formatMs(unixMs(now)), member}, "|")
}

// parseStamp reads a stamp back.
func parseStamp(s string) (time.Time, string, bool) {
	ms, by, ok := strings.Cut(s, "|")
	n, err := parseMs(ms)
	if !ok || err != nil {
		return time.Time{}, "", false
	}
	return msTime(n), by, true
}

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/cmd/internal/faultproxy"
	"github.com/capoller/capoller/diff"
)

// Network partitions: a fault proxy of the harness's own sits between
// each replica and Redis, and between each replica and NATS, when the
// harness runs a single server of each. Redis Cluster and Sentinel, and
// NATS clusters, hand their clients the other nodes' addresses, which
// would go around a proxy: there, no partition is injected.
const (
	faultPartitionHole    = "partition-blackhole" // traffic swallowed both ways, connections kept open
	faultPartitionReset   = "partition-reset"     // connections reset, new ones too
	faultPartitionLatency = "partition-latency"   // every chunk delayed, both ways
)

// The links a partition cuts.
const (
	linkRedis = "redis"
	linkNATS  = "nats"
	linkBoth  = "redis+nats"
)

// publishSlack is how long after its claims expired a replica may still
// be seen publishing: a batch whose publishing began just before.
const publishSlack = 250 * time.Millisecond

func isPartition(kind string) bool {
	return kind == faultPartitionHole || kind == faultPartitionReset || kind == faultPartitionLatency
}

// partitionLinks says which links of the replicas can be partitioned.
func partitionLinks(o chaosOptions, redisEmbedded, natsEmbedded bool) (redisLink, natsLink bool) {
	if o.partitions == "off" {
		return false, false
	}
	single := o.redisTopology == "" || o.redisTopology == chaosRedisSingle
	return redisEmbedded && single && o.checkpoint == "redis", natsEmbedded && !o.natsCluster
}

// describePartitions says, for the report, where partitions are injected
// and where not, and why.
func describePartitions(o chaosOptions, redisEmbedded, natsEmbedded bool) string {
	if o.partitions == "off" {
		return "off (--partitions off)"
	}
	r, n := partitionLinks(o, redisEmbedded, natsEmbedded)
	var on, off []string
	switch {
	case r:
		on = append(on, "Redis")
	case o.checkpoint != "redis":
		off = append(off, "Redis: unused (checkpoints in JetStream KV)")
	case redisEmbedded:
		off = append(off, "Redis: a "+o.redisTopology+" hands the replicas other nodes' addresses, which go around a proxy")
	default:
		off = append(off, "Redis: not the harness's own server (a Cluster or Sentinel would hand the replicas other nodes' addresses)")
	}
	switch {
	case n:
		on = append(on, "NATS")
	case o.natsCluster:
		off = append(off, "NATS: a cluster hands its clients the other nodes' addresses, which go around a proxy")
	default:
		off = append(off, "NATS: not the harness's own server")
	}
	s := "none injected"
	if len(on) > 0 {
		s = "each replica's link to " + strings.Join(on, " and to ") + " through a fault proxy of its own"
	}
	if len(off) > 0 {
		s += "; not partitioned: " + strings.Join(off, "; ")
	}
	return s
}

// partitionKinds are the partition faults the schedule draws, by weight.
func partitionKinds(o chaosOptions, redisEmbedded, natsEmbedded bool) []chaosWeighted {
	r, n := partitionLinks(o, redisEmbedded, natsEmbedded)
	if !r && !n {
		return nil
	}
	return []chaosWeighted{{faultPartitionHole, 2}, {faultPartitionReset, 1}, {faultPartitionLatency, 1}}
}

// drawPartition draws a partition's target, links and length: a black
// hole or a reset of one replica lasts between one and three lease TTLs,
// long enough for its shards to move; of every replica, up to a TTL.
func drawPartition(rng *rand.Rand, o chaosOptions, f *chaosFault, redisLink, natsLink bool, between func(lo, hi time.Duration) time.Duration) {
	switch {
	case redisLink && natsLink:
		f.Link = []string{linkRedis, linkRedis, linkNATS, linkNATS, linkBoth}[rng.IntN(5)]
	case redisLink:
		f.Link = linkRedis
	default:
		f.Link = linkNATS
	}
	f.AllReplicas = rng.IntN(4) == 0
	if !f.AllReplicas {
		f.Replica = rng.IntN(o.replicas)
	}
	tick := o.leaseTTL / 5
	switch {
	case f.Kind == faultPartitionLatency:
		f.For = between(2*time.Second, 3*o.leaseTTL)
		f.Detail = between(10*time.Millisecond, tick).Round(time.Millisecond).String()
	case f.AllReplicas:
		f.For = between(o.leaseTTL/4, o.leaseTTL)
	default:
		f.For = between(o.leaseTTL, 3*o.leaseTTL)
	}
}

// chaosLinks are the proxies of each replica's links, and the events it
// was seen publishing (through its NATS proxy, forwarded or swallowed).
type chaosLinks struct {
	redis, nats []*faultproxy.Proxy // per slot; nil when the link is not proxied
	pubs        []*publishLog
}

type publishLog struct {
	mu sync.Mutex
	at []time.Time
}

func (l *publishLog) add(at time.Time) {
	l.mu.Lock()
	l.at = append(l.at, at)
	l.mu.Unlock()
}

// within returns the publishes in [from, to).
func (l *publishLog) within(from, to time.Time) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []time.Time
	for _, t := range l.at {
		if !t.Before(from) && t.Before(to) {
			out = append(out, t)
		}
	}
	return out
}

// newChaosLinks starts a proxy per replica and link that can be
// partitioned; subjectPrefix is the events'.
func newChaosLinks(replicas int, redisURL, natsURL string, redisLink, natsLink bool, subjectPrefix string) (*chaosLinks, error) {
	l := &chaosLinks{redis: make([]*faultproxy.Proxy, replicas), nats: make([]*faultproxy.Proxy, replicas), pubs: make([]*publishLog, replicas)}
	for i := range replicas {
		log := &publishLog{}
		l.pubs[i] = log
		if redisLink {
			p, err := faultproxy.New(faultproxy.Options{Upstream: hostOf(redisURL)})
			if err != nil {
				l.close()
				return nil, err
			}
			l.redis[i] = p
		}
		if natsLink {
			p, err := faultproxy.New(faultproxy.Options{Upstream: hostOf(natsURL), Tap: func() faultproxy.Tap {
				return faultproxy.NATSPublishes(func(subject string, _ bool) {
					if strings.HasPrefix(subject, subjectPrefix+".") {
						log.add(time.Now())
					}
				})
			}})
			if err != nil {
				l.close()
				return nil, err
			}
			l.nats[i] = p
		}
	}
	return l, nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Host
}

// args returns a replica's arguments with its links through its proxies.
func (l *chaosLinks) args(args []string, slot int) []string {
	out := slices.Clone(args)
	for i := 0; i+1 < len(out); i++ {
		switch {
		case out[i] == "--redis-url" && l.redis[slot] != nil:
			out[i+1] = "redis://" + l.redis[slot].Addr() + "/0"
		case out[i] == "--nats-url" && l.nats[slot] != nil:
			out[i+1] = "nats://" + l.nats[slot].Addr()
		}
	}
	return out
}

// proxies returns the proxies a partition of link cuts for slot.
func (l *chaosLinks) proxies(slot int, link string) []*faultproxy.Proxy {
	var out []*faultproxy.Proxy
	if link != linkNATS && l.redis[slot] != nil {
		out = append(out, l.redis[slot])
	}
	if link != linkRedis && l.nats[slot] != nil {
		out = append(out, l.nats[slot])
	}
	return out
}

func (l *chaosLinks) close() {
	for _, p := range append(slices.Clone(l.redis), l.nats...) {
		if p != nil {
			_ = p.Close()
		}
	}
}

// slotEvent is a replica going away or pausing (killed, stopped, or
// exiting by itself), which delays a take-over or a rejoin.
type slotEvent struct {
	at         time.Time
	slot       int
	what       string
	unexpected bool
}

// disturbed records a slot event.
func (c *chaosRun) disturbed(slot int, what string, unexpected bool, at time.Time) {
	c.events = append(c.events, slotEvent{at: at, slot: slot, what: what, unexpected: unexpected})
}

func (c *chaosRun) slotIndex(s *chaosSlot) int {
	return slices.Index(c.slots, s)
}

// partitionRun is a partition as it was applied.
type partitionRun struct {
	fault      *chaosFault
	slots      []int
	start, end time.Time
	held       map[int][]diff.Shard // what each slot held at the start
}

// startPartition applies a scheduled partition, unless one is in effect
// (or ended less than a TTL ago) or an engine is restarting.
func (c *chaosRun) startPartition(f *chaosFault, now time.Time, skip func(string), done func(string, ...any)) {
	// The schedule puts partitions a TTL apart; half of it is left for
	// the harness's own delays.
	if c.partition != nil || (c.lastPartitionEnd != time.Time{} && now.Sub(c.lastPartitionEnd) < c.o.leaseTTL/2) {
		skip("a partition is in effect or just ended")
		return
	}
	if len(c.busy) > 0 {
		skip("an engine is restarting")
		return
	}
	fault := faultproxy.Fault{Mode: faultproxy.BlackHole}
	switch f.Kind {
	case faultPartitionReset:
		fault.Mode = faultproxy.Reset
	case faultPartitionLatency:
		d, err := time.ParseDuration(f.Detail)
		if err != nil {
			skip(err.Error())
			return
		}
		fault = faultproxy.Fault{Mode: faultproxy.Latency, Delay: d}
	}
	slots := []int{f.Replica}
	if f.AllReplicas {
		slots = nil
		for i := range c.slots {
			slots = append(slots, i)
		}
	}
	p := &partitionRun{fault: f, slots: slots, start: now, held: map[int][]diff.Shard{}}
	for _, s := range slots {
		p.held[s] = c.leases.heldBy(s)
		for _, px := range c.links.proxies(s, f.Link) {
			if err := px.Set(fault); err != nil {
				skip(err.Error())
				return
			}
		}
	}
	c.partition = p
	who := "every replica"
	if !f.AllReplicas {
		who = c.slots[f.Replica].id
	}
	done("%s: %s cut from %s (%s) for %v", f.Kind, who, f.Link, fault, f.For.Round(time.Millisecond))
}

// tendPartition ends the partition in effect when it is due (or at once
// when the faults are over).
func (c *chaosRun) tendPartition(now time.Time, settling bool) {
	p := c.partition
	if p == nil || (!settling && now.Before(p.start.Add(p.fault.For))) {
		return
	}
	for _, s := range p.slots {
		for _, px := range c.links.proxies(s, p.fault.Link) {
			_ = px.Set(faultproxy.Fault{Mode: faultproxy.Pass})
		}
	}
	p.end = now
	c.partitions = append(c.partitions, p)
	c.partition, c.lastPartitionEnd = nil, now
	c.logf("%s of %s: healed after %v", p.fault.Kind, p.fault.Link, now.Sub(p.start).Round(time.Millisecond))
}

// leaseWatch reads the shards' leases from the store, over the harness's
// own connection, every 100ms, and keeps each shard's owners over time.
type leaseWatch struct {
	read   func(ctx context.Context) ([]checkpoint.Lease, error)
	slotOf func(owner string) int

	mu      sync.Mutex
	owners  map[diff.Shard][]ownerSince // each shard's owner (a slot, or -1: none live) from when
	current map[diff.Shard]int
	reads   int
	errs    int
	lastErr string
	stopped time.Time
}

type ownerSince struct {
	at   time.Time
	slot int
}

func newLeaseWatch(read func(ctx context.Context) ([]checkpoint.Lease, error), slotOf func(string) int) *leaseWatch {
	return &leaseWatch{read: read, slotOf: slotOf, owners: map[diff.Shard][]ownerSince{}, current: map[diff.Shard]int{}}
}

// run reads until ctx ends.
func (w *leaseWatch) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		leases, err := w.read(rctx)
		cancel()
		now := time.Now()
		w.mu.Lock()
		w.reads++
		if err != nil {
			w.errs++
			w.lastErr = err.Error()
		}
		for _, l := range leases {
			s, slot := l.Shard.Canonical(), -1
			if l.Live(now) {
				slot = w.slotOf(l.Owner)
			}
			if cur, ok := w.current[s]; !ok || cur != slot {
				w.current[s] = slot
				w.owners[s] = append(w.owners[s], ownerSince{at: now, slot: slot})
			}
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.stopped = time.Now()
			w.mu.Unlock()
			return
		case <-tick.C:
		}
	}
}

// heldBy returns the shards slot holds now, as last read.
func (w *leaseWatch) heldBy(slot int) []diff.Shard {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []diff.Shard
	for s, cur := range w.current {
		if cur == slot {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// takenAt returns when shard was first seen held by a slot other than
// from at or after since, and whether it was.
func (w *leaseWatch) takenAt(shard diff.Shard, from int, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	owners := w.owners[shard]
	for i, o := range owners {
		if o.slot < 0 || o.slot == from {
			continue
		}
		if !o.at.Before(since) {
			return o.at, true
		}
		if i+1 == len(owners) || owners[i+1].at.After(since) {
			return since, true // already another's at since
		}
	}
	return time.Time{}, false
}

// lostAt returns when shard was first seen not held by slot (free, or
// another's) at or after since, and whether it was.
func (w *leaseWatch) lostAt(shard diff.Shard, slot int, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	owners := w.owners[shard]
	for i, o := range owners {
		if o.slot == slot {
			continue
		}
		if !o.at.Before(since) {
			return o.at, true
		}
		if i+1 == len(owners) || owners[i+1].at.After(since) {
			return since, true
		}
	}
	return time.Time{}, false
}

// ownsAt returns when slot was first seen holding a shard at or after
// since, and whether it was.
func (w *leaseWatch) ownsAt(slot int, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first time.Time
	found := false
	for _, owners := range w.owners {
		for i, o := range owners {
			if o.slot != slot {
				continue
			}
			at := o.at
			if at.Before(since) {
				if i+1 < len(owners) && !owners[i+1].at.After(since) {
					continue // lost before since
				}
				at = since
			}
			if !found || at.Before(first) {
				first, found = at, true
			}
		}
	}
	return first, found
}

func (w *leaseWatch) end() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped
}

// chaosLeaseReader reads the leases of shards from the run's store,
// over the harness's own connection (never through a proxy).
func chaosLeaseReader(o chaosOptions, redisURL string, js jetstream.JetStream, bucket, keyPrefix string, shards []diff.Shard) (func(context.Context) ([]checkpoint.Lease, error), func(), error) {
	if o.checkpoint == "natskv" {
		var kv *checkpoint.KV
		return func(ctx context.Context) ([]checkpoint.Lease, error) {
			if kv == nil {
				k, err := checkpoint.NewKV(ctx, js, checkpoint.KVOptions{Bucket: bucket, OpenOnly: true})
				if err != nil {
					return nil, err // no replica created it yet, or NATS is down
				}
				kv = k
			}
			return kv.Leases(ctx, shards)
		}, func() {}, nil
	}
	client, err := checkpoint.OpenRedis(redisURL, checkpoint.RedisAuth{}) // one server, a Cluster or Sentinel (--redis)
	if err != nil {
		return nil, nil, fmt.Errorf("lease watch: %w", err)
	}
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: keyPrefix})
	if err != nil {
		_ = client.Close()
		return nil, nil, err
	}
	return func(ctx context.Context) ([]checkpoint.Lease, error) {
			leases, err := store.Leases(ctx, shards)
			if reloader, ok := client.(interface{ ReloadState(context.Context) }); ok && err != nil {
				reloader.ReloadState(ctx) // a master failed over: read the slots again, not the dead node
			}
			return leases, err
		},
		func() { _ = client.Close() }, nil
}

// chaosShards are the shards of the harness's configuration.
func chaosShards(accounts, sources, regions []string) []diff.Shard {
	var out []diff.Shard
	for _, a := range accounts {
		for _, r := range regions {
			for _, s := range sources {
				out = append(out, shardOfSource(a, s, r))
			}
		}
	}
	return out
}

// chaosPartitionReport is what the partitions did and whether the
// replicas behaved.
type chaosPartitionReport struct {
	// Injected says on which links partitions are injected, and why not
	// on the others.
	Injected string              `json:"injected"`
	Checks   []chaosPartitionRun `json:"checks,omitempty"`
	// MaxLostSeconds is the longest a partitioned replica kept a shard
	// it held (its live lease) after a hole or reset began that lasted a
	// TTL; MaxTakeoverSeconds the longest such a shard waited for another
	// owner, over the judged take-overs.
	MaxLostSeconds     float64 `json:"maxLostSeconds"`
	MaxTakeoverSeconds float64 `json:"maxTakeoverSeconds"`
	// MaxRejoinSeconds is the longest a partitioned replica took, after
	// the partition, to hold a shard again.
	MaxRejoinSeconds float64  `json:"maxRejoinSeconds"`
	Violations       []string `json:"violations,omitempty"`
	// LeaseReads and LeaseReadErrors count the harness's reads of the
	// leases (every 100ms).
	LeaseReads      int `json:"leaseReads"`
	LeaseReadErrors int `json:"leaseReadErrors"`
}

// chaosPartitionRun is one partition and what the checks found.
type chaosPartitionRun struct {
	At      string `json:"at"`
	Kind    string `json:"kind"`
	Replica string `json:"replica"`
	Link    string `json:"link"`
	Fault   string `json:"fault"`
	For     string `json:"for"`
	// PublishesAfterClaims are the publishes seen after the replica's
	// claims expired (Redis cut by a hole or a reset).
	PublishesAfterClaims int `json:"publishesAfterClaims,omitempty"`
	// LastPublishSeconds is the last publish attempt seen during the
	// partition, from its start.
	LastPublishSeconds float64 `json:"lastPublishSeconds,omitempty"`
	// Held is how many shards the replica held at the start; LostSeconds
	// how long it kept the last of them (-1: it kept one past the end);
	// TakeoverSeconds how long the last of them waited for another owner
	// (-1: not all were taken). Lost and Takeover say whether each was
	// judged, and why not.
	Held            int     `json:"held"`
	LostSeconds     float64 `json:"lostSeconds"`
	Lost            string  `json:"lost"`
	TakeoverSeconds float64 `json:"takeoverSeconds"`
	Takeover        string  `json:"takeover"`
	// RejoinSeconds is how long after the end the replica held a shard
	// again (-1: it did not); Rejoin says whether it was judged.
	RejoinSeconds float64  `json:"rejoinSeconds"`
	Rejoin        string   `json:"rejoin"`
	Violations    []string `json:"violations,omitempty"`
}

// checkPartitions judges every partition applied: a replica cut from
// Redis publishes nothing once its claims expired; the shards of a
// replica cut for longer than a TTL are taken by the others within a TTL
// and a tick (later if others were killed or stopped meanwhile); after
// the partition each replica holds a shard again, and none exits by
// itself.
func (c *chaosRun) checkPartitions(rep *chaosPartitionReport) {
	if c.leases == nil {
		return
	}
	ttl := c.o.leaseTTL
	tick := ttl / 5
	claimsFor := (ttl - tick) * 2 / 3
	rep.LeaseReads, rep.LeaseReadErrors = c.leases.reads, c.leases.errs
	watchEnd := c.leases.end()
	events := slices.Clone(c.events)
	sort.SliceStable(events, func(i, j int) bool { return events[i].at.Before(events[j].at) })
	at := func(t time.Time) string { return t.Sub(c.start).Round(100 * time.Millisecond).String() }
	for n, p := range c.partitions {
		f := p.fault
		// The next partition of a slot cuts its rejoin short.
		nextStart := func(slot int) time.Time {
			for _, q := range c.partitions[n+1:] {
				if slices.Contains(q.slots, slot) {
					return q.start
				}
			}
			return watchEnd
		}
		for _, s := range p.slots {
			r := chaosPartitionRun{At: at(p.start), Kind: f.Kind, Replica: c.slots[s].id, Link: f.Link, For: p.end.Sub(p.start).Round(time.Millisecond).String(),
				Held: len(p.held[s]), LostSeconds: -1, TakeoverSeconds: -1, RejoinSeconds: -1}
			if f.AllReplicas {
				r.Replica += " (all)"
			}
			r.Fault = f.Kind
			if f.Kind == faultPartitionLatency {
				r.Fault += " " + f.Detail
			}
			name := fmt.Sprintf("%s: %s of %s at %s for %s", r.Replica, f.Kind, f.Link, r.At, r.For)
			violate := func(format string, args ...any) {
				v := name + ": " + fmt.Sprintf(format, args...)
				r.Violations = append(r.Violations, v)
				rep.Violations = append(rep.Violations, v)
			}

			// Publish nothing after the claims expired.
			pubs := c.links.pubs[s].within(p.start, p.end)
			if len(pubs) > 0 {
				r.LastPublishSeconds = pubs[len(pubs)-1].Sub(p.start).Seconds()
			}
			if f.Link != linkNATS && (f.Kind == faultPartitionHole || f.Kind == faultPartitionReset) {
				bound := p.start.Add(claimsFor + publishSlack)
				late := c.links.pubs[s].within(bound, p.end)
				r.PublishesAfterClaims = len(late)
				if len(late) > 0 {
					violate("%d publishes after its claims expired (the lease two thirds old at %s, %v after the start, +%v): the first at %s, the last at %s",
						len(late), at(p.start.Add(claimsFor)), claimsFor, publishSlack, at(late[0]), at(late[len(late)-1]))
				}
			}

			// It loses its shards within the TTL, whatever the others do —
			// unless it was killed or stopped in the partition: then it
			// could not step back, and its leases expire by themselves, a
			// TTL after.
			loseBy := p.start.Add(ttl)
			for _, e := range events {
				if e.slot == s && !e.at.Before(p.start) && e.at.Before(loseBy) {
					loseBy = later(loseBy, e.at.Add(ttl))
				}
			}
			// Cut from NATS alone, it steps back only once another replica
			// reached the bus since its own failures began: with every
			// other replica killed or stopped about then, it rightly keeps
			// its shards, and neither its loss nor the take-over is judged.
			var stepBackWaits []string
			if f.Link == linkNATS {
				disturbed := map[int]bool{}
				for _, e := range events {
					if e.slot != s && !e.at.Before(p.start.Add(-2*ttl)) && e.at.Before(loseBy) {
						disturbed[e.slot] = true
						stepBackWaits = append(stepBackWaits, fmt.Sprintf("%s %s at %s", c.slots[e.slot].id, e.what, at(e.at)))
					}
				}
				if len(disturbed) < len(c.slots)-1 {
					stepBackWaits = nil // another replica served the bus throughout
				}
			}
			switch {
			case f.Kind == faultPartitionLatency:
				r.Lost = "not applicable (latency)"
			case len(stepBackWaits) > 0 && !f.AllReplicas && !p.end.Before(loseBy):
				r.Lost = "not judged: cut from NATS, it steps back only while another replica reaches the bus, and every other one was disturbed: " + listSome(stepBackWaits, 3)
			case p.end.Before(loseBy):
				r.Lost = "not applicable (shorter than the TTL, or than a TTL after its own kill or stop)"
			case f.AllReplicas && f.Link == linkNATS:
				r.Lost = "not applicable (every replica cut from NATS: none steps back, nothing moves)"
			default:
				r.Lost = "judged"
				var worst time.Duration
				var kept []string
				for _, sh := range p.held[s] {
					t, ok := c.leases.lostAt(sh, s, p.start)
					if !ok || t.After(loseBy) {
						kept = append(kept, sh.String())
						continue
					}
					worst = max(worst, t.Sub(p.start))
				}
				if len(kept) == 0 {
					r.LostSeconds = worst.Seconds()
					rep.MaxLostSeconds = max(rep.MaxLostSeconds, worst.Seconds())
				} else {
					violate("kept %d of the %d shards it held past the TTL (%v, by %s): %s", len(kept), len(p.held[s]), ttl, at(loseBy), strings.Join(kept, ", "))
				}
			}

			// The others take its shards.
			switch {
			case f.Kind == faultPartitionLatency:
				r.Takeover = "not applicable (latency)"
			case f.AllReplicas:
				r.Takeover = "not applicable (every replica cut)"
			case strings.HasPrefix(r.Lost, "not judged"):
				r.Takeover = r.Lost
			default:
				deadline := p.start.Add(ttl + tick)
				var why []string
				for _, e := range events {
					// Another's kill or stop slows the take-over down; so
					// does its own in the partition, which leaves its
					// leases to expire.
					if (e.slot != s && !e.at.Before(p.start.Add(-ttl)) || e.slot == s && !e.at.Before(p.start)) && e.at.Before(deadline) {
						deadline = later(deadline, e.at.Add(ttl+tick))
						why = append(why, fmt.Sprintf("%s %s at %s", c.slots[e.slot].id, e.what, at(e.at)))
					}
				}
				var worst time.Duration
				var missing []string
				for _, sh := range p.held[s] {
					t, ok := c.leases.takenAt(sh, s, p.start)
					if !ok || t.After(deadline) || t.After(p.end) {
						missing = append(missing, sh.String())
						continue
					}
					worst = max(worst, t.Sub(p.start))
				}
				switch {
				case len(missing) == 0:
					r.TakeoverSeconds, r.Takeover = worst.Seconds(), "judged"
					rep.MaxTakeoverSeconds = max(rep.MaxTakeoverSeconds, worst.Seconds())
				case deadline.After(p.end) || deadline.After(watchEnd):
					r.Takeover = fmt.Sprintf("not judged: the partition ended before the deadline (%s)", at(deadline))
					if len(why) > 0 {
						r.Takeover += ", pushed back by " + listSome(why, 3)
					}
				default:
					r.Takeover = "judged"
					extra := ""
					if len(why) > 0 {
						extra = " (pushed back by " + listSome(why, 10) + ")"
					}
					violate("%d of the %d shards it held were not taken by another replica within %v of the start (by %s)%s: %s",
						len(missing), len(p.held[s]), deadline.Sub(p.start).Round(time.Millisecond), at(deadline), extra, strings.Join(missing, ", "))
				}
			}

			// Rejoin cleanly: within 4 TTLs, or 6 after a kill or stop of
			// its own, or after an engine's restart or failover (the
			// schedule keeps those only two TTLs from a partition's end),
			// which the replica waits out like the partition itself.
			deadline := p.end.Add(4 * ttl)
			for _, e := range events {
				if e.slot == s && !e.at.Before(p.start) && e.at.Before(deadline) {
					if e.unexpected {
						violate("%s at %s", e.what, at(e.at))
					}
					deadline = later(deadline, e.at.Add(6*ttl))
				}
			}
			for _, e := range c.applied {
				if isEngineOutage(e.kind) && !e.at.Before(p.start) && e.at.Before(deadline) {
					deadline = later(deadline, e.at.Add(6*ttl))
				}
			}
			limit := nextStart(s)
			t, ok := c.leases.ownsAt(s, p.end)
			switch {
			case ok && !t.After(deadline) && t.Before(limit):
				r.RejoinSeconds, r.Rejoin = t.Sub(p.end).Seconds(), "judged"
				rep.MaxRejoinSeconds = max(rep.MaxRejoinSeconds, r.RejoinSeconds)
			case deadline.After(limit):
				r.Rejoin = fmt.Sprintf("not judged: watched only until %s (deadline %s)", at(limit), at(deadline))
			default:
				r.Rejoin = "judged"
				violate("held no shard within %v after the partition ended (by %s)", deadline.Sub(p.end).Round(time.Millisecond), at(deadline))
			}
			rep.Checks = append(rep.Checks, r)
		}
	}
}

// isEngineOutage reports whether a fault takes Redis or NATS, or a part
// of them, away for a while.
func isEngineOutage(kind string) bool {
	return kind == faultRedis || kind == faultNATS || kind == faultNATSNode || isRedisFailover(kind)
}

// listSome joins the first n items, and says how many more there are.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

package chaos

import (
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/capoller/capoller/cmd/internal/faultproxy"
	"github.com/capoller/capoller/diff"
)

// publishSlack is how long after its claims expired a replica may still
// be seen publishing: a batch whose publishing began just before.
const publishSlack = 250 * time.Millisecond

// partitionLinks says which links of the replicas can be partitioned.
func partitionLinks(o Options, redisEmbedded, natsEmbedded bool) (redisLink, natsLink bool) {
	if o.Partitions == PartitionsOff {
		return false, false
	}
	return redisEmbedded && o.single() && o.Checkpoint == "redis", natsEmbedded && !o.NATSCluster
}

// describePartitions says, for the report, where partitions are injected
// and where not, and why.
func describePartitions(o Options, redisEmbedded, natsEmbedded bool) string {
	if o.Partitions == PartitionsOff {
		return "off (--partitions off)"
	}
	r, n := partitionLinks(o, redisEmbedded, natsEmbedded)
	var on, off []string
	switch {
	case r:
		on = append(on, "Redis")
	case o.Checkpoint != "redis":
		off = append(off, "Redis: unused (checkpoints in JetStream KV)")
	case redisEmbedded:
		off = append(off, "Redis: a "+o.RedisTopology+" hands the replicas other nodes' addresses, which go around a proxy")
	default:
		off = append(off, "Redis: not the harness's own server (a Cluster or Sentinel would hand the replicas other nodes' addresses)")
	}
	switch {
	case n:
		on = append(on, "NATS")
	case o.NATSCluster:
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

// links are the proxies of each replica's links, and the events it
// was seen publishing (through its NATS proxy, forwarded or swallowed).
type links struct {
	redis, nats []*faultproxy.Proxy // per slot; nil when the link is not proxied
	pubs        []*publishLog
}

// publishLog is when a replica was seen publishing events.
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

// newLinks starts a proxy per replica and link that can be
// partitioned; subjectPrefix is the events'.
func newLinks(replicas int, redisURL, natsURL string, redisLink, natsLink bool, subjectPrefix string) (*links, error) {
	l := &links{redis: make([]*faultproxy.Proxy, replicas), nats: make([]*faultproxy.Proxy, replicas), pubs: make([]*publishLog, replicas)}
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
func (l *links) args(args []string, slot int) []string {
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
func (l *links) proxies(slot int, link string) []*faultproxy.Proxy {
	var out []*faultproxy.Proxy
	if link != linkNATS && l.redis[slot] != nil {
		out = append(out, l.redis[slot])
	}
	if link != linkRedis && l.nats[slot] != nil {
		out = append(out, l.nats[slot])
	}
	return out
}

func (l *links) close() {
	for _, p := range append(slices.Clone(l.redis), l.nats...) {
		if p != nil {
			_ = p.Close()
		}
	}
}

// partitionRun is a partition as it was applied.
type partitionRun struct {
	fault      *Fault
	slots      []int
	start, end time.Time
	held       map[int][]diff.Shard // what each slot held at the start
}

// startPartition applies a scheduled partition, unless one is in effect
// (or ended less than a TTL ago) or an engine is restarting.
func (c *run) startPartition(f *Fault, now time.Time) {
	// The schedule puts partitions a TTL apart; half of it is left for
	// the harness's own delays.
	if c.partition != nil || (c.lastPartitionEnd != time.Time{} && now.Sub(c.lastPartitionEnd) < c.o.LeaseTTL/2) {
		c.skip(f, "a partition is in effect or just ended")
		return
	}
	if len(c.busy) > 0 {
		c.skip(f, "an engine is restarting")
		return
	}
	fault := faultproxy.Fault{Mode: faultproxy.BlackHole}
	switch f.Kind {
	case FaultPartitionReset:
		fault.Mode = faultproxy.Reset
	case FaultPartitionLatency:
		d, err := time.ParseDuration(f.Detail)
		if err != nil {
			c.skip(f, err.Error())
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
				c.skip(f, err.Error())
				return
			}
		}
	}
	c.partition = p
	who := "every replica"
	if !f.AllReplicas {
		who = c.slots[f.Replica].id
	}
	c.done(f, now, "%s: %s cut from %s (%s) for %v", f.Kind, who, f.Link, fault, f.For.Round(time.Millisecond))
}

// tendPartition ends the partition in effect when it is due (or at once
// when the faults are over).
func (c *run) tendPartition(now time.Time, settling bool) {
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

package chaos

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// drawSchedule draws the faults of a run from its seed.
func drawSchedule(o Options, redisEmbedded, natsEmbedded bool) []Fault {
	s := newScheduler(o, redisEmbedded, natsEmbedded)
	var out []Fault
	if s.total == 0 {
		return out
	}
	at := 2 * o.LeaseTTL // the group forms first
	for {
		gap := time.Duration(s.rng.ExpFloat64() * float64(o.FaultEvery))
		at += min(max(gap, o.FaultEvery/4), 3*o.FaultEvery)
		if at >= o.Duration {
			// Partitions may have been put off: in the order of their times.
			slices.SortStableFunc(out, func(a, b Fault) int { return cmp.Compare(a.At, b.At) })
			return withRedisFailover(o, out, redisEmbedded)
		}
		// Partitions alone open with the case they are for: one replica
		// cut off for longer than its lease.
		if f, ok := s.draw(at, o.Partitions == PartitionsOnly && len(out) == 0); ok {
			out = append(out, f)
		}
	}
}

// scheduler draws the faults of a schedule one by one, from the seed: the
// order of its draws is the schedule a seed replays.
type scheduler struct {
	o     Options
	rng   *rand.Rand
	kinds []weighted
	total int
	// The links a partition can cut.
	redisLink, natsLink bool
	// When the last partition, and the last engine's outage, leave the
	// group free for the next.
	partitionsFree, enginesFree time.Duration
}

// newScheduler weighs the kinds of fault the run's engines allow.
func newScheduler(o Options, redisEmbedded, natsEmbedded bool) *scheduler {
	s := &scheduler{o: o, rng: rand.New(rand.NewPCG(uint64(o.Seed), 0x6368616f73))} // "chaos"
	s.kinds = []weighted{{FaultKill, 4}, {FaultStop, 2}, {FaultThrottle, 1}, {FaultServerError, 1}, {FaultSlow, 1},
		{FaultMalformed, 1}, {FaultInvalidToken, 1}, {FaultBehaviour, 1}}
	if redisEmbedded && o.Checkpoint == "redis" {
		s.kinds = append(s.kinds, redisFaults(o.RedisTopology)...)
	}
	if natsEmbedded {
		s.kinds = append(s.kinds, weighted{map[bool]string{false: FaultNATS, true: FaultNATSNode}[o.NATSCluster], 1})
	}
	partitions := partitionKinds(o, redisEmbedded, natsEmbedded)
	if o.Partitions == PartitionsOnly {
		s.kinds = partitions
	} else {
		s.kinds = append(s.kinds, partitions...)
	}
	s.redisLink, s.natsLink = partitionLinks(o, redisEmbedded, natsEmbedded)
	for _, k := range s.kinds {
		s.total += k.w
	}
	return s
}

// between draws a duration in [lo, hi).
func (s *scheduler) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Float64()*float64(hi-lo))
}

// draw draws the fault at at (a black hole of one replica when opening
// a schedule of partitions), or none when it would not fit.
func (s *scheduler) draw(at time.Duration, opening bool) (Fault, bool) {
	kind := s.pickKind(at)
	if opening {
		kind = FaultPartitionHole
	}
	f := Fault{At: at, Kind: kind}
	ok := true
	switch {
	case kind == FaultKill:
		f.Replica, f.For = s.rng.IntN(s.o.Replicas), s.between(200*time.Millisecond, 2*s.o.LeaseTTL)
	case kind == FaultStop:
		f.Replica, f.For = s.rng.IntN(s.o.Replicas), s.between(s.o.LeaseTTL+s.o.LeaseTTL/4, 2*s.o.LeaseTTL)
	case kind == FaultRedis || kind == FaultNATS || kind == FaultNATSNode:
		ok = s.drawRestart(&f)
	case IsRedisFailover(kind):
		ok = s.drawFailover(&f)
	case isPartition(kind):
		ok = s.drawPartition(&f, opening)
	default:
		s.drawAPIFault(&f)
	}
	f.AtText = f.At.Round(time.Millisecond).String()
	if f.For > 0 {
		f.ForText = f.For.Round(time.Millisecond).String()
	}
	return f, ok
}

// pickKind draws a kind of fault by weight.
func (s *scheduler) pickKind(at time.Duration) string {
	n := s.rng.IntN(s.total)
	var kind string
	for _, k := range s.kinds {
		if n < k.w {
			kind = k.kind
			break
		}
		n -= k.w
	}
	if kind == FaultThrottle && at > s.o.Duration-15*time.Second {
		// capoller waits out a throttled minute (to the next boundary,
		// plus jitter): a burst at the very end would hold the
		// catch-up for a minute and prove nothing more.
		kind = FaultServerError
	}
	return kind
}

// drawRestart draws an engine's restart (or a NATS node's loss): not
// during a partition, whose checks an outage of the whole group would
// blur, but after it.
func (s *scheduler) drawRestart(f *Fault) bool {
	if f.Kind == FaultNATSNode {
		f.Replica, f.For = s.rng.IntN(3), s.between(3*time.Second, 15*time.Second)
	} else {
		f.For = s.between(500*time.Millisecond, 5*time.Second)
	}
	if f.At = max(f.At, s.partitionsFree); f.At >= s.o.Duration {
		return false
	}
	s.enginesFree = max(s.enginesFree, f.At+f.For+s.o.LeaseTTL)
	return true
}

// drawFailover draws a Redis failover: like a restart, not during a
// partition, and none until the group served again for a while.
func (s *scheduler) drawFailover(f *Fault) bool {
	drawRedisFault(f, s.rng)
	if f.At = max(f.At, s.partitionsFree); f.At >= s.o.Duration {
		return false
	}
	s.enginesFree = max(s.enginesFree, f.At+f.For+2*s.o.LeaseTTL)
	return true
}

// drawAPIFault draws a burst of API faults, or a new mix of behaviours.
func (s *scheduler) drawAPIFault(f *Fault) {
	switch f.Kind {
	case FaultThrottle:
		f.For, f.Rate = s.between(2*time.Second, 10*time.Second), 0.3+0.6*s.rng.Float64()
	case FaultServerError:
		f.For, f.Rate = s.between(time.Second, 8*time.Second), 0.2+0.5*s.rng.Float64()
		f.Detail = string([]castest.FaultKind{castest.FaultUnavailable, castest.FaultInternal, castest.FaultBadGateway}[s.rng.IntN(3)])
	case FaultSlow:
		f.For, f.Rate = s.between(2*time.Second, 10*time.Second), 0.3+0.6*s.rng.Float64()
		f.Detail = s.between(200*time.Millisecond, 3*time.Second).Round(time.Millisecond).String()
	case FaultMalformed:
		f.For, f.Rate = s.between(time.Second, 6*time.Second), 0.1+0.3*s.rng.Float64()
		f.Detail = string([]castest.FaultKind{castest.FaultMalformed, castest.FaultTruncated}[s.rng.IntN(2)])
	case FaultInvalidToken:
		f.For, f.Rate = s.between(2*time.Second, 10*time.Second), 0.2+0.5*s.rng.Float64()
	case FaultBehaviour:
		f.Seed = s.rng.Int64N(math.MaxInt32)
		f.Detail = castest.RandomBehaviour(f.Seed).String()
	}
}

// redisFaults are the Redis faults scheduled for a topology.
func redisFaults(topology string) []weighted {
	switch topology {
	case RedisCluster:
		return []weighted{{FaultFailover, 1}, {FaultFailoverForce, 1}, {FaultFailoverTakeover, 1}, {FaultMasterKill, 1}, {FaultLagKill, 2}}
	case RedisSentinel:
		return []weighted{{FaultFailover, 1}, {FaultMasterKill, 2}, {FaultLagKill, 2}}
	}
	return []weighted{{FaultRedis, 1}}
}

// drawRedisFault draws a Redis failover's target (a master's group in a
// cluster) and, for a kill, how long the master stays down: long enough,
// mostly, for the failover to happen first.
func drawRedisFault(f *Fault, rng *rand.Rand) {
	switch f.Kind {
	case FaultFailover, FaultFailoverForce, FaultFailoverTakeover:
		f.Replica = rng.IntN(3)
	case FaultMasterKill:
		f.Replica = rng.IntN(3)
		f.For = 2*time.Second + time.Duration(rng.Float64()*float64(8*time.Second))
	case FaultLagKill:
		// Cut off for less than the engines' failure detection, so that
		// the replica is still a candidate when the master dies.
		f.Replica = rng.IntN(3)
		f.For = 2*time.Second + time.Duration(rng.Float64()*float64(8*time.Second))
		f.Detail = (300*time.Millisecond + time.Duration(rng.Float64()*float64(600*time.Millisecond))).Round(time.Millisecond).String()
	}
}

// withRedisFailover makes sure a schedule against an embedded cluster or
// Sentinel fails a master over at least once (unless it has partitions
// only): if the seed drew none, a fault near the middle of the run
// becomes a master kill, or one is added (a short run would otherwise
// prove nothing of failovers now and then).
func withRedisFailover(o Options, faults []Fault, redisEmbedded bool) []Fault {
	if !redisEmbedded || o.Checkpoint != "redis" || o.RedisTopology == "" || o.RedisTopology == RedisSingle || o.Partitions == PartitionsOnly {
		return faults
	}
	for _, f := range faults {
		if IsRedisFailover(f.Kind) {
			return faults
		}
	}
	kill := Fault{Kind: FaultMasterKill, For: 5 * time.Second, ForText: "5s"}
	// A fault that is not a partition, nor within one (the harness skips
	// an engine's fault then), nearest the middle, becomes the kill.
	mid := -1
	for i, f := range faults {
		if isPartition(f.Kind) || duringPartition(o, faults, f.At) {
			continue
		}
		if mid < 0 || (f.At-o.Duration/2).Abs() < (faults[mid].At-o.Duration/2).Abs() {
			mid = i
		}
	}
	if mid >= 0 {
		kill.At, kill.AtText = faults[mid].At, faults[mid].AtText
		faults[mid] = kill
		return faults
	}
	// Else one is added: at the middle, once a partition is over, or
	// as the group has formed.
	starts := []time.Duration{max(o.Duration/2, 2*o.LeaseTTL)}
	for _, p := range faults {
		if isPartition(p.Kind) {
			starts = append(starts, p.At+p.For+o.LeaseTTL+time.Millisecond)
		}
	}
	starts = append(starts, 2*o.LeaseTTL)
	for _, at := range starts {
		if at < o.Duration && !duringPartition(o, faults, at) {
			kill.At, kill.AtText = at, at.Round(time.Millisecond).String()
			faults = append(faults, kill)
			slices.SortStableFunc(faults, func(a, b Fault) int { return cmp.Compare(a.At, b.At) })
			return faults
		}
	}
	return faults
}

// duringPartition reports whether at falls within a scheduled partition
// or the lease TTL after it.
func duringPartition(o Options, faults []Fault, at time.Duration) bool {
	for _, p := range faults {
		if isPartition(p.Kind) && at >= p.At && at <= p.At+p.For+o.LeaseTTL {
			return true
		}
	}
	return false
}

// partitionKinds are the partition faults the schedule draws, by weight.
func partitionKinds(o Options, redisEmbedded, natsEmbedded bool) []weighted {
	r, n := partitionLinks(o, redisEmbedded, natsEmbedded)
	if !r && !n {
		return nil
	}
	return []weighted{{FaultPartitionHole, 2}, {FaultPartitionReset, 1}, {FaultPartitionLatency, 1}}
}

// drawPartition draws a partition's target, links and length: a black
// hole or a reset of one replica lasts between one and three lease TTLs,
// long enough for its shards to move; of every replica, up to a TTL. One
// at a time, two TTLs apart (a replica back from one takes a few ticks
// to serve again), a TTL after an engine's restart, and over before the
// faults are.
func (s *scheduler) drawPartition(f *Fault, opening bool) bool {
	o := s.o
	switch {
	case s.redisLink && s.natsLink:
		f.Link = []string{linkRedis, linkRedis, linkNATS, linkNATS, linkBoth}[s.rng.IntN(5)]
	case s.redisLink:
		f.Link = linkRedis
	default:
		f.Link = linkNATS
	}
	f.AllReplicas = s.rng.IntN(4) == 0
	if !f.AllReplicas {
		f.Replica = s.rng.IntN(o.Replicas)
	}
	tick := o.LeaseTTL / 5
	switch {
	case f.Kind == FaultPartitionLatency:
		f.For = s.between(2*time.Second, 3*o.LeaseTTL)
		f.Detail = s.between(10*time.Millisecond, tick).Round(time.Millisecond).String()
	case f.AllReplicas:
		f.For = s.between(o.LeaseTTL/4, o.LeaseTTL)
	default:
		f.For = s.between(o.LeaseTTL, 3*o.LeaseTTL)
	}
	if opening && f.AllReplicas {
		f.AllReplicas, f.Replica, f.For = false, s.rng.IntN(o.Replicas), s.between(o.LeaseTTL, 3*o.LeaseTTL)
	}
	f.At = max(f.At, s.partitionsFree, s.enginesFree)
	if f.At+f.For > o.Duration {
		return false
	}
	s.partitionsFree = f.At + f.For + 2*o.LeaseTTL
	return true
}

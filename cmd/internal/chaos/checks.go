package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// PartitionReport is what the partitions did and whether the
// replicas behaved.
type PartitionReport struct {
	// Injected says on which links partitions are injected, and why not
	// on the others.
	Injected string           `json:"injected"`
	Checks   []PartitionCheck `json:"checks,omitempty"`
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

// PartitionCheck is one partition and what the checks found.
type PartitionCheck struct {
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
func (c *run) checkPartitions(rep *PartitionReport) {
	if c.leases == nil {
		return
	}
	k := &checker{c: c, rep: rep, ttl: c.o.LeaseTTL, tick: c.o.LeaseTTL / 5, watchEnd: c.leases.end(), events: slices.Clone(c.events)}
	k.claimsFor = (k.ttl - k.tick) * 2 / 3
	sort.SliceStable(k.events, func(i, j int) bool { return k.events[i].at.Before(k.events[j].at) })
	rep.LeaseReads, rep.LeaseReadErrors = c.leases.reads, c.leases.errs
	for n, p := range c.partitions {
		for _, s := range p.slots {
			j := k.judgement(n, p, s)
			j.publishes()
			j.loss()
			j.takeover()
			j.rejoin()
			rep.Checks = append(rep.Checks, j.r)
		}
	}
}

// checker is what the partition checks share: the lease TTL and its
// renewal tick, how long claims last, the end of the lease watch, and
// the replicas' comings and goings in time order.
type checker struct {
	c                    *run
	rep                  *PartitionReport
	ttl, tick, claimsFor time.Duration
	watchEnd             time.Time
	events               []slotEvent
}

// at is t as the run's time, as the report names it.
func (k *checker) at(t time.Time) string {
	return t.Sub(k.c.start).Round(100 * time.Millisecond).String()
}

// judgement is the check of one replica in one partition.
type judgement struct {
	*checker
	n    int // the partition's index
	p    *partitionRun
	f    *Fault
	s    int // the slot
	name string
	r    PartitionCheck
	// loseBy is when the replica must have lost its shards.
	loseBy time.Time
}

func (k *checker) judgement(n int, p *partitionRun, s int) *judgement {
	f := p.fault
	j := &judgement{checker: k, n: n, p: p, f: f, s: s}
	j.r = PartitionCheck{At: k.at(p.start), Kind: f.Kind, Replica: k.c.slots[s].id, Link: f.Link, For: p.end.Sub(p.start).Round(time.Millisecond).String(),
		Held: len(p.held[s]), LostSeconds: -1, TakeoverSeconds: -1, RejoinSeconds: -1}
	if f.AllReplicas {
		j.r.Replica += " (all)"
	}
	j.r.Fault = f.Kind
	if f.Kind == FaultPartitionLatency {
		j.r.Fault += " " + f.Detail
	}
	j.name = fmt.Sprintf("%s: %s of %s at %s for %s", j.r.Replica, f.Kind, f.Link, j.r.At, j.r.For)
	// It loses its shards within the TTL, whatever the others do —
	// unless it was killed or stopped in the partition: then it could
	// not step back, and its leases expire by themselves, a TTL after.
	j.loseBy = p.start.Add(k.ttl)
	for _, e := range k.events {
		if e.slot == s && !e.at.Before(p.start) && e.at.Before(j.loseBy) {
			j.loseBy = later(j.loseBy, e.at.Add(k.ttl))
		}
	}
	return j
}

func (j *judgement) violate(format string, args ...any) {
	v := j.name + ": " + fmt.Sprintf(format, args...)
	j.r.Violations = append(j.r.Violations, v)
	j.rep.Violations = append(j.rep.Violations, v)
}

// publishes: nothing published after the claims expired.
func (j *judgement) publishes() {
	p, f := j.p, j.f
	pubs := j.c.links.pubs[j.s].within(p.start, p.end)
	if len(pubs) > 0 {
		j.r.LastPublishSeconds = pubs[len(pubs)-1].Sub(p.start).Seconds()
	}
	if f.Link == linkNATS || (f.Kind != FaultPartitionHole && f.Kind != FaultPartitionReset) {
		return
	}
	bound := p.start.Add(j.claimsFor + publishSlack)
	late := j.c.links.pubs[j.s].within(bound, p.end)
	j.r.PublishesAfterClaims = len(late)
	if len(late) > 0 {
		j.violate("%d publishes after its claims expired (the lease two thirds old at %s, %v after the start, +%v): the first at %s, the last at %s",
			len(late), j.at(p.start.Add(j.claimsFor)), j.claimsFor, publishSlack, j.at(late[0]), j.at(late[len(late)-1]))
	}
}

// stepBackWaits says, for a replica cut from NATS alone, what kept it
// from stepping back: it does only once another replica reached the bus
// since its own failures began, so with every other replica killed or
// stopped about then, it rightly keeps its shards, and neither its loss
// nor the take-over is judged.
func (j *judgement) stepBackWaits() []string {
	if j.f.Link != linkNATS {
		return nil
	}
	var waits []string
	disturbed := map[int]bool{}
	for _, e := range j.events {
		if e.slot != j.s && !e.at.Before(j.p.start.Add(-2*j.ttl)) && e.at.Before(j.loseBy) {
			disturbed[e.slot] = true
			waits = append(waits, fmt.Sprintf("%s %s at %s", j.c.slots[e.slot].id, e.what, j.at(e.at)))
		}
	}
	if len(disturbed) < len(j.c.slots)-1 {
		return nil // another replica served the bus throughout
	}
	return waits
}

// loss: the replica lost every shard it held by loseBy.
func (j *judgement) loss() {
	p, f := j.p, j.f
	waits := j.stepBackWaits()
	switch {
	case f.Kind == FaultPartitionLatency:
		j.r.Lost = "not applicable (latency)"
		return
	case len(waits) > 0 && !f.AllReplicas && !p.end.Before(j.loseBy):
		j.r.Lost = "not judged: cut from NATS, it steps back only while another replica reaches the bus, and every other one was disturbed: " + listSome(waits, 3)
		return
	case p.end.Before(j.loseBy):
		j.r.Lost = "not applicable (shorter than the TTL, or than a TTL after its own kill or stop)"
		return
	case f.AllReplicas && f.Link == linkNATS:
		j.r.Lost = "not applicable (every replica cut from NATS: none steps back, nothing moves)"
		return
	}
	j.r.Lost = "judged"
	var worst time.Duration
	var kept []string
	for _, sh := range p.held[j.s] {
		t, ok := j.c.leases.lostAt(sh, j.s, p.start)
		if !ok || t.After(j.loseBy) {
			kept = append(kept, sh.String())
			continue
		}
		worst = max(worst, t.Sub(p.start))
	}
	if len(kept) > 0 {
		j.violate("kept %d of the %d shards it held past the TTL (%v, by %s): %s", len(kept), len(p.held[j.s]), j.ttl, j.at(j.loseBy), strings.Join(kept, ", "))
		return
	}
	j.r.LostSeconds = worst.Seconds()
	j.rep.MaxLostSeconds = max(j.rep.MaxLostSeconds, worst.Seconds())
}

// takeover: the others took its shards within a TTL and a tick, later by
// as much after each kill or stop meanwhile.
func (j *judgement) takeover() {
	p, f := j.p, j.f
	switch {
	case f.Kind == FaultPartitionLatency:
		j.r.Takeover = "not applicable (latency)"
		return
	case f.AllReplicas:
		j.r.Takeover = "not applicable (every replica cut)"
		return
	case strings.HasPrefix(j.r.Lost, "not judged"):
		j.r.Takeover = j.r.Lost
		return
	}
	deadline, why := j.takeoverDeadline()
	var worst time.Duration
	var missing []string
	for _, sh := range p.held[j.s] {
		t, ok := j.c.leases.takenAt(sh, j.s, p.start)
		if !ok || t.After(deadline) || t.After(p.end) {
			missing = append(missing, sh.String())
			continue
		}
		worst = max(worst, t.Sub(p.start))
	}
	switch {
	case len(missing) == 0:
		j.r.TakeoverSeconds, j.r.Takeover = worst.Seconds(), "judged"
		j.rep.MaxTakeoverSeconds = max(j.rep.MaxTakeoverSeconds, worst.Seconds())
	case deadline.After(p.end) || deadline.After(j.watchEnd):
		j.r.Takeover = fmt.Sprintf("not judged: the partition ended before the deadline (%s)", j.at(deadline))
		if len(why) > 0 {
			j.r.Takeover += ", pushed back by " + listSome(why, 3)
		}
	default:
		j.r.Takeover = "judged"
		extra := ""
		if len(why) > 0 {
			extra = " (pushed back by " + listSome(why, 10) + ")"
		}
		j.violate("%d of the %d shards it held were not taken by another replica within %v of the start (by %s)%s: %s",
			len(missing), len(p.held[j.s]), deadline.Sub(p.start).Round(time.Millisecond), j.at(deadline), extra, strings.Join(missing, ", "))
	}
}

// takeoverDeadline is when the take-over must be done, and what pushed
// it back: another's kill or stop slows it down; so does the replica's
// own in the partition, which leaves its leases to expire.
func (j *judgement) takeoverDeadline() (time.Time, []string) {
	p, s := j.p, j.s
	deadline := p.start.Add(j.ttl + j.tick)
	var why []string
	for _, e := range j.events {
		if (e.slot != s && !e.at.Before(p.start.Add(-j.ttl)) || e.slot == s && !e.at.Before(p.start)) && e.at.Before(deadline) {
			deadline = later(deadline, e.at.Add(j.ttl+j.tick))
			why = append(why, fmt.Sprintf("%s %s at %s", j.c.slots[e.slot].id, e.what, j.at(e.at)))
		}
	}
	return deadline, why
}

// rejoin: the replica holds a shard again within 4 TTLs, or 6 after a
// kill or stop of its own, or after an engine's restart or failover (the
// schedule keeps those only two TTLs from a partition's end), which the
// replica waits out like the partition itself; and it did not exit by
// itself.
func (j *judgement) rejoin() {
	p, s := j.p, j.s
	deadline := p.end.Add(4 * j.ttl)
	for _, e := range j.events {
		if e.slot == s && !e.at.Before(p.start) && e.at.Before(deadline) {
			if e.unexpected {
				j.violate("%s at %s", e.what, j.at(e.at))
			}
			deadline = later(deadline, e.at.Add(6*j.ttl))
		}
	}
	for _, e := range j.c.applied {
		if isEngineOutage(e.kind) && !e.at.Before(p.start) && e.at.Before(deadline) {
			deadline = later(deadline, e.at.Add(6*j.ttl))
		}
	}
	limit := j.nextStart()
	t, ok := j.c.leases.ownsAt(s, p.end)
	switch {
	case ok && !t.After(deadline) && t.Before(limit):
		j.r.RejoinSeconds, j.r.Rejoin = t.Sub(p.end).Seconds(), "judged"
		j.rep.MaxRejoinSeconds = max(j.rep.MaxRejoinSeconds, j.r.RejoinSeconds)
	case deadline.After(limit):
		j.r.Rejoin = fmt.Sprintf("not judged: watched only until %s (deadline %s)", j.at(limit), j.at(deadline))
	default:
		j.r.Rejoin = "judged"
		j.violate("held no shard within %v after the partition ended (by %s)", deadline.Sub(p.end).Round(time.Millisecond), j.at(deadline))
	}
}

// nextStart is when the slot's next partition began, which cuts its
// rejoin short, or the end of the watch.
func (j *judgement) nextStart() time.Time {
	for _, q := range j.c.partitions[j.n+1:] {
		if slices.Contains(q.slots, j.s) {
			return q.start
		}
	}
	return j.watchEnd
}

// listSome joins the first n items, and says how many more there are.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

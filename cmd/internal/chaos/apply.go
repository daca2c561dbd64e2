package chaos

import (
	"fmt"
	"syscall"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// engineDone reports an engine back after a restart or a failover.
type engineDone struct {
	kind string
	err  error
}

// skip records that a scheduled fault was not applied, and why.
func (c *run) skip(f *Fault, why string) {
	f.Skipped = why
	c.skipped[f.Kind]++
}

// done records a fault applied, and says so.
func (c *run) done(f *Fault, now time.Time, format string, args ...any) {
	c.faults[f.Kind]++
	c.applied = append(c.applied, appliedFault{at: now, kind: f.Kind})
	c.logf(format, args...)
}

// claimEngine marks the engine of f busy, unless busy says why it is
// (or a partition is in effect): then f is skipped.
func (c *run) claimEngine(f *Fault, busy string) bool {
	if busy == "" && c.partition != nil {
		busy = "a partition is in effect"
	}
	if busy != "" {
		c.skip(f, busy)
		return false
	}
	c.busy[f.Kind] = true
	return true
}

// apply injects a scheduled fault.
func (c *run) apply(f *Fault, now time.Time) {
	switch f.Kind {
	case FaultKill, FaultStop:
		c.applyReplicaFault(f, now)
	case FaultRedis, FaultNATS, FaultNATSNode:
		c.applyRestart(f, now)
	case FaultFailover, FaultFailoverForce, FaultFailoverTakeover, FaultMasterKill, FaultLagKill:
		c.applyRedisFailover(f, now)
	case FaultThrottle, FaultServerError, FaultSlow, FaultMalformed, FaultInvalidToken:
		c.applyAPIFault(f, now)
	case FaultBehaviour:
		if err := c.sim.SetBehaviour(castest.RandomBehaviour(f.Seed)); err != nil {
			c.skip(f, err.Error())
			return
		}
		c.behaviours = append(c.behaviours, f.AtText+": "+f.Detail)
		c.done(f, now, "behaviour: %s", f.Detail)
	case FaultPartitionHole, FaultPartitionReset, FaultPartitionLatency:
		c.startPartition(f, now)
	}
}

// applyReplicaFault kills a replica (restarted after f.For) or stops one
// for f.For: the scheduled one, or the next one it can.
func (c *run) applyReplicaFault(f *Fault, now time.Time) {
	if f.Kind == FaultKill {
		s := c.target(f.Replica, func(s *replicaSlot) bool { return s.state != "down" })
		if s == nil {
			c.skip(f, "every replica down")
			return
		}
		s.killing, s.until = true, now.Add(f.For)
		_ = s.rep.Signal(syscall.SIGKILL)
		c.disturbed(c.slotIndex(s), "killed", false, now)
		c.done(f, now, "SIGKILL %s (%s); restart in %v", s.id, s.state, f.For.Round(time.Millisecond))
		return
	}
	s := c.target(f.Replica, func(s *replicaSlot) bool { return s.state == "running" })
	if s == nil {
		c.skip(f, "no replica running")
		return
	}
	_ = s.rep.Signal(syscall.SIGSTOP)
	s.state, s.until = "stopped", now.Add(f.For)
	c.disturbed(c.slotIndex(s), "stopped", false, now)
	c.done(f, now, "SIGSTOP %s for %v (lease TTL %v)", s.id, f.For.Round(time.Millisecond), c.o.LeaseTTL)
}

// applyRestart takes Redis, NATS or a NATS node down for f.For, in the
// background; engineDone says when it is back.
func (c *run) applyRestart(f *Fault, now time.Time) {
	busy := ""
	if c.busy[f.Kind] {
		busy = "engine restarting"
	}
	if !c.claimEngine(f, busy) {
		return
	}
	c.done(f, now, "%s: down for %v", f.Kind, f.For.Round(time.Millisecond))
	go func() {
		var err error
		switch f.Kind {
		case FaultRedis:
			c.redis.crash()
			time.Sleep(f.For) // the outage
			err = c.redis.start()
		case FaultNATS:
			c.nats.shutdown(0)
			time.Sleep(f.For) // the outage
			err = c.nats.restart(0)
		case FaultNATSNode:
			c.nats.shutdown(f.Replica)
			time.Sleep(f.For) // the outage
			if err = c.nats.restart(f.Replica); err == nil {
				err = c.nats.waitMetaLeader(time.Minute)
			}
		}
		c.engineDone <- engineDone{kind: f.Kind, err: err}
	}()
}

// applyAPIFault has the emulator fail calls for f.For.
func (c *run) applyAPIFault(f *Fault, now time.Time) {
	rule := castest.Fault{Rate: f.Rate, Count: -1}
	switch f.Kind {
	case FaultThrottle:
		rule.Kind = castest.FaultThrottle
	case FaultServerError, FaultMalformed:
		rule.Kind = castest.FaultKind(f.Detail)
	case FaultSlow:
		rule.Kind, rule.Latency = castest.FaultLatency, f.Detail
	case FaultInvalidToken:
		rule.Kind = castest.FaultInvalidToken
	}
	c.sim.ClearFaults()
	if err := c.sim.InjectFault(rule); err != nil {
		c.skip(f, err.Error())
		return
	}
	c.apiUntil = now.Add(f.For)
	c.done(f, now, "%s %s at rate %.2f for %v", f.Kind, f.Detail, f.Rate, f.For.Round(time.Millisecond))
}

// applyRedisFailover injects a failover of the embedded cluster or
// Sentinel, one at a time, in the background; the harness waits for the
// group to be healthy again before the next (and before it checks the
// stream).
func (c *run) applyRedisFailover(f *Fault, now time.Time) {
	g := c.redis.group
	if g == nil {
		c.skip(f, "no embedded cluster or sentinel")
		return
	}
	busy := ""
	for kind := range c.busy {
		if IsRedisFailover(kind) {
			busy = "a Redis failover is in progress"
		}
	}
	if !c.claimEngine(f, busy) {
		return
	}
	pair := f.Replica
	if g.topology == RedisSentinel {
		pair = 0
	}
	go func() {
		err := c.failOver(g, f, pair)
		if err != nil {
			err = fmt.Errorf("%s (group %d): %w", f.Kind, pair, err)
		}
		c.engineDone <- engineDone{kind: f.Kind, err: err}
	}()
	c.done(f, now, "%s: group %d", f.Kind, pair)
}

// failOver fails pair's master over as f says, and waits until the group
// is healthy again.
func (c *run) failOver(g *redisGroup, f *Fault, pair int) error {
	switch f.Kind {
	case FaultMasterKill:
		return g.killMaster(pair, f.For, func(addr string) {
			c.logf("%s: SIGKILL master %s; restart in %v", f.Kind, addr, f.For.Round(time.Millisecond))
		})
	case FaultLagKill:
		lag, _ := time.ParseDuration(f.Detail)
		return g.lagKill(pair, lag, f.For, func(addr string) {
			c.logf("%s: the replicas of %s paused and cut off; SIGKILL it in %v, restart %v later", f.Kind, addr, lag, f.For.Round(time.Millisecond))
		})
	}
	how := map[string]string{FaultFailoverForce: "FORCE", FaultFailoverTakeover: "TAKEOVER"}[f.Kind]
	what, err := g.failover(pair, how)
	if what != "" {
		c.logf("%s: %s", f.Kind, what)
	}
	return err
}

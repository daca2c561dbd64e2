package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/capoller/capoller/cmd/internal/harness"
)

// replicaSlot is one replica: the process in it is restarted after every
// kill.
type replicaSlot struct {
	id      string
	gen     int
	rep     *harness.Replica // nil while down
	arm     hook
	state   string // running, stopped (by the harness), hookstopped, down
	until   time.Time
	killing bool
}

// slotExit is the end of a slot's process of a generation.
type slotExit struct {
	slot, gen int
	ps        *os.ProcessState
	byKill    bool // SIGKILL ended it
}

// slotEvent is a replica going away or pausing (killed, stopped, or
// exiting by itself), which delays a take-over or a rejoin.
type slotEvent struct {
	at         time.Time
	slot       int
	what       string
	unexpected bool
}

// startSlot starts slot i's replica, arming a hook if arm is set. Its
// output goes to the slot's log in the run's directory.
func (c *run) startSlot(i int, arm bool) error {
	s := c.slots[i]
	s.gen++
	s.arm = hook{}
	if arm && c.o.HookEnv != "" {
		s.arm = c.nextArm()
	}
	logFile, err := os.OpenFile(filepath.Join(c.dir, s.id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "==== chaos: start %d of %s, hook %q\n", s.gen, s.id, s.arm.key())
	env := slices.Clone(c.env)
	if s.arm.step != "" {
		env = append(env, s.arm.env(c.o.HookEnv))
		c.hookArmed[s.arm.key()]++
	}
	// Not the run's context: a replica ends by stopAll, SIGCONT first.
	r, err := harness.StartReplica(context.Background(), harness.ReplicaOptions{Executable: c.o.Executable, ID: s.id,
		Args: c.links.args(c.args, i), Env: env, Stdout: logFile, Stderr: logFile})
	if err != nil {
		return err
	}
	s.rep, s.state, s.killing = r, "running", false
	gen := s.gen
	go func() {
		<-r.Done()
		c.exits <- slotExit{slot: i, gen: gen, ps: r.ExitState(), byKill: r.KilledBy(syscall.SIGKILL)}
	}()
	return nil
}

// exited handles the end of a replica process.
func (c *run) exited(ex slotExit, settling bool) {
	s := c.slots[ex.slot]
	if ex.gen != s.gen {
		return
	}
	now := time.Now()
	switch {
	case s.killing:
		// the harness killed it; until is set
	case s.arm.action == "kill" && ex.byKill:
		c.hookHit(ex.slot, "kill", now)
		c.logf("%s killed itself at %s (batch %d at that step)", s.id, s.arm.step, s.arm.nth)
		c.disturbed(ex.slot, "killed itself at "+string(s.arm.step), false, now)
		s.until = now.Add(time.Duration(200+c.armRNG.IntN(2000)) * time.Millisecond)
	default:
		c.unexpected = append(c.unexpected, fmt.Sprintf("%s (start %d) exited by itself at %v: %v", s.id, s.gen, now.Sub(c.start).Round(time.Second), ex.ps))
		c.logf("%s exited by itself: %v", s.id, ex.ps)
		c.disturbed(ex.slot, "exited by itself ("+ex.ps.String()+")", true, now)
		s.until = now.Add(time.Second)
	}
	s.state, s.rep = "down", nil
	if settling {
		s.until = now
	}
}

// hookHit counts a hook of a slot's that fired.
func (c *run) hookHit(slot int, action string, now time.Time) {
	s := c.slots[slot]
	c.hookHits[s.arm.key()]++
	c.faults[FaultHook]++
	c.applied = append(c.applied, appliedFault{at: now, kind: FaultHook + "-" + action + "@" + string(s.arm.step)})
}

// tend moves each slot along: restarts, resumes, hook stops seen.
func (c *run) tend(now time.Time, settling bool) {
	for i, s := range c.slots {
		switch s.state {
		case "running":
			if s.arm.action == "stop" && s.rep.Stopped() {
				c.hookHit(i, "stop", now)
				pause := c.o.LeaseTTL + time.Duration(c.armRNG.Float64()*float64(c.o.LeaseTTL))
				c.logf("%s stopped itself at %s (batch %d at that step); resuming in %v", s.id, s.arm.step, s.arm.nth, pause.Round(time.Millisecond))
				c.disturbed(i, "stopped itself at "+string(s.arm.step), false, now)
				s.state, s.until, s.arm = "hookstopped", now.Add(pause), hook{}
			}
		case "stopped", "hookstopped":
			if settling || !now.Before(s.until) {
				_ = s.rep.Signal(syscall.SIGCONT)
				s.state = "running"
			}
		case "down":
			if settling || !now.Before(s.until) {
				if err := c.startSlot(i, !settling); err != nil {
					c.unexpected = append(c.unexpected, fmt.Sprintf("%s: restart: %v", s.id, err))
					s.until = now.Add(time.Second)
				}
			}
		}
	}
}

// target is the scheduled replica, or the next one after it that ok
// accepts, or nil.
func (c *run) target(first int, ok func(*replicaSlot) bool) *replicaSlot {
	for i := range c.slots {
		if s := c.slots[(first+i)%len(c.slots)]; ok(s) {
			return s
		}
	}
	return nil
}

// stopAll ends every replica: SIGCONT, SIGTERM, and SIGKILL if it
// lingers.
func (c *run) stopAll() {
	var running []*harness.Replica
	for _, s := range c.slots {
		if s.rep != nil {
			running = append(running, s.rep)
		}
	}
	harness.StopReplicas(20*time.Second, running...)
	for _, s := range c.slots {
		s.rep, s.state = nil, "down"
	}
}

// disturbed records a slot event.
func (c *run) disturbed(slot int, what string, unexpected bool, at time.Time) {
	c.events = append(c.events, slotEvent{at: at, slot: slot, what: what, unexpected: unexpected})
}

func (c *run) slotIndex(s *replicaSlot) int {
	return slices.Index(c.slots, s)
}

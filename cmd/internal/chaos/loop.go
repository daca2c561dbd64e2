package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// progress is where the loop stands: the next fault of the schedule, and
// the catch-up once the faults are over.
type progress struct {
	next        int
	settling    bool
	settleStart time.Time
	caughtUp    bool
	gaveUp      bool
	lastPoll    time.Time
	behind      int
}

// loop runs the chaos phase, then the catch-up, until every final status
// is announced (caughtUp) or the catch-up time is over; settled is when
// the faults ended.
func (c *run) loop(ctx context.Context) (caughtUp bool, settled time.Time, err error) {
	end := c.start.Add(c.o.Duration)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var p progress
	for !p.caughtUp && !p.gaveUp {
		select {
		case <-ctx.Done():
			return false, p.settleStart, ctx.Err()
		case ex := <-c.exits:
			c.exited(ex, p.settling)
		case d := <-c.engineDone:
			delete(c.busy, d.kind)
			if d.err != nil {
				c.engineErrs = append(c.engineErrs, d.kind+": "+d.err.Error())
				return false, p.settleStart, fmt.Errorf("%s: %w", d.kind, d.err)
			}
			c.logf("%s: back", d.kind)
		case <-tick.C:
		}
		now := time.Now()
		if !p.settling && !now.Before(end) {
			p.settling, p.settleStart = true, now
			c.settle(now)
		}
		c.step(now, &p)
	}
	return p.caughtUp, p.settleStart, nil
}

// settle ends the faults: the API ideal again, the workload stopped, the
// partition in effect healed.
func (c *run) settle(now time.Time) {
	c.sim.ClearFaults()
	_ = c.sim.SetBehaviour(castest.Behaviour{})
	c.workload.Stop()
	c.tendPartition(now, true)
	c.logf("faults over: the workload stopped, the API is ideal again; waiting up to %v for every final status", c.o.CatchUp)
}

// step applies the faults due, ends those over, tends the partition and
// the replicas, and (every second) checks the catch-up.
func (c *run) step(now time.Time, p *progress) {
	for !p.settling && p.next < len(c.schedule) && !now.Before(c.start.Add(c.schedule[p.next].At)) {
		c.apply(&c.schedule[p.next], now)
		p.next++
	}
	if !c.apiUntil.IsZero() && now.After(c.apiUntil) {
		c.sim.ClearFaults()
		c.apiUntil = time.Time{}
	}
	c.tendPartition(now, p.settling)
	c.tend(now, p.settling)
	if now.Sub(p.lastPoll) < time.Second {
		return
	}
	p.lastPoll = now
	if p.settling && len(c.busy) == 0 {
		p.behind = c.stream.behind(c.sim.Truth())
		p.caughtUp = p.behind == 0
		if !p.caughtUp && now.Sub(p.settleStart) > c.o.CatchUp {
			c.logf("not caught up after %v: %d records behind", c.o.CatchUp, p.behind)
			p.gaveUp = true
			return
		}
	}
	if now.Sub(c.progressAt) >= 30*time.Second {
		c.progressAt = now
		c.logf("%d events in the stream, %d faults, %d hook hits%s", c.stream.count(), len(c.applied), sum(c.hookHits),
			map[bool]string{true: fmt.Sprintf(", %d records behind", p.behind)}[p.settling])
	}
}

// finish stops the replicas and the watches, reads the rest of the
// stream, and checks it.
func (c *run) finish(ctx context.Context, rep *Report) error {
	c.stopAll()
	c.watching.Stop()
	c.following.Stop()
	for attempt := 0; ; attempt++ {
		err := c.stream.poll(ctx)
		if err == nil {
			break
		}
		if attempt == 20 {
			return fmt.Errorf("read the stream: %w", err)
		}
		time.Sleep(500 * time.Millisecond) // the engine may still be coming back
	}
	if err := c.stream.complete(ctx); err != nil {
		return err
	}
	c.report(rep)
	return nil
}

// sum adds the counts of a map.
func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

package poller

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// end expires, after a complete listing, the records it did not hold
// (within the guard), prunes old tombstones, and marks a new shard as
// known even if its listing was empty.
func (c *cycle) end(complete bool) error {
	p := c.p
	var expired []diff.Update
	if complete {
		absent, err := p.st.Absent(c.ctx, p.opts.Shard, func(k diff.Key) bool { _, ok := c.seen[k]; return ok })
		if err != nil {
			return &CycleError{StageLoad, err}
		}
		now := p.opts.Now().UTC()
		expired = append(p.guardExpiry(diff.Expire(absent, now), len(c.seen)), diff.Prune(absent, now, p.opts.TombstoneTTL)...)
		c.rep.Expired = len(expired)
	}
	if err := c.deliver(append(c.heldU, expired...), c.heldT); err != nil {
		return err
	}
	if c.known == nil { // an empty listing: no chunk asked the store
		prev, err := p.st.Load(c.ctx, p.opts.Shard, nil)
		if err != nil {
			return &CycleError{StageLoad, err}
		}
		known := prev.Known
		c.unknown = !known
		if !known {
			if known, err = c.recoverLost(); err != nil {
				return err
			}
		}
		c.known = &known
	}
	if !*c.known {
		if err := p.st.MarkKnown(c.ctx, p.opts.Shard); err != nil {
			return &CycleError{StageCommit, err}
		}
	}
	return nil
}

// recoverLost tells a lost checkpoint from a new shard: a shard the store
// does not know, but whose events are in the stream, has published
// before. Its records' last announced states are then rebuilt from the
// stream and committed, and the shard is known again, so that every
// change since is announced with the right previousStatus instead of
// being silently taken for a baseline.
func (c *cycle) recoverLost() (bool, error) {
	p := c.p
	if p.opts.Recovery == nil {
		return false, nil
	}
	// Reading a long history is progress, not a stall.
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				c.progress()
			}
		}
	}()
	states, err := p.opts.Recovery.LastStates(c.ctx, p.opts.Shard)
	close(done)
	if err != nil {
		return false, &CycleError{StageLoad, fmt.Errorf("look for earlier events of a shard the checkpoint does not know: %w", err)}
	}
	if len(states) == 0 {
		return false, nil // a new shard
	}
	p.log.Error("the checkpoint of this shard is lost: it published before, but the store does not know it; rebuilding its states from the stream",
		zap.Int("records", len(states)))
	// A record last announced longer ago than the API keeps records is
	// gone by now: it comes back as a tombstone, pruned in due course.
	now := p.opts.Now().UTC()
	updates := make([]diff.Update, 0, len(states))
	for k, st := range states {
		if now.Sub(st.ObservedAt) > p.opts.TombstoneTTL {
			st.Gone, st.GoneAt = true, now
		}
		updates = append(updates, diff.Update{Key: k, State: st})
	}
	for start := 0; start < len(updates); start += 1000 {
		if err := p.st.Commit(c.ctx, p.opts.Shard, updates[start:min(start+1000, len(updates))], nil); err != nil {
			return false, &CycleError{StageCommit, err}
		}
	}
	if err := p.st.MarkKnown(c.ctx, p.opts.Shard); err != nil {
		return false, &CycleError{StageCommit, err}
	}
	p.opts.Metrics.checkpointRecovered(p.opts.Shard, len(states))
	return true, nil
}

// guardExpiry lets through the tombstones of records that the previous
// complete listing lacked too: one listing is never enough, since a page
// can drift under a changing set and skip a record, or an API glitch drop
// many. A listing that lacks more than the guard allows (present counts
// the records it held) is also logged and counted, for it is more likely
// wrong than retention.
func (p *Poller) guardExpiry(tombstones []diff.Update, present int) []diff.Update {
	limit := max(p.opts.ExpiryGuardMin, int(p.opts.ExpiryGuard*float64(present+len(tombstones))))
	var agreed []diff.Update
	next := make(map[diff.Key]struct{}, len(tombstones))
	for _, u := range tombstones {
		next[u.Key] = struct{}{}
		if _, ok := p.suspect[u.Key]; ok {
			agreed = append(agreed, u)
		}
	}
	p.suspect = next
	if len(tombstones) > limit && len(agreed) < len(tombstones) {
		p.log.Warn("a complete listing lacks too many records; expiring them only once the next complete listing agrees",
			zap.Int("absent", len(tombstones)), zap.Int("present", present), zap.Int("limit", limit), zap.Int("agreed", len(agreed)))
		p.opts.Metrics.expiryHeld(p.opts.Shard, len(tombstones)-len(agreed))
	}
	return agreed
}

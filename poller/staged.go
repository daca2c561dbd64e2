package poller

import (
	"errors"

	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
)

// finishStaged publishes and commits a batch that an earlier cycle staged
// but did not commit (its commit failed, or the process died): diffing
// again from the older states would announce the same change with
// another previousStatus.
func (c *cycle) finishStaged() error {
	p := c.p
	if !p.mayBeStaged {
		return nil
	}
	// Oldest first, every one of them: a store may queue several (see
	// deliver), and each commit clears the oldest. The bound only guards
	// against a store whose commit would clear nothing.
	for range 1 + 4*p.maxStaged() {
		more, err := c.finishOneStaged()
		if err != nil || !more {
			if err == nil {
				p.mayBeStaged = false
			}
			return err
		}
	}
	return &CycleError{StageCommit, errors.New("staged batches keep coming back after their commits")}
}

// finishOneStaged publishes and commits the oldest staged batch, if any,
// and reports whether there was one.
func (c *cycle) finishOneStaged() (bool, error) {
	p := c.p
	batch, ok, err := p.st.Staged(c.ctx, p.opts.Shard)
	if errors.Is(err, checkpoint.ErrCorrupt) {
		// Kept, it would block the shard for good; dropped, its records
		// are diffed again from the checkpoint.
		// A store that queues batches drops the corrupt one alone, and
		// the valid ones behind it are finished next; otherwise staging
		// nothing clears it.
		p.log.Error("discarding a staged batch that cannot be decoded", zap.Error(err))
		p.opts.Metrics.stagedDiscarded(p.opts.Shard)
		if q, ok := p.st.(StagedDiscarder); ok {
			err = q.DiscardOldestStaged(c.ctx, p.opts.Shard)
		} else {
			err = p.st.Stage(c.ctx, p.opts.Shard, diff.Result{})
		}
		if err != nil {
			return false, &CycleError{StageCommit, err}
		}
		return true, nil
	}
	if err != nil {
		return false, &CycleError{StageLoad, err}
	}
	if !ok {
		return false, nil
	}
	p.log.Info("finishing a batch staged by an earlier cycle", zap.Int("events", len(batch.Transitions)), zap.Int("updates", len(batch.Updates)))
	if err := c.publishStaged(batch); err != nil { // staged already: not written again
		return false, err
	}
	p.opts.Metrics.stagedFinished(p.opts.Shard)
	return true, nil
}

package cloudassist

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
)

// Strategy is how a lister reads the API each cycle.
type Strategy string

// The strategies.
const (
	// StrategyFull lists every record every cycle.
	StrategyFull Strategy = "full"
	// StrategyIncremental reads only what can still change — the active
	// invocations, the new ones at the head of the listing, and targeted
	// look-ups of those that left the active set — and lists everything
	// again every ResyncEvery. Only the full listings expire records.
	StrategyIncremental Strategy = "incremental"
)

// ParseStrategy validates a strategy name; "" means incremental.
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(s) {
	case "", StrategyIncremental:
		return StrategyIncremental, nil
	case StrategyFull:
		return StrategyFull, nil
	}
	return "", fmt.Errorf("cloudassist: unknown strategy %q (want full or incremental)", s)
}

// errStopPaging ends a listing early without an error.
var errStopPaging = errors.New("stop paging")

// incremental is the state an incremental lister keeps between cycles.
type incremental struct {
	known    map[string]struct{} // invocations seen: the head scan stops at them
	open     map[string]struct{} // invocations not final at the last cycle
	lastFull time.Time
}

// listIncremental reads the ECS records that can have changed since the
// last cycle. Records that change but are read by none of its listings —
// an invocation created and finished between the head scan and the status
// listings — are found at the next cycle's head scan; anything else
// missed (an unknown non-final status) waits for the next full listing.
func (c *ECS) listIncremental(ctx context.Context) (diff.Snapshot, error) {
	a := c.api
	now := a.opts.Now()
	if c.inc.known == nil || now.Sub(c.inc.lastFull) >= a.opts.ResyncEvery {
		snap, err := c.list(ctx)
		if err != nil {
			return snap, err
		}
		c.inc = incremental{known: map[string]struct{}{}, open: map[string]struct{}{}, lastFull: now}
		c.track(snap.Records)
		return snap, nil
	}

	snap := diff.Snapshot{Source: diff.SourceECS, Region: a.opts.Region, ObservedAt: now.UTC()}
	var acc accumulator
	periodic := map[string]periodicTask{}
	read := map[string]bool{}
	add := func(inv ecs.Invocation) error {
		recs, bad, err := normalizeECS(inv)
		if err != nil {
			return err
		}
		acc.bad += bad
		acc.add(recs...)
		read[recs[0].InvokeID] = true
		if hasHistory(inv.RepeatMode) {
			periodic[recs[0].InvokeID] = periodicTask{commandID: inv.CommandId, commandName: inv.CommandName, active: !recs[0].Status.Terminal() || inv.Timed}
		}
		return nil
	}
	// New invocations: the listing is newest first; stop at the first page
	// that reaches a known one.
	err := a.describeInvocations(ctx, nil, pageWise(a.opts.PageSize, func(inv ecs.Invocation) (bool, error) {
		_, seen := c.inc.known[inv.InvokeId]
		return seen, add(inv)
	}))
	if err != nil && !errors.Is(err, errStopPaging) {
		return diff.Snapshot{}, err
	}
	// Everything still active: the aggregate statuses an invocation can
	// still leave (the InvokeStatus filter takes one value per call).
	for _, status := range []string{"Running", "Pending", "Stopping"} {
		err := a.describeInvocations(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeStatus = status }, add)
		if err != nil {
			return diff.Snapshot{}, fmt.Errorf("active %s: %w", status, err)
		}
	}
	// What was active and is no longer: it finished (or expired).
	for _, id := range slices.Sorted(maps.Keys(c.inc.open)) {
		if read[id] {
			continue
		}
		err := a.describeInvocations(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeId = id }, add)
		if err != nil {
			return diff.Snapshot{}, fmt.Errorf("look up %s: %w", id, err)
		}
	}
	records, err := a.withHistory(ctx, acc.records, periodic)
	if err != nil {
		return diff.Snapshot{}, err
	}
	snap.Records = records
	acc.warn(a.opts)
	c.inc.open = map[string]struct{}{}
	c.track(records)
	return snap, nil
}

// track remembers the invocations of records, and which are still open.
func (c *ECS) track(records []diff.Record) {
	for _, r := range records {
		if r.InstanceID != "" {
			continue
		}
		c.inc.known[r.InvokeID] = struct{}{}
		if !r.Status.Terminal() {
			c.inc.open[r.InvokeID] = struct{}{}
		}
	}
}

// pageWise adapts a per-invocation callback that reports "seen" into one
// that stops the listing at the end of the first page holding a seen one.
func pageWise(pageSize int, each func(ecs.Invocation) (bool, error)) func(ecs.Invocation) error {
	n, stop := 0, false
	return func(inv ecs.Invocation) error {
		seen, err := each(inv)
		if err != nil {
			return err
		}
		stop = stop || seen
		if n++; n%pageSize == 0 && stop {
			return errStopPaging
		}
		return nil
	}
}

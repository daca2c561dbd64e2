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
var errStopPaging = errors.New("cloudassist: stop paging")

// incremental is the state an incremental lister keeps between cycles.
type incremental struct {
	known    map[string]struct{} // invocations seen: the head scan stops at them
	open     map[string]struct{} // invocations not final at the last cycle
	lastFull time.Time
}

// streamIncremental reads the ECS records that can have changed since the
// last cycle, or everything every ResyncEvery. Records that change but are
// read by none of its listings — an invocation created and finished
// between the head scan and the status listings — are found at the next
// cycle's head scan; anything else missed (an unknown non-final status)
// waits for the next full listing.
func (c *ECS) streamIncremental(ctx context.Context, emit func(diff.Snapshot) error) (bool, error) {
	a := c.api
	now := a.opts.Now()
	if c.inc.known == nil || now.Sub(c.inc.lastFull) >= a.opts.ResyncEvery {
		next := incremental{known: map[string]struct{}{}, open: map[string]struct{}{}, lastFull: now}
		ch := a.newChunker(true, emit)
		ch.onRecord = next.track
		if err := a.describeInvocationPages(ctx, nil, ch.page); err != nil {
			return false, err
		}
		if err := ch.finish(ctx); err != nil {
			return false, err
		}
		c.inc = next
		return true, nil
	}

	ch := a.newChunker(false, emit)
	read := map[string]bool{}
	open := map[string]struct{}{}
	ch.onRecord = func(r diff.Record) {
		read[r.InvokeID] = true
		c.inc.known[r.InvokeID] = struct{}{}
		if !r.Status.Terminal() {
			open[r.InvokeID] = struct{}{}
		} else {
			delete(open, r.InvokeID)
		}
	}
	// New invocations: the listing is newest first; stop after the first
	// page that reaches a known one.
	known := c.inc.known
	err := a.describeInvocationPages(ctx, nil, func(page []ecs.Invocation) error {
		reached := slices.ContainsFunc(page, func(inv ecs.Invocation) bool { _, ok := known[inv.InvokeId]; return ok })
		if err := ch.page(page); err != nil {
			return err
		}
		if reached {
			return errStopPaging
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopPaging) {
		return false, err
	}
	// Everything still active: the aggregate statuses an invocation can
	// still leave (the InvokeStatus filter takes one value per call).
	for _, status := range []string{"Running", "Pending", "Stopping"} {
		err := a.describeInvocationPages(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeStatus = status }, ch.page)
		if err != nil {
			return false, fmt.Errorf("active %s: %w", status, err)
		}
	}
	// What was active and is no longer: it finished (or expired).
	for _, id := range slices.Sorted(maps.Keys(c.inc.open)) {
		if read[id] {
			continue
		}
		err := a.describeInvocationPages(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeId = id }, ch.page)
		if err != nil {
			return false, fmt.Errorf("look up %s: %w", id, err)
		}
	}
	if err := ch.finish(ctx); err != nil {
		return false, err
	}
	c.inc.open = open
	return false, nil
}

// track remembers an invocation, and whether it is still open.
func (inc *incremental) track(r diff.Record) {
	inc.known[r.InvokeID] = struct{}{}
	if !r.Status.Terminal() {
		inc.open[r.InvokeID] = struct{}{}
	}
}

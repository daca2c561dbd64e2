package cloudassist

import (
	"cmp"
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
	known    map[string]struct{}  // invocations seen: the head scan stops at them
	open     map[string]time.Time // invocations not final at the last cycle, and their creation times
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
		next := incremental{known: map[string]struct{}{}, open: map[string]time.Time{}, lastFull: now}
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
	open := map[string]time.Time{}
	ch.onRecord = func(r diff.Record, created time.Time) {
		read[r.InvokeID] = true
		c.inc.known[r.InvokeID] = struct{}{}
		if !r.Status.Terminal() {
			open[r.InvokeID] = created
		} else {
			delete(open, r.InvokeID)
		}
	}
	lookUp := func(id string) error {
		err := a.describeInvocationPages(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeId = id }, ch.page)
		if err != nil {
			return fmt.Errorf("look up %s: %w", id, err)
		}
		read[id] = true
		return nil
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
	for _, status := range []string{"Pending", "Stopping"} {
		err := a.describeInvocationPages(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeStatus = status }, ch.page)
		if err != nil {
			return false, fmt.Errorf("active %s: %w", status, err)
		}
	}
	// The Running listing, newest first, with the look-ups of what left
	// the active set interleaved: once a page's oldest invocation is older
	// than a previously open one that no listing returned, that one has
	// finished (or expired) — look it up at once, so its change is
	// published within the page, not at the end of the cycle.
	wasOpen := slices.SortedFunc(maps.Keys(c.inc.open), func(x, y string) int {
		return cmp.Or(c.inc.open[y].Compare(c.inc.open[x]), cmp.Compare(x, y))
	})
	next := 0
	err = a.describeInvocationPages(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeStatus = "Running" }, func(page []ecs.Invocation) error {
		if err := ch.page(page); err != nil {
			return err
		}
		oldest := time.Time{}
		for _, inv := range page {
			if t, ok := parseTime(inv.CreationTime); ok && !t.IsZero() && (oldest.IsZero() || t.Before(oldest)) {
				oldest = t
			}
		}
		for ; next < len(wasOpen) && !oldest.IsZero() && c.inc.open[wasOpen[next]].After(oldest); next++ {
			if id := wasOpen[next]; !read[id] {
				if err := lookUp(id); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("active Running: %w", err)
	}
	// The rest: open ones no page ruled on (created in the same second as
	// the oldest running invocation, or older).
	for _, id := range wasOpen {
		if !read[id] {
			if err := lookUp(id); err != nil {
				return false, err
			}
		}
	}
	if err := ch.finish(ctx); err != nil {
		return false, err
	}
	c.inc.open = open
	return false, nil
}

// track remembers an invocation, and whether it is still open.
func (inc *incremental) track(r diff.Record, created time.Time) {
	inc.known[r.InvokeID] = struct{}{}
	if !r.Status.Terminal() {
		inc.open[r.InvokeID] = created
	}
}

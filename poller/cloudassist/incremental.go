package cloudassist

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"go.uber.org/zap"

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
	known    map[string]struct{}       // invocations seen
	open     map[string]openInvocation // invocations not final at the last cycle
	created  []int64                   // creation times (Unix seconds) of the known invocations, ascending
	fresh    int                       // invocations the last cycle saw first
	closed   int                       // open invocations the last cycle found final
	lastFull time.Time
	// oldestFirst: a listing was seen in ascending creation order, so new
	// invocations are at its end and a head scan must read it all.
	oldestFirst bool
	// prevNewest is the newest creation time (Unix seconds) known before
	// the last cycle: the head scan never stops above it, so what a
	// catch-up scan after a long gap skipped is read again next cycle.
	prevNewest int64
}

// newest is the newest creation time known, in Unix seconds; 0 if none.
func (inc *incremental) newest() int64 {
	if n := len(inc.created); n > 0 {
		return inc.created[n-1]
	}
	return 0
}

// openInvocation is what a plan needs to know of an open invocation.
type openInvocation struct {
	created time.Time
	status  diff.Status
}

// plan is how a steady cycle reads what can have changed. Either
//   - a sweep: the listing, newest first and unfiltered, down to the
//     creation time of an open invocation (the cutoff), then a look-up of
//     each open invocation older than that; or
//   - status listings: the head of the listing down to the first known
//     invocation, the Pending, Stopping and Running listings, and look-ups
//     of the open invocations that left them.
//
// A sweep reads every record in its range at the same place every cycle
// and needs no look-up for what finished; status listings read only the
// active records, however old. Each cycle takes whichever costs fewer
// calls by the last cycle's counts.
type plan struct {
	sweep   bool
	cutoff  time.Time // sweep: read down past this creation time; zero: only the head
	lookUps int       // sweep: how many open invocations are older than the cutoff
	open    []string  // the invocations open at the last cycle, newest first
	calls   int       // the estimated cost
}

// pages is how many calls a listing of n records takes (at least one).
func pages(n, size int) int { return max(1, (n+size-1)/size) }

// plan chooses the cheaper way to read this cycle.
// Without a Running listing (the API refused the filter), status
// listings would look every open invocation up: a sweep is chosen.
func (inc *incremental) plan(pageSize int, noRunning bool) plan {
	byAge := slices.SortedFunc(maps.Keys(inc.open), func(x, y string) int { // newest first
		return cmp.Or(inc.open[y].created.Compare(inc.open[x].created), cmp.Compare(x, y))
	})
	var pending, stopping int
	for _, o := range inc.open {
		switch o.status {
		case diff.StatusPending:
			pending++
		case diff.StatusStopping:
			stopping++
		}
	}
	running := len(inc.open) - pending - stopping
	statusCost := pages(inc.fresh, pageSize) + pages(pending, pageSize) + pages(stopping, pageSize) +
		pages(running, pageSize) + inc.closed

	// Sweeping down to the k-th newest open invocation leaves the older
	// ones to look up; k = 0 reads only the head.
	best := plan{sweep: true, lookUps: len(byAge), open: byAge, calls: pages(inc.fresh, pageSize) + len(byAge)}
	for k, id := range byAge {
		cutoff := inc.open[id].created
		newer := len(inc.created) - sort.Search(len(inc.created), func(i int) bool { return inc.created[i] >= cutoff.Unix() })
		if calls := pages(inc.fresh+newer, pageSize) + len(byAge) - k - 1; calls <= best.calls { // the deeper sweep on a tie: fewer look-ups
			best = plan{sweep: true, cutoff: cutoff, lookUps: len(byAge) - k - 1, open: byAge, calls: calls}
		}
	}
	if statusCost < best.calls && !noRunning {
		return plan{open: byAge, calls: statusCost}
	}
	return best
}

// streamIncremental reads the ECS records that can have changed since the
// last cycle, or everything every ResyncEvery. Records that change but are
// read by none of its listings — an invocation created and finished
// between the head scan and the status listings — are found at the next
// cycle's head; anything else missed (an unknown non-final status that no
// status listing returns) waits for the next full listing.
func (c *ECS) streamIncremental(ctx context.Context, emit func(diff.Snapshot) error) (bool, error) {
	a := c.api
	now := a.opts.Now()
	if c.inc.known == nil || now.Sub(c.inc.lastFull) >= a.opts.ResyncEvery {
		next := incremental{known: map[string]struct{}{}, open: map[string]openInvocation{}, lastFull: now,
			oldestFirst: c.inc.oldestFirst, prevNewest: c.inc.newest()}
		ch := a.newChunker(true, emit)
		defer ch.report()
		ch.onRecord = next.track
		var order orderProbe
		err := a.describeInvocationPages(ctx, nil, func(page []ecs.Invocation) error {
			order.note(&next, a, page)
			return ch.page(page)
		})
		if err != nil {
			return false, err
		}
		if err := ch.finish(ctx); err != nil {
			return false, err
		}
		slices.Sort(next.created)
		c.inc = next
		return true, nil
	}

	a.mu.Lock()
	runningRefused := a.refused["Running"]
	a.mu.Unlock()
	p := c.inc.plan(a.opts.PageSize, runningRefused)
	cy := steadyCycle{inc: &c.inc, ch: a.newChunker(false, emit), read: map[string]bool{}, open: map[string]openInvocation{}, fresh: map[string]int64{}}
	cy.ch.onRecord = cy.saw
	defer cy.ch.report()
	var err error
	if p.sweep {
		err = cy.sweep(ctx, a, p)
	} else {
		err = cy.statusListings(ctx, a, p.open)
	}
	if err != nil {
		return false, err
	}
	if err := cy.ch.finish(ctx); err != nil {
		return false, err
	}
	cy.end()
	a.opts.Logger.Debug("incremental cycle", zap.Bool("sweep", p.sweep), zap.Int("estimated_calls", p.calls), zap.Int("planned_look_ups", p.lookUps),
		zap.Int("open", len(c.inc.open)), zap.Int("new", c.inc.fresh), zap.Int("closed", c.inc.closed))
	return false, nil
}

// steadyCycle is one incremental cycle between full listings.
type steadyCycle struct {
	inc    *incremental
	ch     *chunker
	read   map[string]bool           // invocations read this cycle
	open   map[string]openInvocation // of those, the ones not final
	fresh  map[string]int64          // of those, the ones seen first, and their creation times
	closed int                       // previously open ones found final
}

// saw records an invocation read this cycle.
func (cy *steadyCycle) saw(r diff.Record, created time.Time) {
	id := r.InvokeID
	cy.read[id] = true
	if _, ok := cy.inc.known[id]; !ok {
		cy.fresh[id] = created.Unix()
	}
	if !r.Status.Terminal() {
		cy.open[id] = openInvocation{created: created, status: r.Status}
		return
	}
	delete(cy.open, id)
	if _, ok := cy.inc.open[id]; ok {
		cy.closed++
	}
}

// end makes a successful cycle's findings the state the next one plans
// with. (A failed cycle changes nothing: the next one reads it all again.)
func (cy *steadyCycle) end() {
	cy.inc.prevNewest = cy.inc.newest()
	for id, created := range cy.fresh {
		cy.inc.known[id] = struct{}{}
		cy.inc.created = append(cy.inc.created, created)
	}
	if !slices.IsSorted(cy.inc.created) {
		slices.Sort(cy.inc.created)
	}
	cy.inc.open, cy.inc.fresh, cy.inc.closed = cy.open, len(cy.fresh), cy.closed
}

// lookUp reads one invocation by id. Most invocations that end are read
// here (they left the Running listing), so the look-up asks for their
// output too: the events that announce their outcome then need no call of
// their own to say why (see ECS.FillOutputs).
func (cy *steadyCycle) lookUp(ctx context.Context, a *ecsAPI, id string) error {
	withOutput := a.opts.Output.For != OutputNone
	if withOutput {
		ctx = context.WithValue(ctx, rawBodyKey{}, func(body []byte) error {
			out, err := parseOutputs(body)
			cy.ch.output = out
			return err
		})
	}
	err := a.describeInvocationPages(ctx, func(req *ecs.DescribeInvocationsRequest) {
		req.InvokeId = id
		if withOutput {
			req.IncludeOutput = requests.NewBoolean(true)
		}
	}, cy.ch.page)
	cy.ch.output = nil
	if err != nil {
		return wrapAPI(err, "look up %s", id)
	}
	cy.read[id] = true // read, or gone: either way no longer open
	return nil
}

// lookUpUnread looks up, newest first, the previously open invocations
// that no listing of this cycle returned.
func (cy *steadyCycle) lookUpUnread(ctx context.Context, a *ecsAPI, ids []string) error {
	for _, id := range ids {
		if !cy.read[id] {
			if err := cy.lookUp(ctx, a, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// sweep reads the listing newest first down past the plan's cutoff (or to
// the first known invocation), then looks up the open invocations it did
// not return: the older ones, and any that vanished from its range.
func (cy *steadyCycle) sweep(ctx context.Context, a *ecsAPI, p plan) error {
	if err := cy.head(ctx, a, p.cutoff); err != nil {
		return err
	}
	return cy.lookUpUnread(ctx, a, p.open)
}

// head reads the listing, newest first, until a page whose oldest
// invocation is older than the watermark — the newest creation time known
// at the last cycle less Options.HeadOverlap — and, if cutoff is set, than
// cutoff. Creation times have one-second precision and the API does not
// say how it orders ties, nor that a NextToken is a stable cursor: reading
// past the newest known second by the overlap finds an invocation listed
// among older ones of its second, or skipped by a page that drifted, by
// the next cycle. Listed oldest first, the listing is read whole.
func (cy *steadyCycle) head(ctx context.Context, a *ecsAPI, cutoff time.Time) error {
	watermark := time.Time{}
	if newest := cy.inc.newest(); newest > 0 {
		// Never above what the last cycle knew, nor above our own clock:
		// an API clock ahead of ours must not end the scan early.
		at := min(newest-int64(max(a.opts.HeadOverlap, 0)/time.Second), a.opts.Now().Unix())
		if cy.inc.prevNewest > 0 {
			at = min(at, cy.inc.prevNewest)
		}
		watermark = time.Unix(at, 0)
	}
	known := cy.inc.known
	var order orderProbe
	err := a.describeInvocationPages(ctx, nil, func(page []ecs.Invocation) error {
		order.note(cy.inc, a, page)
		reached := slices.ContainsFunc(page, func(inv ecs.Invocation) bool { _, ok := known[inv.InvokeId]; return ok })
		if err := cy.ch.page(page); err != nil {
			return err
		}
		if cy.inc.oldestFirst {
			return nil
		}
		// At a known invocation and past the watermark: what is new is
		// behind us.
		oldest := oldestCreated(page)
		past := reached && (oldest.IsZero() || oldest.Before(watermark))
		if past && (cutoff.IsZero() || !oldest.IsZero() && oldest.Before(cutoff)) {
			return errStopPaging
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopPaging) {
		return err
	}
	return nil
}

// orderProbe looks for evidence, across the pages of one listing, that the
// API lists oldest first: an invocation created in a later second than one
// listed before it. (Newest first, ties and drift only ever repeat or
// reorder within a second.)
type orderProbe struct{ last int64 }

func (o *orderProbe) note(inc *incremental, a *ecsAPI, page []ecs.Invocation) {
	if inc.oldestFirst {
		return
	}
	for _, inv := range page {
		t, ok := parseTime(inv.CreationTime)
		if !ok || t.IsZero() {
			continue
		}
		if o.last != 0 && t.Unix() > o.last {
			inc.oldestFirst = true
			a.opts.Logger.Warn("the API lists invocations oldest first; every incremental cycle reads the whole listing to find new ones",
				zap.String("region", a.opts.Region))
			return
		}
		o.last = t.Unix()
	}
}

// statusListings reads the head of the listing down to the first known
// invocation, then everything active by status, looking up what left the
// active set as soon as the Running listing has passed it.
func (cy *steadyCycle) statusListings(ctx context.Context, a *ecsAPI, wasOpen []string) error {
	if err := cy.head(ctx, a, time.Time{}); err != nil {
		return err
	}
	// The aggregate statuses an invocation can still leave (the
	// InvokeStatus filter takes one value per call). Seed 000 documents
	// Running, but not Pending or Stopping: an API that refuses a filter
	// is asked no more, and what that listing would have found is found by
	// the head scan (new invocations) and the look-ups (open ones).
	for _, status := range []string{"Pending", "Stopping"} {
		if err := a.activeListing(ctx, status, cy.ch.page); err != nil {
			return err
		}
	}
	// The Running listing, newest first: once a page's oldest invocation
	// is older than a previously open one that no listing returned, that
	// one has finished (or expired) — look it up at once, so its change is
	// published within the page, not at the end of the cycle.
	next := 0
	err := a.activeListing(ctx, "Running", func(page []ecs.Invocation) error {
		if err := cy.ch.page(page); err != nil {
			return err
		}
		oldest := oldestCreated(page)
		for ; next < len(wasOpen) && !oldest.IsZero() && cy.inc.open[wasOpen[next]].created.After(oldest); next++ {
			if id := wasOpen[next]; !cy.read[id] {
				if err := cy.lookUp(ctx, a, id); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The rest: open ones no page ruled on (created in the same second as
	// the oldest running invocation, or older).
	return cy.lookUpUnread(ctx, a, wasOpen[next:])
}

// activeListing reads the invocations of one InvokeStatus, unless the API
// refused that filter before. A refusal (HTTP 400, a permanent error,
// right after unfiltered calls with the same credentials succeeded) is
// logged once and remembered; the listing is then skipped.
func (a *ecsAPI) activeListing(ctx context.Context, status string, each func([]ecs.Invocation) error) error {
	a.mu.Lock()
	refused := a.refused[status]
	a.mu.Unlock()
	if refused {
		return nil
	}
	err := a.describeInvocationPages(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeStatus = status }, each)
	if apiErr, ok := errors.AsType[*APIError](err); ok && refusesFilter(apiErr) {
		a.mu.Lock()
		if a.refused == nil {
			a.refused = map[string]bool{}
		}
		a.refused[status] = true
		a.mu.Unlock()
		a.opts.Logger.Warn("the API refuses this InvokeStatus filter; listing without it from now on (open invocations are looked up instead)",
			zap.String("region", a.opts.Region), zap.String("status", status), zap.String("code", apiErr.Code))
		return nil
	}
	if err != nil {
		return wrapAPI(err, "active %s", status)
	}
	return nil
}

// refusesFilter tells an API that refuses a filter value from any other
// failure of a filtered call: a permanent HTTP 400 about a parameter or a
// status — not a signature, a credential or the NextToken.
func refusesFilter(e *APIError) bool {
	if e.Class != ClassPermanent || e.HTTPStatus != 400 {
		return false
	}
	return strings.Contains(e.Code, "Status") ||
		(e.Code == "InvalidParameter" || strings.HasPrefix(e.Code, "InvalidParameter.")) && !strings.Contains(e.Code, "NextToken")
}

// oldestCreated is the creation time of a page's oldest invocation, or
// zero if none has one.
func oldestCreated(page []ecs.Invocation) time.Time {
	var oldest time.Time
	for _, inv := range page {
		if t, ok := parseTime(inv.CreationTime); ok && !t.IsZero() && (oldest.IsZero() || t.Before(oldest)) {
			oldest = t
		}
	}
	return oldest
}

// track remembers an invocation of a full listing, and whether it is
// still open.
func (inc *incremental) track(r diff.Record, created time.Time) {
	if _, ok := inc.known[r.InvokeID]; !ok {
		inc.known[r.InvokeID] = struct{}{}
		inc.created = append(inc.created, created.Unix())
	}
	if !r.Status.Terminal() {
		inc.open[r.InvokeID] = openInvocation{created: created, status: r.Status}
	}
}

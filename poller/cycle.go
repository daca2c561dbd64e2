package poller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/capoller/capoller/diff"
)

// list finishes a staged batch, then reads the listing chunk by chunk,
// and reports whether it was complete.
func (c *cycle) list() (bool, error) {
	if err := c.finishStaged(); err != nil {
		return false, err
	}
	if c.lookUp != nil {
		l, ok := c.p.src.(LookUper)
		if !ok {
			return false, errors.New("poller: the lister cannot look invocations up")
		}
		snap, err := l.LookUp(c.ctx, c.lookUp)
		if err != nil {
			return false, err
		}
		snap.Complete = false // a few invocations: what it lacks means nothing
		return false, c.chunk(snap)
	}
	if s, ok := c.p.src.(Streamer); ok {
		return s.Stream(c.ctx, c.chunk)
	}
	snap, err := c.p.src.Snapshot(c.ctx)
	if err != nil {
		return false, err
	}
	return snap.Complete, c.chunk(snap)
}

// stalledError is why a cycle that made no progress was stopped.
type stalledError struct{ after time.Duration }

func (e stalledError) Error() string { return fmt.Sprintf("no progress for %v", e.after) }

// cycle carries one cycle's state across its chunks.
type cycle struct {
	p        *Poller
	ctx      context.Context
	progress func() // a page arrived: the cycle is not stalled
	rep      *Report
	lookUp   []string // a hint's look-up of these invocations, not the listing
	known    *bool    // whether the shard was known when the cycle began
	// unknown: the store did not know the shard when the cycle began,
	// whether or not it was then recovered from the stream (a first
	// sight's batch that an earlier cycle failed to commit is finished,
	// and the shard recovered, by a cycle like that).
	unknown bool
	seen    map[diff.Key]struct{}
	// Held until a full listing succeeds: its transitions and updates, and
	// the states they reach, which later chunks see instead of the store's.
	heldT   []diff.Transition
	heldU   []diff.Update
	pending map[diff.Key]diff.State
	// sharing: rep.Transitions is a prefix of the transitions deliver is
	// committing, extended in place batch by batch (see reported).
	sharing bool
}

// chunk diffs, publishes and commits one chunk of a listing.
func (c *cycle) chunk(snap diff.Snapshot) error {
	p := c.p
	p.hook(StepFetched)
	c.progress()
	c.rep.Records += len(snap.Records)
	snap.Account = p.opts.Shard.Account
	keys := make([]diff.Key, len(snap.Records))
	for i := range snap.Records {
		snap.Records[i].BoundTexts() // a record travels whole into a staged batch and an event
		keys[i] = snap.Records[i].Key
		if snap.Complete { // only a complete listing's absences expire records
			c.seen[keys[i]] = struct{}{}
		}
	}
	prev, err := p.st.Load(c.ctx, p.opts.Shard, keys)
	if err != nil {
		return &CycleError{StageLoad, err}
	}
	if c.known == nil {
		known := prev.Known
		c.unknown = !known
		if !known {
			recovered, err := c.recoverLost()
			if err != nil {
				return err
			}
			if recovered {
				known = true
				if prev, err = p.st.Load(c.ctx, p.opts.Shard, keys); err != nil {
					return &CycleError{StageLoad, err}
				}
			}
		}
		c.known = &known
	}
	prev.Known = *c.known // first sight is judged by the shard's state when the cycle began
	for _, k := range keys {
		if st, ok := c.pending[k]; ok {
			prev.States[k] = st
		}
	}
	// Hold a full listing's chunk until the listing succeeded — unless it
	// can carry no event: a baseline commits as it goes (the shard becomes
	// known only at the end, so a half-done baseline stays a baseline).
	hold := snap.Complete && (*c.known || p.opts.Initial == diff.InitialEmit)
	snap.Complete = false // absences are the cycle's business, not one chunk's
	res := diff.Compute(prev, snap, diff.Options{Initial: p.opts.Initial})
	if !hold {
		return c.deliver(res.Updates, res.Transitions)
	}
	if c.pending == nil {
		c.pending = map[diff.Key]diff.State{}
	}
	for _, u := range res.Updates {
		c.pending[u.Key] = u.State
	}
	c.heldT = append(c.heldT, res.Transitions...)
	c.heldU = append(c.heldU, res.Updates...)
	return nil
}

// deliver publishes transitions, then commits the updates with them, in
// batches of at most MaxBatch events (the runs of one record stay in one
// batch). Each batch commits, for every record it announces, the state
// its last event there reached — the final state if no later batch
// announces the record again — so a failure between two batches leaves
// the checkpoint agreeing with the stream. A record read twice in one
// cycle (a restarted listing, a repeated page) keeps its last update.
// Updates without an event (a baseline, expiry, revival) are committed
// with the last batch and not staged: they are simply computed again if
// that commit fails.
func (c *cycle) deliver(updates []diff.Update, transitions []diff.Transition) error {
	// Each key's last update and last transition, -1 for none.
	type last struct{ update, event int }
	lasts := make(map[diff.Key]last, len(updates))
	for i, u := range updates {
		l, ok := lasts[u.Key]
		if !ok {
			l.event = -1
		}
		l.update = i
		lasts[u.Key] = l
	}
	for i, t := range transitions {
		l, ok := lasts[t.Record.Key]
		if !ok {
			l.update = -1
		}
		l.event = i
		lasts[t.Record.Key] = l
	}
	quiet := make([]diff.Update, 0, max(0, len(updates)-len(transitions)))
	for i, u := range updates {
		if l := lasts[u.Key]; l.update == i && l.event < 0 {
			quiet = append(quiet, u)
		}
	}
	if len(transitions) == 0 {
		return c.publishAndCommit(diff.Result{}, quiet)
	}
	if f, ok := c.p.src.(OutputFiller); ok {
		f.FillOutputs(c.ctx, transitions)
		c.progress() // look-ups are progress, as pages are
	}
	if len(c.rep.Transitions) == 0 {
		c.rep.Transitions, c.sharing = transitions[:0], true
	} else {
		c.rep.Transitions = slices.Grow(c.rep.Transitions, len(transitions))
	}
	// Up to depth batches are in flight: the next is staged and published
	// while the previous ones are acknowledged and committed, in the order
	// they were staged. A batch waits for any in flight that announces one
	// of its records, so that each record's events stay in order even if a
	// publish fails and is finished later.
	depth := c.p.maxStaged()
	var flights []*flight
	drain := func() { // after a failure: the batches still in flight are staged, and counted
		for _, f := range flights {
			<-f.done
			c.rep.Published += f.res.Published
			c.rep.Duplicates += f.res.Duplicates
		}
	}
	land := func() error {
		f := flights[0]
		flights = flights[1:]
		return c.land(f)
	}
	for start := 0; start < len(transitions); {
		end := min(start+c.p.opts.MaxBatch, len(transitions))
		for end < len(transitions) && transitions[end].Record.Key == transitions[end-1].Record.Key {
			end++
		}
		batch := diff.Result{Transitions: transitions[start:end], Updates: make([]diff.Update, 0, end-start)}
		reached := make(map[diff.Key]diff.State, end-start)
		order := make([]diff.Key, 0, end-start)
		for j := start; j < end; j++ {
			t := transitions[j]
			k := t.Record.Key
			if _, ok := reached[k]; !ok {
				order = append(order, k)
			}
			reached[k] = diff.State{Status: t.Record.Status, Repeats: t.Record.Repeats, ObservedAt: t.ObservedAt}
			if l := lasts[k]; l.update >= 0 && l.event == j {
				reached[k] = updates[l.update].State
			}
		}
		for _, k := range order {
			batch.Updates = append(batch.Updates, diff.Update{Key: k, State: reached[k]})
		}
		var rest []diff.Update
		if end == len(transitions) {
			rest = quiet
		}
		for len(flights) > 0 && (len(flights) >= depth || overlaps(flights, reached)) {
			if err := land(); err != nil {
				drain()
				return err
			}
		}
		ctx, span := c.startPublish(batch.Transitions, false)
		traceWith(ctx, batch.Transitions) // staged with the batch: a re-publish keeps it
		if err := c.stage(ctx, batch); err != nil {
			failed(span, err)
			span.End()
			drain()
			return err
		}
		flights = append(flights, c.launch(ctx, span, batch, rest, reached))
		start = end
	}
	for len(flights) > 0 {
		if err := land(); err != nil {
			drain()
			return err
		}
	}
	return nil
}

// flight is a staged batch being published.
type flight struct {
	batch diff.Result
	quiet []diff.Update
	keys  map[diff.Key]diff.State
	done  chan struct{}
	res   PublishResult
	err   error
}

// launch publishes a staged batch in the background, under its publish
// span (ctx's), which it ends.
func (c *cycle) launch(ctx context.Context, span trace.Span, b diff.Result, quiet []diff.Update, keys map[diff.Key]diff.State) *flight {
	f := &flight{batch: b, quiet: quiet, keys: keys, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer func() {
			if span.IsRecording() {
				span.SetAttributes(attribute.Int("capoller.published", f.res.Published), attribute.Int("capoller.duplicates", f.res.Duplicates))
				failed(span, f.err)
			}
			span.End()
		}()
		if f.err = c.p.claimed(); f.err != nil {
			return
		}
		f.res, f.err = c.p.pub.Publish(ctx, b.Transitions)
	}()
	return f
}

// land waits for a batch's acknowledgements and commits it.
func (c *cycle) land(f *flight) error {
	<-f.done
	c.rep.Published += f.res.Published
	c.rep.Duplicates += f.res.Duplicates
	if f.err != nil {
		if _, ok := errors.AsType[*CycleError](f.err); ok {
			return f.err
		}
		return &CycleError{StagePublish, f.err}
	}
	c.p.hook(StepPublished)
	return c.commit(f.batch, f.quiet)
}

// overlaps reports whether a batch in flight announces one of keys.
func overlaps(flights []*flight, keys map[diff.Key]diff.State) bool {
	for _, f := range flights {
		small, large := f.keys, keys
		if len(small) > len(large) {
			small, large = large, small
		}
		for k := range small {
			if _, ok := large[k]; ok {
				return true
			}
		}
	}
	return false
}

// maxStaged is how many batches the store lets be staged at once.
func (p *Poller) maxStaged() int {
	if q, ok := p.st.(StagedQueue); ok {
		return max(1, q.MaxStaged())
	}
	return 1
}

// publishAndCommit stages a batch with events, publishes them, and commits
// its updates, with the quiet ones, once every event is acknowledged.
func (c *cycle) publishAndCommit(b diff.Result, quiet []diff.Update) error {
	if len(b.Transitions) == 0 {
		if err := c.p.claimed(); err != nil {
			return err
		}
		return c.commit(b, quiet)
	}
	ctx, span := c.startPublish(b.Transitions, false)
	traceWith(ctx, b.Transitions)
	if err := c.stage(ctx, b); err != nil {
		failed(span, err)
		span.End()
		return err
	}
	return c.land(c.launch(ctx, span, b, quiet, nil))
}

// stage stores a batch with events before it is published, under a claim
// that still holds; ctx holds its publish's span.
func (c *cycle) stage(ctx context.Context, b diff.Result) error {
	if err := c.p.claimed(); err != nil {
		return err
	}
	ctx, span := c.p.tracer.Start(ctx, spanStage, trace.WithAttributes(attribute.Int("capoller.transitions", len(b.Transitions)),
		attribute.Int("capoller.updates", len(b.Updates))))
	defer span.End()
	if err := c.p.st.Stage(ctx, c.p.opts.Shard, b); err != nil {
		failed(span, err)
		return &CycleError{StageCommit, err}
	}
	c.p.hook(StepStaged)
	return nil
}

// publishStaged publishes a batch an earlier cycle staged and commits its
// updates once every event is acknowledged. Its events keep the trace
// context they were staged with; its publish span links to it.
func (c *cycle) publishStaged(b diff.Result) error {
	if len(b.Transitions) == 0 {
		return c.commit(b, nil)
	}
	ctx, span := c.startPublish(b.Transitions, true)
	return c.land(c.launch(ctx, span, b, nil, nil))
}

// commit commits a published batch's updates, with the quiet ones.
func (c *cycle) commit(b diff.Result, quiet []diff.Update) error {
	p := c.p
	updates := append(b.Updates[:len(b.Updates):len(b.Updates)], quiet...)
	if len(updates) > 0 || len(b.Transitions) > 0 {
		// Once its events are acknowledged, a batch's commit is finished
		// even if the daemon is stopping: a restart then has nothing of it
		// to publish again.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), commitGrace)
		defer cancel()
		ctx, span := p.tracer.Start(ctx, spanCommit, trace.WithAttributes(p.spanAttrs...),
			trace.WithAttributes(attribute.Int("capoller.transitions", len(b.Transitions)), attribute.Int("capoller.updates", len(updates))))
		defer span.End()
		if err := p.st.Commit(ctx, p.opts.Shard, updates, b.Transitions); err != nil {
			failed(span, err)
			return &CycleError{StageCommit, err}
		}
		p.opts.Metrics.committed(p.opts.Shard)
		if len(b.Transitions) > 0 {
			p.hook(StepCommitted)
		}
	}
	// Only once committed: a batch whose commit failed is finished, and
	// reported, by a later cycle.
	c.reported(b.Transitions)
	c.rep.Committed += len(updates)
	return nil
}

// reported adds a committed batch's transitions to the report. A batch
// that follows the report in the array it shares with it (the batches
// deliver commits in order) only extends it: a cycle that changes every
// record of a large shard would otherwise copy all its transitions.
func (c *cycle) reported(ts []diff.Transition) {
	r := c.rep.Transitions
	if len(ts) == 0 {
		return
	}
	if c.sharing && len(r)+len(ts) <= cap(r) && &r[:len(r)+1][len(r)] == &ts[0] {
		c.rep.Transitions = r[:len(r)+len(ts)]
		return
	}
	if c.sharing { // anything else must not write into the shared array
		r, c.sharing = slices.Clip(r), false
	}
	c.rep.Transitions = append(r, ts...)
}

// claimed fails a cycle whose replica may no longer own the shard.
func (p *Poller) claimed() error {
	if p.opts.Claim == nil {
		return nil
	}
	if err := p.opts.Claim.Valid(); err != nil {
		return &CycleError{StageCommit, err}
	}
	return nil
}

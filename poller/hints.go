package poller

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
)

// LookUper is a [Lister] that can read a few invocations by id, for a
// hint. Its snapshot is a partial listing (never Complete: the records it
// lacks mean nothing), which the cycle diffs, stages, publishes and
// commits as it does a listing's, with the same event ids and fencing. An
// id the API does not know yields no record.
type LookUper interface {
	LookUp(ctx context.Context, invokeIDs []string) (diff.Snapshot, error)
}

// Hint is a reason to look at an invocation now: a push said one of its
// instances' runs ended. It is never the truth: only what the look-up
// returns is announced, and polling stays the reconciler.
type Hint struct {
	InvokeID   string
	InstanceID string
	// Received is when the hint reached capoller (any replica), for the
	// hint's lag: from it to the event.
	Received time.Time

	tries int // look-ups of it that failed
}

// lookUpTries is how often a hint is looked up before it is left to the
// listing: a look-up that was throttled, or that met an API outage, is
// tried again after the spacing, twice.
const lookUpTries = 3

// HintOptions bound what hints cost a shard. The zero value takes the
// defaults.
type HintOptions struct {
	// Spacing is the least time between two look-ups of one invocation;
	// default 1s. Hints meanwhile wait for the next one: a flood of hints
	// for one invocation costs one look-up per Spacing.
	Spacing time.Duration
	// PerSecond and Burst bound the shard's look-ups (each one API call
	// per invocation), so that they never starve its listing of the
	// quota; default 2 and 4.
	PerSecond float64
	Burst     int
	// Batch is the most invocations one look-up cycle reads; default 10.
	Batch int
	// MaxPending is the most invocations waiting for a look-up; a hint
	// beyond it is dropped (polling finds its change); default 1024.
	MaxPending int
}

func (o HintOptions) withDefaults() HintOptions {
	if o.Spacing <= 0 {
		o.Spacing = time.Second
	}
	if o.PerSecond <= 0 {
		o.PerSecond = 2
	}
	if o.Burst <= 0 {
		o.Burst = 4
	}
	if o.Batch <= 0 {
		o.Batch = 10
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1024
	}
	return o
}

// hintMemory is how long a shard remembers that an invocation was
// hinted: a terminal transition that polling finds within it is not
// counted as unhinted.
const hintMemory = time.Hour

// hintQueue holds a shard's hints until their look-up. Hint is called by
// other goroutines (the bus's); the poller's loop takes from it.
type hintQueue struct {
	opts    HintOptions
	limiter *rate.Limiter
	signal  chan struct{} // a hint waits, or a look-up is due
	mu      sync.Mutex
	pending map[string]Hint      // invocation → its earliest hint not yet looked up
	last    map[string]time.Time // invocation → its last look-up
	hinted  map[string]time.Time // invocation → its last hint, for hintMemory
}

func newHintQueue(o HintOptions) *hintQueue {
	o = o.withDefaults()
	return &hintQueue{opts: o, limiter: rate.NewLimiter(rate.Limit(o.PerSecond), o.Burst), signal: make(chan struct{}, 1),
		pending: map[string]Hint{}, last: map[string]time.Time{}, hinted: map[string]time.Time{}}
}

// hintOutcome is what became of a hint.
type hintOutcome int

const (
	hintQueued    hintOutcome = iota // it will be looked up
	hintCoalesced                    // one for the invocation already waits
	hintDropped                      // the queue is full
)

// add queues h, unless a hint for its invocation already waits.
func (q *hintQueue) add(h Hint) hintOutcome {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.hinted[h.InvokeID] = h.Received
	if _, waits := q.pending[h.InvokeID]; waits {
		return hintCoalesced
	}
	if len(q.pending) >= q.opts.MaxPending {
		return hintDropped
	}
	q.pending[h.InvokeID] = h
	q.wake()
	return hintQueued
}

func (q *hintQueue) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// due takes up to Batch invocations whose last look-up is Spacing old,
// the earliest hinted first, if the shard's rate allows a look-up now.
// next is how long until more are due (0: none wait).
func (q *hintQueue) due(now time.Time) (hints []Hint, next time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, at := range q.hinted {
		if now.Sub(at) > hintMemory {
			delete(q.hinted, id)
		}
	}
	for id, at := range q.last {
		if now.Sub(at) > q.opts.Spacing {
			delete(q.last, id)
		}
	}
	waiting := slices.SortedFunc(maps.Values(q.pending), func(a, b Hint) int { return a.Received.Compare(b.Received) })
	for _, h := range waiting {
		if at, seen := q.last[h.InvokeID]; seen {
			if wait := at.Add(q.opts.Spacing).Sub(now); next == 0 || wait < next {
				next = wait
			}
			continue
		}
		if len(hints) == q.opts.Batch {
			next = time.Millisecond
			break
		}
		hints = append(hints, h)
	}
	if len(hints) == 0 {
		return nil, next
	}
	r := q.limiter.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, d
	}
	for _, h := range hints {
		delete(q.pending, h.InvokeID)
		q.last[h.InvokeID] = now
	}
	return hints, next
}

// retry queues again the hints of a look-up that failed, each at most
// lookUpTries times in all, after the spacing; a hint that came meanwhile
// for the same invocation stands for it. It reports how many it queued.
func (q *hintQueue) retry(hints []Hint) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, h := range hints {
		h.tries++
		if _, waits := q.pending[h.InvokeID]; waits || h.tries >= lookUpTries || len(q.pending) >= q.opts.MaxPending {
			continue
		}
		q.pending[h.InvokeID] = h
		n++
	}
	if n > 0 {
		q.wake()
	}
	return n
}

// wasHinted reports whether the invocation was hinted within hintMemory.
func (q *hintQueue) wasHinted(invokeID string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.hinted[invokeID]
	return ok
}

// Hint queues a look-up of h's invocation, coalesced with any that waits
// for it and spaced from the last. It never blocks, and is safe to call
// from any goroutine. It reports whether the hint added a look-up. A
// poller without Options.Hints, or whose lister cannot look up, ignores
// hints.
func (p *Poller) Hint(h Hint) bool {
	if p.hints == nil {
		return false
	}
	if _, ok := p.src.(LookUper); !ok || h.InvokeID == "" {
		return false
	}
	if h.Received.IsZero() {
		h.Received = p.opts.Now()
	}
	outcome := p.hints.add(h)
	p.opts.Metrics.hint(p.opts.Shard, outcome)
	return outcome == hintQueued
}

// lookUpDue runs a look-up cycle of the invocations due, if any, and
// returns its report, the hints it looked up (nil: none was due), and when
// to try again (0: nothing waits).
func (p *Poller) lookUpDue(ctx context.Context) (Report, []Hint, time.Duration) {
	hints, next := p.hints.due(p.opts.Now())
	if len(hints) == 0 {
		return Report{}, nil, next
	}
	return p.runCycle(ctx, hints), hints, next
}

// hintLags are, for a look-up cycle's transitions, the time from their
// invocation's hint to now: the hint's lag.
func hintLags(hints []Hint, ts []diff.Transition, now time.Time) []float64 {
	received := make(map[string]time.Time, len(hints))
	for _, h := range hints {
		received[h.InvokeID] = h.Received
	}
	var lags []float64
	for _, t := range ts {
		if at, ok := received[t.Record.InvokeID]; ok && t.Record.InstanceID != "" && t.Record.Status.Terminal() {
			lags = append(lags, max(now.Sub(at), 0).Seconds())
		}
	}
	return lags
}

// countHinted measures a cycle against the hints: a look-up's hint lags,
// or, for a cycle of the listing, its terminal instance transitions whose
// invocation no hint had named.
func (p *Poller) countHinted(rep Report, hints []Hint) {
	if p.hints == nil || rep.Err != nil && len(rep.Transitions) == 0 {
		return
	}
	if hints != nil {
		p.opts.Metrics.lookUp(p.opts.Shard, len(hints), hintLags(hints, rep.Transitions, p.opts.Now()))
		return
	}
	n := 0
	for _, t := range rep.Transitions {
		if t.Record.InstanceID != "" && t.Record.Status.Terminal() && !rep.FirstSight && !p.hints.wasHinted(t.Record.InvokeID) {
			n++
		}
	}
	p.opts.Metrics.unhintedTransitions(p.opts.Shard, n)
}

// hintLoop is the poller loop's side of the hint queue: its signal, and
// a timer that raises it again for look-ups that wait for their spacing
// or the shard's rate, while the loop sleeps.
type hintLoop struct {
	q     *hintQueue
	timer *time.Timer
}

func newHintLoop(q *hintQueue) *hintLoop {
	l := &hintLoop{q: q}
	if q != nil {
		l.timer = time.AfterFunc(time.Hour, q.wake)
		l.timer.Stop()
	}
	return l
}

// ready is raised when a look-up may be due; nil (never) without hints.
func (l *hintLoop) ready() <-chan struct{} {
	if l.q == nil {
		return nil
	}
	return l.q.signal
}

func (l *hintLoop) stop() {
	if l.timer != nil {
		l.timer.Stop()
	}
}

// lookUpHinted runs the look-up cycles due now and arms the timer for
// the next. A look-up refused by fencing ends the poller, as a cycle's
// does; another failure queues its hints again, a few times, after which
// the listing finds their changes.
func (p *Poller) lookUpHinted(ctx context.Context, l *hintLoop) error {
	rep, hints, next := p.lookUpDue(ctx)
	if next > 0 {
		l.timer.Reset(next)
	}
	if hints == nil {
		return nil
	}
	if errors.Is(rep.Err, checkpoint.ErrFenced) || errors.Is(rep.Err, ErrClaimExpired) {
		p.log.Warn("the shard is no longer this replica's; stopping its poller", zap.Error(rep.Err))
		return rep.Err
	}
	if rep.Err != nil && ctx.Err() == nil {
		retried := p.hints.retry(hints)
		p.log.Debug("a hint's look-up failed; it is tried again, and the listing finds its changes in any case",
			zap.Strings("invocations", rep.LookedUp), zap.Int("retried", retried), zap.Error(rep.Err))
		if wait := p.hints.opts.Spacing; retried > 0 && (next == 0 || wait < next) {
			l.timer.Reset(wait)
		}
	}
	return nil
}

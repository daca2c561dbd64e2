package poller

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/publisher"
)

// Lister returns a complete snapshot of one shard, or an error; never a
// partial snapshot. It must return promptly when ctx ends.
type Lister interface {
	Snapshot(ctx context.Context) (diff.Snapshot, error)
}

// OutputFiller is a [Lister] whose transitions need work on their run's
// output before they are staged: output read with the listing is vetted
// (redacted, bounded), output the listing lacks is looked up. It marks
// what it could not read in time (diff.Record.OutputMissing) and returns
// within its own bound. It is called once per batch of a cycle's
// transitions, never for a staged batch: a re-publish carries the output
// the first one did.
type OutputFiller interface {
	FillOutputs(ctx context.Context, ts []diff.Transition)
}

// Store loads and commits checkpointed states of one shard.
type Store interface {
	// Load returns the states of keys, and whether the shard was ever
	// committed.
	Load(ctx context.Context, shard diff.Shard, keys []diff.Key) (diff.Previous, error)
	// Absent returns the states of the shard's records for which seen is
	// false: after a complete listing, the records the API no longer holds.
	Absent(ctx context.Context, shard diff.Shard, seen func(diff.Key) bool) (map[diff.Key]diff.State, error)
	// Commit stores updates and records transitions, atomically.
	Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, transitions []diff.Transition) error
	// MarkKnown records that the shard's first listing was committed
	// whole: records seen for the first time are new from then on.
	MarkKnown(ctx context.Context, shard diff.Shard) error
	// Stage stores a batch before it is published; Commit clears it.
	Stage(ctx context.Context, shard diff.Shard, batch diff.Result) error
	// Staged returns the batch staged and not committed, if any.
	Staged(ctx context.Context, shard diff.Shard) (diff.Result, bool, error)
}

// Streamer is a [Lister] that hands its listing over in chunks as it reads
// them, so that memory holds one chunk rather than the whole region. A
// chunk whose Complete is true belongs to a full listing: its events are
// held until the whole listing succeeded, so a failed page publishes
// nothing. Other chunks (an incremental cycle reads records whole, and
// infers nothing from absence) are published at once. Stream reports
// whether the listing was complete, so that its absences expire records.
type Streamer interface {
	Stream(ctx context.Context, emit func(chunk diff.Snapshot) error) (complete bool, err error)
}

// Recovery rebuilds a lost checkpoint: the last announced state of every
// record of a shard, from the events themselves.
type Recovery interface {
	// LastStates returns the state of each record of the shard as its
	// last event announced it; an empty map if it has none.
	LastStates(ctx context.Context, shard diff.Shard) (map[diff.Key]diff.State, error)
}

// Publisher delivers a batch of transitions and returns once every one is
// acknowledged.
type Publisher interface {
	Publish(ctx context.Context, batch []diff.Transition) (publisher.Result, error)
}

// Options configures a [Poller]. Zero values get the documented defaults.
type Options struct {
	// Shard is the source and region polled; required.
	Shard diff.Shard
	// Interval between the starts of two cycles; default 30s.
	Interval time.Duration
	// StallTimeout fails a cycle that handled no page for this long; default
	// 2×Interval, at least 5 minutes (a throttled call waits past the next
	// one-minute window). A cycle that makes progress is never cut short:
	// a full listing of a large region under heavy throttling can take
	// longer than any fixed bound, and would otherwise never finish.
	StallTimeout time.Duration
	// Initial is the first-sight policy; default baseline.
	Initial diff.Initial
	// MaxBackoff caps the exponential backoff of transient errors; default 5m.
	MaxBackoff time.Duration
	// PermanentRetry is the pause after a permanent error; default 5m.
	PermanentRetry time.Duration
	// A record expires only once two consecutive complete listings lack
	// it: a page that drifted under a changing set, an API glitch, a
	// permission change or an empty page that claims to be complete must
	// not tombstone records. ExpiryGuard is the share of a shard's live
	// records beyond which one listing's absences are also logged and
	// counted as suspect; default 0.1, at least ExpiryGuardMin.
	ExpiryGuard float64
	// ExpiryGuardMin is the number of records any listing may expire;
	// default 100.
	ExpiryGuardMin int
	// TombstoneTTL is how long a tombstone is kept after its record left
	// the listing; default 31 days (the API keeps records 30 days, plus a
	// margin).
	TombstoneTTL time.Duration
	// Claim, if set, is the replica's hold on the shard: it is checked
	// before each batch is staged and before it is published, and a cycle
	// that finds it invalid fails and ends Run (see [Group]).
	Claim interface{ Valid() error }
	// Recovery, if set, is asked whether a shard the checkpoint does not
	// know has published before (see [Recovery]).
	Recovery Recovery
	// MaxBatch bounds the events published and committed as one batch;
	// default the store's MaxBatch() if it has one (Redis: 1000), else
	// 100, which keeps a staged batch far below a KV value's limit.
	MaxBatch int
	// Hook, if set, is called at each step of a batch (see [Step]), for
	// fault-injection tests that must land a crash or a pause exactly
	// there. It runs on the cycle's goroutine.
	Hook func(Step)
	// Logger; default no-op.
	Logger *zap.Logger
	// Metrics, if set, records the poller's activity.
	Metrics *Metrics
	// OnCycle, if set, is called after every cycle with its report. It must
	// not block.
	OnCycle func(Report)
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Report describes one cycle.
type Report struct {
	Shard    diff.Shard
	Started  time.Time
	Duration time.Duration
	// Records counts the records the cycle listed; Complete says whether
	// that listing was complete (every record the API holds).
	Records  int
	Complete bool
	// FirstSight: the checkpoint did not know the shard when the cycle
	// began, so its transitions (with InitialEmit) announce records seen
	// for the first time, however long ago they changed — also when the
	// shard was then recovered from the stream, which is how the cycle
	// after a first sight whose commit failed finds it.
	FirstSight bool
	// Transitions are the cycle's committed transitions: those of a batch
	// whose commit failed are reported by the cycle that finishes it.
	Transitions []diff.Transition
	Published   int
	Duplicates  int
	Committed   int
	// Expired counts the records this cycle tombstoned or pruned.
	Expired int
	Err     error
}

// Poller runs the cycle of one shard. Its methods must not be called
// concurrently.
type Poller struct {
	src  Lister
	st   Store
	pub  Publisher
	opts Options
	log  *zap.Logger

	// mayBeStaged is true while a batch may be staged and not committed:
	// at start, and after a failed cycle.
	mayBeStaged bool
	// suspect holds the records the last complete listing lacked; the
	// next complete listing that lacks them too expires them.
	suspect map[diff.Key]struct{}

	// busy is when the cycle in progress last made progress (Unix
	// nanoseconds), 0 between cycles: what Turning reads.
	busy atomic.Int64
}

// New builds a poller.
func New(src Lister, st Store, pub Publisher, opts Options) (*Poller, error) {
	if src == nil || st == nil || pub == nil {
		return nil, errors.New("poller: a lister, a store and a publisher are required")
	}
	if opts.Shard.Source == "" || opts.Shard.Region == "" {
		return nil, errors.New("poller: the shard needs a source and a region")
	}
	opts.Shard.Account = diff.AccountOf(opts.Shard.Account)
	if opts.Interval == 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = max(2*opts.Interval, 5*time.Minute)
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	if opts.PermanentRetry == 0 {
		opts.PermanentRetry = 5 * time.Minute
	}
	if opts.ExpiryGuard == 0 {
		opts.ExpiryGuard = 0.1
	}
	if opts.ExpiryGuardMin == 0 {
		opts.ExpiryGuardMin = 100
	}
	if opts.TombstoneTTL == 0 {
		opts.TombstoneTTL = 31 * 24 * time.Hour
	}
	if q, ok := st.(interface{ MaxBatch() int }); ok && opts.MaxBatch == 0 {
		opts.MaxBatch = q.MaxBatch()
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 100
	}
	if opts.Interval < 0 || opts.StallTimeout < 0 || opts.MaxBackoff < 0 || opts.PermanentRetry < 0 || opts.TombstoneTTL < 0 {
		return nil, errors.New("poller: durations must be positive")
	}
	if !(opts.ExpiryGuard > 0 && opts.ExpiryGuard <= 1) || opts.ExpiryGuardMin < 0 || opts.MaxBatch < 0 {
		return nil, errors.New("poller: the expiry guard must be a share in (0, 1], its minimum and the batch size positive")
	}
	initial, err := diff.ParseInitial(string(opts.Initial))
	if err != nil {
		return nil, err
	}
	opts.Initial = initial
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Poller{src: src, st: st, pub: pub, opts: opts, log: opts.Logger.With(zap.Stringer("shard", opts.Shard)), mayBeStaged: true}, nil
}

// Step names a point in a batch's life, for [Options.Hook].
type Step string

// The steps of a batch.
const (
	StepFetched   Step = "fetched"   // a chunk of the listing was read, not yet diffed
	StepStaged    Step = "staged"    // the batch is staged, not yet published
	StepPublished Step = "published" // every event is acknowledged, nothing committed
	StepCommitted Step = "committed" // the batch is committed
)

func (p *Poller) hook(s Step) {
	if p.opts.Hook != nil {
		p.opts.Hook(s)
	}
}

// commitGrace bounds a commit that outlives its cycle's context.
const commitGrace = 10 * time.Second

// Stage names the step of a cycle that failed.
type Stage string

// The stages of a cycle.
const (
	StageFetch   Stage = "fetch"
	StageLoad    Stage = "load"
	StagePublish Stage = "publish"
	StageCommit  Stage = "commit"
)

// Stages lists every stage, in cycle order.
func Stages() []Stage { return []Stage{StageFetch, StageLoad, StagePublish, StageCommit} }

// CycleError is a failed cycle: which stage failed, and why.
type CycleError struct {
	Stage Stage
	Err   error
}

func (e *CycleError) Error() string { return fmt.Sprintf("%s: %v", e.Stage, e.Err) }
func (e *CycleError) Unwrap() error { return e.Err }

// stuckGrace is how long past its stall timeout and commit grace a cycle
// may take to return before Turning calls its loop stuck.
const stuckGrace = time.Minute

// Turning returns nil unless a cycle is in progress that has made no
// progress for longer than the stall timeout should have allowed: a cycle
// that handles no page for StallTimeout is cancelled, and returns within
// its commit's grace, unless something ignores its context.
func (p *Poller) Turning(now time.Time) error {
	last := p.busy.Load()
	if last == 0 {
		return nil
	}
	limit := p.opts.StallTimeout + commitGrace + stuckGrace
	if since := now.Sub(time.Unix(0, last)); since > limit {
		return fmt.Errorf("shard %s: its cycle has made no progress for %v (more than %v): its loop is stuck", p.opts.Shard, since.Round(time.Second), limit)
	}
	return nil
}

// RunOnce runs one cycle: fetch → diff → publish → commit, chunk by chunk
// for a [Streamer]. Nothing is committed unless every event of its chunk
// was acknowledged; records expire only after a complete listing.
func (p *Poller) RunOnce(ctx context.Context) (rep Report) {
	rep = Report{Shard: p.opts.Shard, Started: p.opts.Now()}
	defer func() {
		rep.Duration = p.opts.Now().Sub(rep.Started)
		p.opts.Metrics.observe(rep)
		if p.opts.OnCycle != nil {
			p.opts.OnCycle(rep)
		}
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(p.opts.StallTimeout, func() { cancel(stalledError{p.opts.StallTimeout}) })
	defer stall.Stop()

	p.busy.Store(rep.Started.UnixNano())
	defer p.busy.Store(0)
	c := cycle{p: p, ctx: ctx, rep: &rep, seen: map[diff.Key]struct{}{}, progress: func() {
		stall.Reset(p.opts.StallTimeout)
		p.busy.Store(p.opts.Now().UnixNano())
	}}
	ctx = cloudassist.WithProgress(ctx, c.progress) // waiting for the API's quota is not a stall
	c.ctx = ctx
	complete, err := c.list()
	if err == nil {
		err = c.end(complete)
	}
	rep.Complete = complete && err == nil
	rep.FirstSight = c.unknown
	if err == nil {
		return rep
	}
	p.mayBeStaged = true
	if stalled, ok := errors.AsType[stalledError](context.Cause(ctx)); ok {
		err = fmt.Errorf("%w: %w", stalled, err)
	}
	if _, staged := errors.AsType[*CycleError](err); !staged {
		err = &CycleError{StageFetch, err}
	}
	rep.Err = err
	return rep
}

// list finishes a staged batch, then reads the listing chunk by chunk,
// and reports whether it was complete.
func (c *cycle) list() (bool, error) {
	if err := c.finishStaged(); err != nil {
		return false, err
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
	known    *bool // whether the shard was known when the cycle began
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
		if q, ok := p.st.(interface {
			DiscardOldestStaged(ctx context.Context, shard diff.Shard) error
		}); ok {
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
	if err := c.publishStaged(batch, nil); err != nil { // staged already: not written again
		return false, err
	}
	p.opts.Metrics.stagedFinished(p.opts.Shard)
	return true, nil
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
		if err := c.stage(batch); err != nil {
			drain()
			return err
		}
		flights = append(flights, c.launch(batch, rest, reached))
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
	res   publisher.Result
	err   error
}

// launch publishes a staged batch in the background.
func (c *cycle) launch(b diff.Result, quiet []diff.Update, keys map[diff.Key]diff.State) *flight {
	f := &flight{batch: b, quiet: quiet, keys: keys, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		if f.err = c.p.claimed(); f.err != nil {
			return
		}
		f.res, f.err = c.p.pub.Publish(c.ctx, b.Transitions)
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
	if q, ok := p.st.(interface{ MaxStaged() int }); ok {
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
	if err := c.stage(b); err != nil {
		return err
	}
	return c.publishStaged(b, quiet)
}

// stage stores a batch with events before it is published, under a claim
// that still holds.
func (c *cycle) stage(b diff.Result) error {
	if err := c.p.claimed(); err != nil {
		return err
	}
	if err := c.p.st.Stage(c.ctx, c.p.opts.Shard, b); err != nil {
		return &CycleError{StageCommit, err}
	}
	c.p.hook(StepStaged)
	return nil
}

// publishStaged publishes a staged batch's events and commits its updates,
// with the quiet ones, once every event is acknowledged.
func (c *cycle) publishStaged(b diff.Result, quiet []diff.Update) error {
	if len(b.Transitions) == 0 {
		return c.commit(b, quiet)
	}
	return c.land(c.launch(b, quiet, nil))
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
		if err := p.st.Commit(ctx, p.opts.Shard, updates, b.Transitions); err != nil {
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
	if c.sharing && len(r) < cap(r) && &r[:len(r)+1][len(r)] == &ts[0] && len(r)+len(ts) <= cap(r) {
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

// Run polls now and then every interval until ctx ends, and returns nil
// then. Failed cycles are retried after a pause chosen by the error's
// class — except a cycle that found its claim on the shard gone (see
// [Options.Claim]) or its write refused by a newer owner
// ([checkpoint.ErrFenced]): Run returns that error, for retrying would
// write over the new owner.
func (p *Poller) Run(ctx context.Context) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = time.Second, p.opts.MaxBackoff, 0
	bo.Reset()
	var failures int
	var lastErr string
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			p.log.Info("poller stopped")
			return nil
		case <-timer.C:
		}
		start := p.opts.Now()
		rep := p.RunOnce(ctx)
		// Before the check of ctx: the group cancels a poller whose lease it
		// found taken at about the moment the store refuses its commit, and
		// the refusal must still be told.
		if errors.Is(rep.Err, checkpoint.ErrFenced) || errors.Is(rep.Err, ErrClaimExpired) {
			p.log.Warn("the shard is no longer this replica's; stopping its poller", zap.Error(rep.Err))
			return rep.Err
		}
		if ctx.Err() != nil {
			continue // shutting down: the cancelled cycle is not an error
		}
		if rep.Err == nil {
			if failures > 0 {
				p.log.Info("poller recovered", zap.Int("failed_cycles", failures))
			}
			failures, lastErr = 0, ""
			bo.Reset()
			if len(rep.Transitions) > 0 {
				p.log.Debug("cycle published", zap.Int("events", len(rep.Transitions)), zap.Int("records", rep.Records))
			}
			timer.Reset(max(p.opts.Interval-p.opts.Now().Sub(start), 0))
			continue
		}
		failures++
		class, wait := p.retryAfter(rep.Err, bo)
		p.opts.Metrics.backoff(p.opts.Shard, class, wait)
		fields := []zap.Field{zap.Error(rep.Err), zap.String("class", class), zap.Duration("retry_in", wait), zap.Int("failures", failures)}
		if msg := failureSignature(rep.Err); msg != lastErr {
			lastErr = msg
			if class == "permanent" {
				p.log.Error("cycle failed; check the configuration", fields...)
			} else {
				p.log.Warn("cycle failed", fields...)
			}
		} else {
			p.log.Debug("cycle failed again", fields...)
		}
		timer.Reset(wait)
	}
}

// retryAfter classifies a failed cycle and picks the pause before the next.
// failureSignature is what tells one failure from another in the logs:
// the error's text without its request ids (each try has a new one), so
// that a failure repeated is logged once per change.
func failureSignature(err error) string {
	msg := err.Error()
	var b strings.Builder
	for {
		i := strings.Index(msg, "(request ")
		if i < 0 {
			break
		}
		j := strings.IndexByte(msg[i:], ')')
		if j < 0 {
			break
		}
		b.WriteString(msg[:i])
		msg = msg[i+j+1:]
	}
	b.WriteString(msg)
	return strings.Join(strings.FieldsFunc(b.String(), func(r rune) bool { return r == ' ' }), " ")
}

func (p *Poller) retryAfter(err error, bo backoff.BackOff) (string, time.Duration) {
	var cycleErr *CycleError
	if errors.As(err, &cycleErr) && cycleErr.Stage == StageFetch {
		switch cloudassist.ClassOf(err) {
		case cloudassist.ClassThrottled:
			return "throttled", untilNextMinute(p.opts.Now())
		case cloudassist.ClassPermanent:
			return "permanent", p.opts.PermanentRetry
		}
	}
	return "transient", bo.NextBackOff()
}

// untilNextMinute waits past the next minute boundary — the API throttles
// in one-minute windows — plus up to 5s of jitter so that shards do not
// return together.
func untilNextMinute(now time.Time) time.Duration {
	next := now.Truncate(time.Minute).Add(time.Minute)
	return next.Sub(now) + time.Duration(rand.Int64N(int64(5*time.Second)))
}

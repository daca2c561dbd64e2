package poller

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
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
	Publish(ctx context.Context, batch []diff.Transition) (PublishResult, error)
}

// PublishResult is what a publish did: events stored, and events the
// stream already held (a re-publish of the same id).
type PublishResult struct {
	Published  int
	Duplicates int
}

// RetryClasser is an error that says how its cycle is retried: a
// throttled API after its window, a permanent refusal after
// Options.PermanentRetry. Any other failed listing backs off
// exponentially. *cloudassist.APIError is one.
type RetryClasser interface {
	error
	Throttled() bool
	Permanent() bool
}

// ProgressReporter is a [Lister] that can say, through a cycle's context,
// when it waits for the API's quota: that wait is progress, not a stall.
type ProgressReporter interface {
	WithProgress(ctx context.Context, progress func()) context.Context
}

// BatchSizer is a [Store] that bounds how many events one staged batch
// holds (Options.MaxBatch defaults to it).
type BatchSizer interface{ MaxBatch() int }

// StagedQueue is a [Store] that lets several batches be staged at once,
// so that a poller publishes the next while the previous commits.
type StagedQueue interface{ MaxStaged() int }

// StagedDiscarder is a [Store] that queues staged batches and can drop
// the oldest alone (one that cannot be decoded); without it, staging an
// empty batch clears a corrupt one.
type StagedDiscarder interface {
	DiscardOldestStaged(ctx context.Context, shard diff.Shard) error
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
	// SummaryEvery, if positive, logs one info line per period with the
	// shard's cycles, transitions, API calls and errors, and its detection
	// lag's p99, so that a healthy, quiet shard is seen to be polled. It
	// needs Metrics, which gather the counts.
	SummaryEvery time.Duration
	// Hints, if set, lets [Poller.Hint] queue look-ups of invocations
	// between the listing's cycles, within these bounds, when the lister
	// is a [LookUper].
	Hints *HintOptions
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Tracing, if set, traces every cycle: its API calls (through the
	// context it gives the lister), each batch's publish and stage, and
	// each commit; each event carries its publish's trace context.
	// Default: OpenTelemetry's no-op provider, and events without one.
	Tracing trace.TracerProvider
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
	// LookedUp are the invocations of a hint's look-up cycle (nil for a
	// cycle of the listing).
	LookedUp []string
	Err      error
}

// Poller runs the cycle of one shard. Its methods must not be called
// concurrently.
type Poller struct {
	src  Lister
	st   Store
	pub  Publisher
	opts Options
	log  *zap.Logger
	// tracer traces the cycles; spanAttrs name the shard on their spans.
	tracer    trace.Tracer
	spanAttrs []attribute.KeyValue

	// mayBeStaged is true while a batch may be staged and not committed:
	// at start, and after a failed cycle.
	mayBeStaged bool
	// summarySince is when the period of the next summary line began.
	summarySince time.Time
	// hints wait for their look-up (nil: Options.Hints unset).
	hints *hintQueue
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
	if q, ok := st.(BatchSizer); ok && opts.MaxBatch == 0 {
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
	if opts.Tracing == nil {
		opts.Tracing = noop.NewTracerProvider()
	}
	p := &Poller{src: src, st: st, pub: pub, opts: opts, log: opts.Logger.With(zap.Stringer("shard", opts.Shard)), mayBeStaged: true,
		tracer: opts.Tracing.Tracer(tracerName), spanAttrs: shardAttributes(opts.Shard)}
	if opts.Hints != nil {
		p.hints = newHintQueue(*opts.Hints)
	}
	return p, nil
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
func (p *Poller) RunOnce(ctx context.Context) (rep Report) { return p.runCycle(ctx, nil) }

// runCycle runs a cycle: of the listing, or with hints, a look-up of
// their invocations (a partial listing, see [LookUper]).
func (p *Poller) runCycle(ctx context.Context, hints []Hint) (rep Report) {
	rep = Report{Shard: p.opts.Shard, Started: p.opts.Now()}
	for _, h := range hints {
		rep.LookedUp = append(rep.LookedUp, h.InvokeID)
	}
	ctx, span := p.startCycle(ctx, len(hints))
	defer func() {
		endCycle(span, &rep)
		rep.Duration = p.opts.Now().Sub(rep.Started)
		p.opts.Metrics.observe(rep)
		p.countHinted(rep, hints)
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
	c := cycle{p: p, ctx: ctx, rep: &rep, lookUp: rep.LookedUp, seen: map[diff.Key]struct{}{}, progress: func() {
		stall.Reset(p.opts.StallTimeout)
		p.busy.Store(p.opts.Now().UnixNano())
	}}
	if r, ok := p.src.(ProgressReporter); ok {
		ctx = r.WithProgress(ctx, c.progress) // waiting for the API's quota is not a stall
	}
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

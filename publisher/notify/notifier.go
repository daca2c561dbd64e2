package notify

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher/events"
)

// Doer sends HTTP requests; an *http.Client is one.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// DeadLetterer records a message that could not be delivered.
type DeadLetterer interface {
	DeadLetter(ctx context.Context, d DeadLetter) error
}

// DeadLetter is the record of one invocation's message that a webhook
// did not accept: the summary, the events it covers, and why.
type DeadLetter struct {
	Webhook  string    `json:"webhook"`
	Kind     string    `json:"kind"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
	EventIDs []string  `json:"eventIds"`
	Summary  Summary   `json:"summary"`
}

// Options configures a [Notifier].
type Options struct {
	Settings *Settings
	// Logger; default a no-op logger.
	Logger *zap.Logger
	// Metrics; default a registry of its own (see Notifier.Metrics).
	Metrics *Metrics
	// DeadLetter records what could not be delivered; nil logs it at
	// error level (and counts it) instead.
	DeadLetter DeadLetterer
	// Delivered remembers which webhooks are done with which events, so
	// that a message handed back because another webhook was not done is
	// not posted again where it went (see [DeliveryLog]). Default: in
	// memory, for this process only; give a [KVDeliveryLog] to have it
	// hold across restarts.
	Delivered DeliveryLog
	// HTTP posts to the webhooks; default an http.Client of its own.
	HTTP Doer
	// Now and After are the clock (signatures, windows, rate limits,
	// backoff); default time.Now and time.After. Tests inject a fixed or
	// a fast clock.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// Batch is how many messages one fetch asks for; default 256.
	Batch int
	// FetchWait bounds one fetch's wait for messages; default 250ms.
	FetchWait time.Duration
	// Tracing, if set, traces the handling of every event as a child of
	// the publish that announced it (see events.Event.TraceContext).
	// Default: OpenTelemetry's no-op provider.
	Tracing trace.TracerProvider
}

// Notifier consumes events and posts chat messages. [Notifier.Run]
// drives it from a JetStream consumer; Handle and Sweep are its steps,
// for another driver (they must be called from one goroutine, with the
// webhooks' workers started by [Notifier.Start]).
type Notifier struct {
	s        *Settings
	log      *zap.Logger
	metrics  *Metrics
	dead     DeadLetterer
	done     DeliveryLog
	http     Doer
	now      func() time.Time
	after    func(time.Duration) <-chan time.Time
	batch    int
	wait     time.Duration
	tracker  *tracker
	tracer   trace.Tracer
	outlets  []*outlet
	groups   map[string]*group
	reported *idSet // invocations that had a message already
	ngroups  atomic.Int64
	workers  sync.WaitGroup
}

// group is one invocation's events waiting for their message.
type group struct {
	key       string
	agg       *events.Event
	instances map[string]events.Event // latest failing event per instance run
	held      []*held
	rules     map[int]bool
	deadline  time.Time
	followUp  bool
}

// New builds a notifier.
func New(opts Options) (*Notifier, error) {
	if opts.Settings == nil || len(opts.Settings.Webhooks) == 0 {
		return nil, errors.New("notify: settings with at least one webhook are required")
	}
	n := &Notifier{s: opts.Settings, log: opts.Logger, metrics: opts.Metrics, dead: opts.DeadLetter, done: opts.Delivered, http: opts.HTTP,
		now: opts.Now, after: opts.After, batch: opts.Batch, wait: opts.FetchWait, groups: map[string]*group{}, reported: newIDSet(100_000)}
	if n.log == nil {
		n.log = zap.NewNop()
	}
	if n.metrics == nil {
		n.metrics = NewMetrics()
	}
	if n.http == nil {
		n.http = &http.Client{}
	}
	if n.done == nil {
		n.done = newMemoryLog(100_000)
	}
	if n.now == nil {
		n.now = time.Now
	}
	if n.after == nil {
		n.after = time.After
	}
	if n.batch <= 0 {
		n.batch = 256
	}
	if n.wait <= 0 {
		n.wait = 250 * time.Millisecond
	}
	if opts.Tracing == nil {
		opts.Tracing = noop.NewTracerProvider()
	}
	n.tracer = opts.Tracing.Tracer("github.com/capoller/capoller/publisher/notify")
	n.tracker = newTracker(n.s.AckWait, n.metrics)
	for _, w := range n.s.Webhooks {
		n.outlets = append(n.outlets, &outlet{hook: w, n: n, lim: newLimiter(w.Limits), wake: make(chan struct{}, 1)})
		n.metrics.hook(w, func(*hookMetrics) {})
	}
	n.metrics.gauge("capoller_notify_events_held", "Events held unacknowledged: grouped, queued or being delivered.",
		func() float64 { return float64(n.tracker.count()) })
	n.metrics.gauge("capoller_notify_groups", "Invocations whose events are being grouped.", func() float64 { return float64(n.ngroups.Load()) })
	return n, nil
}

// Metrics is the notifier's registry.
func (n *Notifier) Metrics() *Metrics { return n.metrics }

// Consumer is what Run needs of a JetStream pull consumer.
type Consumer interface {
	Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error)
}

// Run consumes until ctx ends. On return, events not yet delivered are
// handed back to the server for redelivery (a post under way is finished
// first), so the next notifier on the same durable consumer takes them up
// at once, not after the ack wait.
//
// The stop is ordered: fetching ends first (the fetch under way is
// finished and its events held), then the webhooks' workers, then [Notifier.Stop]
// hands back whatever is still grouped, queued or held. Workers that
// ended first would hand their jobs back while the last fetch still runs:
// it would take the redelivered events again and queue them for workers
// already gone, stranded until the ack wait.
func (n *Notifier) Run(ctx context.Context, c Consumer) error {
	workers, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	n.Start(workers)
	lastErr := ""
	for ctx.Err() == nil {
		b, err := c.Fetch(n.batch, jetstream.FetchMaxWait(n.wait))
		if err == nil {
			for m := range b.Messages() {
				n.Handle(m)
			}
			err = b.Error()
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			if err.Error() != lastErr {
				lastErr = err.Error()
				n.log.Warn("fetch from the stream failed; retrying", zap.Error(err))
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		} else if err == nil {
			lastErr = ""
		}
		n.Sweep()
	}
	stopWorkers()
	n.Stop()
	return nil
}

// Start runs one worker per webhook until ctx ends.
func (n *Notifier) Start(ctx context.Context) {
	for _, o := range n.outlets {
		n.workers.Add(1)
		go func() { defer n.workers.Done(); o.run(ctx) }()
	}
}

// Stop waits for the workers (their ctx must be done; Handle and Sweep
// must not be called any more), then hands back at once every event
// still held: in a group, in a job still queued for a webhook (flushed
// after its worker ended), or held otherwise.
func (n *Notifier) Stop() {
	n.workers.Wait()
	for key, g := range n.groups {
		n.tracker.giveBack(g.held, 0)
		n.metrics.add(&n.metrics.givenBack, int64(len(g.held)))
		delete(n.groups, key)
	}
	n.ngroups.Store(0)
	for _, o := range n.outlets {
		o.handBack()
	}
	if left := n.tracker.giveBackAll(); left > 0 {
		n.metrics.add(&n.metrics.givenBack, int64(left))
	}
}

func groupKey(d events.Data) string {
	return d.Account + "\x00" + d.Source + "\x00" + d.RegionID + "\x00" + d.InvokeID
}

// match returns the rules that want the event.
func (n *Notifier) match(e events.Event) []int {
	var out []int
	st := diff.NormalizeStatus(string(e.Data.Status))
	for i, r := range n.s.Rules {
		statuses := r.Statuses
		if e.Data.Level == events.LevelInstance {
			statuses = r.InstanceStatuses
		}
		if slices.Contains(statuses, st) && r.Filter.Match(e) {
			out = append(out, i)
		}
	}
	return out
}

// Handle takes one message: an event worth no message is acknowledged at
// once, a failure is held in its invocation's group.
func (n *Notifier) Handle(m Msg) {
	now := n.now()
	n.metrics.add(&n.metrics.consumed, 1)
	ev, err := events.Decode(m.Data())
	if err != nil {
		_ = m.Term()
		n.metrics.add(&n.metrics.invalid, 1)
		n.log.Warn("not a capoller event; terminated", zap.Error(err))
		return
	}
	// A span per event, in the trace of the cycle that observed it.
	_, span := n.tracer.Start(ev.TraceContext(context.Background()), "capoller.notify.handle", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.message.id", ev.ID), attribute.String("capoller.status", string(ev.Data.Status)),
			attribute.String("capoller.invoke_id", ev.Data.InvokeID)))
	outcome := "grouped"
	defer func() {
		span.SetAttributes(attribute.String("capoller.notify.outcome", outcome))
		span.End()
	}()
	rules := n.match(ev)
	key := groupKey(ev.Data)
	g := n.groups[key]
	instance := ev.Data.Level == events.LevelInstance
	if len(rules) == 0 {
		if !instance && ev.Data.Terminal && g != nil {
			// The invocation ended in a way no rule wants (stopped by
			// someone, say): its instances' failures are no news either.
			_ = n.tracker.ack(context.Background(), g.held)
			n.metrics.add(&n.metrics.ignored, int64(len(g.held)))
			delete(n.groups, key)
			n.ngroups.Add(-1)
		}
		n.tracker.ackNow(m)
		n.metrics.add(&n.metrics.ignored, 1)
		outcome = "ignored"
		return
	}
	h, known := n.tracker.hold(ev.ID, m, now)
	if known {
		if h != nil {
			n.metrics.add(&n.metrics.redelivered, 1)
		}
		outcome = "redelivered"
		return
	}
	if g == nil {
		g = &group{key: key, instances: map[string]events.Event{}, rules: map[int]bool{}, deadline: now.Add(n.s.GroupWindow),
			followUp: n.reported.has(key)}
		n.groups[key] = g
		n.ngroups.Add(1)
	}
	g.held = append(g.held, h)
	for _, r := range rules {
		g.rules[r] = true
	}
	if instance {
		run := 0
		if ev.Data.Repeats != nil {
			run = *ev.Data.Repeats
		}
		g.instances[ev.Data.InstanceID+"\x00"+strconv.Itoa(run)] = ev
		return
	}
	g.agg = &ev
	if settle := now.Add(n.s.Settle); settle.Before(g.deadline) {
		g.deadline = settle
	}
}

// Sweep sends the groups that are due (settled after their final event,
// or at the end of the grouping window), and keeps held events alive.
func (n *Notifier) Sweep() {
	now := n.now()
	var due []*group
	for key, g := range n.groups {
		if !now.Before(g.deadline) {
			due = append(due, g)
			delete(n.groups, key)
		}
	}
	n.ngroups.Store(int64(len(n.groups)))
	sort.Slice(due, func(i, j int) bool { return due[i].deadline.Before(due[j].deadline) })
	for _, g := range due {
		n.flush(g)
	}
	n.tracker.progress(now)
}

func (n *Notifier) flush(g *group) {
	n.reported.add(g.key)
	var names []string
	hooks := map[int]bool{}
	for i := range g.rules {
		names = append(names, n.s.Rules[i].Name)
		for _, w := range n.s.Rules[i].Webhooks {
			hooks[w] = true
		}
	}
	slices.Sort(names)
	instances := make([]events.Event, 0, len(g.instances))
	for _, e := range g.instances {
		instances = append(instances, e)
	}
	ids := make([]string, len(g.held))
	for i, h := range g.held {
		ids[i] = h.id
	}
	j := &job{key: g.key, summary: summarize(g.agg, instances, g.followUp, names, ids), held: g.held, n: n}
	j.remaining.Store(int32(len(hooks)))
	for _, w := range slices.Sorted(maps.Keys(hooks)) {
		n.outlets[w].enqueue(j)
	}
}

// job is one invocation's message, on its way to one or more webhooks.
// Its events are acknowledged once every webhook is done with it.
type job struct {
	key       string // the invocation's group key
	summary   Summary
	held      []*held
	n         *Notifier
	remaining atomic.Int32
	failed    atomic.Bool
}

// finish marks one webhook done with the job: delivered or
// dead-lettered (ok), or neither (the events are handed back).
func (j *job) finish(ok bool, giveBackAfter time.Duration) {
	if !ok {
		j.failed.Store(true)
	}
	if j.remaining.Add(-1) > 0 {
		return
	}
	if j.failed.Load() {
		j.n.tracker.giveBack(j.held, giveBackAfter)
		j.n.metrics.add(&j.n.metrics.givenBack, int64(len(j.held)))
		return
	}
	if err := j.n.tracker.ack(context.Background(), j.held); err != nil {
		j.n.log.Warn("acknowledging delivered events failed; they may be redelivered", zap.String("invocation", j.summary.InvokeID), zap.Error(err))
	}
}

// outlet is one webhook's queue and worker: it keeps the webhook under its
// rate limits, turns a backlog into a digest, retries and dead-letters.
type outlet struct {
	hook  Webhook
	n     *Notifier
	lim   *limiter // the worker's only
	mu    sync.Mutex
	queue []*job
	wake  chan struct{}
}

func (o *outlet) enqueue(j *job) {
	o.mu.Lock()
	o.queue = append(o.queue, j)
	n := len(o.queue)
	o.mu.Unlock()
	o.n.metrics.hook(o.hook, func(h *hookMetrics) { h.queued = n })
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// take picks what to send at now: nothing (wait says how long, 0 for
// until woken), the oldest job alone while the rate limit lets every
// queued job go one by one, else every queued job as one digest.
func (o *outlet) take(now time.Time) (jobs []*job, wait time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.queue) == 0 {
		return nil, 0
	}
	free := o.lim.free(now)
	switch {
	case free == 0:
		return nil, max(o.lim.next(now).Sub(now), time.Millisecond)
	case free < 0 || len(o.queue) <= free:
		jobs, o.queue = o.queue[:1:1], o.queue[1:]
	default:
		jobs, o.queue = o.queue, nil
	}
	n := len(o.queue)
	o.n.metrics.hook(o.hook, func(h *hookMetrics) { h.queued = n })
	return jobs, 0
}

// handBack gives back every job still queued.
func (o *outlet) handBack() {
	o.mu.Lock()
	rest := o.queue
	o.queue = nil
	o.mu.Unlock()
	o.n.metrics.hook(o.hook, func(h *hookMetrics) { h.queued = 0 })
	for _, j := range rest {
		j.finish(false, 0)
	}
}

func (o *outlet) run(ctx context.Context) {
	for {
		if ctx.Err() != nil { // stopping: no new post, even with a queue
			o.handBack()
			return
		}
		jobs, wait := o.take(o.n.now())
		if jobs != nil {
			o.deliver(ctx, jobs)
			continue
		}
		var timer <-chan time.Time
		if wait > 0 {
			timer = o.n.after(wait)
		}
		select {
		case <-ctx.Done():
		case <-o.wake:
		case <-timer:
		}
	}
}

func (o *outlet) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-o.n.after(d):
		return nil
	}
}

// deliver posts one message (one job, or a digest of several) with
// retries, then finishes its jobs: delivered, dead-lettered, or handed
// back if notify stops first.
func (o *outlet) deliver(ctx context.Context, jobs []*job) {
	w, log := o.hook, o.n.log.With(zap.String("webhook", o.hook.Name))
	if jobs = o.skipDone(ctx, jobs); len(jobs) == 0 {
		return
	}
	p := payload{digest: len(jobs) > 1, maxItems: w.DigestItems}
	for _, j := range jobs {
		p.summaries = append(p.summaries, j.summary)
	}
	r := w.Retry
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(r.Initial), backoff.WithMaxInterval(r.MaxInterval),
		backoff.WithMaxElapsedTime(0), backoff.WithRandomizationFactor(0.2))
	start := o.n.now()
	var lastErr error
	attempts := 0
	giveBack := func() {
		for _, j := range jobs {
			j.finish(false, 0)
		}
	}
	for {
		for { // every attempt counts against the service's limit
			now := o.n.now()
			if o.lim.free(now) != 0 {
				break
			}
			if o.sleep(ctx, o.lim.next(now).Sub(now)) != nil {
				giveBack()
				return
			}
		}
		now := o.n.now()
		attempts++
		req, err := w.build(p, now)
		if err == nil {
			// A post under way is finished even if notify is stopping:
			// cut short, the webhook might have taken it all the same.
			err = w.post(context.WithoutCancel(ctx), o.n.http, req, now)
		}
		// The post counts from when it ended: the service saw it
		// somewhere between its start and its end, so the next window
		// can only open later than the service's own.
		o.lim.record(o.n.now())
		if err == nil {
			o.n.metrics.hook(w, func(h *hookMetrics) {
				h.sent++
				h.covered += int64(len(jobs))
				if p.digest {
					h.digests++
				}
			})
			log.Info("notified", zap.Int("invocations", len(jobs)), zap.Bool("digest", p.digest), zap.String("invocation", jobs[0].summary.InvokeID),
				zap.Int("attempts", attempts))
			for _, j := range jobs {
				o.record(ctx, j)
				j.finish(true, 0)
			}
			return
		}
		lastErr = err
		o.n.metrics.hook(w, func(h *hookMetrics) { h.attemptsFailed++ })
		var pe *PostError
		retryable := errors.As(err, &pe) && pe.Retryable
		wait := bo.NextBackOff()
		if pe != nil && pe.RetryAfter > wait {
			wait = pe.RetryAfter
		}
		if !retryable || attempts >= r.MaxAttempts || o.n.now().Add(wait).Sub(start) > r.MaxElapsed {
			break
		}
		o.n.metrics.hook(w, func(h *hookMetrics) { h.retries++ })
		log.Warn("webhook post failed; retrying", zap.Error(err), zap.Duration("retry_in", wait), zap.Int("attempt", attempts))
		if o.sleep(ctx, wait) != nil {
			giveBack()
			return
		}
	}
	log.Error("webhook post failed for good; dead-lettering", zap.Error(lastErr), zap.Int("attempts", attempts), zap.Int("invocations", len(jobs)))
	for _, j := range jobs {
		d := DeadLetter{Webhook: w.Name, Kind: w.Kind, Error: lastErr.Error(), Attempts: attempts, At: o.n.now().UTC(),
			EventIDs: j.summary.EventIDs, Summary: j.summary}
		if err := o.deadLetter(ctx, d); err != nil {
			o.n.metrics.hook(w, func(h *hookMetrics) { h.deadLetterErr++ })
			log.Error("dead-letter publish failed; the events will be redelivered", zap.String("invocation", j.summary.InvokeID), zap.Error(err))
			j.finish(false, time.Minute)
			continue
		}
		o.n.metrics.hook(w, func(h *hookMetrics) { h.deadLettered++ })
		o.record(ctx, j)
		j.finish(true, 0)
	}
}

// skipDone finishes, without a post, the jobs whose events this webhook
// is all done with already (a redelivery after another webhook was not
// done), and returns the others. A log that cannot be read posts: at
// least once.
func (o *outlet) skipDone(ctx context.Context, jobs []*job) []*job {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	out := jobs[:0:0]
	for _, j := range jobs {
		done, err := o.n.done.Done(ctx, o.hook.Name, j.key)
		if err != nil {
			o.n.metrics.hook(o.hook, func(h *hookMetrics) { h.logErr++ })
			o.n.log.Warn("reading the delivery log failed; posting, maybe again", zap.String("webhook", o.hook.Name),
				zap.String("invocation", j.summary.InvokeID), zap.Error(err))
			out = append(out, j)
			continue
		}
		if !doneWith(done, j.summary.EventIDs) {
			out = append(out, j)
			continue
		}
		o.n.metrics.hook(o.hook, func(h *hookMetrics) { h.skipped++ })
		o.n.log.Info("the webhook had this message already; not posted again", zap.String("webhook", o.hook.Name),
			zap.String("invocation", j.summary.InvokeID))
		j.finish(true, 0)
	}
	return out
}

func doneWith(done map[string]bool, ids []string) bool {
	for _, id := range ids {
		if !done[id] {
			return false
		}
	}
	return len(ids) > 0
}

// record writes down that this webhook is done with the job's events,
// before the job is finished (and its events perhaps acknowledged).
func (o *outlet) record(ctx context.Context, j *job) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := o.n.done.Record(ctx, o.hook.Name, j.key, j.summary.EventIDs); err != nil {
		o.n.metrics.hook(o.hook, func(h *hookMetrics) { h.logErr++ })
		o.n.log.Error("recording a delivery failed; a redelivery may post it again", zap.String("webhook", o.hook.Name),
			zap.String("invocation", j.summary.InvokeID), zap.Error(err))
	}
}

func (o *outlet) deadLetter(ctx context.Context, d DeadLetter) error {
	if o.n.dead == nil {
		o.n.log.Error("undelivered (no dead-letter subject)", zap.String("webhook", d.Webhook), zap.String("invocation", d.Summary.InvokeID),
			zap.Strings("event_ids", d.EventIDs), zap.String("error", d.Error))
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := o.n.dead.DeadLetter(ctx, d); err != nil {
		return fmt.Errorf("dead-letter %s: %w", d.Summary.InvokeID, err)
	}
	return nil
}

package poller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
)

// LeaseStore is what a [Group] needs of its checkpoint store (see
// [checkpoint.Leases] for each method's semantics).
type LeaseStore interface {
	Heartbeat(ctx context.Context, m checkpoint.Member, ttl time.Duration, now time.Time) (checkpoint.Roster, error)
	Leave(ctx context.Context, id string) error
	Acquire(ctx context.Context, shard diff.Shard, owner string, ttl time.Duration, now time.Time) (checkpoint.Lease, error)
	Renew(ctx context.Context, l checkpoint.Lease, ttl time.Duration, now time.Time) (checkpoint.Lease, error)
	Release(ctx context.Context, l checkpoint.Lease) error
	Leases(ctx context.Context, shards []diff.Shard) ([]checkpoint.Lease, error)
	Fence(shard diff.Shard, token uint64)
	Report(ctx context.Context, s checkpoint.ShardStatus) error
}

// ErrClaimExpired means this replica could not renew its lease in time:
// another may own the shard by now, so nothing more is staged, published
// or committed under the old claim.
var ErrClaimExpired = errors.New("poller: the lease on the shard could not be renewed in time")

// GroupOptions configures a [Group]. Zero values get the documented
// defaults.
type GroupOptions struct {
	// Replica describes this replica; its ID is required and unique in the
	// group.
	Replica checkpoint.Member
	// Store holds the group's members, leases and fencing tokens; required.
	Store LeaseStore
	// Shards is every shard of this replica's configuration. Other
	// replicas of the group may list others (a rolling deploy, another
	// deployment on the same store): a shard is shared among the live
	// replicas that list it.
	Shards []diff.Shard
	// Poll runs a shard's poller until ctx ends, and returns nil then; an
	// error (a fencing refusal, an expired claim) drops the shard. The
	// poller must check claim before it stages or publishes (see
	// [Options.Claim]) and report its cycles to claim.Observe.
	Poll func(ctx context.Context, shard diff.Shard, claim *Claim) error
	// Probe, if set, tells whether this replica can do its shards' work
	// (the daemon makes a round trip to NATS), within ctx (half a tick). A replica whose
	// probe failed two rounds running, while another replica's succeeded
	// since, steps back: its heartbeat says it takes no shard, and the
	// others take its shards. It serves again after three good probes. If
	// no replica can reach the bus, nothing moves.
	Probe func(ctx context.Context) error
	// LeaseTTL bounds how long a dead replica's shards wait for a new
	// owner; default 15s. Leases and heartbeats are written for LeaseTTL
	// minus a Tick, the most the next owner takes to notice they expired.
	LeaseTTL time.Duration
	// Tick is how often the group heartbeats, renews its leases and
	// rebalances; default LeaseTTL/5.
	Tick time.Duration
	// Logger; default no-op.
	Logger *zap.Logger
	// Metrics, if set, records lease ownership and the group's state.
	Metrics *Metrics
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Exclusion and withdrawal thresholds, in rounds (see Group).
const (
	// excludeAfter is how many rounds running a shard assigned here must
	// fail to be acquired (for a reason other than another owner) before
	// this replica leaves it to the others; excludeFor (in lease TTLs) is
	// how long it does the first time, doubled each time it fails again
	// after, up to excludeMost.
	excludeAfter = 3
	excludeFor   = 10
	excludeMost  = 16 * excludeFor
	// withdrawAfter failed probes step the replica back; returnAfter good
	// ones bring it back, twice as many (up to 2^maxBackOff times) each
	// time it steps back within backOffFor lease TTLs of its return.
	withdrawAfter = 2
	returnAfter   = 3
	maxBackOff    = 5
	backOffFor    = 10
)

// Group shares shards among the replicas that use the same store, with
// no coordinator of its own. Each replica heartbeats into the store with
// the shards it lists, reads the live replicas and their lists, and
// computes the same assignment ([Assign]): each shard goes to one of the
// live replicas that list it. It takes the leases of the shards assigned
// to it, renews them, and hands off those assigned elsewhere: their
// poller stops (committing what JetStream acknowledged) and the lease is
// released as soon as it has. A replica that stops renewing (killed,
// paused, cut off) loses its shards when their leases expire; the
// fencing token of each lease keeps a late write of it out of the store.
//
// A replica says what it cannot do, and the assignment goes around it: a
// shard whose lease its store refused excludeAfter rounds running (a
// Redis Cluster slot it cannot reach) is left to the others for
// excludeFor lease TTLs (longer each time it fails again after); a
// replica that cannot reach the bus while
// others can takes no shard (see [GroupOptions.Probe]). A shard that
// nobody else can take stays with the replicas that list it.
//
// A shard that no live replica lists (its last one stopped, and the
// others are configured without it) is polled by nobody: its lease
// expires unrenewed and its state is kept. Every live replica says so
// once, at warn, and counts it in capoller_group_unlisted_shards, for
// checkpoint.ListedMemory after the last heartbeat that listed it.
type Group struct {
	opts GroupOptions
	log  *zap.Logger

	owned map[diff.Shard]*ownership // the Run goroutine's own
	// ownedNow is owned's shards as of the last round, for other goroutines.
	ownedNow atomic.Pointer[[]diff.Shard]
	// turned is when the last round ended (Unix nanoseconds), for Turning.
	turned atomic.Int64
	// stopped wakes Run when a poller returns, to release its lease at once.
	stopped chan struct{}
	logged  map[string]string // what was last logged per concern, to log a repeated failure once

	// refused counts the rounds running a shard's acquisition failed;
	// excluded is until when a shard is left to the others, exclusions
	// how many times running it was, and exclusionSaid whether that was
	// logged at warn since the shard was last taken.
	refused       map[diff.Shard]int
	excluded      map[diff.Shard]time.Time
	exclusions    map[diff.Shard]int
	exclusionSaid map[diff.Shard]bool
	// exclusionToken is the shard's lease token when this replica last
	// excluded it: a larger one since says another replica took it.
	exclusionToken map[diff.Shard]uint64
	// The probe's state: failures and successes running, when the first
	// failed probe of the run and the last good one were sent, and why the
	// replica stepped back ("" while it serves).
	probeFails, probeOKs int
	firstFail, busOK     time.Time
	lastProbeErr         error
	withdrawn            string
	// stepBacks counts the step-backs running, each soon after a return
	// (when it last came back), for the back-off.
	stepBacks int
	returned  time.Time
	// offset is the store's clock minus this replica's, from the last
	// heartbeat (0 where the store does not tell its time): times that
	// replicas compare are written on the store's clock.
	offset time.Duration
	// members is the last roster's live members; unlisted the shards no
	// live replica lists, as last said; configs the configurations last
	// said to differ.
	members  []checkpoint.Member
	unlisted map[diff.Shard]bool
	configs  string
	// wake, if set, is when Run starts the next round if that is sooner
	// than a tick: when a dead replica's heartbeat, or a lease wanted
	// here, expires.
	wake time.Time
}

// ownership is a shard this replica holds and polls.
type ownership struct {
	claim   *Claim
	cancel  context.CancelFunc
	done    chan struct{} // closed when Poll returned
	err     error         // Poll's result, once done
	leaving bool          // handing off: cancelled, released once done
}

// NewGroup builds a group.
func NewGroup(opts GroupOptions) (*Group, error) {
	if opts.Replica.ID == "" || opts.Store == nil || opts.Poll == nil {
		return nil, errors.New("poller: a group needs a replica id, a store and a poll function")
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 15 * time.Second
	}
	if opts.Tick == 0 {
		opts.Tick = opts.LeaseTTL / 5
	}
	if opts.LeaseTTL < time.Second || opts.Tick <= 0 || opts.Tick > opts.LeaseTTL/3 {
		return nil, fmt.Errorf("poller: lease TTL %v must be at least 1s, and the tick (%v) positive and at most a third of it", opts.LeaseTTL, opts.Tick)
	}
	opts.Shards = diff.Canonical(opts.Shards) // a copy
	seen := map[diff.Shard]bool{}
	for _, s := range opts.Shards {
		if seen[s] {
			return nil, fmt.Errorf("poller: shard %s is configured twice", s)
		}
		seen[s] = true
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	slices.SortFunc(opts.Shards, func(a, b diff.Shard) int { return strings.Compare(a.String(), b.String()) })
	opts.Replica.Shards = checkpoint.ShardsDigest(opts.Shards)
	opts.Replica.Lists = opts.Shards
	return &Group{opts: opts, log: opts.Logger, // the caller names the replica in its logger
		owned: map[diff.Shard]*ownership{}, stopped: make(chan struct{}, 1), logged: map[string]string{},
		refused: map[diff.Shard]int{}, excluded: map[diff.Shard]time.Time{}, exclusions: map[diff.Shard]int{}, exclusionSaid: map[diff.Shard]bool{}, exclusionToken: map[diff.Shard]uint64{}, unlisted: map[diff.Shard]bool{}}, nil
}

// Run takes part in the group until ctx ends. Then it stops its pollers
// (each commits what JetStream acknowledged), releases its leases at once
// so that the other replicas take the shards without waiting for a TTL,
// and leaves the group.
func (g *Group) Run(ctx context.Context) error {
	g.turned.Store(g.opts.Now().UnixNano())
	for _, s := range g.opts.Shards {
		g.opts.Metrics.show(s) // every shard shows, owned or not
	}
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			g.shutdown()
			return nil
		case <-g.stopped:
			// A poller handed off (or stopped by itself): its lease is
			// released now, not at the next round, so that its next owner
			// takes it within a tick.
			g.reap()
			g.publishOwned()
			continue
		case <-tick.C:
		}
		start := time.Now()
		g.Step(ctx)
		next := g.opts.Tick - time.Since(start) // from start to start: a slow round does not stretch the next
		if !g.wake.IsZero() {
			next = min(next, g.wake.Sub(g.opts.Now()))
		}
		tick.Reset(max(next, 0))
	}
}

// Step runs one round: reap the pollers that stopped, heartbeat while
// probing the bus, renew or hand off the shards held, take those newly
// assigned here, say which shards no live replica lists, and report the
// shards' status. Run calls it every tick; tests call it directly.
func (g *Group) Step(ctx context.Context) {
	defer g.publishOwned()
	// The next round is planned by this one alone: a plan kept from the
	// last round that succeeded is past once one fails, and Run would
	// start round after round, without pause, while the store is down.
	g.wake = time.Time{}
	g.reap()
	// Every call to the store is bounded by a tick: a slow store delays
	// one round, never the renewals of the next. Pollers run under the
	// caller's ctx, not this one.
	run := ctx
	g.probe(run) // before the round's budget: at most half a tick, when the bus does not answer
	ctx, cancel := context.WithTimeout(ctx, g.opts.Tick)
	defer cancel()
	g.endExclusions()
	sent := g.opts.Now()
	roster, err := g.opts.Store.Heartbeat(ctx, g.member(), g.lease(), sent)
	if g.failed("heartbeat", err, "could not heartbeat; keeping the shards held while their leases last") {
		g.renew(ctx, nil)
		return
	}
	g.members = roster.Members
	if !roster.Now.IsZero() { // the store's clock, to compare replicas' times on one clock
		g.offset = roster.Now.Sub(sent.Add(g.opts.Now().Sub(sent) / 2))
	}
	if g.judgeBus() {
		// Said at once, not at the next round: the others take (or give
		// back) the shards as soon as this round hands them off.
		again, err := g.opts.Store.Heartbeat(ctx, g.member(), g.lease(), g.opts.Now())
		if err == nil {
			roster, g.members = again, again.Members
		}
	}
	g.wakeAt(roster.Members)
	g.opts.Metrics.groupReplicas(len(roster.Members))
	g.sayConfigs()
	want := g.assignment()
	g.renew(ctx, want)
	for _, s := range g.opts.Shards {
		if want[s] != g.opts.Replica.ID || g.owned[s] != nil {
			delete(g.refused, s)
			continue
		}
		g.acquire(run, ctx, s)
	}
	g.sayUnlisted(roster.Listed)
	g.report(ctx)
}

// wakeAt plans the next round for when the first of the other members'
// heartbeats expires, if that is within a tick: a replica that renews
// never lets it come so close, so that one is dead, and its shards are
// taken the moment its claims end rather than up to a tick later.
func (g *Group) wakeAt(members []checkpoint.Member) {
	for _, m := range members {
		if m.ID != g.opts.Replica.ID {
			g.earlier(m.Expires)
		}
	}
}

// earlier moves the next round to just past t, if t is within a tick.
func (g *Group) earlier(t time.Time) {
	if t.IsZero() || !t.Before(g.opts.Now().Add(g.opts.Tick)) {
		return
	}
	if t = t.Add(time.Millisecond); g.wake.IsZero() || t.Before(g.wake) {
		g.wake = t
	}
}

// member is this replica as its heartbeat describes it now.
func (g *Group) member() checkpoint.Member {
	m := g.opts.Replica
	for _, s := range g.opts.Shards {
		if _, ok := g.excluded[s]; ok {
			m.Excluded = append(m.Excluded, s)
		}
	}
	m.Withdrawn = g.withdrawn
	if !g.busOK.IsZero() {
		m.BusOK = g.busOK.Add(g.offset)
	}
	return m
}

// endExclusions ends the exclusions that lasted their time: the shards
// are this replica's to take again.
func (g *Group) endExclusions() {
	now := g.opts.Now()
	for s, until := range g.excluded {
		if !now.Before(until) {
			delete(g.excluded, s)
			g.log.Info("the shard's exclusion ended: taking its lease again", zap.Stringer("shard", s))
		}
	}
}

// lists is the shards a member lists; a member of an earlier version,
// which recorded only a digest, is taken to list what this replica does.
func (g *Group) lists(m checkpoint.Member) []diff.Shard {
	if m.Lists == nil {
		return g.opts.Shards
	}
	return m.Lists
}

// assignment computes who takes which shard: each shard goes to one of
// the live members that list it and can take it (not withdrawn, not
// excluding it), or, if none can, to one of those that list it.
func (g *Group) assignment() map[diff.Shard]string {
	self := g.member()
	members := slices.DeleteFunc(slices.Clone(g.members), func(m checkpoint.Member) bool { return m.ID == self.ID })
	members = append(members, self)
	can := map[string][]diff.Shard{}
	served := map[diff.Shard]bool{}
	for _, m := range members {
		if m.Withdrawn != "" {
			continue
		}
		for _, s := range g.lists(m) {
			if !slices.Contains(m.Excluded, s) {
				can[m.ID] = append(can[m.ID], s)
				served[s] = true
			}
		}
	}
	for _, m := range members {
		for _, s := range g.lists(m) {
			if !served[s] && !slices.Contains(can[m.ID], s) {
				can[m.ID] = append(can[m.ID], s) // nobody can: those that list it keep it
			}
		}
	}
	return Assign(can)
}

// probe asks, within half a tick, whether this replica reaches the bus,
// and counts the answers running (see [GroupOptions.Probe]).
func (g *Group) probe(run context.Context) {
	if g.opts.Probe == nil {
		return
	}
	ctx, cancel := context.WithTimeout(run, g.opts.Tick/2)
	defer cancel()
	sent := g.opts.Now()
	err := g.opts.Probe(ctx)
	g.failed("bus", err, "could not reach the bus")
	if err == nil {
		g.busOK, g.probeFails = sent, 0
		g.probeOKs++
		return
	}
	if g.probeOKs = 0; g.probeFails == 0 {
		g.firstFail = sent
	}
	g.probeFails++
	g.lastProbeErr = err
}

// judgeBus steps the replica back, or brings it back, on its probes and
// the round's roster, and reports whether it did. It steps back after
// withdrawAfter failed probes if another replica reached the bus with a
// probe sent after this one's first failed probe was (both on the
// store's clock, where it tells); it serves again after returnAfter good
// probes, twice as many each time it steps back again soon after.
func (g *Group) judgeBus() bool {
	now := g.opts.Now()
	switch {
	case g.opts.Probe == nil:
		return false
	case g.withdrawn != "":
		if g.probeOKs < returnAfter<<min(g.stepBacks-1, maxBackOff) {
			return false
		}
		g.log.Info("the bus is reachable again: taking shards again", zap.Int("good_probes", g.probeOKs))
		g.withdrawn, g.returned = "", now
		g.opts.Metrics.groupWithdrawn(false)
		return true
	case g.probeFails < withdrawAfter:
		return false
	}
	failed := g.firstFail.Add(g.offset)
	for _, m := range g.members {
		if m.ID == g.opts.Replica.ID || m.Withdrawn != "" || !m.BusOK.After(failed) {
			continue
		}
		if !g.returned.IsZero() && now.Sub(g.returned) < backOffFor*g.opts.LeaseTTL {
			g.stepBacks++ // again, soon after it came back: a flapping link
		} else {
			g.stepBacks = 1
		}
		g.withdrawn = "cannot reach the bus: " + g.lastProbeErr.Error()
		g.log.Warn("cannot reach the bus while other replicas can: stepping back, they take this replica's shards",
			zap.String("reaches_it", m.ID), zap.Int("failed_probes", g.probeFails), zap.Int("good_probes_to_return", returnAfter<<min(g.stepBacks-1, maxBackOff)),
			zap.Error(g.lastProbeErr))
		g.opts.Metrics.groupWithdrawn(true)
		return true
	}
	return false
}

// sayConfigs says, once per change, that the live replicas list
// different shards (a rolling deploy, several deployments on one store):
// information, for they share what they list in common.
func (g *Group) sayConfigs() {
	byDigest := map[string][]string{}
	sizes := map[string]int{}
	for _, m := range g.members {
		byDigest[m.Shards] = append(byDigest[m.Shards], m.ID)
		sizes[m.Shards] = len(g.lists(m))
	}
	var configs []string
	for digest, ids := range byDigest {
		configs = append(configs, fmt.Sprintf("%s list %d shards (digest %s)", strings.Join(ids, ", "), sizes[digest], digest))
	}
	slices.Sort(configs)
	said := strings.Join(configs, "; ")
	if len(configs) < 2 {
		said = ""
	}
	if said == g.configs {
		return
	}
	if said != "" {
		g.log.Info("the group's replicas list different shards; each shard is shared among the live replicas that list it",
			zap.Strings("configurations", configs))
	} else if g.configs != "" {
		g.log.Info("the group's replicas list the same shards again")
	}
	g.configs = said
}

// sayUnlisted says, once per shard, which shards no live replica lists,
// and counts them.
func (g *Group) sayUnlisted(listed []checkpoint.ListedShard) {
	now := map[diff.Shard]bool{}
	for _, m := range g.members {
		for _, s := range g.lists(m) {
			now[s.Canonical()] = true
		}
	}
	unlisted := map[diff.Shard]bool{}
	var gone []string
	var last checkpoint.ListedShard
	for _, l := range listed {
		s := l.Shard.Canonical()
		if now[s] {
			continue
		}
		unlisted[s] = true
		if !g.unlisted[s] {
			gone = append(gone, s.String())
			if l.At.After(last.At) {
				last = l
			}
		}
	}
	if len(gone) > 0 {
		g.log.Warn("no live replica lists these shards: nobody polls them; their leases expire unrenewed and their state is kept",
			zap.Int("count", len(gone)), zap.Strings("shards", firstOf(gone)), zap.String("last_listed_by", last.By), zap.Time("last_listed", last.At))
	}
	var back []string
	for s := range g.unlisted {
		if !unlisted[s] && now[s] {
			back = append(back, s.String())
		}
	}
	if len(back) > 0 {
		slices.Sort(back)
		g.log.Info("shards listed by a live replica again", zap.Int("count", len(back)), zap.Strings("shards", firstOf(back)))
	}
	g.unlisted = unlisted
	g.opts.Metrics.groupUnlisted(len(unlisted))
}

// firstOf returns the first few of ids, and how many more there are: a
// line that names hundreds of shards helps nobody.
func firstOf(ids []string) []string {
	const most = 20
	if len(ids) <= most {
		return ids
	}
	return append(slices.Clone(ids[:most]), fmt.Sprintf("and %d more", len(ids)-most))
}

// escapedByAnother reports whether another replica holds s's lease now,
// or took it since this replica last excluded s (its token grew), as read
// from the store (false if it cannot be read). It remembers the token.
func (g *Group) escapedByAnother(ctx context.Context, s diff.Shard) bool {
	leases, err := g.opts.Store.Leases(ctx, []diff.Shard{s})
	if err != nil || len(leases) != 1 {
		return false
	}
	l := leases[0]
	before, known := g.exclusionToken[s]
	g.exclusionToken[s] = l.Token
	return l.Live(g.opts.Now()) && l.Owner != g.opts.Replica.ID || known && l.Token > before
}

// lease is how long each lease and heartbeat is written for.
func (g *Group) lease() time.Duration { return g.opts.LeaseTTL - g.opts.Tick }

// Owned returns the shards this replica held at the end of its last
// round, sorted. It is safe to call from any goroutine (/readyz does).
func (g *Group) Owned() []diff.Shard {
	if p := g.ownedNow.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// Turning returns nil while Run's rounds go on: one ended within three
// lease TTLs (at least a minute) of now. A round's calls to the store are
// bounded by a tick, so a round that takes longer is stuck, and the shards
// it holds will be taken over by the other replicas.
func (g *Group) Turning(now time.Time) error {
	last := g.turned.Load()
	if last == 0 {
		return nil // not running yet
	}
	limit := max(3*g.opts.LeaseTTL, time.Minute)
	if since := now.Sub(time.Unix(0, last)); since > limit {
		return fmt.Errorf("the replica group's last round ended %v ago (more than %v): its loop is stuck", since.Round(time.Second), limit)
	}
	return nil
}

// publishOwned makes the shards held now what Owned returns, and marks the
// round's end for Turning.
func (g *Group) publishOwned() {
	defer func() { g.turned.Store(g.opts.Now().UnixNano()) }()
	var out []diff.Shard
	for _, s := range g.opts.Shards {
		if o := g.owned[s]; o != nil && !o.leaving {
			out = append(out, s)
		}
	}
	g.ownedNow.Store(&out)
}

// renew extends the leases held, side by side (one slow round trip per
// shard, one after the other, would outlast the claims of a few hundred
// shards); with an assignment, it hands off the shards now assigned
// elsewhere instead.
func (g *Group) renew(ctx context.Context, want map[diff.Shard]string) {
	type renewal struct {
		s    diff.Shard
		o    *ownership
		sent time.Time
		l    checkpoint.Lease
		err  error
	}
	var todo []*renewal
	for _, s := range g.opts.Shards {
		o := g.owned[s]
		if o == nil || o.leaving {
			continue
		}
		if want != nil && want[s] != g.opts.Replica.ID {
			g.log.Info("handing the shard off", zap.Stringer("shard", s), zap.String("to", want[s]))
			o.leaving = true
			o.cancel()
			continue
		}
		todo = append(todo, &renewal{s: s, o: o})
	}
	sideBySide(todo, func(r *renewal) {
		r.sent = g.opts.Now()
		r.l, r.err = g.opts.Store.Renew(ctx, r.o.claim.Lease(), g.lease(), r.sent)
	})
	for _, r := range todo {
		s, o, l, err, sent := r.s, r.o, r.l, r.err, r.sent
		switch {
		case errors.Is(err, checkpoint.ErrLeaseLost):
			g.log.Warn("the lease was taken over; stopping the shard", zap.Stringer("shard", s), zap.Error(err))
			g.drop(s, o)
		case g.failed("renew "+s.String(), err, "could not renew a lease; the shard stops if this lasts"):
		default:
			o.claim.renewed(l, sent)
		}
	}
}

// acquire takes a shard's lease (within ctx) and starts its poller (under
// run), and reports whether it did.
func (g *Group) acquire(run, ctx context.Context, s diff.Shard) bool {
	sent := g.opts.Now()
	l, err := g.opts.Store.Acquire(ctx, s, g.opts.Replica.ID, g.lease(), sent)
	if errors.Is(err, checkpoint.ErrLeaseHeld) {
		g.earlier(l.Expires)
		g.log.Debug("waiting for the shard's lease", zap.Stringer("shard", s), zap.String("owner", l.Owner), zap.Time("expires", l.Expires))
		delete(g.refused, s)
		return false
	}
	if g.failed("acquire "+s.String(), err, "could not take a lease") {
		if g.refused[s]++; g.refused[s] >= excludeAfter {
			// The store refuses this replica the shard (in a Redis Cluster,
			// a slot it cannot reach while others may): the next heartbeat
			// leaves it to the others.
			// A refusal that another replica escaped (it holds the
			// shard's lease now, or took it since this replica last
			// left it) is this replica's own: excluded for 10 TTLs,
			// longer each time. One that nobody escaped (a failover of
			// the slot) is excluded for a TTL only: the shard stays with
			// those that list it anyway, and exclusions grown through a
			// long failover would outlast one another, and gather the
			// slot's shards on whichever replica's ended first once it is
			// back.
			ttls := 1
			if g.escapedByAnother(ctx, s) {
				g.exclusions[s]++
				ttls = excludeFor // doubled by steps, not a shift by the count, which overflows after some 60
				for i := 1; i < g.exclusions[s] && ttls < excludeMost; i++ {
					ttls = min(2*ttls, excludeMost)
				}
			}
			until := g.opts.Now().Add(time.Duration(ttls) * g.opts.LeaseTTL)
			say := g.log.Warn
			if g.exclusionSaid[s] {
				say = g.log.Debug // said once, until the shard is taken again
			}
			g.exclusionSaid[s] = true
			say("could not take the shard's lease several rounds running: leaving it to the other replicas for a while",
				zap.Stringer("shard", s), zap.Int("rounds", g.refused[s]), zap.Time("until", until), zap.Error(err))
			g.excluded[s] = until
			delete(g.refused, s)
		}
		return false
	}
	delete(g.refused, s)
	delete(g.excluded, s)
	delete(g.exclusions, s)
	delete(g.exclusionSaid, s)
	delete(g.exclusionToken, s)
	g.opts.Store.Fence(s, l.Token)
	claim := &Claim{shard: s, ttl: g.lease(), now: g.opts.Now}
	claim.renewed(l, sent)
	pctx, cancel := context.WithCancel(run)
	o := &ownership{claim: claim, cancel: cancel, done: make(chan struct{})}
	g.owned[s] = o
	g.opts.Metrics.leaseAcquired(s)
	g.log.Info("took the shard", zap.Stringer("shard", s), zap.Uint64("token", l.Token))
	go func() {
		o.err = g.opts.Poll(pctx, s, claim)
		close(o.done)
		select {
		case g.stopped <- struct{}{}:
		default: // Run is woken already
		}
	}()
	return true
}

// drop stops a shard's poller without waiting: the lease is no longer
// ours, so nothing is released.
func (g *Group) drop(s diff.Shard, o *ownership) {
	o.cancel()
	o.leaving = true
	g.opts.Metrics.leaseDropped(s, true, false)
}

// reap finishes the shards whose poller stopped: handed off, dropped, or
// stopped by an error of its own (a fencing refusal, an expired claim).
func (g *Group) reap() {
	var stopped []diff.Shard
	for _, s := range g.opts.Shards {
		o := g.owned[s]
		if o == nil {
			continue
		}
		select {
		case <-o.done:
		default:
			continue
		}
		stopped = append(stopped, s)
	}
	g.finish(stopped)
}

// finish releases the leases of stopped shards (a no-op for one no longer
// ours) and forgets them. The releases go side by side, all within one
// tick: shards that stop together (their claims expired in an outage of
// the store) would otherwise hold the round one tick each.
func (g *Group) finish(shards []diff.Shard) {
	type released struct {
		shard diff.Shard
		lease checkpoint.Lease
	}
	leases := make([]released, 0, len(shards))
	for _, s := range shards {
		o := g.owned[s]
		delete(g.owned, s)
		if o.err != nil {
			fenced := errors.Is(o.err, checkpoint.ErrFenced)
			g.log.Warn("the shard's poller stopped: dropping the shard", zap.Stringer("shard", s), zap.Bool("fenced", fenced), zap.Error(o.err))
			// A dropped shard was counted lost already.
			g.opts.Metrics.leaseDropped(s, !o.leaving, fenced)
		}
		g.opts.Metrics.leaseDropped(s, false, false)
		leases = append(leases, released{s, o.claim.Lease()})
	}
	if len(leases) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.opts.Tick)
	defer cancel()
	sideBySide(leases, func(l released) {
		if err := g.opts.Store.Release(ctx, l.lease); err != nil {
			g.log.Warn("could not release a lease; it expires by itself", zap.Stringer("shard", l.shard), zap.Error(err))
		}
	})
}

// storeCallsAtOnce bounds the store calls a round makes side by side.
const storeCallsAtOnce = 16

// sideBySide calls fn on every item, storeCallsAtOnce at a time, and
// returns when every call has.
func sideBySide[T any](items []T, fn func(T)) {
	var wg sync.WaitGroup
	limit := make(chan struct{}, storeCallsAtOnce)
	for _, it := range items {
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			fn(it)
		})
	}
	wg.Wait()
}

// report writes the status of each shard held whose poller completed a
// cycle since the last report.
func (g *Group) report(ctx context.Context) {
	for _, s := range g.opts.Shards {
		o := g.owned[s]
		if o == nil {
			continue
		}
		st, ok := o.claim.status()
		if !ok {
			continue
		}
		st.Replica = g.opts.Replica.ID
		if g.failed("report "+s.String(), g.opts.Store.Report(ctx, st), "could not record a shard's status") {
			o.claim.unreported()
		}
	}
}

// shutdown stops every poller, waits for it, releases its lease and
// leaves the group.
func (g *Group) shutdown() {
	defer g.publishOwned()
	for _, o := range g.owned {
		o.cancel()
	}
	for _, o := range g.owned {
		<-o.done // the poller commits what was acknowledged, within its grace
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g.report(ctx)
	var held []diff.Shard
	for _, s := range g.opts.Shards {
		if g.owned[s] != nil {
			held = append(held, s)
		}
	}
	g.finish(held)
	if err := g.opts.Store.Leave(ctx, g.opts.Replica.ID); err != nil {
		g.log.Warn("could not leave the group; the others see it go when its heartbeat expires", zap.Error(err))
	}
	g.log.Info("left the group")
}

// failed logs err, once until it changes, and reports whether there was
// one; a success after a failure is logged too.
func (g *Group) failed(concern string, err error, msg string) bool {
	if err == nil {
		if g.logged[concern] != "" {
			g.log.Info("recovered: "+concern, zap.String("after", g.logged[concern]))
			delete(g.logged, concern)
		}
		return false
	}
	if g.logged[concern] != err.Error() {
		g.logged[concern] = err.Error()
		g.log.Warn(msg, zap.String("concern", concern), zap.Error(err))
	}
	return true
}

// Claim is a replica's hold on one shard, as its poller sees it. It is
// valid until a third of the TTL before its lease could expire, counted
// from when the last renewal was sent and on this process's monotonic
// clock: a replica paused past its lease (SIGSTOP, a long GC, a VM
// migration) finds its claim invalid when it resumes, before it stages or
// publishes anything, and the store's fencing refuses whatever write was
// already on its way.
type Claim struct {
	shard diff.Shard
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	lease   checkpoint.Lease
	until   time.Time
	last    checkpoint.ShardStatus
	pending bool // last holds a report not yet written
}

// Valid returns nil while the claim holds, and ErrClaimExpired after.
func (c *Claim) Valid() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.now().Before(c.until) {
		return fmt.Errorf("%w (token %d, valid until %s)", ErrClaimExpired, c.lease.Token, c.until.Format(time.RFC3339Nano))
	}
	return nil
}

// Lease returns the lease as last acquired or renewed.
func (c *Claim) Lease() checkpoint.Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease
}

func (c *Claim) renewed(l checkpoint.Lease, sent time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lease = l
	c.until = sent.Add(c.ttl - c.ttl/3)
}

// Observe records a cycle's outcome for the shard's status.
func (c *Claim) Observe(r Report) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last.Shard = c.shard
	end := r.Started.Add(r.Duration)
	c.last.LastCycle = end
	if r.Err != nil {
		c.last.LastError = r.Err.Error()
	} else {
		c.last.LastSuccess, c.last.LastError = end, ""
	}
	c.pending = true
}

func (c *Claim) status() (checkpoint.ShardStatus, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ok := c.pending
	c.pending = false
	return c.last, ok
}

func (c *Claim) unreported() {
	c.mu.Lock()
	c.pending = true
	c.mu.Unlock()
}

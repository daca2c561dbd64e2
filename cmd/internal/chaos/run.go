package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// run is one run of the harness.
type run struct {
	o       Options
	sim     *castest.Server
	redis   *redisEngine
	nats    *natsEngine
	js      jetstream.JetStream
	stream  *streamReader
	args    []string
	env     []string
	dir     string
	keep    bool // the directory outlives the run
	start   time.Time
	nextArm func() hook
	armRNG  *rand.Rand
	closers []func() // what the run set up, undone in reverse by close

	slots       []*replicaSlot
	exits       chan slotExit
	engineDone  chan engineDone
	busy        map[string]bool
	applied     []appliedFault
	faults      map[string]int
	skipped     map[string]int
	hookArmed   map[string]int
	hookHits    map[string]int
	unexpected  []string
	behaviours  []string
	apiUntil    time.Time
	schedule    []Fault
	engineErrs  []string
	progressAt  time.Time
	harnessLogs sync.Mutex
	// The goroutines of the run: the workload, the lease watch, the
	// stream's reader.
	workload, watching, following *harness.Background

	// Network partitions: the replicas' links, the partition in effect
	// and those applied, the replicas' comings and goings, the leases.
	links            *links
	partition        *partitionRun
	partitions       []*partitionRun
	lastPartitionEnd time.Time
	events           []slotEvent
	leases           *leaseWatch
}

// appliedFault is when a fault of a kind hit, for the latencies after it.
type appliedFault struct {
	at   time.Time
	kind string
}

// emulatorRegions are the regions of the emulator's two accounts.
func emulatorRegions() []string { return []string{"cn-hangzhou", "cn-shanghai", "ap-southeast-1"} }

func (c *run) logf(format string, args ...any) {
	if c.o.Quiet {
		return
	}
	c.harnessLogs.Lock()
	defer c.harnessLogs.Unlock()
	fmt.Fprintf(c.o.Progress, "chaos %6s: %s\n", time.Since(c.start).Truncate(100*time.Millisecond), fmt.Sprintf(format, args...))
}

// onClose has close undo a step of the set-up, after the steps that came
// later.
func (c *run) onClose(f func()) { c.closers = append(c.closers, f) }

// close undoes the set-up, and removes the run's directory unless it is
// kept.
func (c *run) close() {
	for _, f := range slices.Backward(c.closers) {
		f()
	}
	if !c.keep {
		_ = os.RemoveAll(c.dir)
	}
}

// Run runs the harness: the engines, the emulator and its workload, the
// replicas, the scheduled faults, then the catch-up, and the checks of
// the stream and of the partitions.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	rep := Report{Seed: o.Seed, Replay: o.replay(), DurationSeconds: o.Duration.Seconds(), Replicas: o.Replicas, Checkpoint: o.Checkpoint}
	dir, err := os.MkdirTemp("", "capoller-chaos-")
	if err != nil {
		return rep, err
	}
	c := &run{o: o, dir: dir, keep: o.Keep, start: time.Now(), nextArm: drawHooks(o.Seed),
		armRNG: rand.New(rand.NewPCG(uint64(o.Seed), 0x64656c6179)), exits: make(chan slotExit, 16), engineDone: make(chan engineDone, 4),
		busy: map[string]bool{}, faults: map[string]int{}, skipped: map[string]int{}, hookArmed: map[string]int{}, hookHits: map[string]int{}}
	defer c.close()
	fmt.Fprintf(o.Progress, "chaos: seed %d; replay with: %s\n", o.Seed, rep.Replay)
	if err := c.setUp(ctx, &rep); err != nil {
		return rep, err
	}
	caughtUp, settled, err := c.loop(ctx)
	if err != nil {
		return rep, err
	}
	if caughtUp {
		rep.CatchUpSeconds = time.Since(settled).Seconds()
	}
	rep.CaughtUp = caughtUp
	if err := c.finish(ctx, &rep); err != nil {
		return rep, err
	}
	if !rep.OK {
		c.keep = true
	}
	if c.keep {
		rep.KeptDir = dir
	}
	return rep, nil
}

// setUp starts everything the run needs, up to the replicas and the
// workload.
func (c *run) setUp(ctx context.Context, rep *Report) error {
	if err := c.startEngines(rep); err != nil {
		return err
	}
	accounts := harness.NewAccounts("chaos")
	behaviour := castest.RandomBehaviour(c.o.Seed)
	simURL, err := c.startEmulator(accounts, behaviour)
	if err != nil {
		return err
	}
	name, prefix := harness.RunName("CHAOS")
	if err := c.configure(accounts, simURL, name, prefix); err != nil {
		return err
	}
	if err := c.connect(ctx, accounts, name, prefix); err != nil {
		return err
	}
	c.schedule = drawSchedule(c.o, c.redis.embedded(), c.nats.embedded())
	c.logf("%d faults scheduled over %v (mean gap %v); behaviour %s; logs in %s", len(c.schedule), c.o.Duration, c.o.FaultEvery, behaviour, c.dir)
	return c.startReplicas(ctx)
}

// startEngines starts Redis and NATS, or takes the operator's, and says
// which in the report.
func (c *run) startEngines(rep *Report) error {
	var err error
	if c.redis, err = startRedis(c.o.RedisURL, c.o.RedisTopology, c.dir); err != nil {
		return err
	}
	c.onClose(c.redis.close)
	if c.nats, err = startNATS(c.o.NATSURL, c.o.NATSCluster, c.dir); err != nil {
		return err
	}
	c.onClose(c.nats.close)
	rep.Redis, rep.NATS = c.describeEngine(c.o.RedisURL, c.redis.embedded(), "redis-server, restarted"), c.describeEngine(c.o.NATSURL, c.nats.embedded(), "in-process, restarted")
	if c.o.NATSCluster {
		rep.NATS = "embedded 3-node cluster, R3 stream, one node lost at a time"
	}
	if c.redis.group != nil {
		rep.Redis = c.redis.group.describe()
	}
	if c.o.Checkpoint == "natskv" {
		rep.Redis = "unused (checkpoints in JetStream KV)"
	}
	rep.Partitions.Injected = describePartitions(c.o, c.redis.embedded(), c.nats.embedded())
	return nil
}

func (c *run) describeEngine(url string, embedded bool, what string) string {
	if embedded {
		return "embedded (" + what + ")"
	}
	return c.o.redact(url) + " (not restarted)"
}

// startEmulator starts the emulator of both accounts, with the seed's
// first behaviour and the quota.
func (c *run) startEmulator(accounts harness.Accounts, behaviour castest.Behaviour) (string, error) {
	sim, err := castest.New(accounts.Emulator(castest.Options{Regions: emulatorRegions(), Instances: 3, Behaviour: behaviour}))
	if err != nil {
		return "", err
	}
	c.sim = sim
	c.onClose(func() { _ = sim.Close() })
	c.behaviours = append(c.behaviours, "0s: "+behaviour.String())
	if err := sim.SetQuota(c.o.Quota, time.Minute); err != nil {
		return "", err
	}
	return sim.Start("127.0.0.1:0")
}

// configure starts the fault proxies and writes the replicas' arguments,
// configuration and environment.
func (c *run) configure(accounts harness.Accounts, simURL, name, prefix string) error {
	redisLink, natsLink := partitionLinks(c.o, c.redis.embedded(), c.nats.embedded())
	var err error
	if c.links, err = newLinks(c.o.Replicas, c.redis.url, c.nats.url, redisLink, natsLink, prefix); err != nil {
		return err
	}
	c.onClose(c.links.close)
	file, env, err := accounts.WriteConfig(c.dir, emulatorRegions())
	if err != nil {
		return err
	}
	streamReplicas := 1
	if c.o.NATSCluster {
		streamReplicas = 3
	}
	c.args = []string{"run", "--config", file, "--endpoint", simURL, "--redis-url", c.redis.url, "--key-prefix", prefix + ":",
		"--nats-url", c.nats.url, "--stream", name, "--subject-prefix", prefix,
		"--interval", c.o.Interval.String(), "--lease-ttl", c.o.LeaseTTL.String(), "--initial", "emit", "--resync-every", "30s",
		"--qps", strconv.FormatFloat(c.o.QPS, 'g', -1, 64), "--stream-replicas", strconv.Itoa(streamReplicas), "--log-level", "info"}
	if c.o.Checkpoint == "natskv" {
		c.args = append(c.args, "--checkpoint", "natskv", "--bucket", name)
	}
	c.env = append(append(append(os.Environ(), env...), c.o.Env...), "GOTRACEBACK=all")
	return nil
}

// connect opens the harness's own connections: to NATS, to read the
// stream as it grows, and to the store, to watch the leases.
func (c *run) connect(ctx context.Context, accounts harness.Accounts, name, prefix string) error {
	nc, err := nats.Connect(c.nats.url, nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	c.onClose(nc.Close)
	if c.js, err = jetstream.New(nc); err != nil {
		return err
	}
	c.onClose(func() { c.cleanUp(name, prefix+":") })
	readLeases, closeLeases, err := leaseReader(c.o, c.redis.url, c.js, name, prefix+":", accounts.Shards(emulatorRegions()))
	if err != nil {
		return err
	}
	c.onClose(closeLeases)
	c.leases = newLeaseWatch(readLeases, c.slotOf)
	c.stream = &streamReader{js: c.js, stream: name, last: map[diff.Key]string{}}
	c.following = harness.Go(ctx, c.stream.follow)
	c.onClose(c.following.Stop)
	return nil
}

// slotOf is the slot of a lease's owner, or o.Replicas: not a replica of
// the harness.
func (c *run) slotOf(owner string) int {
	ids := make([]string, len(c.slots))
	for i, s := range c.slots {
		ids[i] = s.id
	}
	if i, ok := harness.ReplicaIndex(ids, owner); ok {
		return i
	}
	return c.o.Replicas
}

// cleanUp deletes the stream, the bucket and the keys of the run; the
// harness's own Redis goes away with it.
func (c *run) cleanUp(stream, keyPrefix string) {
	l := harness.Leftovers{JetStream: c.js, Stream: stream, KeyPrefix: keyPrefix}
	if c.o.Checkpoint == "natskv" {
		l.Bucket = stream
	}
	if !c.redis.embedded() {
		if opts, err := redis.ParseURL(c.redis.url); err == nil {
			l.Redis = redis.NewClient(opts)
			defer l.Redis.Close()
		}
	}
	harness.Clean(l)
}

// startReplicas starts the lease watch and a replica in every slot, and
// the workload.
func (c *run) startReplicas(ctx context.Context) error {
	for i := range c.o.Replicas {
		c.slots = append(c.slots, &replicaSlot{id: fmt.Sprintf("chaos-%d", i+1), state: "down"})
	}
	c.watching = harness.Go(ctx, c.leases.run) // once the slots it names exist
	c.onClose(c.watching.Stop)
	c.onClose(c.stopAll)
	for i := range c.slots {
		if err := c.startSlot(i, true); err != nil {
			return err
		}
	}
	c.workload = harness.Go(ctx, func(ctx context.Context) { workload(ctx, c.sim, c.o.Seed, c.o.Rate) })
	c.onClose(c.workload.Stop)
	return nil
}

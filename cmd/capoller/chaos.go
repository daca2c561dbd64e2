package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/truthcheck"
	"github.com/capoller/capoller/publisher/events"
)

// chaosOptions configures `capoller chaos`.
type chaosOptions struct {
	duration time.Duration
	seed     int64
	redisURL string
	// redisTopology is single, cluster or sentinel (see chaos_failover.go).
	redisTopology string
	natsURL       string
	natsCluster   bool
	checkpoint    string
	replicas      int
	interval      time.Duration
	leaseTTL      time.Duration
	faultEvery    time.Duration
	rate          float64
	quota         int
	qps           float64
	catchUp       time.Duration
	partitions    string // on, off, only
	jsonOut       bool
	reportFile    string
	keep          bool
	quiet         bool
	// env is added to the replicas' environment (a test's binary needs
	// beMainEnv to act as capoller).
	env []string
}

func chaosCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("capoller chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o chaosOptions
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "how long faults are injected (then the replicas catch up and the stream is checked)")
	fs.Int64Var(&o.seed, "seed", 0, "seed of the fault schedule, the behaviours and the workload (0: from the clock); the report prints it, and the same seed replays the schedule")
	fs.StringVar(&o.redisURL, "redis-url", "embedded", `Redis for the replicas' checkpoints, or "embedded": the harness's own (see --redis), which it restarts or fails over`)
	fs.StringVar(&o.redisTopology, "redis", chaosRedisSingle, "with --redis-url embedded: single (one redis-server, crashed and restarted), cluster (a Redis Cluster of 3 masters with a replica each: CLUSTER FAILOVER, FORCE and TAKEOVER on replicas, SIGKILL of masters restarted as replicas) or sentinel (a master, 2 replicas and 3 sentinels: SIGKILL of the master, SENTINEL FAILOVER)")
	fs.StringVar(&o.natsURL, "nats-url", "embedded", `NATS with JetStream, or "embedded": an in-process server, which the harness restarts`)
	fs.BoolVar(&o.natsCluster, "nats-cluster", false, "with --nats-url embedded: a 3-node cluster and an R3 stream; the harness takes one node down at a time")
	fs.StringVar(&o.checkpoint, "checkpoint", "redis", "the replicas' checkpoint store: redis or natskv")
	fs.IntVar(&o.replicas, "replicas", 3, "capoller run processes")
	fs.DurationVar(&o.interval, "interval", time.Second, "the replicas' poll interval")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 4*time.Second, "the replicas' lease TTL")
	fs.DurationVar(&o.faultEvery, "fault-every", 3*time.Second, "mean time between two scheduled faults")
	fs.Float64Var(&o.rate, "rate", 6, "new invocations per second over the whole fleet")
	fs.IntVar(&o.quota, "api-quota", 600, "the emulator's API quota: calls per minute per account, action and region")
	fs.Float64Var(&o.qps, "qps", 5, "the replicas' --qps (their group's rate per API, account and region)")
	fs.DurationVar(&o.catchUp, "catch-up", 3*time.Minute, "how long the replicas get, after the faults, to announce every final status")
	fs.StringVar(&o.partitions, "partitions", "on", "network partitions of a replica (or all) from Redis or NATS, through a fault proxy per replica and engine, when the engines are the harness's own single servers: on (among the other faults), off, or only (no other scheduled fault; the replicas' hooks still fire)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON instead of the summary")
	fs.StringVar(&o.reportFile, "report", "", "also write the JSON report to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the run's directory (replica logs, engines' data) even when the run passed")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "capoller chaos: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if o.duration <= 0 || o.replicas < 1 || o.interval <= 0 || o.leaseTTL <= 0 || o.faultEvery <= 0 || o.rate <= 0 || o.qps <= 0 || o.quota < 0 {
		fmt.Fprintln(stderr, "capoller chaos: duration, replicas, interval, lease-ttl, fault-every, rate and qps must be positive")
		return 2
	}
	if o.partitions != "on" && o.partitions != "off" && o.partitions != "only" {
		fmt.Fprintf(stderr, "capoller chaos: --partitions %q: want on, off or only\n", o.partitions)
		return 2
	}
	if o.checkpoint != "redis" && o.checkpoint != "natskv" {
		fmt.Fprintf(stderr, "capoller chaos: --checkpoint %q: want redis or natskv\n", o.checkpoint)
		return 2
	}
	if err := checkChaosRedis(o); err != nil {
		fmt.Fprintf(stderr, "capoller chaos: %v\n", err)
		return 2
	}
	if o.seed == 0 {
		o.seed = time.Now().UnixNano() % 1_000_000_000
	}
	// The harness's own Redis client (the lease watch) fails while the
	// harness restarts redis-server: the report counts those reads, and
	// go-redis's process-wide logger would print each failed dial in
	// between the progress lines.
	redis.SetLogger(&redisLogger{log: zap.NewNop()})
	rep, err := runChaos(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "capoller chaos: %v\n", err)
		return 1
	}
	if o.reportFile != "" {
		if err := writeChaosJSON(o.reportFile, rep); err != nil {
			fmt.Fprintf(stderr, "capoller chaos: %v\n", err)
			return 1
		}
	}
	if o.jsonOut {
		if err := encodeChaosJSON(stdout, rep); err != nil {
			return 1
		}
	} else {
		printChaos(stdout, rep)
	}
	if !rep.OK {
		return 1
	}
	return 0
}

// The scheduled faults.
const (
	faultKill         = "kill"           // SIGKILL a replica, restart it after a while
	faultStop         = "stop"           // SIGSTOP a replica past its lease, then SIGCONT
	faultRedis        = "redis-restart"  // kill redis-server, start it again
	faultNATS         = "nats-restart"   // shut the NATS server down, start it again
	faultNATSNode     = "nats-node-loss" // shut one cluster node down, start it again
	faultThrottle     = "api-throttle"   // a burst of Throttling.User
	faultServerError  = "api-5xx"        // 503, 500 or 502 HTML
	faultSlow         = "api-slow"       // slow responses
	faultMalformed    = "api-malformed"  // undecodable or truncated bodies
	faultInvalidToken = "api-invalid-token"
	faultBehaviour    = "behaviour" // a new random mix of the API's silent behaviours (order, ties, drift, token expiry, …)
	faultHook         = "hook"      // a replica killed or stopped itself at a step (counted by step)
)

// chaosFault is one entry of the schedule, all drawn from the seed.
type chaosFault struct {
	At      time.Duration `json:"-"`
	AtText  string        `json:"at"`
	Kind    string        `json:"kind"`
	Replica int           `json:"replica,omitempty"`
	For     time.Duration `json:"-"`
	ForText string        `json:"for,omitempty"`
	Rate    float64       `json:"rate,omitempty"`
	Detail  string        `json:"detail,omitempty"`
	Seed    int64         `json:"behaviourSeed,omitempty"`
	// Link is what a partition cuts (redis, nats or redis+nats), of
	// every replica with AllReplicas.
	Link        string `json:"link,omitempty"`
	AllReplicas bool   `json:"allReplicas,omitempty"`
	// Skipped says why the fault was not applied (its target was down, or
	// the engine was already restarting).
	Skipped string `json:"skipped,omitempty"`
}

// chaosWeighted is a kind of fault and its weight in the schedule.
type chaosWeighted struct {
	kind string
	w    int
}

// chaosSchedule draws the faults of a run from its seed.
func chaosSchedule(o chaosOptions, redisEmbedded, natsEmbedded bool) []chaosFault {
	rng := rand.New(rand.NewPCG(uint64(o.seed), 0x6368616f73)) // "chaos"
	kinds := []chaosWeighted{{faultKill, 4}, {faultStop, 2}, {faultThrottle, 1}, {faultServerError, 1}, {faultSlow, 1},
		{faultMalformed, 1}, {faultInvalidToken, 1}, {faultBehaviour, 1}}
	if redisEmbedded && o.checkpoint == "redis" {
		kinds = append(kinds, chaosRedisFaults(o.redisTopology)...)
	}
	if natsEmbedded {
		kinds = append(kinds, chaosWeighted{map[bool]string{false: faultNATS, true: faultNATSNode}[o.natsCluster], 1})
	}
	partitions := partitionKinds(o, redisEmbedded, natsEmbedded)
	if o.partitions == "only" {
		kinds = partitions
	} else {
		kinds = append(kinds, partitions...)
	}
	redisLink, natsLink := partitionLinks(o, redisEmbedded, natsEmbedded)
	total := 0
	for _, k := range kinds {
		total += k.w
	}
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Float64()*float64(hi-lo)) }
	var out []chaosFault
	if total == 0 {
		return out
	}
	at := 2 * o.leaseTTL // the group forms first
	var partitionsFree, enginesFree time.Duration
	for {
		gap := time.Duration(rng.ExpFloat64() * float64(o.faultEvery))
		at += min(max(gap, o.faultEvery/4), 3*o.faultEvery)
		if at >= o.duration {
			// Partitions may have been put off: in the order of their times.
			slices.SortStableFunc(out, func(a, b chaosFault) int { return cmp.Compare(a.At, b.At) })
			return withRedisFailover(o, out, redisEmbedded)
		}
		n := rng.IntN(total)
		var kind string
		for _, k := range kinds {
			if n < k.w {
				kind = k.kind
				break
			}
			n -= k.w
		}
		if kind == faultThrottle && at > o.duration-15*time.Second {
			// capoller waits out a throttled minute (to the next boundary,
			// plus jitter): a burst at the very end would hold the
			// catch-up for a minute and prove nothing more.
			kind = faultServerError
		}
		// Partitions alone open with the case they are for: one replica
		// cut off for longer than its lease.
		opening := o.partitions == "only" && len(out) == 0
		if opening {
			kind = faultPartitionHole
		}
		f := chaosFault{At: at, Kind: kind}
		switch kind {
		case faultKill:
			f.Replica, f.For = rng.IntN(o.replicas), between(200*time.Millisecond, 2*o.leaseTTL)
		case faultStop:
			f.Replica, f.For = rng.IntN(o.replicas), between(o.leaseTTL+o.leaseTTL/4, 2*o.leaseTTL)
		case faultRedis, faultNATS, faultNATSNode:
			if kind == faultNATSNode {
				f.Replica, f.For = rng.IntN(3), between(3*time.Second, 15*time.Second)
			} else {
				f.For = between(500*time.Millisecond, 5*time.Second)
			}
			// Not during a partition, whose checks an outage of the
			// whole group would blur: after it.
			if f.At = max(f.At, partitionsFree); f.At >= o.duration {
				continue
			}
			enginesFree = max(enginesFree, f.At+f.For+o.leaseTTL)
		case faultFailover, faultFailoverForce, faultFailoverTakeover, faultMasterKill, faultLagKill:
			chaosRedisFault(&f, rng)
			// Like a restart: not during a partition, and none until the
			// group served again for a while.
			if f.At = max(f.At, partitionsFree); f.At >= o.duration {
				continue
			}
			enginesFree = max(enginesFree, f.At+f.For+2*o.leaseTTL)
		case faultThrottle:
			f.For, f.Rate = between(2*time.Second, 10*time.Second), 0.3+0.6*rng.Float64()
		case faultServerError:
			f.For, f.Rate = between(time.Second, 8*time.Second), 0.2+0.5*rng.Float64()
			f.Detail = string([]castest.FaultKind{castest.FaultUnavailable, castest.FaultInternal, castest.FaultBadGateway}[rng.IntN(3)])
		case faultSlow:
			f.For, f.Rate = between(2*time.Second, 10*time.Second), 0.3+0.6*rng.Float64()
			f.Detail = between(200*time.Millisecond, 3*time.Second).Round(time.Millisecond).String()
		case faultMalformed:
			f.For, f.Rate = between(time.Second, 6*time.Second), 0.1+0.3*rng.Float64()
			f.Detail = string([]castest.FaultKind{castest.FaultMalformed, castest.FaultTruncated}[rng.IntN(2)])
		case faultInvalidToken:
			f.For, f.Rate = between(2*time.Second, 10*time.Second), 0.2+0.5*rng.Float64()
		case faultBehaviour:
			f.Seed = rng.Int64N(math.MaxInt32)
			f.Detail = castest.RandomBehaviour(f.Seed).String()
		case faultPartitionHole, faultPartitionReset, faultPartitionLatency:
			drawPartition(rng, o, &f, redisLink, natsLink, between)
			if opening && f.AllReplicas {
				f.AllReplicas, f.Replica, f.For = false, rng.IntN(o.replicas), between(o.leaseTTL, 3*o.leaseTTL)
			}
			// One at a time, two TTLs apart (a replica back from one
			// takes a few ticks to serve again), a TTL after an engine's
			// restart, and over before the faults are.
			f.At = max(f.At, partitionsFree, enginesFree)
			if f.At+f.For > o.duration {
				continue
			}
			partitionsFree = f.At + f.For + 2*o.leaseTTL
		}
		f.AtText = f.At.Round(time.Millisecond).String()
		if f.For > 0 {
			f.ForText = f.For.Round(time.Millisecond).String()
		}
		out = append(out, f)
	}
}

// chaosArm is a test hook to arm in a replica at its start.
type chaosArm struct {
	step   poller.Step
	action string
	nth    int
}

func (a chaosArm) env() string {
	return fmt.Sprintf("%s=%s:%s:%d", testFaultEnv, a.step, a.action, a.nth)
}
func (a chaosArm) key() string { return a.action + "@" + string(a.step) }

// chaosArms draws, from the seed, the hooks armed at each replica start,
// in start order: four starts in five arm a kill or a stop at the n-th
// batch at one of the cycle's steps.
func chaosArms(seed int64) func() chaosArm {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x686f6f6b)) // "hook"
	steps := []poller.Step{poller.StepFetched, poller.StepStaged, poller.StepPublished, poller.StepCommitted}
	return func() chaosArm {
		if rng.IntN(10) < 2 {
			return chaosArm{}
		}
		a := chaosArm{step: steps[rng.IntN(len(steps))], action: "kill", nth: 1 + rng.IntN(4)}
		if rng.IntN(10) < 3 {
			a.action = "stop"
		}
		if a.step == poller.StepFetched {
			a.nth = 1 + rng.IntN(20) // every page is one
		}
		return a
	}
}

// chaosSlot is one replica: the process in it is restarted after every
// kill.
type chaosSlot struct {
	id      string
	gen     int
	cmd     *exec.Cmd
	arm     chaosArm
	state   string // running, stopped (by the harness), hookstopped, down
	until   time.Time
	killing bool
	metrics string
}

type slotExit struct {
	slot, gen int
	ps        *os.ProcessState
}

// chaosEngineDone reports an engine back after a restart.
type chaosEngineDone struct {
	kind string
	err  error
}

// chaosRun is one run of the harness.
type chaosRun struct {
	o       chaosOptions
	stderr  io.Writer
	sim     *castest.Server
	redis   *chaosRedis
	nats    *chaosNATS
	args    []string
	env     []string
	dir     string
	start   time.Time
	nextArm func() chaosArm
	armRNG  *rand.Rand

	slots       []*chaosSlot
	exits       chan slotExit
	engineDone  chan chaosEngineDone
	busy        map[string]bool
	applied     []appliedFault
	faults      map[string]int
	skipped     map[string]int
	hookArmed   map[string]int
	hookHits    map[string]int
	unexpected  []string
	behaviours  []string
	apiUntil    time.Time
	schedule    []chaosFault
	engineErrs  []string
	progressAt  time.Time
	harnessLogs sync.Mutex

	// Network partitions: the replicas' links, the partition in effect
	// and those applied, the replicas' comings and goings, the leases.
	links            *chaosLinks
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

func (c *chaosRun) logf(format string, args ...any) {
	if c.o.quiet {
		return
	}
	c.harnessLogs.Lock()
	defer c.harnessLogs.Unlock()
	fmt.Fprintf(c.stderr, "chaos %6s: %s\n", time.Since(c.start).Truncate(100*time.Millisecond), fmt.Sprintf(format, args...))
}

// runChaos runs the harness and returns its report.
func runChaos(ctx context.Context, o chaosOptions, stderr io.Writer) (chaosReport, error) {
	rep := chaosReport{Seed: o.seed, Replay: fmt.Sprintf("capoller chaos --seed %d --duration %v%s", o.seed, o.duration, chaosReplayRedis(o)),
		DurationSeconds: o.duration.Seconds(), Replicas: o.replicas, Checkpoint: o.checkpoint}
	if o.partitions != "" && o.partitions != "on" {
		rep.Replay += " --partitions " + o.partitions
	}
	dir, err := os.MkdirTemp("", "capoller-chaos-")
	if err != nil {
		return rep, err
	}
	keep := o.keep
	defer func() {
		if !keep {
			_ = os.RemoveAll(dir)
		}
	}()
	c := &chaosRun{o: o, stderr: stderr, dir: dir, start: time.Now(), nextArm: chaosArms(o.seed),
		armRNG: rand.New(rand.NewPCG(uint64(o.seed), 0x64656c6179)), exits: make(chan slotExit, 16), engineDone: make(chan chaosEngineDone, 4),
		busy: map[string]bool{}, faults: map[string]int{}, skipped: map[string]int{}, hookArmed: map[string]int{}, hookHits: map[string]int{}}
	fmt.Fprintf(stderr, "chaos: seed %d; replay with: %s\n", o.seed, rep.Replay)

	if c.redis, err = startChaosRedisTopology(o.redisURL, o.redisTopology, dir); err != nil {
		return rep, err
	}
	defer c.redis.close()
	if c.nats, err = startChaosNATS(o.natsURL, o.natsCluster, dir); err != nil {
		return rep, err
	}
	defer c.nats.close()
	rep.Redis, rep.NATS = describeEngine(o.redisURL, c.redis.embedded(), "redis-server, restarted"), describeEngine(o.natsURL, c.nats.embedded(), "in-process, restarted")
	if o.natsCluster {
		rep.NATS = "embedded 3-node cluster, R3 stream, one node lost at a time"
	}
	if c.redis.group != nil {
		rep.Redis = c.redis.group.describe()
	}
	if o.checkpoint == "natskv" {
		rep.Redis = "unused (checkpoints in JetStream KV)"
	}
	rep.Partitions.Injected = describePartitions(o, c.redis.embedded(), c.nats.embedded())

	regions := []string{"cn-hangzhou", "cn-shanghai", "ap-southeast-1"}
	keys := map[string][2]string{"prod": {"LTAIchaosprod" + randomHex(3), randomHex(12)}, "staging": {"LTAIchaosstg" + randomHex(3), randomHex(12)}}
	start := castest.RandomBehaviour(o.seed)
	c.sim, err = castest.New(castest.Options{AccessKeyID: keys["prod"][0], AccessKeySecret: keys["prod"][1], Regions: regions, Instances: 3,
		Accounts: []castest.Account{{Name: "staging", AccessKeyID: keys["staging"][0], AccessKeySecret: keys["staging"][1]}}, Behaviour: start})
	if err != nil {
		return rep, err
	}
	defer c.sim.Close()
	c.behaviours = append(c.behaviours, "0s: "+start.String())
	if err := c.sim.SetQuota(o.quota, time.Minute); err != nil {
		return rep, err
	}
	simURL, err := c.sim.Start("127.0.0.1:0")
	if err != nil {
		return rep, err
	}

	name := "CAPOLLER_CHAOS_" + strings.ToUpper(randomHex(4))
	prefix := strings.ToLower(name)
	redisLink, natsLink := partitionLinks(o, c.redis.embedded(), c.nats.embedded())
	if c.links, err = newChaosLinks(o.replicas, c.redis.url, c.nats.url, redisLink, natsLink, prefix); err != nil {
		return rep, err
	}
	defer c.links.close()
	yaml := "accounts:\n"
	env := []string{"ALIBABA_CLOUD_ECS_METADATA_DISABLED=true"}
	for _, a := range []string{"prod", "staging"} {
		v := strings.ToUpper(a)
		yaml += fmt.Sprintf("  - name: %s\n    credentials: {type: access_key, source: env, access_key_id_env: CHAOS_%s_AK, access_key_secret_env: CHAOS_%s_SK}\n    regions: [%s]\n    sources: [ecs, swas]\n",
			a, v, v, strings.Join(regions, ", "))
		env = append(env, "CHAOS_"+v+"_AK="+keys[a][0], "CHAOS_"+v+"_SK="+keys[a][1])
	}
	file := filepath.Join(dir, "capoller.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		return rep, err
	}
	streamReplicas := 1
	if o.natsCluster {
		streamReplicas = 3
	}
	c.args = []string{"run", "--config", file, "--endpoint", simURL, "--redis-url", c.redis.url, "--key-prefix", prefix + ":",
		"--nats-url", c.nats.url, "--stream", name, "--subject-prefix", prefix,
		"--interval", o.interval.String(), "--lease-ttl", o.leaseTTL.String(), "--initial", "emit", "--resync-every", "30s",
		"--qps", strconv.FormatFloat(o.qps, 'g', -1, 64), "--stream-replicas", strconv.Itoa(streamReplicas), "--log-level", "info"}
	if o.checkpoint == "natskv" {
		c.args = append(c.args, "--checkpoint", "natskv", "--bucket", name)
	}
	c.env = append(append(append(os.Environ(), env...), o.env...), "GOTRACEBACK=all")

	nc, err := nats.Connect(c.nats.url, nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond), nats.Timeout(5*time.Second))
	if err != nil {
		return rep, fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return rep, err
	}
	defer cleanupChaos(js, c.redis, name, prefix+":", o.checkpoint)
	readLeases, closeLeases, err := chaosLeaseReader(o, c.redis.url, js, name, prefix+":", chaosShards([]string{"prod", "staging"}, []string{"ecs", "swas"}, regions))
	if err != nil {
		return rep, err
	}
	defer closeLeases()
	c.leases = newLeaseWatch(readLeases, func(owner string) int {
		// Owners are <slot id>-<random>: chaos-2-1a2b3c.
		for i, s := range c.slots {
			if strings.HasPrefix(owner, s.id+"-") {
				return i
			}
		}
		return o.replicas // not a replica of the harness
	})
	watchCtx, stopWatching := context.WithCancel(ctx)
	var watching sync.WaitGroup
	defer func() { stopWatching(); watching.Wait() }()
	reader := &chaosStream{js: js, stream: name, last: map[diff.Key]string{}}
	followCtx, stopFollowing := context.WithCancel(ctx)
	var following sync.WaitGroup
	following.Go(func() { reader.follow(followCtx) })
	defer func() { stopFollowing(); following.Wait() }()

	c.schedule = chaosSchedule(o, c.redis.embedded(), c.nats.embedded())
	c.logf("%d faults scheduled over %v (mean gap %v); behaviour %s; logs in %s", len(c.schedule), o.duration, o.faultEvery, start, dir)

	for i := range o.replicas {
		c.slots = append(c.slots, &chaosSlot{id: fmt.Sprintf("chaos-%d", i+1), state: "down"})
	}
	watching.Go(func() { c.leases.run(watchCtx) })
	defer c.stopAll()
	for i := range c.slots {
		if err := c.startSlot(i, true); err != nil {
			return rep, err
		}
	}

	workCtx, stopWork := context.WithCancel(ctx)
	var work sync.WaitGroup
	work.Go(func() { chaosWorkload(workCtx, c.sim, o.seed, o.rate) })
	defer func() { stopWork(); work.Wait() }()

	// The chaos phase, then the catch-up.
	end := c.start.Add(o.duration)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	next := 0
	settling := false
	var settleStart time.Time
	caughtUp := false
	lastPoll := time.Time{}
	var behind int
	for !caughtUp {
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case ex := <-c.exits:
			c.exited(ex, settling)
		case d := <-c.engineDone:
			delete(c.busy, d.kind)
			if d.err != nil {
				c.engineErrs = append(c.engineErrs, d.kind+": "+d.err.Error())
				return rep, fmt.Errorf("%s: %w", d.kind, d.err)
			}
			c.logf("%s: back", d.kind)
		case <-tick.C:
		}
		now := time.Now()
		if !settling && !now.Before(end) {
			settling, settleStart = true, now
			c.sim.ClearFaults()
			_ = c.sim.SetBehaviour(castest.Behaviour{})
			stopWork()
			work.Wait()
			c.tendPartition(now, true)
			c.logf("faults over: the workload stopped, the API is ideal again; waiting up to %v for every final status", o.catchUp)
		}
		for !settling && next < len(c.schedule) && !now.Before(c.start.Add(c.schedule[next].At)) {
			c.apply(&c.schedule[next], now)
			next++
		}
		if !c.apiUntil.IsZero() && now.After(c.apiUntil) {
			c.sim.ClearFaults()
			c.apiUntil = time.Time{}
		}
		c.tendPartition(now, settling)
		c.tend(now, settling)
		if now.Sub(lastPoll) >= time.Second {
			lastPoll = now
			if settling && len(c.busy) == 0 {
				behind = reader.behind(c.sim.Truth())
				caughtUp = behind == 0
				if !caughtUp && now.Sub(settleStart) > o.catchUp {
					c.logf("not caught up after %v: %d records behind", o.catchUp, behind)
					break
				}
			}
			if now.Sub(c.progressAt) >= 30*time.Second {
				c.progressAt = now
				c.logf("%d events in the stream, %d faults, %d hook hits%s", reader.count(), len(c.applied), sum(c.hookHits),
					map[bool]string{true: fmt.Sprintf(", %d records behind", behind)}[settling])
			}
		}
	}
	if caughtUp {
		rep.CatchUpSeconds = time.Since(settleStart).Seconds()
	}
	rep.CaughtUp = caughtUp
	c.stopAll()
	stopWatching()
	watching.Wait()
	stopFollowing()
	following.Wait()
	for attempt := 0; ; attempt++ {
		err := reader.poll(ctx)
		if err == nil {
			break
		}
		if attempt == 20 {
			return rep, fmt.Errorf("read the stream: %w", err)
		}
		time.Sleep(500 * time.Millisecond) // the engine may still be coming back
	}
	if err := reader.complete(ctx); err != nil {
		return rep, err
	}

	c.report(&rep, reader)
	if !rep.OK {
		keep = true
	}
	if keep {
		rep.KeptDir = dir
	}
	return rep, nil
}

func describeEngine(url string, embedded bool, what string) string {
	if embedded {
		return "embedded (" + what + ")"
	}
	return redactURL(url) + " (not restarted)"
}

// startSlot starts slot i's replica, arming a hook if arm is set.
func (c *chaosRun) startSlot(i int, arm bool) error {
	s := c.slots[i]
	addr, err := harness.FreeAddr()
	if err != nil {
		return err
	}
	s.gen++
	s.arm = chaosArm{}
	if arm {
		s.arm = c.nextArm()
	}
	logFile, err := os.OpenFile(filepath.Join(c.dir, s.id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "==== chaos: start %d of %s, hook %q\n", s.gen, s.id, s.arm.key())
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, append(c.links.args(c.args, i), "--replica-id", s.id, "--metrics-addr", addr)...)
	cmd.Env = slices.Clone(c.env)
	if s.arm.step != "" {
		cmd.Env = append(cmd.Env, s.arm.env())
		c.hookArmed[s.arm.key()]++
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start replica %s: %w", s.id, err)
	}
	s.cmd, s.state, s.killing, s.metrics = cmd, "running", false, addr
	gen := s.gen
	go func() {
		_ = cmd.Wait()
		c.exits <- slotExit{slot: i, gen: gen, ps: cmd.ProcessState}
	}()
	return nil
}

// exited handles the end of a replica process.
func (c *chaosRun) exited(ex slotExit, settling bool) {
	s := c.slots[ex.slot]
	if ex.gen != s.gen {
		return
	}
	now := time.Now()
	switch {
	case s.killing:
		// the harness killed it; until is set
	case s.arm.action == "kill" && signalled(ex.ps, syscall.SIGKILL):
		c.hookHits[s.arm.key()]++
		c.faults[faultHook]++
		c.applied = append(c.applied, appliedFault{at: now, kind: faultHook + "-kill@" + string(s.arm.step)})
		c.logf("%s killed itself at %s (batch %d at that step)", s.id, s.arm.step, s.arm.nth)
		c.disturbed(ex.slot, "killed itself at "+string(s.arm.step), false, now)
		s.until = now.Add(time.Duration(200+c.armRNG.IntN(2000)) * time.Millisecond)
	default:
		c.unexpected = append(c.unexpected, fmt.Sprintf("%s (start %d) exited by itself at %v: %v", s.id, s.gen, now.Sub(c.start).Round(time.Second), ex.ps))
		c.logf("%s exited by itself: %v", s.id, ex.ps)
		c.disturbed(ex.slot, "exited by itself ("+ex.ps.String()+")", true, now)
		s.until = now.Add(time.Second)
	}
	s.state, s.cmd = "down", nil
	if settling {
		s.until = now
	}
}

// tend moves each slot along: restarts, resumes, hook stops seen.
func (c *chaosRun) tend(now time.Time, settling bool) {
	for i, s := range c.slots {
		switch s.state {
		case "running":
			if s.arm.action == "stop" && processStopped(s.cmd.Process.Pid) {
				c.hookHits[s.arm.key()]++
				c.faults[faultHook]++
				c.applied = append(c.applied, appliedFault{at: now, kind: faultHook + "-stop@" + string(s.arm.step)})
				pause := c.o.leaseTTL + time.Duration(c.armRNG.Float64()*float64(c.o.leaseTTL))
				c.logf("%s stopped itself at %s (batch %d at that step); resuming in %v", s.id, s.arm.step, s.arm.nth, pause.Round(time.Millisecond))
				c.disturbed(i, "stopped itself at "+string(s.arm.step), false, now)
				s.state, s.until, s.arm = "hookstopped", now.Add(pause), chaosArm{}
			}
		case "stopped", "hookstopped":
			if settling || !now.Before(s.until) {
				_ = s.cmd.Process.Signal(syscall.SIGCONT)
				s.state = "running"
			}
		case "down":
			if settling || !now.Before(s.until) {
				if err := c.startSlot(i, !settling); err != nil {
					c.unexpected = append(c.unexpected, fmt.Sprintf("%s: restart: %v", s.id, err))
					s.until = now.Add(time.Second)
				}
			}
		}
	}
}

// apply injects a scheduled fault.
func (c *chaosRun) apply(f *chaosFault, now time.Time) {
	skip := func(why string) {
		f.Skipped = why
		c.skipped[f.Kind]++
	}
	done := func(format string, args ...any) {
		c.faults[f.Kind]++
		c.applied = append(c.applied, appliedFault{at: now, kind: f.Kind})
		c.logf(format, args...)
	}
	switch f.Kind {
	case faultKill:
		s := c.target(f.Replica, func(s *chaosSlot) bool { return s.state != "down" })
		if s == nil {
			skip("every replica down")
			return
		}
		s.killing, s.until = true, now.Add(f.For)
		_ = s.cmd.Process.Kill()
		c.disturbed(c.slotIndex(s), "killed", false, now)
		done("SIGKILL %s (%s); restart in %v", s.id, s.state, f.For.Round(time.Millisecond))
	case faultStop:
		s := c.target(f.Replica, func(s *chaosSlot) bool { return s.state == "running" })
		if s == nil {
			skip("no replica running")
			return
		}
		_ = s.cmd.Process.Signal(syscall.SIGSTOP)
		s.state, s.until = "stopped", now.Add(f.For)
		c.disturbed(c.slotIndex(s), "stopped", false, now)
		done("SIGSTOP %s for %v (lease TTL %v)", s.id, f.For.Round(time.Millisecond), c.o.leaseTTL)
	case faultRedis, faultNATS, faultNATSNode:
		if c.busy[f.Kind] {
			skip("engine restarting")
			return
		}
		if c.partition != nil {
			skip("a partition is in effect")
			return
		}
		c.busy[f.Kind] = true
		done("%s: down for %v", f.Kind, f.For.Round(time.Millisecond))
		go func() {
			var err error
			switch f.Kind {
			case faultRedis:
				c.redis.crash()
				time.Sleep(f.For) // the outage
				err = c.redis.start()
			case faultNATS:
				c.nats.shutdown(0)
				time.Sleep(f.For) // the outage
				err = c.nats.restart(0)
			case faultNATSNode:
				c.nats.shutdown(f.Replica)
				time.Sleep(f.For) // the outage
				if err = c.nats.restart(f.Replica); err == nil {
					err = c.nats.waitMetaLeader(time.Minute)
				}
			}
			c.engineDone <- chaosEngineDone{kind: f.Kind, err: err}
		}()
	case faultFailover, faultFailoverForce, faultFailoverTakeover, faultMasterKill, faultLagKill:
		c.applyRedisFailover(f, skip, done)
	case faultThrottle, faultServerError, faultSlow, faultMalformed, faultInvalidToken:
		rule := castest.Fault{Rate: f.Rate, Count: -1}
		switch f.Kind {
		case faultThrottle:
			rule.Kind = castest.FaultThrottle
		case faultServerError, faultMalformed:
			rule.Kind = castest.FaultKind(f.Detail)
		case faultSlow:
			rule.Kind, rule.Latency = castest.FaultLatency, f.Detail
		case faultInvalidToken:
			rule.Kind = castest.FaultInvalidToken
		}
		c.sim.ClearFaults()
		if err := c.sim.InjectFault(rule); err != nil {
			skip(err.Error())
			return
		}
		c.apiUntil = now.Add(f.For)
		done("%s %s at rate %.2f for %v", f.Kind, f.Detail, f.Rate, f.For.Round(time.Millisecond))
	case faultBehaviour:
		if err := c.sim.SetBehaviour(castest.RandomBehaviour(f.Seed)); err != nil {
			skip(err.Error())
			return
		}
		c.behaviours = append(c.behaviours, f.AtText+": "+f.Detail)
		done("behaviour: %s", f.Detail)
	case faultPartitionHole, faultPartitionReset, faultPartitionLatency:
		c.startPartition(f, now, skip, done)
	}
}

// target is the scheduled replica, or the next one after it that ok
// accepts, or nil.
func (c *chaosRun) target(first int, ok func(*chaosSlot) bool) *chaosSlot {
	for i := range c.slots {
		if s := c.slots[(first+i)%len(c.slots)]; ok(s) {
			return s
		}
	}
	return nil
}

// stopAll ends every replica: SIGCONT, SIGTERM, and SIGKILL if it lingers.
func (c *chaosRun) stopAll() {
	for _, s := range c.slots {
		if s.cmd != nil {
			_ = s.cmd.Process.Signal(syscall.SIGCONT)
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(20 * time.Second)
	for _, s := range c.slots {
		if s.cmd == nil {
			continue
		}
		for s.cmd != nil {
			select {
			case ex := <-c.exits:
				if t := c.slots[ex.slot]; ex.gen == t.gen {
					t.cmd, t.state = nil, "down"
				}
			case <-deadline:
				for _, t := range c.slots {
					if t.cmd != nil {
						_ = t.cmd.Process.Kill()
					}
				}
				deadline = time.After(20 * time.Second)
			}
		}
	}
}

func cleanupChaos(js jetstream.JetStream, r *chaosRedis, stream, keyPrefix, checkpoint string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if checkpoint == "natskv" {
		_ = js.DeleteKeyValue(ctx, stream)
	}
	var rdb *redis.Client // the harness's own Redis goes with it
	if !r.embedded() {
		if opts, err := redis.ParseURL(r.url); err == nil {
			rdb = redis.NewClient(opts)
			defer rdb.Close()
		}
	}
	deleteRun(ctx, js, stream, rdb, keyPrefix)
}

// chaosStream reads the stream as it grows. follow polls it in the
// background, so that an engine down never holds up the harness's loop.
type chaosStream struct {
	js     jetstream.JetStream
	stream string

	mu   sync.Mutex
	next uint64
	evs  []truthcheck.Published
	last map[diff.Key]string // each record's last announced status
	err  error               // of the last poll
}

// follow polls the stream every second until ctx ends.
func (s *chaosStream) follow(ctx context.Context) {
	for {
		err := s.poll(ctx)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second): // pacing the polls
		}
	}
}

// count is how many events were read.
func (s *chaosStream) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.evs)
}

// poll reads what the stream holds beyond what was read.
func (s *chaosStream) poll(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, s.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // no replica created it yet
	}
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.LastSeq < max(s.next, 1) {
		return nil
	}
	cons, err := s.js.OrderedConsumer(ctx, s.stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(s.next, 1)})
	if err != nil {
		return err
	}
	for s.next <= info.State.LastSeq {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for msg := range batch.Messages() {
			meta, err := msg.Metadata()
			if err != nil || meta.Sequence.Stream < s.next {
				continue
			}
			s.next = meta.Sequence.Stream + 1
			n++
			e, err := events.Decode(msg.Data())
			if err != nil {
				continue
			}
			s.evs = append(s.evs, truthcheck.Published{MsgID: msg.Headers().Get(jetstream.MsgIDHeader), Stored: meta.Timestamp, Event: e})
			s.last[truthcheck.RecordKey(e.Data)] = string(e.Data.Status)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no message within 2s while reading up to %d", info.State.LastSeq)
		}
	}
	return nil
}

// complete checks that every message of the stream was read.
func (s *chaosStream) complete(ctx context.Context) error {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return fmt.Errorf("read the stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the stream: %w", err)
	}
	if info.State.Msgs != uint64(len(s.evs)) {
		return fmt.Errorf("read %d events, the stream holds %d messages", len(s.evs), info.State.Msgs)
	}
	return nil
}

// behind counts the records whose last true status is not final yet, or
// not the last one announced.
func (s *chaosStream) behind(truth []castest.TruthEntry) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := map[diff.Key]string{}
	for _, e := range truth {
		last[diff.Key{InvokeID: e.InvokeID, InstanceID: e.InstanceID}] = e.To
	}
	n := 0
	for k, st := range last {
		if !diff.Status(st).Terminal() || s.last[k] != st {
			n++
		}
	}
	return n
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/capoller/capoller/publisher/events"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/embedded"
)

type benchOptions struct {
	records     int
	active      float64
	activeFor   time.Duration
	qps         float64 // the daemon's --qps; the emulator's quota is a tenth above it
	interval    time.Duration
	window      time.Duration // the daemon's --throttle-window, and the emulator's quota window
	cycles      int
	strategies  []string
	arrivals    float64
	throttle    float64
	errors      float64
	burst       int
	redisURL    string
	natsURL     string
	jsonOut     bool
	instanceNum int
	behaviours  []namedBehaviour
	replicas    int
	shards      int
	leaseTTL    time.Duration
	steady      time.Duration
}

// namedBehaviour is an emulator behaviour the bench runs under.
type namedBehaviour struct {
	name string
	b    castest.Behaviour
}

// parseBehaviours reads --behaviours: "ideal" (today's ideal API),
// "worst" (unordered and unstable ties, drifting tokens, strict filters),
// or a JSON castest.Behaviour; comma-separated outside JSON.
func parseBehaviours(v string) ([]namedBehaviour, error) {
	if strings.HasPrefix(strings.TrimSpace(v), "{") {
		var b castest.Behaviour
		if err := json.Unmarshal([]byte(v), &b); err != nil {
			return nil, fmt.Errorf("behaviours: %w", err)
		}
		if err := b.Validate(); err != nil {
			return nil, fmt.Errorf("behaviours: %w", err)
		}
		return []namedBehaviour{{b.String(), b}}, nil
	}
	var out []namedBehaviour
	for _, name := range strings.Split(v, ",") {
		switch name = strings.TrimSpace(name); name {
		case "ideal":
			out = append(out, namedBehaviour{name, castest.Behaviour{}})
		case "worst":
			out = append(out, namedBehaviour{name, castest.Behaviour{Ties: true, Unstable: true, Drift: true, StrictFilters: true}})
		default:
			return nil, fmt.Errorf("behaviours: %q: want ideal, worst or a JSON behaviour", name)
		}
	}
	return out, nil
}

// benchReport is one strategy's measurements.
type benchReport struct {
	Strategy            string             `json:"strategy"`
	Behaviour           string             `json:"behaviour"`
	Records             int                `json:"records"`
	Cycles              float64            `json:"steadyCycles"`
	APICallsPerCycle    float64            `json:"apiCallsPerCycle"`
	LatencyP50          float64            `json:"detectionLatencyP50Seconds"`
	LatencyP99          float64            `json:"detectionLatencyP99Seconds"`
	LatencySamples      int                `json:"latencySamples"`
	EventsPerSecond     float64            `json:"eventsPerSecond"`
	RedisTripsPerCycle  float64            `json:"redisRoundTripsPerCycle"`
	NATSBatchesPerCycle float64            `json:"natsBatchesPerCycle"`
	NATSPublishPerCycle float64            `json:"natsPublishesPerCycle"`
	PeakRSSMiB          float64            `json:"peakRssMiB"`
	Backoffs            map[string]float64 `json:"apiBackoffs"`
	BackoffSeconds      map[string]float64 `json:"apiBackoffSeconds"`
	QuotaRefusals       int                `json:"quotaRefusals"`
	Duration            float64            `json:"steadySeconds"`
	// CPUSecondsPerCycle is the daemon's CPU time (user and system) per
	// steady-state cycle, from its process_cpu_seconds_total.
	CPUSecondsPerCycle float64     `json:"cpuSecondsPerCycle"`
	Store              storeSizing `json:"store"`
}

// storeSizing is what the checkpoint store holds at the end of a run, from
// Redis's own MEMORY USAGE of each key.
type storeSizing struct {
	Records int64 `json:"records"`
	// RecordBytes is the shard's states and its small keys (meta, lease,
	// status); BytesPerRecord divides it by Records.
	RecordBytes    int64   `json:"recordBytes"`
	BytesPerRecord float64 `json:"bytesPerRecord"`
	// HistoryTransitions are the transitions the audit history holds;
	// BytesPerHistoryEntry divides its stream's memory by them.
	HistoryTransitions   int64   `json:"historyTransitions"`
	HistoryBytes         int64   `json:"historyBytes"`
	BytesPerHistoryEntry float64 `json:"bytesPerHistoryTransition"`
}

// redisSizing measures the keys under keyPrefix: the history stream apart,
// the rest per record.
func redisSizing(ctx context.Context, rdb *redis.Client, keyPrefix string) (storeSizing, error) {
	var out storeSizing
	iter := rdb.Scan(ctx, 0, keyPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		bytes, err := rdb.MemoryUsage(ctx, key, 0).Result() // 0: every element, not a sample
		if err != nil {
			return out, err
		}
		switch kind, _, _ := strings.Cut(strings.TrimPrefix(key, keyPrefix), ":"); kind {
		case "history":
			out.HistoryBytes += bytes
		case "records":
			out.RecordBytes += bytes
			n, err := rdb.HLen(ctx, key).Result()
			if err != nil {
				return out, err
			}
			out.Records += n
		case "meta":
			out.RecordBytes += bytes
			n, err := rdb.HGet(ctx, key, "historyLen").Int64()
			if err != nil && !errors.Is(err, redis.Nil) {
				return out, err
			}
			out.HistoryTransitions += n
		default:
			out.RecordBytes += bytes
		}
	}
	if err := iter.Err(); err != nil {
		return out, err
	}
	if out.Records > 0 {
		out.BytesPerRecord = float64(out.RecordBytes) / float64(out.Records)
	}
	if out.HistoryTransitions > 0 {
		out.BytesPerHistoryEntry = float64(out.HistoryBytes) / float64(out.HistoryTransitions)
	}
	return out, nil
}

type throughputReport struct {
	Rounds          int     `json:"rounds"`
	Transitions     int     `json:"transitions"`
	Seconds         float64 `json:"seconds"`
	PerSecond       float64 `json:"transitionsPerSecond"`
	RedisRoundTrips int64   `json:"redisRoundTrips"`
	// RawPerSecond is JetStream's own rate on the same connection: as many
	// 600-byte messages with a message id, on one subject, published
	// asynchronously, every ack awaited. Ratio is the median of each
	// round's pipeline rate over its raw rate.
	RawPerSecond float64 `json:"rawPublishesPerSecond"`
	Ratio        float64 `json:"ratioToRawPublish"`
	// RawSubjectsPerSecond is the same, each message on a subject of its
	// own shaped like the pipeline's (one per record, as the event
	// contract has it): what JetStream itself does with such subjects.
	RawSubjectsPerSecond float64 `json:"rawPublishesOnRecordSubjectsPerSecond"`
	RatioSubjects        float64 `json:"ratioToRawPublishOnRecordSubjects"`
}

func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("capoller bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchOptions
	var strategies string
	fs.IntVar(&o.records, "records", 10_000, "invocations in the emulator (each on one instance: twice as many records are tracked)")
	fs.Float64Var(&o.active, "active", 0.01, "fraction of them still running at the start")
	fs.DurationVar(&o.activeFor, "active-for", 10*time.Minute, "the running ones finish spread over this long")
	fs.Float64Var(&o.qps, "qps", 18, "the daemon's --qps: API calls per second per API; the emulator's quota is a tenth above it, per --throttle-window (0: no quota, no limit)")
	fs.DurationVar(&o.window, "throttle-window", time.Minute, "the daemon's --throttle-window and the emulator's quota window (Alibaba's is a minute)")
	fs.DurationVar(&o.interval, "interval", 5*time.Second, "poll interval")
	fs.IntVar(&o.cycles, "cycles", 3, "steady-state cycles to measure per strategy")
	fs.StringVar(&strategies, "strategies", "full,incremental", "strategies to compare, in order")
	fs.Float64Var(&o.arrivals, "arrivals", 2, "new invocations per second during the measurement")
	fs.Float64Var(&o.throttle, "throttle-rate", 0, "fraction of API calls the emulator throttles on top of the quota")
	fs.Float64Var(&o.errors, "error-rate", 0, "fraction of API calls that fail with a 5xx")
	fs.IntVar(&o.burst, "burst", 20_000, "invocations changing at once in the throughput phase (0: skip it)")
	defaults := defaultConfig()
	fs.StringVar(&o.redisURL, "redis-url", envOr(envName("redis-url"), defaults.RedisURL), "Redis, one server (env "+envName("redis-url")+")")
	fs.StringVar(&o.natsURL, "nats-url", envOr(envName("nats-url"), defaults.NATSURL), `NATS with JetStream, or "embedded" (env `+envName("nats-url")+")")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	fs.IntVar(&o.instanceNum, "instances", 500, "simulated ECS instances")
	fs.IntVar(&o.replicas, "replicas", 0, "run a group of this many replicas sharing --shards shards instead of the strategies (0: do not)")
	fs.IntVar(&o.shards, "shards", 60, "shards of the replica group: two accounts, ECS and SWAS, in shards/4 regions")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 15*time.Second, "the replica group's lease TTL")
	fs.DurationVar(&o.steady, "steady", 30*time.Second, "how long the replica group's steady state is measured")
	behaviours := fs.String("behaviours", "ideal", "emulator behaviours to run each strategy under: ideal, worst (unordered ties, drifting tokens, strict filters), or a JSON castest.Behaviour")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	var err error
	if o.behaviours, err = parseBehaviours(*behaviours); err != nil {
		fmt.Fprintf(stderr, "capoller bench: %v\n", err)
		return 2
	}
	o.strategies = strings.Split(strategies, ",")
	for _, s := range o.strategies {
		if s != "full" && s != "incremental" {
			fmt.Fprintf(stderr, "capoller bench: strategy %q: want full or incremental\n", s)
			return 2
		}
	}
	if o.records < 1 || o.active < 0 || o.active > 1 || o.cycles < 1 || o.interval <= 0 || o.window <= 0 || o.qps < 0 {
		fmt.Fprintln(stderr, "capoller bench: records, cycles, interval and throttle-window must be positive, qps not negative, active within 0..1")
		return 2
	}
	if err := bench(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "capoller bench: %v\n", err)
		return 1
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func bench(ctx context.Context, o benchOptions, stdout, stderr io.Writer) error {
	if o.natsURL == "embedded" {
		dir, err := os.MkdirTemp("", "capoller-bench-nats")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := embedded.Run(embedded.Options{StoreDir: dir})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		o.natsURL = srv.URL()
	}
	ropts, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return fmt.Errorf("redis-url: %w", err)
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", redactURL(o.redisURL), err)
	}
	nc, err := nats.Connect(o.natsURL)
	if err != nil {
		return fmt.Errorf("nats at %s: %w", redactURL(o.natsURL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	var reports []benchReport
	var replicas *replicaBenchReport
	if o.replicas > 0 {
		r, err := benchReplicas(ctx, o, rdb, nc, stderr)
		if err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
		replicas = &r
		o.behaviours = nil // the group replaces the strategies
	}
	for _, nb := range o.behaviours {
		for _, strategy := range o.strategies {
			fmt.Fprintf(stderr, "bench: %s strategy, %s API, %d invocations, %.1f%% active, qps %g…\n", strategy, nb.name, o.records, 100*o.active, o.qps)
			rep, err := benchStrategy(ctx, o, strategy, nb.b, rdb, nc, js, stderr)
			if err != nil {
				return fmt.Errorf("%s: %w", strategy, err)
			}
			rep.Behaviour = nb.name
			reports = append(reports, rep)
		}
	}
	var tp *throughputReport
	if o.burst > 0 {
		fmt.Fprintf(stderr, "bench: throughput, %d invocations changing at once…\n", o.burst)
		t, err := benchThroughput(ctx, o.burst, rdb, js)
		if err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
		tp = &t
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"strategies": reports, "throughput": tp, "replicas": replicas})
	}
	if replicas != nil {
		printReplicaBench(stdout, *replicas)
	}
	printBench(stdout, reports, tp)
	return nil
}

func printBench(w io.Writer, reports []benchReport, tp *throughputReport) {
	if len(reports) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "strategy\tAPI\trecords\tAPI calls/cycle\tlatency p50\tlatency p99\tevents/s\tRedis trips/cycle\tNATS batches/cycle\tNATS publishes/cycle\tCPU/cycle\tpeak RSS\tstore/record\tstore/history entry\tbackoffs (throttled/transient)\tquota refusals")
		for _, r := range reports {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.2fs\t%.2fs\t%.1f\t%.1f\t%.1f\t%.1f\t%.3fs\t%.0f MiB\t%.0f B\t%.0f B\t%.0f (%.1fs) / %.0f (%.1fs)\t%d\n",
				r.Strategy, r.Behaviour, r.Records, r.APICallsPerCycle, r.LatencyP50, r.LatencyP99, r.EventsPerSecond, r.RedisTripsPerCycle,
				r.NATSBatchesPerCycle, r.NATSPublishPerCycle, r.CPUSecondsPerCycle, r.PeakRSSMiB, r.Store.BytesPerRecord, r.Store.BytesPerHistoryEntry,
				r.Backoffs["throttled"], r.BackoffSeconds["throttled"], r.Backoffs["transient"], r.BackoffSeconds["transient"], r.QuotaRefusals)
		}
		_ = tw.Flush()
		if len(reports) == 2 && reports[1].APICallsPerCycle > 0 && reports[0].Strategy != reports[1].Strategy {
			fmt.Fprintf(w, "\n%s makes %.1f× fewer API calls per steady-state cycle than %s.\n",
				reports[1].Strategy, reports[0].APICallsPerCycle/reports[1].APICallsPerCycle, reports[0].Strategy)
		}
	}
	if tp != nil {
		fmt.Fprintf(w, "throughput (median of %d rounds): %d transitions diffed, published (acked) and committed in %.2fs: %.0f transitions/s, %d Redis round trips\n",
			tp.Rounds, tp.Transitions, tp.Seconds, tp.PerSecond, tp.RedisRoundTrips)
		fmt.Fprintf(w, "raw JetStream async publish (600 B, msg id, acks awaited), one subject: %.0f messages/s; the pipeline runs at %.2f× that\n",
			tp.RawPerSecond, tp.Ratio)
		fmt.Fprintf(w, "raw JetStream async publish, a subject per message as events have: %.0f messages/s; the pipeline runs at %.2f× that\n",
			tp.RawSubjectsPerSecond, tp.RatioSubjects)
	}
}

// benchStrategy runs one capoller process with a strategy against a fresh
// emulator and measures its steady state.
func benchStrategy(ctx context.Context, o benchOptions, strategy string, behaviour castest.Behaviour, rdb *redis.Client, nc *nats.Conn, js jetstream.JetStream, stderr io.Writer) (benchReport, error) {
	rep := benchReport{Strategy: strategy, Records: o.records}
	keyID, secret := "LTAIbench"+randomHex(4), randomHex(12)
	sim, err := castest.New(castest.Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: o.instanceNum,
		RetentionCount: o.records * 2, Regions: []string{"cn-hangzhou"}, Behaviour: behaviour})
	if err != nil {
		return rep, err
	}
	defer sim.Close()
	if err := sim.Seed(castest.SeedOptions{Invocations: o.records, Active: o.active, ActiveFor: o.activeFor}); err != nil {
		return rep, err
	}
	if o.qps > 0 {
		perWindow := max(int(math.Ceil(o.qps/0.9*o.window.Seconds())), 1)
		if err := sim.SetQuota(perWindow, o.window); err != nil {
			return rep, err
		}
	}
	for _, f := range []castest.Fault{
		{Action: "DescribeInvocations", Kind: castest.FaultThrottle, Rate: o.throttle},
		{Action: "DescribeInvocations", Kind: castest.FaultUnavailable, Rate: o.errors / max(1-o.throttle, 0.01)},
	} {
		if f.Rate > 0 {
			if err := sim.InjectFault(f); err != nil {
				return rep, err
			}
		}
	}
	simURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		return rep, err
	}

	// Where this run's events go, and a subscriber timing their arrival.
	name := "CAPOLLER_BENCH_" + strings.ToUpper(randomHex(4))
	prefix := strings.ToLower(name)
	keyPrefix := prefix + ":"
	defer cleanupBench(rdb, js, name, keyPrefix)
	arrivals := make(chan arrival, 1<<16)
	sub, err := nc.Subscribe(prefix+".>", func(m *nats.Msg) {
		var ev publisher.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			select {
			case arrivals <- arrival{at: time.Now(), data: ev.Data}:
			default:
			}
		}
	})
	if err != nil {
		return rep, err
	}
	defer sub.Unsubscribe()

	metricsAddr, err := freeAddr()
	if err != nil {
		return rep, err
	}
	qps := o.qps
	if qps == 0 {
		qps = 1000 // no quota: as fast as it goes
	}
	exe, err := os.Executable()
	if err != nil {
		return rep, err
	}
	cmd := exec.CommandContext(ctx, exe, "run", "--endpoint", simURL, "--regions", "cn-hangzhou", "--sources", "ecs",
		"--strategy", strategy, "--interval", o.interval.String(), "--resync-every", "24h",
		"--qps", strconv.FormatFloat(qps, 'f', 2, 64), "--throttle-window", o.window.String(),
		"--redis-url", o.redisURL, "--key-prefix", keyPrefix, "--nats-url", nc.ConnectedUrl(), "--stream", name,
		"--subject-prefix", prefix, "--metrics-addr", metricsAddr, "--log-level", "warn")
	cmd.Env = benchRunEnv(os.Environ(), keyID, secret)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return rep, fmt.Errorf("start capoller run: %w", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	}
	defer stop()
	scrape := func() (promSample, error) { return scrapeMetrics(ctx, "http://"+metricsAddr+"/metrics") }

	// Baseline: the first complete cycle.
	if err := waitCycles(ctx, scrape, 1, fastPoll); err != nil {
		return rep, err
	}
	// Steady state: new invocations keep arriving, seeded ones finish.
	workCtx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); driveArrivals(workCtx, sim, o.arrivals) }()
	// Measure from the end of a cycle: the next one has not started.
	if err := waitCycles(ctx, scrape, 2, fastPoll); err != nil {
		stopWork()
		return rep, err
	}
	c0 := sim.Calls()["DescribeInvocations"] + sim.Calls()["DescribeInvocationResults"]
	drain(arrivals) // latency and event rate count the steady window only
	m0, err := scrape()
	if err != nil {
		stopWork()
		return rep, err
	}
	start := time.Now()
	// A scrape costs the daemon about 2.5ms of CPU: the measured cycles
	// are watched once an interval (at most every 5s), so that the CPU per
	// cycle is the daemon's own, within a scrape.
	err = waitCycles(ctx, scrape, m0.sum("capoller_cycles_total")+float64(o.cycles), min(max(o.interval, fastPoll), 5*time.Second))
	stopWork()
	wg.Wait()
	if err != nil {
		return rep, err
	}
	c1 := sim.Calls()["DescribeInvocations"] + sim.Calls()["DescribeInvocationResults"]
	m1, err := scrape()
	if err != nil {
		return rep, err
	}
	rep.Duration = time.Since(start).Seconds()
	cycles := m1.sum("capoller_cycles_total") - m0.sum("capoller_cycles_total")
	rep.Cycles = cycles
	rep.APICallsPerCycle = float64(c1-c0) / cycles
	rep.RedisTripsPerCycle = (m1.sum("capoller_redis_roundtrips_total") - m0.sum("capoller_redis_roundtrips_total")) / cycles
	rep.NATSBatchesPerCycle = (m1.sum("capoller_nats_publish_batches_total") - m0.sum("capoller_nats_publish_batches_total")) / cycles
	rep.NATSPublishPerCycle = (m1.sum("capoller_nats_publishes_total") - m0.sum("capoller_nats_publishes_total")) / cycles
	rep.Backoffs, rep.BackoffSeconds = map[string]float64{}, map[string]float64{}
	for _, class := range []string{"throttled", "transient"} {
		rep.Backoffs[class] = m1.sum("capoller_api_backoffs_total", "class", class)
		rep.BackoffSeconds[class] = m1.sum("capoller_api_backoff_seconds_total", "class", class)
	}
	rep.QuotaRefusals = sim.Throttled()["DescribeInvocations"]
	rep.CPUSecondsPerCycle = (m1.sum("process_cpu_seconds_total") - m0.sum("process_cpu_seconds_total")) / cycles
	if rep.Store, err = redisSizing(ctx, rdb, keyPrefix); err != nil {
		return rep, fmt.Errorf("store sizing: %w", err)
	}

	// Detection latency: emulator state change → delivery to our subscriber.
	truth := map[string]time.Time{}
	for _, e := range sim.Truth() {
		k := e.InvokeID + "/" + e.InstanceID + "/" + e.To
		if _, ok := truth[k]; !ok {
			truth[k] = e.Time
		}
	}
	var latencies []float64
	events := 0
	for _, a := range drain(arrivals) {
		events++
		if t, ok := truth[a.data.InvokeID+"/"+a.data.InstanceID+"/"+string(a.data.Status)]; ok {
			latencies = append(latencies, a.at.Sub(t).Seconds())
		}
	}
	rep.EventsPerSecond = float64(events) / rep.Duration
	rep.LatencySamples = len(latencies)
	rep.LatencyP50, rep.LatencyP99 = percentile(latencies, 0.50), percentile(latencies, 0.99)

	rep.PeakRSSMiB = peakRSSMiB(cmd.Process.Pid)
	stop()
	return rep, nil
}

// peakRSSMiB reads a live process's own peak resident set (VmHWM). The
// rusage of a waited-for child is no good here: Go starts children by
// clone(CLONE_VM), and Linux then counts the parent's peak — this bench,
// with its emulator — as the child's.
func peakRSSMiB(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err == nil {
				return kib / 1024
			}
		}
	}
	return 0
}

type arrival struct {
	at   time.Time
	data events.Data
}

func drain(ch chan arrival) []arrival {
	var out []arrival
	for {
		select {
		case a := <-ch:
			out = append(out, a)
		default:
			return out
		}
	}
}

func driveArrivals(ctx context.Context, sim *castest.Server, perSecond float64) {
	if perSecond <= 0 {
		return
	}
	var ids []string
	for _, inst := range sim.Instances() {
		if inst.Product == castest.ProductECS {
			ids = append(ids, inst.ID)
		}
	}
	ticker := time.NewTicker(time.Duration(float64(time.Second) / perSecond))
	defer ticker.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		_, _ = sim.Invoke("cn-hangzhou", []string{ids[n%len(ids)]}, fmt.Sprintf("echo %d; sleep 0.5; exit %d", n, n%4/3), 60)
	}
}

// fastPoll is how often waitCycles scrapes to catch the end of a cycle
// before the next begins.
const fastPoll = 20 * time.Millisecond

// waitCycles scrapes every poll until at least atLeast cycles succeeded.
func waitCycles(ctx context.Context, scrape func() (promSample, error), atLeast float64, poll time.Duration) error {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		if m, err := scrape(); err == nil && m.sum("capoller_cycles_total")-m.sum("capoller_cycles_failed_total") >= atLeast {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return errors.New("capoller did not complete its cycles in 30 minutes")
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(int(p*float64(len(s))), len(s)-1)]
}

func freeAddr() (string, error) {
	port, err := freePort()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), err
}

func cleanupBench(rdb *redis.Client, js jetstream.JetStream, stream, keyPrefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deleteRun(ctx, js, stream, rdb, keyPrefix)
}

// promSample is a scrape of /metrics, parsed by expfmt.
type promSample map[string]*dto.MetricFamily

func scrapeMetrics(ctx context.Context, url string) (promSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return families, nil
}

// sum adds a metric's samples whose labels include every name=value pair
// of match (a histogram counts its observations).
func (p promSample) sum(name string, match ...string) float64 {
	total := 0.0
	for _, m := range p[name].GetMetric() {
		if hasLabels(m, match) {
			switch {
			case m.Counter != nil:
				total += m.GetCounter().GetValue()
			case m.Gauge != nil:
				total += m.GetGauge().GetValue()
			case m.Histogram != nil:
				total += float64(m.GetHistogram().GetSampleCount())
			default:
				total += m.GetUntyped().GetValue()
			}
		}
	}
	return total
}

func hasLabels(m *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
			return l.GetName() == match[i] && l.GetValue() == match[i+1]
		}) {
			return false
		}
	}
	return true
}

// replayLister serves prepared snapshots, one per cycle: the throughput
// phase measures capoller's own pipeline, not the API.
type replayLister struct {
	snaps []diff.Snapshot
	next  int
}

func (r *replayLister) Snapshot(context.Context) (diff.Snapshot, error) {
	s := r.snaps[min(r.next, len(r.snaps)-1)]
	r.next++
	return s, nil
}

// throughputRounds is how many times the throughput phase measures the
// pipeline and each raw rate, alternating, to report their medians: one
// run on a shared 2-core machine varies by a third.
const throughputRounds = 5

// benchThroughput diffs, publishes (acked) and commits n changed
// invocations (2n transitions) in one cycle, against real Redis and NATS,
// with the history and the fencing of a replica's commits, and measures
// raw JetStream publishing beside it. Each measurement has a stream of
// its own and starts from a collected heap, so that none pays for the
// garbage of the one before. The ratios are the medians of each round's
// own: a round's three measurements run back to back, under the same
// load from the rest of the machine.
func benchThroughput(ctx context.Context, n int, rdb *redis.Client, js jetstream.JetStream) (throughputReport, error) {
	tp := throughputReport{Rounds: throughputRounds}
	var secs, raw, rawSubjects, ratio, ratioSubjects []float64
	for round := range throughputRounds {
		r, err := pipelineRound(ctx, n, rdb, js)
		if err != nil {
			return tp, err
		}
		tp.Transitions, tp.RedisRoundTrips = r.Transitions, r.RedisRoundTrips
		secs = append(secs, r.Seconds)
		one, err := rawPublishRate(ctx, js, r.Transitions, func(int) string { return "raw" })
		if err != nil {
			return tp, err
		}
		own, err := rawPublishRate(ctx, js, r.Transitions, func(i int) string {
			return fmt.Sprintf("ecs.cn-hangzhou.instance.success.t-raw%d-%012x.i-bench%06d", round, i/2, i%500)
		})
		if err != nil {
			return tp, err
		}
		raw, rawSubjects = append(raw, one), append(rawSubjects, own)
		rate := float64(r.Transitions) / r.Seconds
		ratio, ratioSubjects = append(ratio, rate/one), append(ratioSubjects, rate/own)
	}
	tp.Seconds = median(secs)
	tp.PerSecond = float64(tp.Transitions) / tp.Seconds
	tp.RawPerSecond, tp.RawSubjectsPerSecond = median(raw), median(rawSubjects)
	tp.Ratio, tp.RatioSubjects = median(ratio), median(ratioSubjects)
	return tp, nil
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// pipelineRound is one measurement of the pipeline, on a stream and key
// prefix of its own.
func pipelineRound(ctx context.Context, n int, rdb *redis.Client, js jetstream.JetStream) (throughputReport, error) {
	var tp throughputReport
	name := "CAPOLLER_BENCH_TP_" + strings.ToUpper(randomHex(4))
	keyPrefix := strings.ToLower(name) + ":"
	defer cleanupBench(rdb, js, name, keyPrefix)
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	snapshot := func(status diff.Status, at time.Time) diff.Snapshot {
		s := diff.Snapshot{Source: shard.Source, Region: shard.Region, ObservedAt: at, Records: make([]diff.Record, 0, 2*n)}
		for i := range n {
			inv := fmt.Sprintf("t-bench%012x", i)
			s.Records = append(s.Records,
				diff.Record{Key: diff.Key{InvokeID: inv}, CommandID: "c-bench", CommandName: "bench", Status: status},
				diff.Record{Key: diff.Key{InvokeID: inv, InstanceID: fmt.Sprintf("i-bench%06d", i%500)}, CommandID: "c-bench",
					CommandName: "bench", Status: status, Repeats: 1})
		}
		return s
	}
	now := time.Now()
	lister := &replayLister{snaps: []diff.Snapshot{snapshot(diff.StatusRunning, now), snapshot(diff.StatusSuccess, now.Add(time.Second))}}
	store, err := checkpoint.NewRedis(rdb, checkpoint.RedisOptions{KeyPrefix: keyPrefix})
	if err != nil {
		return tp, err
	}
	pub, err := publisher.New(js, publisher.Options{Stream: name, SubjectPrefix: strings.ToLower(name)})
	if err != nil {
		return tp, err
	}
	if err := pub.EnsureStream(ctx); err != nil {
		return tp, err
	}
	// Fenced, as a replica's commits are: each write checks the lease.
	lease, err := store.Acquire(ctx, shard, "bench", time.Hour, time.Now())
	if err != nil {
		return tp, err
	}
	store.Fence(shard, lease.Token)
	p, err := poller.New(lister, store, pollerPublisher{pub}, poller.Options{Shard: shard})
	if err != nil {
		return tp, err
	}
	if rep := p.RunOnce(ctx); rep.Err != nil { // the baseline: everything Running
		return tp, rep.Err
	}
	trips := store.RoundTrips()
	runtime.GC()          // see benchThroughput
	rep := p.RunOnce(ctx) // everything finished
	if rep.Err != nil {
		return tp, rep.Err
	}
	tp.Transitions, tp.Seconds = len(rep.Transitions), rep.Duration.Seconds()
	tp.RedisRoundTrips = store.RoundTrips() - trips
	return tp, nil
}

// rawPublishRate publishes n 600-byte messages with message ids, on the
// subjects subject(i) names, asynchronously to a stream of its own
// (configured as the pipeline's), awaits every ack, and returns the rate:
// what JetStream itself does on this machine, to hold the pipeline
// against.
func rawPublishRate(ctx context.Context, js jetstream.JetStream, n int, subject func(i int) string) (float64, error) {
	name := "CAPOLLER_BENCH_RAW_" + strings.ToUpper(randomHex(4))
	prefix := strings.ToLower(name)
	pub, err := publisher.New(js, publisher.Options{Stream: name, SubjectPrefix: prefix})
	if err != nil {
		return 0, err
	}
	if err := pub.EnsureStream(ctx); err != nil {
		return 0, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = js.DeleteStream(dctx, name)
	}()
	body := []byte(strings.Repeat("x", 600))
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = prefix + "." + subject(i)
	}
	runtime.GC() // see benchThroughput
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		f, err := js.PublishAsync(subjects[i], body, jetstream.WithMsgID(fmt.Sprintf("raw-%d-%d", start.UnixNano(), i)))
		if err != nil {
			return 0, err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// benchRunEnv is the environment of the bench's capoller run: the
// emulator's access key pair for the SDK's default chain, and no security
// token from the operator's shell (with one, the pair would be STS: run
// refuses the emulator's http:// endpoint, and the token is not the
// emulator's to see).
func benchRunEnv(environ []string, keyID, secret string) []string {
	return append(environ, "ALIBABA_CLOUD_ACCESS_KEY_ID="+keyID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET="+secret,
		"ALIBABA_CLOUD_SECURITY_TOKEN=", "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true")
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// StrategyReport is one strategy's measurements.
type StrategyReport struct {
	Strategy         string  `json:"strategy"`
	Behaviour        string  `json:"behaviour"`
	Records          int     `json:"records"`
	Cycles           float64 `json:"steadyCycles"`
	APICallsPerCycle float64 `json:"apiCallsPerCycle"`
	LatencyP50       float64 `json:"detectionLatencyP50Seconds"`
	LatencyP99       float64 `json:"detectionLatencyP99Seconds"`
	LatencySamples   int     `json:"latencySamples"`
	// Hints: the daemon took the emulator's pushes. Terminal* are the
	// detection latencies of terminal instance statuses alone (what a push
	// announces); APICallsPerMinute counts every call, look-ups included.
	Hints               bool               `json:"hints"`
	TerminalP50         float64            `json:"terminalDetectionP50Seconds"`
	TerminalP99         float64            `json:"terminalDetectionP99Seconds"`
	TerminalSamples     int                `json:"terminalSamples"`
	APICallsPerMinute   float64            `json:"apiCallsPerMinute"`
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
	Store              StoreSizing `json:"store"`
}

// benchStrategy runs one capoller process with a strategy against a fresh
// emulator and measures its steady state.
func benchStrategy(ctx context.Context, o Options, strategy string, behaviour castest.Behaviour, e *engines) (StrategyReport, error) {
	rep := StrategyReport{Strategy: strategy, Records: o.Records}
	em, err := newStrategyEmulator(o, behaviour)
	if err != nil {
		return rep, err
	}
	defer em.sim.Close()

	// Where this run's events go, and a subscriber timing their arrival.
	name, prefix := harness.RunName("BENCH")
	keyPrefix := prefix + ":"
	defer harness.Clean(harness.Leftovers{JetStream: e.js, Stream: name, Redis: e.rdb, KeyPrefix: keyPrefix})
	arrived, err := subscribe(e.nc, prefix)
	if err != nil {
		return rep, err
	}
	defer arrived.close()

	args, env := strategyArgs(o, strategy, em.url, e.nc.ConnectedUrl(), name, prefix), RunEnv(os.Environ(), em.keyID, em.secret)
	if e.collector != nil {
		env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+e.collector.URL())
	}
	if o.Hints {
		if args, env, err = withHints(em.sim, args, env); err != nil {
			return rep, err
		}
		rep.Hints = true
	}
	daemon, err := harness.StartReplica(ctx, harness.ReplicaOptions{Executable: o.Executable, Args: args, Env: env, Stderr: o.Progress})
	if err != nil {
		return rep, err
	}
	defer daemon.Stop()
	w, err := measureSteady(ctx, o, em.sim, daemon, arrived)
	if err != nil {
		return rep, err
	}
	rep.measured(w, em.sim)
	if rep.Store, err = redisSizing(ctx, e.rdb, keyPrefix); err != nil {
		return rep, fmt.Errorf("store sizing: %w", err)
	}
	// Detection latency: emulator state change → delivery to our subscriber.
	rep.latencies(firstChanges(em.sim.Truth()), arrived.take())
	rep.PeakRSSMiB = daemon.PeakRSSMiB()
	daemon.Stop()
	return rep, nil
}

// withHints has the daemon serve hints on a free port, and the emulator
// push each run's end there.
func withHints(sim *castest.Server, args, env []string) ([]string, []string, error) {
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, nil, err
	}
	token := harness.RandomHex(16)
	if err := sim.SetEventBridge(castest.EventBridge{URL: "http://" + addr + "/v1/hints/cloudassist", Token: token}); err != nil {
		return nil, nil, err
	}
	return append(args, "--hints-listen", addr), append(env, "CAPOLLER_HINTS_TOKEN="+token), nil
}

// strategyEmulator is the emulator of a strategy's run, serving one key
// pair.
type strategyEmulator struct {
	sim                *castest.Server
	url, keyID, secret string
}

// newStrategyEmulator seeds an emulator with o.Records invocations, sets
// its quota and faults, and starts it.
func newStrategyEmulator(o Options, behaviour castest.Behaviour) (*strategyEmulator, error) {
	em := &strategyEmulator{keyID: "LTAIbench" + harness.RandomHex(4), secret: harness.RandomHex(12)}
	sim, err := castest.New(castest.Options{AccessKeyID: em.keyID, AccessKeySecret: em.secret, Instances: o.Instances,
		RetentionCount: o.Records * 2, Regions: []string{"cn-hangzhou"}, Behaviour: behaviour})
	if err != nil {
		return nil, err
	}
	em.sim = sim
	if err := em.configure(o); err != nil {
		sim.Close()
		return nil, err
	}
	return em, nil
}

func (em *strategyEmulator) configure(o Options) error {
	if err := em.sim.Seed(castest.SeedOptions{Invocations: o.Records, Active: o.Active, ActiveFor: o.ActiveFor}); err != nil {
		return err
	}
	if o.QPS > 0 {
		perWindow := max(int(math.Ceil(o.QPS/0.9*o.Window.Seconds())), 1)
		if err := em.sim.SetQuota(perWindow, o.Window); err != nil {
			return err
		}
	}
	for _, f := range []castest.Fault{
		{Action: "DescribeInvocations", Kind: castest.FaultThrottle, Rate: o.Throttle},
		{Action: "DescribeInvocations", Kind: castest.FaultUnavailable, Rate: o.Errors / max(1-o.Throttle, 0.01)},
	} {
		if f.Rate > 0 {
			if err := em.sim.InjectFault(f); err != nil {
				return err
			}
		}
	}
	var err error
	em.url, err = em.sim.Start("127.0.0.1:0")
	return err
}

// strategyArgs are the measured daemon's arguments.
func strategyArgs(o Options, strategy, simURL, natsURL, stream, prefix string) []string {
	qps := o.QPS
	if qps == 0 {
		qps = 1000 // no quota: as fast as it goes
	}
	return []string{"run", "--endpoint", simURL, "--regions", "cn-hangzhou", "--sources", "ecs",
		"--strategy", strategy, "--interval", o.Interval.String(), "--resync-every", "24h",
		"--qps", strconv.FormatFloat(qps, 'f', 2, 64), "--throttle-window", o.Window.String(),
		"--redis-url", o.RedisURL, "--key-prefix", prefix + ":", "--nats-url", natsURL, "--stream", stream,
		"--subject-prefix", prefix, "--log-level", "warn"}
}

// RunEnv is the environment of the bench's capoller run: the emulator's
// access key pair for the SDK's default chain, and no security token from
// the operator's shell (with one, the pair would be STS: run refuses the
// emulator's http:// endpoint, and the token is not the emulator's to
// see).
func RunEnv(environ []string, keyID, secret string) []string {
	return append(environ, "ALIBABA_CLOUD_ACCESS_KEY_ID="+keyID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET="+secret,
		"ALIBABA_CLOUD_SECURITY_TOKEN=", "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true")
}

// window is a steady-state measurement: the daemon's metrics at its
// start and end, the API calls made in between.
type window struct {
	start, end harness.Metrics
	calls      int
	seconds    float64
}

// measureSteady waits for the baseline, then measures o.Cycles cycles
// while new invocations arrive.
func measureSteady(ctx context.Context, o Options, sim *castest.Server, daemon *harness.Replica, arrived *arrivals) (window, error) {
	var w window
	scrape := func() (harness.Metrics, error) { return daemon.Metrics(ctx) }
	// Baseline: the first complete cycle.
	if err := waitCycles(ctx, scrape, 1, fastPoll); err != nil {
		return w, err
	}
	// Steady state: new invocations keep arriving, seeded ones finish.
	workCtx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { driveArrivals(workCtx, sim, o.Arrivals) })
	defer func() { stopWork(); wg.Wait() }()
	// Measure from the end of a cycle: the next one has not started.
	if err := waitCycles(ctx, scrape, 2, fastPoll); err != nil {
		return w, err
	}
	c0 := listingCalls(sim)
	arrived.take() // latency and event rate count the steady window only
	var err error
	if w.start, err = scrape(); err != nil {
		return w, err
	}
	began := time.Now()
	// A scrape costs the daemon about 2.5ms of CPU: the measured cycles
	// are watched once an interval (at most every 5s), so that the CPU per
	// cycle is the daemon's own, within a scrape.
	err = waitCycles(ctx, scrape, w.start.Sum("capoller_cycles_total")+float64(o.Cycles), min(max(o.Interval, fastPoll), 5*time.Second))
	stopWork()
	wg.Wait()
	if err != nil {
		return w, err
	}
	w.calls = listingCalls(sim) - c0
	if w.end, err = scrape(); err != nil {
		return w, err
	}
	w.seconds = time.Since(began).Seconds()
	return w, nil
}

// listingCalls are the listing calls the emulator served.
func listingCalls(sim *castest.Server) int {
	calls := sim.Calls()
	return calls["DescribeInvocations"] + calls["DescribeInvocationResults"]
}

// measured fills in what the window's metrics say, per cycle.
func (r *StrategyReport) measured(w window, sim *castest.Server) {
	r.Duration = w.seconds
	cycles := w.end.Sum("capoller_cycles_total") - w.start.Sum("capoller_cycles_total")
	perCycle := func(name string) float64 { return (w.end.Sum(name) - w.start.Sum(name)) / cycles }
	r.Cycles = cycles
	r.APICallsPerCycle = float64(w.calls) / cycles
	r.RedisTripsPerCycle = perCycle("capoller_redis_roundtrips_total")
	r.NATSBatchesPerCycle = perCycle("capoller_nats_publish_batches_total")
	r.NATSPublishPerCycle = perCycle("capoller_nats_publishes_total")
	r.Backoffs, r.BackoffSeconds = map[string]float64{}, map[string]float64{}
	for _, class := range []string{"throttled", "transient"} {
		r.Backoffs[class] = w.end.Sum("capoller_api_backoffs_total", "class", class)
		r.BackoffSeconds[class] = w.end.Sum("capoller_api_backoff_seconds_total", "class", class)
	}
	r.QuotaRefusals = sim.Throttled()["DescribeInvocations"]
	r.CPUSecondsPerCycle = perCycle("process_cpu_seconds_total")
	r.APICallsPerMinute = float64(w.calls) / w.seconds * 60
}

// latencies fills in the detection latencies and the event rate of the
// events that arrived in the window.
func (r *StrategyReport) latencies(first map[string]time.Time, got []arrival) {
	var latencies []float64
	for _, a := range got {
		if t, ok := first[a.key()]; ok {
			latencies = append(latencies, a.at.Sub(t).Seconds())
		}
	}
	r.EventsPerSecond = float64(len(got)) / r.Duration
	r.LatencySamples = len(latencies)
	r.LatencyP50, r.LatencyP99 = harness.Percentile(latencies, 0.50), harness.Percentile(latencies, 0.99)
	var terminal []float64
	for _, a := range got {
		if t, ok := first[a.key()]; ok && a.data.InstanceID != "" && a.data.Status.Terminal() {
			terminal = append(terminal, a.at.Sub(t).Seconds())
		}
	}
	r.TerminalSamples = len(terminal)
	r.TerminalP50, r.TerminalP99 = harness.Percentile(terminal, 0.50), harness.Percentile(terminal, 0.99)
}

// driveArrivals invokes a short command on the ECS instances, in turn,
// perSecond times a second until ctx ends.
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
func waitCycles(ctx context.Context, scrape func() (harness.Metrics, error), atLeast float64, poll time.Duration) error {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		if m, err := scrape(); err == nil && m.Sum("capoller_cycles_total")-m.Sum("capoller_cycles_failed_total") >= atLeast {
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

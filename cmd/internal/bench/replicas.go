package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// ReplicaReport is what `capoller bench --replicas N` measures: a group of
// N `capoller run` processes sharing S shards, in steady state and while
// one of them is killed.
type ReplicaReport struct {
	Replicas        int     `json:"replicas"`
	Shards          int     `json:"shards"`
	IntervalSeconds float64 `json:"intervalSeconds"`
	LeaseTTLSeconds float64 `json:"leaseTtlSeconds"`
	SteadySeconds   float64 `json:"steadySeconds"`
	// APICallsPerMinute is each replica's API calls in the steady window.
	APICallsPerMinute map[string]float64 `json:"apiCallsPerMinute"`
	SteadyP50         float64            `json:"steadyLatencyP50Seconds"`
	SteadyP99         float64            `json:"steadyLatencyP99Seconds"`
	SteadySamples     int                `json:"steadySamples"`
	// Failover: the changes made from the kill until the shards had moved
	// and two intervals more.
	FailoverMoveSeconds float64            `json:"failoverMoveSeconds"`
	FailoverP99         float64            `json:"failoverLatencyP99Seconds"`
	FailoverSamples     int                `json:"failoverSamples"`
	PeakRSSMiB          map[string]float64 `json:"peakRssMiB"`
}

// group is the replica group of a run, and what it runs against.
type group struct {
	o        Options
	sim      *castest.Server
	simURL   string
	dir      string
	file     string   // the replicas' configuration
	env      []string // the variables it reads
	shards   []diff.Shard
	store    *checkpoint.Redis
	replicas []*harness.Replica
	// The windows whose changes the latencies are of.
	start, end, killed, failoverEnd time.Time
}

// benchReplicas runs the replica group against one emulator serving two
// accounts with shards/4 regions each, ECS and SWAS.
func benchReplicas(ctx context.Context, o Options, e *engines) (ReplicaReport, error) {
	rep := ReplicaReport{Replicas: o.Replicas, IntervalSeconds: o.Interval.Seconds(), LeaseTTLSeconds: o.LeaseTTL.Seconds(),
		APICallsPerMinute: map[string]float64{}, PeakRSSMiB: map[string]float64{}}
	g, err := newGroup(o)
	if err != nil {
		return rep, err
	}
	defer g.close()
	rep.Shards = len(g.shards)
	name, prefix := harness.RunName("BENCH_R")
	defer harness.Clean(harness.Leftovers{JetStream: e.js, Stream: name, Redis: e.rdb, KeyPrefix: prefix + ":"})
	arrived, err := subscribe(e.nc, prefix)
	if err != nil {
		return rep, err
	}
	defer arrived.close()
	if g.store, err = checkpoint.NewRedis(e.rdb, checkpoint.RedisOptions{KeyPrefix: prefix + ":"}); err != nil {
		return rep, err
	}
	defer g.stop()
	if err := g.startReplicas(ctx, e.nc.ConnectedUrl(), name, prefix); err != nil {
		return rep, err
	}
	fmt.Fprintf(o.Progress, "bench: %d replicas, %d shards: waiting for them to spread…\n", o.Replicas, len(g.shards))
	if err := g.spread(ctx, 2*time.Minute); err != nil {
		return rep, err
	}
	// Steady state: every shard gets a command about every 2 intervals.
	workCtx, stopWork := context.WithCancel(ctx)
	var work sync.WaitGroup
	work.Go(func() { driveGroup(workCtx, g.sim, o.Interval) })
	defer func() { stopWork(); work.Wait() }()
	g.steady(ctx, &rep)
	if err := g.failover(ctx, &rep); err != nil {
		return rep, err
	}
	stopWork()
	work.Wait()
	g.latencies(&rep, arrived.take())
	return rep, nil
}

// newGroup starts the emulator and writes the group's configuration.
func newGroup(o Options) (*group, error) {
	var regions []string
	for i := range max(o.Shards/4, 1) {
		regions = append(regions, fmt.Sprintf("cn-bench-%02d", i))
	}
	accounts := harness.NewAccounts("bench")
	sim, err := castest.New(accounts.Emulator(castest.Options{Regions: regions, Instances: 2}))
	if err != nil {
		return nil, err
	}
	g := &group{o: o, sim: sim, shards: accounts.Shards(regions)}
	if g.simURL, err = sim.Start("127.0.0.1:0"); err != nil {
		g.close()
		return nil, err
	}
	if g.dir, err = os.MkdirTemp("", "capoller-bench-replicas"); err != nil {
		g.close()
		return nil, err
	}
	if g.file, g.env, err = accounts.WriteConfig(g.dir, regions); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

func (g *group) close() {
	g.sim.Close()
	if g.dir != "" {
		_ = os.RemoveAll(g.dir)
	}
}

// startReplicas starts the group's o.Replicas processes, bench-1 to
// bench-N.
func (g *group) startReplicas(ctx context.Context, natsURL, stream, prefix string) error {
	for i := range g.o.Replicas {
		r, err := harness.StartReplica(ctx, harness.ReplicaOptions{Executable: g.o.Executable, ID: fmt.Sprintf("bench-%d", i+1),
			Args: []string{"run", "--config", g.file, "--endpoint", g.simURL, "--redis-url", g.o.RedisURL,
				"--key-prefix", prefix + ":", "--nats-url", natsURL, "--stream", stream, "--subject-prefix", prefix,
				"--interval", g.o.Interval.String(), "--lease-ttl", g.o.LeaseTTL.String(), "--initial", "emit", "--log-level", "warn"},
			Env: append(os.Environ(), g.env...), Stderr: g.o.Progress})
		if err != nil {
			return err
		}
		g.replicas = append(g.replicas, r)
	}
	return nil
}

// stop ends the replicas still running, as an operator would.
func (g *group) stop() {
	for _, r := range g.replicas {
		r.Stop()
	}
}

// ids are the running replicas' ids.
func (g *group) ids() []string {
	ids := make([]string, len(g.replicas))
	for i, r := range g.replicas {
		ids[i] = r.ID
	}
	return ids
}

// spread waits until every shard is leased by a running replica, and
// each running replica holds one.
func (g *group) spread(ctx context.Context, within time.Duration) error {
	ids := g.ids()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if leases, err := g.store.Leases(ctx, g.shards); err == nil {
			loads := map[int]int{}
			n := 0
			for _, l := range leases {
				if i, ok := harness.ReplicaIndex(ids, l.Owner); ok && l.Live(time.Now()) {
					loads[i]++
					n++
				}
			}
			if n == len(g.shards) && len(loads) == len(ids) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("the shards did not spread over %d replicas within %v", len(ids), within)
}

// driveGroup invokes a command in every account and region, on ECS and
// SWAS in turn, each region about every interval, until ctx ends.
func driveGroup(ctx context.Context, sim *castest.Server, interval time.Duration) {
	var work sync.WaitGroup
	for _, acct := range []string{castest.DefaultAccount, "staging"} {
		h := sim.Account(acct)
		for region, ids := range h.Fleet() {
			work.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Duration((0.5 + rand.Float64()) * float64(interval))): // each of the region's two shards about every other interval, at random phases
					}
					script := fmt.Sprintf("echo %d; sleep 0.5; exit %d", n, n%4/3)
					if n%2 == 0 {
						_, _ = h.Invoke(region, ids[castest.ProductECS][:1], script, 60)
					} else {
						_, _ = h.InvokeSWAS(region, ids[castest.ProductSWAS][:1], script, 60)
					}
				}
			})
		}
	}
	work.Wait()
}

// apiCalls is each replica's API calls so far.
func (g *group) apiCalls(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	for _, r := range g.replicas {
		if m, err := r.Metrics(ctx); err == nil {
			out[r.ID] = m.Sum("capoller_api_calls_total")
		}
	}
	return out
}

// steady measures each replica's API calls over o.Steady, once the first
// cycles' full listings are over.
func (g *group) steady(ctx context.Context, rep *ReplicaReport) {
	time.Sleep(2 * g.o.Interval) // the first cycles' full listings are not steady state
	c0 := g.apiCalls(ctx)
	g.start = time.Now()
	time.Sleep(g.o.Steady)
	c1 := g.apiCalls(ctx)
	g.end = time.Now()
	rep.SteadySeconds = g.end.Sub(g.start).Seconds()
	for id, n := range c1 {
		rep.APICallsPerMinute[id] = (n - c0[id]) / g.end.Sub(g.start).Minutes()
	}
	// The changes of the steady window's last interval are announced by
	// their shards' next cycles: those must run before the kill, or the
	// steady latencies would measure the failover. The changes made
	// meanwhile count in neither window.
	time.Sleep(2 * g.o.Interval)
}

// failover kills one replica and measures how long its shards took to
// move; the group keeps going.
func (g *group) failover(ctx context.Context, rep *ReplicaReport) error {
	victim := g.replicas[len(g.replicas)-1]
	rep.PeakRSSMiB[victim.ID] = victim.PeakRSSMiB()
	g.killed = time.Now()
	if err := victim.Kill(); err != nil {
		return err
	}
	g.replicas = g.replicas[:len(g.replicas)-1]
	if err := g.spread(ctx, 3*g.o.LeaseTTL+time.Minute); err != nil {
		return err
	}
	rep.FailoverMoveSeconds = time.Since(g.killed).Seconds()
	time.Sleep(time.Until(g.killed.Add(g.o.LeaseTTL + 4*g.o.Interval))) // the shards' new owners catch up
	g.failoverEnd = g.killed.Add(time.Duration(rep.FailoverMoveSeconds*float64(time.Second)) + 2*g.o.Interval)
	for _, r := range g.replicas {
		rep.PeakRSSMiB[r.ID] = r.PeakRSSMiB()
	}
	return nil
}

// latencies fills in the detection latencies of the changes made in the
// steady window and in the failover's.
func (g *group) latencies(rep *ReplicaReport, got []arrival) {
	first := firstChanges(g.sim.Truth())
	var steady, failover []float64
	for _, a := range got {
		t, ok := first[a.key()]
		if !ok {
			continue
		}
		lat := a.at.Sub(t).Seconds()
		switch {
		case !t.Before(g.start) && t.Before(g.end):
			steady = append(steady, lat)
		case !t.Before(g.killed) && t.Before(g.failoverEnd):
			failover = append(failover, lat)
		}
	}
	rep.SteadySamples, rep.FailoverSamples = len(steady), len(failover)
	rep.SteadyP50, rep.SteadyP99 = harness.Percentile(steady, 0.5), harness.Percentile(steady, 0.99)
	rep.FailoverP99 = harness.Percentile(failover, 0.99)
}

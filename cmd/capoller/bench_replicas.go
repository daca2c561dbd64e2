package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/publisher"
)

// replicaBenchReport is what `capoller bench --replicas N` measures: a
// group of N `capoller run` processes sharing S shards, in steady state
// and while one of them is killed.
type replicaBenchReport struct {
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

// benchReplicas runs the replica group against one emulator serving two
// accounts with shards/4 regions each, ECS and SWAS.
func benchReplicas(ctx context.Context, o benchOptions, rdb *redis.Client, nc *nats.Conn, stderr io.Writer) (replicaBenchReport, error) {
	rep := replicaBenchReport{Replicas: o.replicas, IntervalSeconds: o.interval.Seconds(), LeaseTTLSeconds: o.leaseTTL.Seconds(),
		APICallsPerMinute: map[string]float64{}, PeakRSSMiB: map[string]float64{}}
	var regions []string
	for i := range max(o.shards/4, 1) {
		regions = append(regions, fmt.Sprintf("cn-bench-%02d", i))
	}
	keys := map[string][2]string{"prod": {"LTAIbenchprod" + randomHex(3), randomHex(12)}, "staging": {"LTAIbenchstg" + randomHex(3), randomHex(12)}}
	sim, err := castest.New(castest.Options{AccessKeyID: keys["prod"][0], AccessKeySecret: keys["prod"][1], Regions: regions, Instances: 2,
		Accounts: []castest.Account{{Name: "staging", AccessKeyID: keys["staging"][0], AccessKeySecret: keys["staging"][1]}}})
	if err != nil {
		return rep, err
	}
	defer sim.Close()
	simURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		return rep, err
	}
	dir, err := os.MkdirTemp("", "capoller-bench-replicas")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	yaml := "accounts:\n"
	env := []string{"ALIBABA_CLOUD_ECS_METADATA_DISABLED=true"}
	var shards []diff.Shard
	for _, a := range []string{"prod", "staging"} {
		v := strings.ToUpper(a)
		yaml += fmt.Sprintf("  - name: %s\n    credentials: {type: access_key, source: env, access_key_id_env: BENCH_%s_AK, access_key_secret_env: BENCH_%s_SK}\n    regions: [%s]\n    sources: [ecs, swas]\n",
			a, v, v, strings.Join(regions, ", "))
		env = append(env, "BENCH_"+v+"_AK="+keys[a][0], "BENCH_"+v+"_SK="+keys[a][1])
		for _, r := range regions {
			shards = append(shards, diff.Shard{Account: a, Source: diff.SourceECS, Region: r}, diff.Shard{Account: a, Source: diff.SourceSWAS, Region: r})
		}
	}
	rep.Shards = len(shards)
	file := filepath.Join(dir, "capoller.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		return rep, err
	}

	name := "CAPOLLER_BENCH_R_" + strings.ToUpper(randomHex(4))
	prefix := strings.ToLower(name)
	js, err := jsOf(nc)
	if err != nil {
		return rep, err
	}
	defer cleanupBench(rdb, js, name, prefix+":")
	var mu sync.Mutex
	var arrivals []arrival
	sub, err := nc.Subscribe(prefix+".>", func(m *nats.Msg) {
		var ev publisher.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			mu.Lock()
			arrivals = append(arrivals, arrival{at: time.Now(), data: ev.Data})
			mu.Unlock()
		}
	})
	if err != nil {
		return rep, err
	}
	defer sub.Unsubscribe()
	store, err := checkpoint.NewRedis(rdb, checkpoint.RedisOptions{KeyPrefix: prefix + ":"})
	if err != nil {
		return rep, err
	}

	exe, err := os.Executable()
	if err != nil {
		return rep, err
	}
	type proc struct {
		id, metrics string
		cmd         *exec.Cmd
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			_ = p.cmd.Wait()
		}
	}()
	for i := range o.replicas {
		addr, err := freeAddr()
		if err != nil {
			return rep, err
		}
		p := &proc{id: fmt.Sprintf("bench-%d", i+1), metrics: addr}
		p.cmd = exec.CommandContext(ctx, exe, "run", "--config", file, "--endpoint", simURL, "--redis-url", o.redisURL,
			"--key-prefix", prefix+":", "--nats-url", nc.ConnectedUrl(), "--stream", name, "--subject-prefix", prefix,
			"--interval", o.interval.String(), "--lease-ttl", o.leaseTTL.String(), "--initial", "emit",
			"--replica-id", p.id, "--metrics-addr", addr, "--log-level", "warn")
		p.cmd.Env = append(os.Environ(), env...)
		p.cmd.Stderr = stderr
		if err := p.cmd.Start(); err != nil {
			return rep, fmt.Errorf("start replica %s: %w", p.id, err)
		}
		procs = append(procs, p)
	}
	spread := func(live map[string]bool, within time.Duration) error {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			leases, err := store.Leases(ctx, shards)
			if err == nil {
				loads := map[string]int{}
				for _, l := range leases {
					if name := replicaName(l.Owner); l.Live(time.Now()) && live[name] {
						loads[name]++
					}
				}
				n := 0
				for _, c := range loads {
					n += c
				}
				if n == len(shards) && len(loads) == len(live) {
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return fmt.Errorf("the shards did not spread over %d replicas within %v", len(live), within)
	}
	live := map[string]bool{}
	for _, p := range procs {
		live[p.id] = true
	}
	fmt.Fprintf(stderr, "bench: %d replicas, %d shards: waiting for them to spread…\n", o.replicas, len(shards))
	if err := spread(live, 2*time.Minute); err != nil {
		return rep, err
	}

	// Steady state: every shard gets a command about every 2 intervals.
	workCtx, stopWork := context.WithCancel(ctx)
	var work sync.WaitGroup
	for _, acct := range []string{castest.DefaultAccount, "staging"} {
		h := sim.Account(acct)
		for region, ids := range h.Fleet() {
			work.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-workCtx.Done():
						return
					case <-time.After(time.Duration((0.5 + rand.Float64()) * float64(o.interval))): // each of the region's two shards about every other interval, at random phases
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
	defer func() { stopWork(); work.Wait() }()
	calls := func() map[string]float64 {
		out := map[string]float64{}
		for _, p := range procs {
			if m, err := scrapeMetrics(ctx, "http://"+p.metrics+"/metrics"); err == nil {
				out[p.id] = m.sum("capoller_api_calls_total")
			}
		}
		return out
	}
	warm := time.Now().Add(2 * o.interval)
	time.Sleep(time.Until(warm)) // the first cycles' full listings are not steady state
	c0, start := calls(), time.Now()
	time.Sleep(o.steady)
	c1, end := calls(), time.Now()
	rep.SteadySeconds = end.Sub(start).Seconds()
	for id, n := range c1 {
		rep.APICallsPerMinute[id] = (n - c0[id]) / end.Sub(start).Minutes()
	}

	// The changes of the steady window's last interval are announced by
	// their shards' next cycles: those must run before the kill, or the
	// steady latencies would measure the failover. The changes made
	// meanwhile count in neither window.
	time.Sleep(2 * o.interval)

	// Failover: kill one replica, and keep going.
	victim := procs[len(procs)-1]
	rep.PeakRSSMiB[victim.id] = peakRSSMiB(victim.cmd.Process.Pid)
	killed := time.Now()
	if err := victim.cmd.Process.Kill(); err != nil {
		return rep, err
	}
	_ = victim.cmd.Wait()
	procs = procs[:len(procs)-1]
	delete(live, victim.id)
	if err := spread(live, 3*o.leaseTTL+time.Minute); err != nil {
		return rep, err
	}
	rep.FailoverMoveSeconds = time.Since(killed).Seconds()
	time.Sleep(time.Until(killed.Add(o.leaseTTL + 4*o.interval))) // the shards' new owners catch up
	failoverEnd := killed.Add(time.Duration(rep.FailoverMoveSeconds*float64(time.Second)) + 2*o.interval)
	for _, p := range procs {
		rep.PeakRSSMiB[p.id] = peakRSSMiB(p.cmd.Process.Pid)
	}
	stopWork()
	work.Wait()

	first := map[string]time.Time{}
	for _, e := range sim.Truth() {
		k := e.InvokeID + "/" + e.InstanceID + "/" + e.To
		if _, ok := first[k]; !ok {
			first[k] = e.Time
		}
	}
	var steady, failover []float64
	mu.Lock()
	for _, a := range arrivals {
		t, ok := first[a.data.InvokeID+"/"+a.data.InstanceID+"/"+string(a.data.Status)]
		if !ok {
			continue
		}
		lat := a.at.Sub(t).Seconds()
		switch {
		case !t.Before(start) && t.Before(end):
			steady = append(steady, lat)
		case !t.Before(killed) && t.Before(failoverEnd):
			failover = append(failover, lat)
		}
	}
	mu.Unlock()
	rep.SteadySamples, rep.FailoverSamples = len(steady), len(failover)
	rep.SteadyP50, rep.SteadyP99 = percentile(steady, 0.5), percentile(steady, 0.99)
	rep.FailoverP99 = percentile(failover, 0.99)
	return rep, nil
}

func printReplicaBench(w io.Writer, r replicaBenchReport) {
	fmt.Fprintf(w, "replicas: %d replicas, %d shards, interval %v, lease TTL %v\n", r.Replicas, r.Shards,
		time.Duration(r.IntervalSeconds*float64(time.Second)), time.Duration(r.LeaseTTLSeconds*float64(time.Second)))
	for id, n := range r.APICallsPerMinute {
		fmt.Fprintf(w, "  %s: %.0f API calls/min in steady state\n", id, n)
	}
	fmt.Fprintf(w, "  detection latency, steady: p50 %.2fs, p99 %.2fs (%d changes)\n", r.SteadyP50, r.SteadyP99, r.SteadySamples)
	fmt.Fprintf(w, "  a replica killed: its shards moved in %.1fs; detection latency p99 %.2fs (%d changes)\n", r.FailoverMoveSeconds, r.FailoverP99, r.FailoverSamples)
	for id, m := range r.PeakRSSMiB {
		fmt.Fprintf(w, "  %s: peak RSS %.0f MiB\n", id, m)
	}
}

func jsOf(nc *nats.Conn) (jetstream.JetStream, error) { return jetstream.New(nc) }

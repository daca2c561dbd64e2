package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
)

// replicaProc is one `capoller run` child process, and its log.
type replicaProc struct {
	*harness.Replica
	logs *syncBuffer
}

// code is the process's exit code, once it exited (-1 before, or when a
// signal ended it).
func (p *replicaProc) code() int { return p.ExitState().ExitCode() }

// replicaGroup is the setup a test's replicas share: the emulator, the
// engines and the configuration.
type replicaGroup struct {
	t      *testing.T
	sim    *castest.Server
	args   []string
	env    []string
	store  *checkpoint.Redis
	shards []diff.Shard
	js     jetstream.JetStream
	stream string
	ttl    time.Duration

	mu    sync.Mutex
	procs []*replicaProc
}

const replicaTTL = 3 * time.Second

// newReplicaGroup sets up two accounts (two key pairs) in three regions,
// ECS and SWAS each: 12 shards. natsURL and redisURL name the engines;
// rdb reaches the same Redis, for the test to read leases.
func newReplicaGroup(t *testing.T, natsURL, redisURL string, rdb redis.UniversalClient, prefix string, streamReplicas int) *replicaGroup {
	t.Helper()
	regions := []string{"cn-hangzhou", "cn-shanghai", "cn-beijing"}
	sim, simURL := testenv.Emulator(t, castest.Options{AccessKeyID: "LTAIprod", AccessKeySecret: "prod-secret", Regions: regions, Instances: 2,
		Accounts: []castest.Account{{Name: "staging", AccessKeyID: "LTAIstaging", AccessKeySecret: "staging-secret"}}})
	file := filepath.Join(t.TempDir(), "capoller.yaml")
	yaml := ""
	for _, a := range []string{"prod", "staging"} {
		env := strings.ToUpper(a)
		yaml += fmt.Sprintf("  - name: %s\n    credentials: {type: access_key, source: env, access_key_id_env: %s_AK, access_key_secret_env: %s_SK}\n    regions: [%s]\n    sources: [ecs, swas]\n",
			a, env, env, strings.Join(regions, ", "))
	}
	if err := os.WriteFile(file, []byte("accounts:\n"+yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	stream := testenv.Name("CAPOLLER_REPLICAS")
	_, js := testenv.NATS(t, natsURL, stream)
	store, err := checkpoint.NewRedis(rdb, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	g := &replicaGroup{t: t, sim: sim, store: store, js: js, stream: stream, ttl: replicaTTL,
		args: []string{"run", "--config", file, "--endpoint", simURL, "--redis-url", redisURL, "--key-prefix", prefix,
			"--nats-url", natsURL, "--stream", stream, "--subject-prefix", strings.ToLower(stream),
			"--interval", "500ms", "--lease-ttl", replicaTTL.String(), "--initial", "emit", "--resync-every", "5s",
			"--stream-replicas", fmt.Sprint(streamReplicas), "--log-level", "info"},
		env: append(os.Environ(), beMainEnv+"=1", "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true",
			"PROD_AK=LTAIprod", "PROD_SK=prod-secret", "STAGING_AK=LTAIstaging", "STAGING_SK=staging-secret")}
	for _, a := range []string{"prod", "staging"} {
		for _, r := range regions {
			for _, src := range []diff.Source{diff.SourceECS, diff.SourceSWAS} {
				g.shards = append(g.shards, diff.Shard{Account: a, Source: src, Region: r})
			}
		}
	}
	t.Cleanup(func() { g.stopAll() })
	return g
}

// start runs a replica; extraEnv arms test hooks.
func (g *replicaGroup) start(id string, extraEnv ...string) *replicaProc {
	g.t.Helper()
	return g.startWith(id, g.args, extraEnv...)
}

// startWith runs a replica with args (run's, without --replica-id and
// --metrics-addr, which it adds).
func (g *replicaGroup) startWith(id string, args []string, extraEnv ...string) *replicaProc {
	g.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		g.t.Fatal(err)
	}
	p := &replicaProc{logs: &syncBuffer{}}
	p.Replica, err = harness.StartReplica(context.Background(), harness.ReplicaOptions{Executable: exe, ID: id, Args: args,
		Env: append(slices.Clone(g.env), extraEnv...), Stderr: p.logs})
	if err != nil {
		g.t.Fatal(err)
	}
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	g.t.Cleanup(func() {
		if g.t.Failed() {
			g.t.Logf("logs of %s:\n%s", id, p.logs.String())
		}
	})
	return p
}

func (g *replicaGroup) stopAll() {
	g.mu.Lock()
	procs := make([]*harness.Replica, len(g.procs))
	for i, p := range g.procs {
		procs[i] = p.Replica
	}
	g.mu.Unlock()
	harness.StopReplicas(20*time.Second, procs...)
}

// owners returns each live lease's owner, by shard.
func (g *replicaGroup) owners() map[diff.Shard]string {
	leases, err := g.store.Leases(g.t.Context(), g.shards)
	if err != nil {
		g.t.Logf("read the leases: %v", err)
		return nil
	}
	out := map[diff.Shard]string{}
	for _, l := range leases {
		if l.Live(time.Now()) {
			out[l.Shard] = poller.ReplicaName(l.Owner)
		}
	}
	return out
}

// waitSpread waits until every shard is leased, by the replicas named
// only, each holding floor or ceil of its share, and returns when.
func (g *replicaGroup) waitSpread(within time.Duration, ids ...string) time.Time {
	g.t.Helper()
	var loads map[string]int
	testenv.WaitFor(g.t, within, fmt.Sprintf("the shards to spread over %v", ids), func() error {
		owners := g.owners()
		loads = map[string]int{}
		for _, o := range owners {
			loads[o]++
		}
		if len(owners) != len(g.shards) {
			return fmt.Errorf("%d of %d shards leased: %v", len(owners), len(g.shards), loads)
		}
		for o, n := range loads {
			if !slices.Contains(ids, o) || n < len(g.shards)/len(ids) || n > (len(g.shards)+len(ids)-1)/len(ids) {
				return fmt.Errorf("loads %v", loads)
			}
		}
		return nil
	})
	g.t.Logf("spread over %v: %v", ids, loads)
	return time.Now()
}

// drive creates work in both accounts, every region and both products
// until ctx ends: short commands that succeed or fail.
func (g *replicaGroup) drive(ctx context.Context) {
	var wg sync.WaitGroup
	for _, name := range g.sim.Accounts() {
		acct := g.sim.Account(name)
		for region, products := range acct.Fleet() {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-ctx.Done():
						return
					case <-time.After(250 * time.Millisecond): // pacing arrivals, not waiting for a result
					}
					script := fmt.Sprintf("echo %d; sleep 0.%d; exit %d", i, 2+i%5, i%3)
					if i%2 == 0 {
						_, _ = acct.Invoke(region, products[castest.ProductECS], script, 5)
					} else {
						_, _ = acct.InvokeSWAS(region, products[castest.ProductSWAS][i%len(products[castest.ProductSWAS]):][:1], script, 5)
					}
				}
			})
		}
	}
	wg.Wait()
}

// metric sums a metric of a replica.
func (p *replicaProc) metric(t *testing.T, name string) float64 {
	m, err := p.Metrics(t.Context())
	if err != nil {
		return -1
	}
	return m.Sum(name)
}

// waitCaughtUp waits until the last event of every record the emulator
// knows announces the record's last status, and returns the truth.
func (g *replicaGroup) waitCaughtUp(within time.Duration) map[diff.Key][]castest.TruthEntry {
	g.t.Helper()
	var truth map[diff.Key][]castest.TruthEntry
	testenv.WaitFor(g.t, within, "every final status to be announced", func() error {
		truth = testenv.TruthByRecord(g.sim.Truth())
		final := map[diff.Key]string{}
		for _, e := range testenv.StreamEvents(g.t, g.js, g.stream) {
			final[testenv.RecordKey(e.Event.Data)] = string(e.Event.Data.Status)
		}
		behind := 0
		for k, entries := range truth {
			last := entries[len(entries)-1].To
			if !diff.Status(last).Terminal() || final[k] != last {
				behind++
			}
		}
		if behind > 0 {
			return fmt.Errorf("%d of %d records not final or not announced", behind, len(truth))
		}
		return nil
	})
	return truth
}

// TestReplicasShareShardsEndToEnd is the scale-out promise against real
// Redis and NATS: three replicas spread 12 shards (two accounts, three
// regions, ECS and SWAS); one is killed with SIGKILL and its shards move
// within the lease TTL; a fourth joins and the shards rebalance; a fifth
// stops itself between the acks and the commit of a batch, stays stopped
// past its lease, and once resumed its commit is refused by fencing. The
// stream then holds every record's transitions in order, each event id
// once, and every final status.
func TestReplicasShareShardsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts replicas as processes")
	}
	redisURL := testenv.RedisURL(t)
	rdb, prefix := testenv.RedisAt(t, redisURL)
	g := newReplicaGroup(t, testenv.NATSURL(t), redisURL, rdb, prefix, 1)
	runReplicaScenario(t, g, nil)
}

// runReplicaScenario runs the scenario; midRun, if set, is called once the
// kill has been survived (to take down an engine's node).
func runReplicaScenario(t *testing.T, g *replicaGroup, midRun func()) {
	ctx, stopWork := context.WithCancel(t.Context())
	defer stopWork()
	var work sync.WaitGroup
	work.Go(func() { g.drive(ctx) })

	r1, r2, r3 := g.start("r1"), g.start("r2"), g.start("r3")
	g.waitSpread(30*time.Second, "r1", "r2", "r3")

	// SIGKILL: r2's shards move to r1 and r3 within the lease TTL (plus
	// a tick of the replica that takes them, and scheduling).
	held := 0
	for _, o := range g.owners() {
		if o == "r2" {
			held++
		}
	}
	killed := time.Now()
	if err := r2.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	moved := g.waitSpread(3*g.ttl, "r1", "r3")
	t.Logf("SIGKILL: %d shards moved in %v (lease TTL %v)", held, moved.Sub(killed).Round(time.Millisecond), g.ttl)
	if d := moved.Sub(killed); d > g.ttl+g.ttl/5+2*time.Second {
		t.Errorf("the killed replica's shards moved after %v; the lease TTL is %v", d, g.ttl)
	}
	if midRun != nil {
		midRun()
	}

	// A fourth replica joins: the shards rebalance, 4 each.
	g.start("r4")
	g.waitSpread(30*time.Second, "r1", "r3", "r4")

	// A fifth stops itself right after JetStream acknowledged its first
	// batch, before the commit; the others take its shards once its
	// leases expire; resumed, its commit is refused.
	r5 := g.start("r5", harness.StopAtEnv+"="+"published")
	testenv.WaitFor(t, 60*time.Second, "r5 to stop itself after a publish", func() error {
		if r5.Stopped() {
			return nil
		}
		return fmt.Errorf("running")
	})
	testenv.WaitFor(t, 3*g.ttl, "r5's shards to be taken over while it is stopped", func() error {
		owners := g.owners()
		for s, o := range owners {
			if o == "r5" {
				return fmt.Errorf("%s still leased by r5", s)
			}
		}
		if len(owners) != len(g.shards) {
			return fmt.Errorf("%d of %d shards leased", len(owners), len(g.shards))
		}
		return nil
	})
	if err := r5.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "r5's commit to be refused by fencing", func() error {
		if n := r5.metric(t, "capoller_fencing_refusals_total"); n < 1 {
			return fmt.Errorf("%v refusals", n)
		}
		return nil
	})
	g.waitSpread(30*time.Second, "r1", "r3", "r4", "r5")

	stopWork()
	work.Wait()
	truth := g.waitCaughtUp(60 * time.Second)
	g.checkStatus(t, "r1", "r3", "r4", "r5")
	g.stopAll()
	for _, p := range []*replicaProc{r1, r3} {
		if p.code() != 0 {
			t.Errorf("%s exited %d after SIGTERM; logs:\n%s", p.ID, p.code(), p.logs.String())
		}
	}
	evs := testenv.StreamEvents(t, g.js, g.stream)
	t.Logf("%d records, %d events", len(truth), len(evs))
	testenv.CheckAgainstTruth(t, truth, evs)
}

// TestReplicasOnClusteredEngines runs the same scenario on a 3-node NATS
// cluster with an R3 stream, one node of which (the stream's leader) is
// shut down mid-run, and on a 3-master Redis Cluster: nothing may be
// lost, repeated or reordered.
func TestReplicasOnClusteredEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("starts replicas as processes and two clusters")
	}
	nodes := testenv.NATSCluster(t, 3)
	rdb, prefix := testenv.RedisCluster(t)
	redisURL := "redis+cluster://" + strings.Join(rdb.Options().Addrs, ",")
	g := newReplicaGroup(t, nodes.URL(), redisURL, rdb, prefix, 3)
	runReplicaScenario(t, g, func() {
		leader := nodes.StreamLeader(g.stream)
		t.Logf("shutting down NATS node %d, the stream's leader", leader)
		nodes.Shutdown(leader)
	})
}

// checkStatus runs `capoller status` with the group's configuration: as
// JSON it names the live replicas and, for every shard, a live owner among
// them, a token and a recent success; as text, every shard.
func (g *replicaGroup) checkStatus(t *testing.T, replicas ...string) {
	t.Helper()
	var out, errs syncBuffer
	if code := cli(t.Context(), append([]string{"status", "--json"}, argsFor(g.args[1:], groupNATS, groupCheckpoint)...), &out, &errs); code != 0 {
		t.Fatalf("status --json exited %d: %s", code, errs.String())
	}
	var rep poller.GroupStatus
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	var ids []string
	for _, r := range rep.Replicas {
		ids = append(ids, poller.ReplicaName(r.ID))
	}
	if !slices.Equal(ids, replicas) {
		t.Errorf("status names replicas %v, want %v", ids, replicas)
	}
	if len(rep.Shards) != len(g.shards) {
		t.Fatalf("status lists %d shards, want %d", len(rep.Shards), len(g.shards))
	}
	for _, s := range rep.Shards {
		if !slices.Contains(replicas, poller.ReplicaName(s.Owner)) || s.Token == 0 || time.Since(s.LastSuccess) > time.Minute || s.LeaseAgeSeconds < 0 {
			t.Errorf("status of %s: %+v", s.Shard, s)
		}
	}
	out = syncBuffer{}
	if code := cli(t.Context(), append([]string{"status"}, argsFor(g.args[1:], groupNATS, groupCheckpoint)...), &out, &errs); code != 0 {
		t.Fatalf("status exited %d: %s", code, errs.String())
	}
	for _, s := range g.shards {
		if !strings.Contains(out.String(), s.String()) {
			t.Errorf("status text lacks %s:\n%s", s, out.String())
		}
	}
}

package main

import (
	"cmp"
	"context"
	"fmt"
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

	"github.com/redis/go-redis/v9"
)

// The Redis topologies `capoller chaos --redis` runs.
const (
	chaosRedisSingle   = "single"   // one redis-server, crashed and restarted
	chaosRedisCluster  = "cluster"  // a Redis Cluster, 3 masters with a replica each
	chaosRedisSentinel = "sentinel" // a master, 2 replicas, 3 sentinels
)

// The Redis failovers scheduled with --redis cluster or sentinel.
const (
	faultFailover         = "redis-failover"          // CLUSTER FAILOVER on a replica (with its master's agreement), or SENTINEL FAILOVER
	faultFailoverForce    = "redis-failover-force"    // CLUSTER FAILOVER FORCE: the replica takes over without its master's agreement
	faultFailoverTakeover = "redis-failover-takeover" // CLUSTER FAILOVER TAKEOVER: without the other masters' votes either
	faultMasterKill       = "redis-master-kill"       // SIGKILL a master; restarted later, it comes back as a replica
	// faultLagKill cuts a master's replicas off (SIGSTOP, and the master
	// drops their links) for a moment, then kills the master: the replica
	// promoted lacks every write the master acknowledged meanwhile, the
	// loss that asynchronous replication allows, made certain.
	faultLagKill = "redis-lag-kill"
)

// chaosRedisFaults are the Redis faults scheduled for a topology.
func chaosRedisFaults(topology string) []chaosWeighted {
	switch topology {
	case chaosRedisCluster:
		return []chaosWeighted{{faultFailover, 1}, {faultFailoverForce, 1}, {faultFailoverTakeover, 1}, {faultMasterKill, 1}, {faultLagKill, 2}}
	case chaosRedisSentinel:
		return []chaosWeighted{{faultFailover, 1}, {faultMasterKill, 2}, {faultLagKill, 2}}
	}
	return []chaosWeighted{{faultRedis, 1}}
}

// chaosRedisFault draws a Redis failover's target (a master's group in a
// cluster) and, for a kill, how long the master stays down: long enough,
// mostly, for the failover to happen first.
func chaosRedisFault(f *chaosFault, rng *rand.Rand) bool {
	switch f.Kind {
	case faultFailover, faultFailoverForce, faultFailoverTakeover:
		f.Replica = rng.IntN(3)
	case faultMasterKill:
		f.Replica = rng.IntN(3)
		f.For = 2*time.Second + time.Duration(rng.Float64()*float64(8*time.Second))
	case faultLagKill:
		// Cut off for less than the engines' failure detection, so that
		// the replica is still a candidate when the master dies.
		f.Replica = rng.IntN(3)
		f.For = 2*time.Second + time.Duration(rng.Float64()*float64(8*time.Second))
		f.Detail = (300*time.Millisecond + time.Duration(rng.Float64()*float64(600*time.Millisecond))).Round(time.Millisecond).String()
	default:
		return false
	}
	return true
}

// withRedisFailover makes sure a schedule against an embedded cluster or
// Sentinel fails a master over at least once (unless it has partitions
// only): if the seed drew none, a fault near the middle of the run
// becomes a master kill, or one is added (a short run would otherwise
// prove nothing of failovers now and then).
func withRedisFailover(o chaosOptions, faults []chaosFault, redisEmbedded bool) []chaosFault {
	if !redisEmbedded || o.checkpoint != "redis" || o.redisTopology == "" || o.redisTopology == chaosRedisSingle || o.partitions == "only" {
		return faults
	}
	for _, f := range faults {
		if isRedisFailover(f.Kind) {
			return faults
		}
	}
	kill := chaosFault{Kind: faultMasterKill, For: 5 * time.Second, ForText: "5s"}
	// A fault that is not a partition, nor within one (the harness skips
	// an engine's fault then), nearest the middle, becomes the kill.
	mid := -1
	for i, f := range faults {
		if isPartition(f.Kind) || duringPartition(o, faults, f.At) {
			continue
		}
		if mid < 0 || (f.At-o.duration/2).Abs() < (faults[mid].At-o.duration/2).Abs() {
			mid = i
		}
	}
	if mid >= 0 {
		kill.At, kill.AtText = faults[mid].At, faults[mid].AtText
		faults[mid] = kill
		return faults
	}
	// Else one is added: at the middle, once a partition is over, or
	// as the group has formed.
	starts := []time.Duration{max(o.duration/2, 2*o.leaseTTL)}
	for _, p := range faults {
		if isPartition(p.Kind) {
			starts = append(starts, p.At+p.For+o.leaseTTL+time.Millisecond)
		}
	}
	starts = append(starts, 2*o.leaseTTL)
	for _, at := range starts {
		if at < o.duration && !duringPartition(o, faults, at) {
			kill.At, kill.AtText = at, at.Round(time.Millisecond).String()
			faults = append(faults, kill)
			slices.SortStableFunc(faults, func(a, b chaosFault) int { return cmp.Compare(a.At, b.At) })
			return faults
		}
	}
	return faults
}

// duringPartition reports whether at falls within a scheduled partition
// or the lease TTL after it.
func duringPartition(o chaosOptions, faults []chaosFault, at time.Duration) bool {
	for _, p := range faults {
		if isPartition(p.Kind) && at >= p.At && at <= p.At+p.For+o.leaseTTL {
			return true
		}
	}
	return false
}

func isRedisFailover(kind string) bool {
	switch kind {
	case faultFailover, faultFailoverForce, faultFailoverTakeover, faultMasterKill, faultLagKill:
		return true
	}
	return false
}

// chaosRedisNode is one redis-server (or sentinel) of the harness, which
// it can kill and start again on the same port, configuration file and
// data: a cluster node keeps its nodes.conf, a server its append-only
// file (fsynced at every write) and the role a sentinel wrote into its
// configuration.
type chaosRedisNode struct {
	path, dir, conf string
	port            int
	sentinel        bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (n *chaosRedisNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

func (n *chaosRedisNode) start() error {
	args := []string{n.conf}
	if n.sentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command(n.path, args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server on %s: %w", n.addr(), err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: n.addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	return poll(20*time.Second, "redis-server on "+n.addr()+" answering", func() error {
		select {
		case <-done:
			return errStop{fmt.Errorf("redis-server on %s exited; see %s", n.addr(), filepath.Join(n.dir, "redis.log"))}
		default:
		}
		return c.Ping(context.Background()).Err()
	})
}

// signal sends sig to the process, if it runs.
func (n *chaosRedisNode) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// kill ends the process (SIGKILL) and waits until it is gone.
func (n *chaosRedisNode) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-done
	}
}

// errStop ends a poll at once.
type errStop struct{ error }

// poll calls cond every 50ms until it returns nil, and fails with its
// last error after within (or at once with an errStop).
func poll(within time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if stop, ok := err.(errStop); ok {
			return stop.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %w", what, within, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition of the engine
	}
}

// chaosRedisGroup is a Redis Cluster (nodes[i] and nodes[i+3] share the
// i-th third of the slots, one the master, the other its replica) or a
// master with two replicas and three sentinels.
type chaosRedisGroup struct {
	topology  string
	nodes     []*chaosRedisNode
	sentinels []*chaosRedisNode
	// probes are keys in each pair's slots (cluster), or one key
	// (sentinel), written to check that replicas acknowledge writes.
	probes []string
}

// The Sentinel master's name, and the failure detection the engines use:
// a master unanswered this long is failed over.
const (
	chaosMasterName   = "capoller"
	chaosNodeTimeout  = 2 * time.Second
	chaosDownAfter    = time.Second
	chaosHealthWithin = 90 * time.Second
)

func startChaosRedisGroup(topology, dir string) (*chaosRedis, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("--redis %s needs redis-server on PATH: %w", topology, err)
	}
	g := &chaosRedisGroup{topology: topology}
	servers, sentinels := 6, 0
	if topology == chaosRedisSentinel {
		servers, sentinels = 3, 3
	}
	var ports []int
	for range servers*2 + sentinels { // a cluster bus port per server
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	for i := range servers + sentinels {
		n := &chaosRedisNode{path: path, port: ports[i], dir: filepath.Join(dir, "redis", strconv.Itoa(i)), sentinel: i >= servers}
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, err
		}
		n.conf = filepath.Join(n.dir, "redis.conf")
		conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n", n.port, n.dir, filepath.Join(n.dir, "redis.log"))
		switch {
		case n.sentinel:
			conf += fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\nsentinel down-after-milliseconds %[1]s %[3]d\n"+
				"sentinel failover-timeout %[1]s 10000\nsentinel parallel-syncs %[1]s 2\n", chaosMasterName, ports[0], chaosDownAfter.Milliseconds())
			g.sentinels = append(g.sentinels, n)
		default:
			conf += "appendonly yes\nappendfsync always\nsave \"\"\nrepl-diskless-sync-delay 0\n"
			if topology == chaosRedisCluster {
				conf += fmt.Sprintf("cluster-enabled yes\ncluster-port %d\ncluster-config-file nodes.conf\ncluster-node-timeout %d\n",
					ports[servers+i], chaosNodeTimeout.Milliseconds())
			} else if i > 0 {
				conf += fmt.Sprintf("replicaof 127.0.0.1 %d\n", ports[0])
			}
			g.nodes = append(g.nodes, n)
		}
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			return nil, err
		}
	}
	r := &chaosRedis{path: path, dir: filepath.Join(dir, "redis"), group: g}
	for _, n := range append(append([]*chaosRedisNode{}, g.nodes...), g.sentinels...) {
		if err := n.start(); err != nil {
			g.close()
			return nil, err
		}
	}
	if topology == chaosRedisCluster {
		err = g.formCluster(ports[servers : 2*servers])
		var hosts []string
		for _, n := range g.nodes[:3] {
			hosts = append(hosts, n.addr())
		}
		r.url = "redis+cluster://" + strings.Join(hosts, ",")
	} else {
		g.probes = []string{"chaos_probe"}
		var hosts []string
		for _, n := range g.sentinels {
			hosts = append(hosts, n.addr())
		}
		r.url = "redis+sentinel://" + strings.Join(hosts, ",") + "/" + chaosMasterName
	}
	if err == nil {
		err = g.healthy(chaosHealthWithin)
	}
	if err != nil {
		g.close()
		return nil, err
	}
	return r, nil
}

// formCluster gives each of the first three nodes a third of the slots,
// joins every node, and makes node i+3 the replica of node i.
func (g *chaosRedisGroup) formCluster(busPorts []int) error {
	ctx := context.Background()
	clients := make([]*redis.Client, len(g.nodes))
	for i, n := range g.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.addr()})
		defer clients[i].Close()
	}
	const slots = 16384
	for i := range 3 {
		if err := clients[i].ClusterAddSlotsRange(ctx, i*slots/3, (i+1)*slots/3-1).Err(); err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTSRANGE on %s: %w", g.nodes[i].addr(), err)
		}
	}
	for i := 1; i < len(g.nodes); i++ {
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", g.nodes[i].port, busPorts[i]).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s: %w", g.nodes[i].addr(), err)
		}
	}
	for i := range 3 {
		id, err := clients[i].ClusterMyID(ctx).Result()
		if err != nil {
			return err
		}
		if err := poll(30*time.Second, g.nodes[i+3].addr()+" replicating "+g.nodes[i].addr(), func() error {
			return clients[i+3].Do(ctx, "CLUSTER", "REPLICATE", id).Err() // refused until it heard of the master
		}); err != nil {
			return err
		}
		for j := 0; ; j++ {
			key := fmt.Sprintf("chaos_probe:{%d}", j)
			slot, err := clients[i].ClusterKeySlot(ctx, key).Result()
			if err != nil {
				return err
			}
			if int(slot) >= i*slots/3 && int(slot) < (i+1)*slots/3 {
				g.probes = append(g.probes, key)
				break
			}
		}
	}
	return nil
}

// role is what INFO replication says of a node: its role and how many
// replicas it lists online.
func role(ctx context.Context, addr string) (string, int, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return "", 0, err
	}
	r, online := replicationInfo(info)
	return r, online, nil
}

// replicationInfo reads INFO replication: the role, and the replicas
// listed online.
func replicationInfo(info string) (role string, online int) {
	for line := range strings.SplitSeq(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch {
		case k == "role":
			role = v
		case strings.HasPrefix(k, "slave") && strings.Contains(v, "state=online"):
			online++
		}
	}
	return role, online
}

// master returns the current master of pair i (cluster), or the master
// the sentinels agree on.
func (g *chaosRedisGroup) master(ctx context.Context, pair int) (*chaosRedisNode, *chaosRedisNode, error) {
	if g.topology == chaosRedisCluster {
		a, b := g.nodes[pair], g.nodes[pair+3]
		ra, _, errA := role(ctx, a.addr())
		rb, _, errB := role(ctx, b.addr())
		switch {
		case errA == nil && errB == nil && ra == "master" && rb == "slave":
			return a, b, nil
		case errA == nil && errB == nil && rb == "master" && ra == "slave":
			return b, a, nil
		}
		return nil, nil, fmt.Errorf("pair %d: %s is %q (%v), %s is %q (%v)", pair, a.addr(), ra, errA, b.addr(), rb, errB)
	}
	var addr string
	for _, s := range g.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.addr(), MaxRetries: -1, DialTimeout: time.Second})
		got, err := sc.GetMasterAddrByName(ctx, chaosMasterName).Result()
		sc.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("sentinel %s: %w", s.addr(), err)
		}
		a := strings.Join(got, ":")
		if addr != "" && a != addr {
			return nil, nil, fmt.Errorf("the sentinels disagree on the master: %s, %s", addr, a)
		}
		addr = a
	}
	for _, n := range g.nodes {
		if n.addr() == addr {
			return n, nil, nil
		}
	}
	return nil, nil, fmt.Errorf("the sentinels name %s, not one of the servers", addr)
}

// healthy waits until every master has its replicas online, and they
// acknowledge its writes (a probe key written and WAITed for), and
// (cluster) the cluster is ok on every master, or (sentinel) the
// sentinels agree on the master.
func (g *chaosRedisGroup) healthy(within time.Duration) error {
	ctx := context.Background()
	pairs, want := 3, 1
	if g.topology == chaosRedisSentinel {
		pairs, want = 1, 2
	}
	for pair := range pairs {
		err := poll(within, fmt.Sprintf("Redis %s group %d healthy", g.topology, pair), func() error {
			m, _, err := g.master(ctx, pair)
			if err != nil {
				return err
			}
			r, online, err := role(ctx, m.addr())
			if err != nil {
				return err
			}
			if r != "master" || online != want {
				return fmt.Errorf("%s is %s with %d replicas online, want a master with %d", m.addr(), r, online, want)
			}
			c := redis.NewClient(&redis.Options{Addr: m.addr(), MaxRetries: -1, DialTimeout: time.Second})
			defer c.Close()
			if g.topology == chaosRedisCluster {
				info, err := c.ClusterInfo(ctx).Result()
				if err != nil {
					return err
				}
				if !strings.Contains(info, "cluster_state:ok") {
					return fmt.Errorf("%s: the cluster is not ok", m.addr())
				}
			}
			conn := c.Conn()
			defer conn.Close()
			if err := conn.Set(ctx, g.probes[pair], time.Now().String(), 0).Err(); err != nil {
				return err
			}
			acked, err := conn.Wait(ctx, want, 200*time.Millisecond).Result()
			if err == nil && acked < int64(want) {
				err = fmt.Errorf("%s: %d of %d replicas acknowledged a write", m.addr(), acked, want)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// failover forces a failover of pair (cluster: CLUSTER FAILOVER on its
// replica, with how "" or FORCE or TAKEOVER; sentinel: SENTINEL FAILOVER),
// and waits until the group is healthy again. It returns what it did.
func (g *chaosRedisGroup) failover(pair int, how string) (string, error) {
	ctx := context.Background()
	old, replica, err := g.master(ctx, pair)
	if err != nil {
		return "", err
	}
	if g.topology == chaosRedisCluster {
		c := redis.NewClient(&redis.Options{Addr: replica.addr(), MaxRetries: -1})
		defer c.Close()
		args := []any{"CLUSTER", "FAILOVER"}
		if how != "" {
			args = append(args, how)
		}
		if err := c.Do(ctx, args...).Err(); err != nil {
			return "", fmt.Errorf("CLUSTER FAILOVER %s on %s: %w", how, replica.addr(), err)
		}
		what := strings.TrimSpace("CLUSTER FAILOVER "+how) + fmt.Sprintf(" on %s, the replica of %s", replica.addr(), old.addr())
		return what, poll(chaosHealthWithin, what, func() error {
			m, _, err := g.master(ctx, pair)
			if err == nil && m != replica {
				err = fmt.Errorf("%s is still the master", m.addr())
			}
			if err == nil {
				err = g.healthy(time.Millisecond)
			}
			return err
		})
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: g.sentinels[0].addr(), MaxRetries: -1})
	defer sc.Close()
	if err := sc.Failover(ctx, chaosMasterName).Err(); err != nil {
		return "", fmt.Errorf("SENTINEL FAILOVER on %s: %w", g.sentinels[0].addr(), err)
	}
	what := "SENTINEL FAILOVER of " + old.addr()
	return what, poll(chaosHealthWithin, what, func() error {
		m, _, err := g.master(ctx, pair)
		if err == nil && m == old {
			err = fmt.Errorf("%s is still the master", m.addr())
		}
		if err == nil {
			err = g.healthy(time.Millisecond)
		}
		return err
	})
}

// killMaster kills pair's master (SIGKILL), starts it again after down,
// and waits until the group is healthy again (the node back as a
// replica, or as the master if it was back before a failover). It
// returns the master it killed.
func (g *chaosRedisGroup) killMaster(pair int, down time.Duration, killed func(string)) error {
	ctx := context.Background()
	m, _, err := g.master(ctx, pair)
	if err != nil {
		return err
	}
	m.kill()
	killed(m.addr())
	time.Sleep(down) // the outage
	if err := m.start(); err != nil {
		return err
	}
	return g.healthy(chaosHealthWithin)
}

// lagKill pauses the replicas of pair's master and has the master drop
// their links, so that they miss what it takes from then on; after lag
// it kills the master and resumes them, and one of them is promoted
// without the master's last writes. The master starts again after down,
// and the group is healthy again once it is back as a replica.
func (g *chaosRedisGroup) lagKill(pair int, lag, down time.Duration, cut func(master string)) error {
	ctx := context.Background()
	m, _, err := g.master(ctx, pair)
	if err != nil {
		return err
	}
	var replicas []*chaosRedisNode
	for i, n := range g.nodes {
		if n != m && (g.topology == chaosRedisSentinel || i%3 == pair) {
			replicas = append(replicas, n)
		}
	}
	for _, r := range replicas {
		r.signal(syscall.SIGSTOP)
	}
	c := redis.NewClient(&redis.Options{Addr: m.addr(), MaxRetries: -1})
	err = c.ClientKillByFilter(ctx, "TYPE", "replica").Err()
	c.Close()
	cut(m.addr())
	time.Sleep(lag) // the master acknowledges writes its replicas will never see
	m.kill()
	for _, r := range replicas {
		r.signal(syscall.SIGCONT)
	}
	if err != nil {
		return fmt.Errorf("CLIENT KILL TYPE replica on %s: %w", m.addr(), err)
	}
	time.Sleep(down) // the outage
	if err := m.start(); err != nil {
		return err
	}
	return g.healthy(chaosHealthWithin)
}

func (g *chaosRedisGroup) close() {
	for _, n := range append(append([]*chaosRedisNode{}, g.sentinels...), g.nodes...) {
		n.kill()
	}
}

func (g *chaosRedisGroup) describe() string {
	if g.topology == chaosRedisCluster {
		return fmt.Sprintf("embedded Redis Cluster: 3 masters with a replica each, node timeout %v; CLUSTER FAILOVER (plain, FORCE, TAKEOVER), master kills, and master kills after their replica was cut off", chaosNodeTimeout)
	}
	return fmt.Sprintf("embedded Sentinel: a master, 2 replicas, 3 sentinels, down after %v; SENTINEL FAILOVER, master kills, and master kills after their replicas were cut off", chaosDownAfter)
}

// applyRedisFailover injects a failover of the embedded cluster or
// Sentinel, one at a time, in the background; the harness waits for the
// group to be healthy again before the next (and before it checks the
// stream).
func (c *chaosRun) applyRedisFailover(f *chaosFault, skip func(string), done func(string, ...any)) {
	g := c.redis.group
	if g == nil {
		skip("no embedded cluster or sentinel")
		return
	}
	for kind := range c.busy {
		if isRedisFailover(kind) {
			skip("a Redis failover is in progress")
			return
		}
	}
	if c.partition != nil {
		skip("a partition is in effect")
		return
	}
	c.busy[f.Kind] = true
	pair := f.Replica
	if g.topology == chaosRedisSentinel {
		pair = 0
	}
	go func() {
		var err error
		switch f.Kind {
		case faultMasterKill:
			err = g.killMaster(pair, f.For, func(addr string) {
				c.logf("%s: SIGKILL master %s; restart in %v", f.Kind, addr, f.For.Round(time.Millisecond))
			})
		case faultLagKill:
			lag, _ := time.ParseDuration(f.Detail)
			err = g.lagKill(pair, lag, f.For, func(addr string) {
				c.logf("%s: the replicas of %s paused and cut off; SIGKILL it in %v, restart %v later", f.Kind, addr, lag, f.For.Round(time.Millisecond))
			})
		default:
			how := map[string]string{faultFailoverForce: "FORCE", faultFailoverTakeover: "TAKEOVER"}[f.Kind]
			var what string
			what, err = g.failover(pair, how)
			if what != "" {
				c.logf("%s: %s", f.Kind, what)
			}
		}
		if err != nil {
			err = fmt.Errorf("%s (group %d): %w", f.Kind, pair, err)
		}
		c.engineDone <- chaosEngineDone{kind: f.Kind, err: err}
	}()
	done("%s: group %d", f.Kind, pair)
}

// startChaosRedisTopology starts the Redis of a run: the given URL or one
// redis-server (single), or a cluster or Sentinel of the harness's own.
func startChaosRedisTopology(url, topology, dir string) (*chaosRedis, error) {
	if topology == "" || topology == chaosRedisSingle {
		return startChaosRedis(url, dir)
	}
	return startChaosRedisGroup(topology, dir)
}

// chaosReplayRedis is the --redis a replay command needs.
func chaosReplayRedis(o chaosOptions) string {
	if o.redisTopology == "" || o.redisTopology == chaosRedisSingle {
		return ""
	}
	return " --redis " + o.redisTopology
}

// checkChaosRedis refuses a topology the harness does not know, or a
// cluster or Sentinel with an engine of the operator's.
func checkChaosRedis(o chaosOptions) error {
	switch o.redisTopology {
	case chaosRedisSingle:
		return nil
	case chaosRedisCluster, chaosRedisSentinel:
	default:
		if strings.Contains(o.redisTopology, "://") {
			return fmt.Errorf("--redis: want single, cluster or sentinel; a URL goes in --redis-url")
		}
		return fmt.Errorf("--redis %q: want single, cluster or sentinel", o.redisTopology)
	}
	if o.redisURL != "embedded" {
		return fmt.Errorf("--redis %s starts engines of its own: give --redis-url embedded (the default), or --redis single with your URL", o.redisTopology)
	}
	if o.checkpoint != "redis" {
		return fmt.Errorf("--redis %s: only with --checkpoint redis", o.redisTopology)
	}
	return nil
}

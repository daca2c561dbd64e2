package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/cmd/internal/harness"
)

// redisGroup is a Redis Cluster (nodes[i] and nodes[i+3] share the
// i-th third of the slots, one the master, the other its replica) or a
// master with two replicas and three sentinels.
type redisGroup struct {
	topology  string
	nodes     []*harness.RedisServer
	sentinels []*harness.RedisServer
	// probes are keys in each pair's slots (cluster), or one key
	// (sentinel), written to check that replicas acknowledge writes.
	probes []string
}

// The Sentinel master's name, and the failure detection the engines use:
// a master unanswered this long is failed over.
const (
	masterName   = "capoller"
	nodeTimeout  = 2 * time.Second
	downAfter    = time.Second
	healthWithin = 90 * time.Second
)

// startRedisGroup starts a Cluster or a Sentinel group of the
// harness's own, and waits until it is healthy.
func startRedisGroup(topology, dir string) (*redisEngine, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("--redis %s needs redis-server on PATH: %w", topology, err)
	}
	g := &redisGroup{topology: topology}
	servers, sentinels := 6, 0
	if topology == RedisSentinel {
		servers, sentinels = 3, 3
	}
	var ports []int
	for range servers*2 + sentinels { // a cluster bus port per server
		p, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	for i := range servers + sentinels {
		if err := g.addNode(path, filepath.Join(dir, "redis", strconv.Itoa(i)), ports, i, servers); err != nil {
			return nil, err
		}
	}
	r := &redisEngine{group: g}
	for _, n := range append(slices.Clone(g.nodes), g.sentinels...) {
		if err := n.Start(); err != nil {
			g.close()
			return nil, err
		}
	}
	if r.url, err = g.form(ports[servers : 2*servers]); err == nil {
		err = g.healthy(healthWithin)
	}
	if err != nil {
		g.close()
		return nil, err
	}
	return r, nil
}

// addNode writes the configuration of node i (a server below servers, a
// sentinel from there) into dir, and adds it to the group.
func (g *redisGroup) addNode(path, dir string, ports []int, i, servers int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "redis.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n", ports[i], dir, filepath.Join(dir, "redis.log"))
	args := []string{conf}
	switch {
	case i >= servers:
		text += fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\nsentinel down-after-milliseconds %[1]s %[3]d\n"+
			"sentinel failover-timeout %[1]s 10000\nsentinel parallel-syncs %[1]s 2\n", masterName, ports[0], downAfter.Milliseconds())
		args = append(args, "--sentinel")
	default:
		text += "appendonly yes\nappendfsync always\nsave \"\"\nrepl-diskless-sync-delay 0\n"
		if g.topology == RedisCluster {
			text += fmt.Sprintf("cluster-enabled yes\ncluster-port %d\ncluster-config-file nodes.conf\ncluster-node-timeout %d\n",
				ports[servers+i], nodeTimeout.Milliseconds())
		} else if i > 0 {
			text += fmt.Sprintf("replicaof 127.0.0.1 %d\n", ports[0])
		}
	}
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	n := harness.NewRedisServer(harness.RedisServerOptions{Path: path, Dir: dir, Port: ports[i], Args: args})
	if i >= servers {
		g.sentinels = append(g.sentinels, n)
	} else {
		g.nodes = append(g.nodes, n)
	}
	return nil
}

// form makes the group's servers a cluster (or, for Sentinel, chooses
// its probe key), and returns the replicas' URL of the group.
func (g *redisGroup) form(busPorts []int) (string, error) {
	var hosts []string
	if g.topology == RedisCluster {
		for _, n := range g.nodes[:3] {
			hosts = append(hosts, n.Addr())
		}
		return "redis+cluster://" + strings.Join(hosts, ","), g.formCluster(busPorts)
	}
	g.probes = []string{"chaos_probe"}
	for _, n := range g.sentinels {
		hosts = append(hosts, n.Addr())
	}
	return "redis+sentinel://" + strings.Join(hosts, ",") + "/" + masterName, nil
}

// formCluster gives each of the first three nodes a third of the slots,
// joins every node, and makes node i+3 the replica of node i.
func (g *redisGroup) formCluster(busPorts []int) error {
	ctx := context.Background()
	clients := make([]*redis.Client, len(g.nodes))
	for i, n := range g.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr()})
		defer clients[i].Close()
	}
	const slots = 16384
	for i := range 3 {
		if err := clients[i].ClusterAddSlotsRange(ctx, i*slots/3, (i+1)*slots/3-1).Err(); err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTSRANGE on %s: %w", g.nodes[i].Addr(), err)
		}
	}
	for i := 1; i < len(g.nodes); i++ {
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", g.nodes[i].Port(), busPorts[i]).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s: %w", g.nodes[i].Addr(), err)
		}
	}
	for i := range 3 {
		id, err := clients[i].ClusterMyID(ctx).Result()
		if err != nil {
			return err
		}
		if err := harness.Poll(30*time.Second, g.nodes[i+3].Addr()+" replicating "+g.nodes[i].Addr(), func() error {
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
func (g *redisGroup) master(ctx context.Context, pair int) (*harness.RedisServer, *harness.RedisServer, error) {
	if g.topology == RedisCluster {
		a, b := g.nodes[pair], g.nodes[pair+3]
		ra, _, errA := role(ctx, a.Addr())
		rb, _, errB := role(ctx, b.Addr())
		switch {
		case errA == nil && errB == nil && ra == "master" && rb == "slave":
			return a, b, nil
		case errA == nil && errB == nil && rb == "master" && ra == "slave":
			return b, a, nil
		}
		// Neither or both a master: the roles say why, and any error under them.
		return nil, nil, errors.Join(fmt.Errorf("pair %d: %s is %q, %s is %q", pair, a.Addr(), ra, b.Addr(), rb), errA, errB)
	}
	var addr string
	for _, s := range g.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
		got, err := sc.GetMasterAddrByName(ctx, masterName).Result()
		sc.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("sentinel %s: %w", s.Addr(), err)
		}
		a := strings.Join(got, ":")
		if addr != "" && a != addr {
			return nil, nil, fmt.Errorf("the sentinels disagree on the master: %s, %s", addr, a)
		}
		addr = a
	}
	for _, n := range g.nodes {
		if n.Addr() == addr {
			return n, nil, nil
		}
	}
	return nil, nil, fmt.Errorf("the sentinels name %s, not one of the servers", addr)
}

// healthy waits until every master has its replicas online, and they
// acknowledge its writes (a probe key written and WAITed for), and
// (cluster) the cluster is ok on every master, or (sentinel) the
// sentinels agree on the master.
func (g *redisGroup) healthy(within time.Duration) error {
	ctx := context.Background()
	pairs, want := 3, 1
	if g.topology == RedisSentinel {
		pairs, want = 1, 2
	}
	for pair := range pairs {
		err := harness.Poll(within, fmt.Sprintf("Redis %s group %d healthy", g.topology, pair), func() error {
			m, _, err := g.master(ctx, pair)
			if err != nil {
				return err
			}
			r, online, err := role(ctx, m.Addr())
			if err != nil {
				return err
			}
			if r != "master" || online != want {
				return fmt.Errorf("%s is %s with %d replicas online, want a master with %d", m.Addr(), r, online, want)
			}
			c := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1, DialTimeout: time.Second})
			defer c.Close()
			if g.topology == RedisCluster {
				info, err := c.ClusterInfo(ctx).Result()
				if err != nil {
					return err
				}
				if !strings.Contains(info, "cluster_state:ok") {
					return fmt.Errorf("%s: the cluster is not ok", m.Addr())
				}
			}
			conn := c.Conn()
			defer conn.Close()
			if err := conn.Set(ctx, g.probes[pair], time.Now().String(), 0).Err(); err != nil {
				return err
			}
			acked, err := conn.Wait(ctx, want, 200*time.Millisecond).Result()
			if err == nil && acked < int64(want) {
				err = fmt.Errorf("%s: %d of %d replicas acknowledged a write", m.Addr(), acked, want)
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
func (g *redisGroup) failover(pair int, how string) (string, error) {
	ctx := context.Background()
	old, replica, err := g.master(ctx, pair)
	if err != nil {
		return "", err
	}
	if g.topology == RedisCluster {
		c := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
		defer c.Close()
		args := []any{"CLUSTER", "FAILOVER"}
		if how != "" {
			args = append(args, how)
		}
		if err := c.Do(ctx, args...).Err(); err != nil {
			return "", fmt.Errorf("CLUSTER FAILOVER %s on %s: %w", how, replica.Addr(), err)
		}
		what := strings.TrimSpace("CLUSTER FAILOVER "+how) + fmt.Sprintf(" on %s, the replica of %s", replica.Addr(), old.Addr())
		return what, g.waitFailedOver(ctx, pair, what, func(m *harness.RedisServer) bool { return m == replica })
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: g.sentinels[0].Addr(), MaxRetries: -1})
	defer sc.Close()
	if err := sc.Failover(ctx, masterName).Err(); err != nil {
		return "", fmt.Errorf("SENTINEL FAILOVER on %s: %w", g.sentinels[0].Addr(), err)
	}
	what := "SENTINEL FAILOVER of " + old.Addr()
	return what, g.waitFailedOver(ctx, pair, what, func(m *harness.RedisServer) bool { return m != old })
}

// waitFailedOver waits until pair's master is the one moved wants, and
// the group is healthy.
func (g *redisGroup) waitFailedOver(ctx context.Context, pair int, what string, moved func(master *harness.RedisServer) bool) error {
	return harness.Poll(healthWithin, what, func() error {
		m, _, err := g.master(ctx, pair)
		if err == nil && !moved(m) {
			err = fmt.Errorf("%s is still the master", m.Addr())
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
func (g *redisGroup) killMaster(pair int, down time.Duration, killed func(string)) error {
	ctx := context.Background()
	m, _, err := g.master(ctx, pair)
	if err != nil {
		return err
	}
	m.Kill()
	killed(m.Addr())
	time.Sleep(down) // the outage
	if err := m.Start(); err != nil {
		return err
	}
	return g.healthy(healthWithin)
}

// lagKill pauses the replicas of pair's master and has the master drop
// their links, so that they miss what it takes from then on; after lag
// it kills the master and resumes them, and one of them is promoted
// without the master's last writes. The master starts again after down,
// and the group is healthy again once it is back as a replica.
func (g *redisGroup) lagKill(pair int, lag, down time.Duration, cut func(master string)) error {
	ctx := context.Background()
	m, _, err := g.master(ctx, pair)
	if err != nil {
		return err
	}
	var replicas []*harness.RedisServer
	for i, n := range g.nodes {
		if n != m && (g.topology == RedisSentinel || i%3 == pair) {
			replicas = append(replicas, n)
		}
	}
	for _, r := range replicas {
		r.Signal(syscall.SIGSTOP)
	}
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
	err = c.ClientKillByFilter(ctx, "TYPE", "replica").Err()
	c.Close()
	cut(m.Addr())
	time.Sleep(lag) // the master acknowledges writes its replicas will never see
	m.Kill()
	for _, r := range replicas {
		r.Signal(syscall.SIGCONT)
	}
	if err != nil {
		return fmt.Errorf("CLIENT KILL TYPE replica on %s: %w", m.Addr(), err)
	}
	time.Sleep(down) // the outage
	if err := m.Start(); err != nil {
		return err
	}
	return g.healthy(healthWithin)
}

func (g *redisGroup) close() {
	for _, n := range append(slices.Clone(g.sentinels), g.nodes...) {
		n.Kill()
	}
}

func (g *redisGroup) describe() string {
	if g.topology == RedisCluster {
		return fmt.Sprintf("embedded Redis Cluster: 3 masters with a replica each, node timeout %v; CLUSTER FAILOVER (plain, FORCE, TAKEOVER), master kills, and master kills after their replica was cut off", nodeTimeout)
	}
	return fmt.Sprintf("embedded Sentinel: a master, 2 replicas, 3 sentinels, down after %v; SENTINEL FAILOVER, master kills, and master kills after their replicas were cut off", downAfter)
}

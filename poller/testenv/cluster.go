package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
)

// clusterDeadline bounds every wait for a cluster to form or recover.
const clusterDeadline = 30 * time.Second

// pollEvery is how often a wait checks its condition again.
const pollEvery = 20 * time.Millisecond

// WaitFor calls cond every 20ms until it returns nil, failing the test
// with cond's last error if that takes longer than within: a wait on a
// condition, with a deadline, rather than a sleep. Call it from the test's
// goroutine.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %s: not within %v: %v", what, within, err)
		}
		<-tick.C
	}
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago: all are held open together, so none is returned twice.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: find a free port: %v", err)
		}
		defer func() { _ = ln.Close() }()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startRedis runs redis-server on 127.0.0.1:port with args (the first may
// be a configuration file) in a temporary directory, logging to a file,
// waits until it answers, and stops it when the test ends. It returns its
// address. It skips the test if redis-server is not on PATH.
func startRedis(t testing.TB, port int, args ...string) string {
	t.Helper()
	return runRedis(t, port, args...).Addr
}

// RedisProcess is a redis-server a test started, which it may pause,
// resume or kill.
type RedisProcess struct {
	// Addr is its host:port.
	Addr     string
	password string
	t        testing.TB
	cmd      *exec.Cmd
	done     chan struct{}
}

// Pause stops the process (SIGSTOP): it keeps its connections but
// answers nothing, replicates nothing and acknowledges nothing.
func (p *RedisProcess) Pause() { p.signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (p *RedisProcess) Resume() { p.signal(syscall.SIGCONT) }

// Kill ends the process (SIGKILL) and waits until it is gone.
func (p *RedisProcess) Kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

func (p *RedisProcess) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("testenv: signal %v to redis-server %s: %v", sig, p.Addr, err)
	}
}

// Client returns a client of the process, closed when the test ends.
func (p *RedisProcess) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: p.Addr, Password: p.password})
	p.t.Cleanup(func() { _ = c.Close() })
	return c
}

// runRedis is startRedis, returning the process.
func runRedis(t testing.TB, port int, args ...string) *RedisProcess {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("testenv: redis-server is not on PATH; install it (apt-get install redis-server) to run the Redis Cluster and Sentinel tests")
	}
	dir := t.TempDir()
	logFile := filepath.Join(dir, "redis.log")
	args = append(args, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--logfile", logFile)
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start redis-server: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a paused one would not die of SIGKILL any sooner, but may hold its port
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			if b, err := os.ReadFile(logFile); err == nil {
				t.Logf("testenv: log of redis-server %s:\n%s", addr, b)
			}
		}
	})
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer func() { _ = client.Close() }()
	WaitFor(t, clusterDeadline, "redis-server on "+addr+" answering", func() error {
		select {
		case <-exited:
			b, _ := os.ReadFile(logFile)
			t.Fatalf("testenv: redis-server %s exited: %v\n%s", strings.Join(args, " "), waitErr, b)
		default:
		}
		err := client.Ping(context.Background()).Err()
		if rerr := redis.Error(nil); errors.As(err, &rerr) {
			return nil // it answers, if only to ask for a password
		}
		return err
	})
	return &RedisProcess{Addr: addr, t: t, cmd: cmd, done: exited}
}

// onlineReplicas counts the replicas a master lists online (INFO
// replication), or fails if it is not a master.
func onlineReplicas(ctx context.Context, c *redis.Client) (int, error) {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	if !strings.Contains(info, "role:master") {
		return 0, fmt.Errorf("not a master:\n%s", info)
	}
	return strings.Count(info, "state=online"), nil
}

// WaitReplicas waits until the master at p lists n replicas online.
func (p *RedisProcess) WaitReplicas(n int) {
	p.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, Password: p.password, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	WaitFor(p.t, clusterDeadline, fmt.Sprintf("%d replicas online at %s", n, p.Addr), func() error {
		got, err := onlineReplicas(context.Background(), c)
		if err == nil && got != n {
			err = fmt.Errorf("%d replicas online", got)
		}
		return err
	})
}

// waitStreaming waits until the master at p lists n replicas online and
// they acknowledge its writes (WAIT): a replica is listed online before
// the master streams it anything, which it does after the replica's
// first acknowledgement, up to a second later. key is one the master
// serves (in a cluster, one of its slots'); it is written.
func (p *RedisProcess) waitStreaming(n int, key string) {
	p.t.Helper()
	p.WaitReplicas(n)
	c := redis.NewClient(&redis.Options{Addr: p.Addr, Password: p.password, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	conn := c.Conn()
	defer func() { _ = conn.Close() }()
	WaitFor(p.t, clusterDeadline, fmt.Sprintf("%d replicas acknowledging writes at %s", n, p.Addr), func() error {
		if err := conn.Set(ctx, key, "1", 0).Err(); err != nil {
			return err
		}
		acked, err := conn.Wait(ctx, n, 100*time.Millisecond).Result()
		if err == nil && acked < int64(n) {
			err = fmt.Errorf("%d of %d replicas acknowledged a write", acked, n)
		}
		return err
	})
}

// keyInSlots returns a key whose slot is within first..last.
func keyInSlots(t testing.TB, c *redis.Client, first, last int) string {
	t.Helper()
	for i := 0; ; i++ {
		key := fmt.Sprintf("testenv_sync:{%d}", i)
		slot, err := c.ClusterKeySlot(context.Background(), key).Result()
		if err != nil {
			t.Fatalf("testenv: CLUSTER KEYSLOT: %v", err)
		}
		if int(slot) >= first && int(slot) <= last {
			return key
		}
	}
}

// RedisReplicated starts a Redis master and n replicas of it
// (redis-server processes without persistence, on free ports), and waits
// until the master lists every replica online. They are stopped when the
// test ends. Without redis-server on PATH the test is skipped.
func RedisReplicated(t testing.TB, n int) (master *RedisProcess, replicas []*RedisProcess) {
	t.Helper()
	ports := freePorts(t, 1+n)
	master = runRedis(t, ports[0], "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
	for i := range n {
		replicas = append(replicas, runRedis(t, ports[1+i], "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0",
			"--replicaof", "127.0.0.1", strconv.Itoa(ports[0])))
	}
	master.waitStreaming(n, Name("testenv_sync"))
	return master, replicas
}

// RedisServer runs a redis-server of its own on a free port of 127.0.0.1,
// without persistence, with args over that (ACL users, a TLS port…),
// waits until it answers (if only to ask for a password), and returns its
// address. It is stopped when the test ends. Without redis-server on PATH
// the test is skipped.
func RedisServer(t testing.TB, args ...string) string {
	t.Helper()
	return startRedis(t, freePorts(t, 1)[0], append([]string{"--save", "", "--appendonly", "no"}, args...)...)
}

// RedisCluster starts a Redis Cluster of three masters (redis-server
// processes on free ports, without persistence, in temporary directories),
// assigns the 16384 slots over them, joins them, and waits until every node
// reports cluster_state:ok (about 2s: a master turns ok no sooner than
// 2s after it starts). It returns a client of the cluster and a
// unique key prefix ("<name>:"). The servers are stopped when the test
// ends. Without redis-server on PATH the test is skipped.
func RedisCluster(t testing.TB) (*redis.ClusterClient, string) {
	t.Helper()
	client, prefix, _ := redisCluster(t, false)
	return client, prefix
}

// ClusterNodes are the processes of a Redis Cluster a test started:
// Masters[i] holds the i-th third of the slots, and Replicas[i] (if any)
// replicates it.
type ClusterNodes struct {
	Masters, Replicas []*RedisProcess
}

// RedisClusterWithReplicas is RedisCluster with one replica per master,
// and a node timeout of 2s (a master killed is failed over within a few
// seconds). It waits until each master lists its replica online.
func RedisClusterWithReplicas(t testing.TB) (*redis.ClusterClient, string, ClusterNodes) {
	t.Helper()
	return redisCluster(t, true)
}

func redisCluster(t testing.TB, withReplicas bool) (*redis.ClusterClient, string, ClusterNodes) {
	t.Helper()
	const masters = 3
	nodes, timeout := masters, "5000"
	if withReplicas {
		nodes, timeout = 2*masters, "2000"
	}
	ports := freePorts(t, 2*nodes) // a client port and a cluster bus port each
	procs := make([]*RedisProcess, nodes)
	addrs := make([]string, nodes)
	for i := range nodes {
		procs[i] = runRedis(t, ports[i], "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(ports[nodes+i]),
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", timeout,
			"--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
		addrs[i] = procs[i].Addr
	}
	ctx := context.Background()
	clients := make([]*redis.Client, nodes)
	for i, addr := range addrs {
		clients[i] = redis.NewClient(&redis.Options{Addr: addr})
		defer func() { _ = clients[i].Close() }()
	}
	const slots = 16384
	for i, c := range clients[:masters] {
		first, last := i*slots/masters, (i+1)*slots/masters-1
		if err := c.ClusterAddSlotsRange(ctx, first, last).Err(); err != nil {
			t.Fatalf("testenv: CLUSTER ADDSLOTSRANGE %d %d on %s: %v", first, last, addrs[i], err)
		}
	}
	for i := 1; i < nodes; i++ {
		// The bus port is not the default (port+10000), so it is named.
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", ports[i], ports[nodes+i]).Err(); err != nil {
			t.Fatalf("testenv: CLUSTER MEET %s from %s: %v", addrs[i], addrs[0], err)
		}
	}
	for i := masters; i < nodes; i++ {
		master := i - masters
		id, err := clients[master].ClusterMyID(ctx).Result()
		if err != nil {
			t.Fatalf("testenv: CLUSTER MYID on %s: %v", addrs[master], err)
		}
		WaitFor(t, clusterDeadline, addrs[i]+" replicating "+addrs[master], func() error {
			return clients[i].Do(ctx, "CLUSTER", "REPLICATE", id).Err() // refused until it heard of the master
		})
	}
	for i, c := range clients {
		WaitFor(t, clusterDeadline, "cluster_state:ok on "+addrs[i], func() error {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			for _, want := range []string{"cluster_state:ok", "cluster_slots_ok:16384", "cluster_known_nodes:" + strconv.Itoa(nodes)} {
				if !strings.Contains(info, want+"\r\n") {
					return fmt.Errorf("no %s in CLUSTER INFO:\n%s", want, info)
				}
			}
			return nil
		})
	}
	out := ClusterNodes{Masters: procs[:masters]}
	if withReplicas {
		out.Replicas = procs[masters:]
		for i, m := range out.Masters {
			m.waitStreaming(1, keyInSlots(t, clients[i], i*slots/masters, (i+1)*slots/masters-1))
		}
	}
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs[:masters]})
	t.Cleanup(func() { _ = client.Close() })
	WaitFor(t, clusterDeadline, "the cluster client seeing every master", func() error {
		var seen atomic.Int32
		err := client.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			seen.Add(1) // concurrently, one call per master
			return c.Ping(ctx).Err()
		})
		if n := seen.Load(); err == nil && n != masters {
			err = fmt.Errorf("%d masters, want %d", n, masters)
		}
		return err
	})
	return client, Name("capoller_test") + ":", out
}

// Sentinel is a Redis master watched by Redis Sentinels.
type Sentinel struct {
	// MasterName is the name the sentinel monitors the master under.
	MasterName string
	// SentinelAddrs are the sentinels' host:port.
	SentinelAddrs []string
	// MasterAddr is the master's host:port.
	MasterAddr string
	// Password is the master's (requirepass); the sentinel has none.
	Password string
	// Master and Replicas are the servers' processes (from
	// RedisSentinelWithReplicas).
	Master   *RedisProcess
	Replicas []*RedisProcess
}

// Client returns a failover client of the master, found through the
// sentinel, closed when the test ends.
func (s Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs, Password: s.Password})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisSentinel starts a Redis master, with a password, and a sentinel
// monitoring it (redis-server --sentinel with a generated configuration),
// and waits until the sentinel sees the master up. They are stopped when
// the test ends. Without redis-server on PATH the test is skipped.
func RedisSentinel(t testing.TB) Sentinel {
	t.Helper()
	ports := freePorts(t, 2)
	s := Sentinel{MasterName: "capoller", Password: Name("pw")}
	s.MasterAddr = startRedis(t, ports[0], "--requirepass", s.Password, "--masterauth", s.Password, "--save", "", "--appendonly", "no")
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf") // the sentinel rewrites it: it must be its own, writable
	body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 1\nsentinel auth-pass %[1]s %[3]s\nsentinel down-after-milliseconds %[1]s 5000\n",
		s.MasterName, ports[0], s.Password)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s.SentinelAddrs = []string{startRedis(t, ports[1], conf, "--sentinel")}
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddrs[0]})
	defer func() { _ = sc.Close() }()
	WaitFor(t, clusterDeadline, "the sentinel seeing master "+s.MasterName+" up", func() error {
		m, err := sc.Master(context.Background(), s.MasterName).Result()
		if err != nil {
			return err
		}
		if m["flags"] != "master" || m["port"] != strconv.Itoa(ports[0]) {
			return fmt.Errorf("sentinel reports %v", m)
		}
		return nil
	})
	return s
}

// RedisSentinelWithReplicas starts a Redis master with a password, two
// replicas of it, and three sentinels (quorum 2) that fail it over once
// it has not answered for a second, and waits until every sentinel sees
// the master, both replicas and the two other sentinels.
func RedisSentinelWithReplicas(t testing.TB) Sentinel {
	t.Helper()
	const replicas, sentinels = 2, 3
	ports := freePorts(t, 1+replicas+sentinels)
	s := Sentinel{MasterName: "capoller", Password: Name("pw")}
	auth := []string{"--requirepass", s.Password, "--masterauth", s.Password, "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"}
	s.Master = runRedis(t, ports[0], auth...)
	s.Master.password = s.Password
	s.MasterAddr = s.Master.Addr
	for i := range replicas {
		r := runRedis(t, ports[1+i], append(auth, "--replicaof", "127.0.0.1", strconv.Itoa(ports[0]))...)
		r.password = s.Password
		s.Replicas = append(s.Replicas, r)
	}
	s.Master.waitStreaming(replicas, Name("testenv_sync"))
	body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\nsentinel auth-pass %[1]s %[3]s\n"+
		"sentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 10000\n", s.MasterName, ports[0], s.Password)
	for i := range sentinels {
		conf := filepath.Join(t.TempDir(), "sentinel.conf") // each rewrites its own
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		s.SentinelAddrs = append(s.SentinelAddrs, startRedis(t, ports[1+replicas+i], conf, "--sentinel"))
	}
	for _, addr := range s.SentinelAddrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
		defer func() { _ = sc.Close() }()
		WaitFor(t, clusterDeadline, "sentinel "+addr+" seeing the master, its replicas and the other sentinels", func() error {
			m, err := sc.Master(context.Background(), s.MasterName).Result()
			if err != nil {
				return err
			}
			if m["flags"] != "master" || m["port"] != strconv.Itoa(ports[0]) || m["num-slaves"] != strconv.Itoa(replicas) ||
				m["num-other-sentinels"] != strconv.Itoa(sentinels-1) {
				return fmt.Errorf("sentinel reports %v", m)
			}
			return nil
		})
	}
	return s
}

// NATSNodes is a NATS cluster with JetStream, each node an embedded
// nats-server in this process with its own store directory.
type NATSNodes struct {
	t    testing.TB
	opts []*server.Options

	mu   sync.Mutex
	srvs []*server.Server // nil: shut down
}

// NATSCluster starts n embedded nats-server nodes with JetStream, routed to
// each other, and waits until they elected a JetStream meta leader that
// sees all n peers. The nodes are shut down when the test ends.
func NATSCluster(t testing.TB, n int) *NATSNodes {
	t.Helper()
	if n < 1 {
		t.Fatalf("testenv: a NATS cluster of %d nodes", n)
	}
	ports := freePorts(t, 2*n) // a client port and a route port each
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i])
	}
	c := &NATSNodes{t: t, srvs: make([]*server.Server, n)}
	for i := range n {
		c.opts = append(c.opts, &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: ports[i],
			JetStream: true, StoreDir: t.TempDir(), JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
			Cluster: server.ClusterOpts{Name: "capoller-test", Host: "127.0.0.1", Port: ports[n+i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			NoLog:   true, NoSigs: true,
		})
	}
	t.Cleanup(func() {
		for i := range n {
			c.Shutdown(i)
		}
	})
	for i := range n {
		c.start(i)
	}
	c.WaitReady()
	return c
}

func (c *NATSNodes) start(i int) {
	c.t.Helper()
	srv, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("testenv: NATS node %d: %v", i, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(clusterDeadline) {
		srv.Shutdown()
		c.t.Fatalf("testenv: NATS node %d not accepting connections within %v", i, clusterDeadline)
	}
	c.mu.Lock()
	c.srvs[i] = srv
	c.mu.Unlock()
}

// URLs returns every node's client URL, shut down or not.
func (c *NATSNodes) URLs() []string {
	urls := make([]string, len(c.opts))
	for i, o := range c.opts {
		urls[i] = fmt.Sprintf("nats://%s:%d", o.Host, o.Port)
	}
	return urls
}

// URL returns the client URLs comma-separated, as nats.Connect takes them.
func (c *NATSNodes) URL() string { return strings.Join(c.URLs(), ",") }

// Shutdown stops node i and waits until it is down; a stopped node is
// left alone. It may be called from any goroutine, and concurrently: each
// call returns once the node is down.
func (c *NATSNodes) Shutdown(i int) {
	c.mu.Lock()
	srv := c.srvs[i]
	c.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	c.mu.Lock()
	if c.srvs[i] == srv {
		c.srvs[i] = nil
	}
	c.mu.Unlock()
}

// Restart starts node i again, on its ports and store directory, and
// waits until the cluster is ready again with it. Like WaitReady, it fails
// the test if that does not happen: call it from the test's goroutine.
func (c *NATSNodes) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	running := c.srvs[i] != nil
	c.mu.Unlock()
	if running {
		c.t.Fatalf("testenv: restart NATS node %d: it is running", i)
	}
	c.start(i)
	c.WaitReady()
}

// running returns the nodes that are not shut down (or not yet all the
// way), by index.
func (c *NATSNodes) running() map[int]*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]*server.Server{}
	for i, s := range c.srvs {
		if s != nil {
			out[i] = s
		}
	}
	return out
}

// WaitReady waits until the running nodes agree on a JetStream meta
// leader that sees every running node as an online peer, and each of them
// is current with it.
func (c *NATSNodes) WaitReady() {
	c.t.Helper()
	WaitFor(c.t, clusterDeadline, "a JetStream meta leader", func() error {
		nodes := c.running()
		leader := -1
		for i, s := range nodes {
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("node %d is not current with the meta leader", i)
			}
			if s.JetStreamIsLeader() {
				leader = i
			}
		}
		if leader < 0 {
			return fmt.Errorf("no meta leader among %d nodes", len(nodes))
		}
		if peers := nodes[leader].JetStreamClusterPeers(); len(peers) < len(nodes) {
			return fmt.Errorf("the meta leader sees %d online peers (%v), %d nodes run", len(peers), peers, len(nodes))
		}
		return nil
	})
}

// MetaLeader returns the index of the JetStream meta leader, or -1.
func (c *NATSNodes) MetaLeader() int {
	for i, s := range c.running() {
		if s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader returns the index of the node leading the stream (of the
// global account), or -1 if none does.
func (c *NATSNodes) StreamLeader(stream string) int {
	for i, s := range c.running() {
		if s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// MasterOf is the address of the Redis Cluster master that holds key's
// slot.
func MasterOf(ctx context.Context, c *redis.ClusterClient, key string) (string, error) {
	slot, err := c.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return "", err
	}
	shards, err := c.ClusterShards(ctx).Result()
	if err != nil {
		return "", err
	}
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if r.Start <= slot && slot <= r.End {
				for _, n := range sh.Nodes {
					if n.Role == "master" {
						return fmt.Sprintf("%s:%d", n.IP, n.Port), nil
					}
				}
			}
		}
	}
	return "", fmt.Errorf("no master holds slot %d", slot)
}

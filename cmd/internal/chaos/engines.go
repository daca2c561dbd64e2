package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/publisher/embedded"
)

// redisEngine is the Redis the chaos harness runs against: a URL it was
// given (which it never restarts), or a redis-server of its own on a free
// port, with an append-only file fsynced at every write, which it can kill
// and start again on the same port and data, or a Cluster or Sentinel of
// its own.
type redisEngine struct {
	url string
	// server is the single redis-server of the harness's own; nil
	// otherwise.
	server *harness.RedisServer
	// group is the cluster or Sentinel of --redis cluster or sentinel
	// (see redisgroup.go); nil otherwise.
	group *redisGroup
}

// startRedis starts the Redis of a run: the given URL or one
// redis-server (single), or a cluster or Sentinel of the harness's own.
func startRedis(url, topology, dir string) (*redisEngine, error) {
	if topology == "" || topology == RedisSingle {
		return startSingleRedis(url, dir)
	}
	return startRedisGroup(topology, dir)
}

func startSingleRedis(url, dir string) (*redisEngine, error) {
	if url != "embedded" {
		return &redisEngine{url: url}, nil
	}
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("--redis-url embedded needs redis-server on PATH: %w", err)
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	dir = filepath.Join(dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	r := &redisEngine{url: fmt.Sprintf("redis://127.0.0.1:%d/0", port), server: harness.NewRedisServer(harness.RedisServerOptions{
		Path: path, Dir: dir, Port: port,
		Args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "yes", "--appendfsync", "always", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}})}
	return r, r.start()
}

// embedded reports whether the harness runs the Redis (one server, a
// Cluster or Sentinel).
func (r *redisEngine) embedded() bool { return r.server != nil || r.group != nil }

// start runs the single redis-server and waits until it answers.
func (r *redisEngine) start() error { return r.server.Start() }

// crash kills the single redis-server (SIGKILL: a crash; the append-only
// file keeps every acknowledged write) and waits until it is gone.
func (r *redisEngine) crash() { r.server.Kill() }

func (r *redisEngine) close() {
	switch {
	case r.group != nil:
		r.group.close()
	case r.server != nil:
		r.server.Kill()
	}
}

// natsEngine is the NATS the harness runs against: a URL it was given,
// an embedded server (restartable on its port and store directory), or a
// cluster of three embedded nodes, one of which it can take down.
type natsEngine struct {
	url  string
	opts []*server.Options // cluster nodes
	dir  string
	port int // the single embedded server's

	mu     sync.Mutex
	single *embedded.Server
	nodes  []*server.Server
}

func startNATS(url string, cluster bool, dir string) (*natsEngine, error) {
	if url != "embedded" {
		if cluster {
			return nil, errors.New("--nats-cluster starts a cluster of its own: give --nats-url embedded")
		}
		return &natsEngine{url: url}, nil
	}
	if !cluster {
		port, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		n := &natsEngine{dir: filepath.Join(dir, "nats"), port: port, url: fmt.Sprintf("nats://127.0.0.1:%d", port)}
		return n, n.restart(0)
	}
	const size = 3
	n := &natsEngine{dir: filepath.Join(dir, "nats"), nodes: make([]*server.Server, size)}
	var ports []int
	for range 2 * size {
		p, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	var routes, urls []string
	for i := range size {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[size+i]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	n.url = strings.Join(urls, ",")
	for i := range size {
		n.opts = append(n.opts, &server.Options{
			ServerName: fmt.Sprintf("chaos-n%d", i), Host: "127.0.0.1", Port: ports[i],
			JetStream: true, StoreDir: filepath.Join(n.dir, strconv.Itoa(i)), JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
			Cluster: server.ClusterOpts{Name: "capoller-chaos", Host: "127.0.0.1", Port: ports[size+i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			NoLog:   true, NoSigs: true,
		})
	}
	for i := range size {
		if err := n.restart(i); err != nil {
			n.close()
			return nil, err
		}
	}
	return n, n.waitMetaLeader(60 * time.Second)
}

func (n *natsEngine) embedded() bool { return n.dir != "" }

func (n *natsEngine) cluster() bool { return len(n.opts) > 0 }

// restart starts the server (node i of a cluster) again, on its port and
// store directory, and waits until it accepts connections.
func (n *natsEngine) restart(i int) error {
	if !n.cluster() {
		srv, err := embedded.Run(embedded.Options{StoreDir: n.dir, Port: n.port})
		if err != nil {
			return err
		}
		n.mu.Lock()
		n.single = srv
		n.mu.Unlock()
		return nil
	}
	srv, err := server.NewServer(n.opts[i].Clone())
	if err != nil {
		return fmt.Errorf("NATS node %d: %w", i, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("NATS node %d is not accepting connections", i)
	}
	n.mu.Lock()
	n.nodes[i] = srv
	n.mu.Unlock()
	return nil
}

// shutdown stops the server (node i of a cluster) and waits until it is
// down.
func (n *natsEngine) shutdown(i int) {
	n.mu.Lock()
	single := n.single
	var node *server.Server
	if n.cluster() {
		node, n.nodes[i] = n.nodes[i], nil
	} else {
		n.single = nil
	}
	n.mu.Unlock()
	if single != nil {
		single.Shutdown()
	}
	if node != nil {
		node.Shutdown()
		node.WaitForShutdown()
	}
}

// waitMetaLeader waits until the running nodes agree on a JetStream meta
// leader.
func (n *natsEngine) waitMetaLeader(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		n.mu.Lock()
		leader, current := false, true
		for _, s := range n.nodes {
			if s == nil {
				continue
			}
			leader = leader || s.JetStreamIsLeader()
			current = current && s.JetStreamIsCurrent()
		}
		n.mu.Unlock()
		if leader && current {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // polling for the election
	}
	return fmt.Errorf("the NATS cluster elected no JetStream meta leader within %v", within)
}

func (n *natsEngine) close() {
	if !n.embedded() {
		return
	}
	if !n.cluster() {
		n.shutdown(0)
		return
	}
	for i := range n.opts {
		n.shutdown(i)
	}
}

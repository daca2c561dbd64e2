package main

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
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/publisher/embedded"
)

// chaosRedis is the Redis the chaos harness runs against: a URL it was
// given (which it never restarts), or a redis-server of its own on a free
// port, with an append-only file fsynced at every write, which it can kill
// and start again on the same port and data.
type chaosRedis struct {
	url  string
	path string // redis-server; empty when not embedded
	dir  string
	port int

	mu  sync.Mutex
	cmd *exec.Cmd

	// group is the cluster or Sentinel of --redis cluster or sentinel
	// (see chaos_failover.go); nil for one server.
	group *chaosRedisGroup
}

func startChaosRedis(url, dir string) (*chaosRedis, error) {
	if url != "embedded" {
		return &chaosRedis{url: url}, nil
	}
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("--redis-url embedded needs redis-server on PATH: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &chaosRedis{path: path, dir: filepath.Join(dir, "redis"), port: port, url: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, err
	}
	return r, r.start()
}

func (r *chaosRedis) embedded() bool { return r.path != "" }

// start runs redis-server and waits until it answers.
func (r *chaosRedis) start() error {
	cmd := exec.Command(r.path, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	opts, _ := redis.ParseURL(r.url)
	c := redis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d did not answer: %w", r.port, err)
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness
	}
}

// crash kills redis-server (SIGKILL: a crash; the append-only file keeps
// every acknowledged write) and waits until it is gone.
func (r *chaosRedis) crash() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

func (r *chaosRedis) close() {
	if r.group != nil {
		r.group.close()
		return
	}
	if r.embedded() {
		r.crash()
	}
}

// chaosNATS is the NATS the harness runs against: a URL it was given,
// an embedded server (restartable on its port and store directory), or a
// cluster of three embedded nodes, one of which it can take down.
type chaosNATS struct {
	url  string
	opts []*server.Options // cluster nodes
	dir  string
	port int // the single embedded server's

	mu     sync.Mutex
	single *embedded.Server
	nodes  []*server.Server
}

func startChaosNATS(url string, cluster bool, dir string) (*chaosNATS, error) {
	if url != "embedded" {
		if cluster {
			return nil, errors.New("--nats-cluster starts a cluster of its own: give --nats-url embedded")
		}
		return &chaosNATS{url: url}, nil
	}
	if !cluster {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		n := &chaosNATS{dir: filepath.Join(dir, "nats"), port: port, url: fmt.Sprintf("nats://127.0.0.1:%d", port)}
		return n, n.restart(0)
	}
	const size = 3
	n := &chaosNATS{dir: filepath.Join(dir, "nats"), nodes: make([]*server.Server, size)}
	var ports []int
	for range 2 * size {
		p, err := freePort()
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

func (n *chaosNATS) embedded() bool { return n.dir != "" }
func (n *chaosNATS) cluster() bool  { return len(n.opts) > 0 }

// restart starts the server (node i of a cluster) again, on its port and
// store directory, and waits until it accepts connections.
func (n *chaosNATS) restart(i int) error {
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
func (n *chaosNATS) shutdown(i int) {
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
func (n *chaosNATS) waitMetaLeader(within time.Duration) error {
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

func (n *chaosNATS) close() {
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

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// processStopped reports whether a process is stopped (SIGSTOP), from
// /proc (Linux).
func processStopped(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] == 'T'
}

// signalled reports whether a process that exited was killed by sig.
func signalled(ps *os.ProcessState, sig syscall.Signal) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

package harness

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServerOptions describes a redis-server process (or a sentinel).
type RedisServerOptions struct {
	// Path is the redis-server executable.
	Path string
	// Dir holds its data and its redis.log.
	Dir string
	// Port is the port it listens on, 127.0.0.1 only.
	Port int
	// Args are its arguments: a configuration file (and --sentinel), or
	// the settings themselves.
	Args []string
}

// RedisServer is a redis-server the harness can kill and start again on
// the same port, configuration and data.
type RedisServer struct {
	o RedisServerOptions

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// NewRedisServer describes a server; Start runs it.
func NewRedisServer(o RedisServerOptions) *RedisServer { return &RedisServer{o: o} }

// Addr is its host:port.
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.o.Port) }

// Port is its port.
func (s *RedisServer) Port() int { return s.o.Port }

// Start runs the process and waits until it answers PING (at most 20s).
func (s *RedisServer) Start() error {
	cmd := exec.Command(s.o.Path, s.o.Args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server on %s: %w", s.Addr(), err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	return Poll(20*time.Second, "redis-server on "+s.Addr()+" answering", func() error {
		select {
		case <-done:
			return Final(fmt.Errorf("redis-server on %s exited; see %s", s.Addr(), filepath.Join(s.o.Dir, "redis.log")))
		default:
		}
		return c.Ping(context.Background()).Err()
	})
}

// Signal sends sig to the process, if it runs.
func (s *RedisServer) Signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Kill ends the process (SIGKILL: a crash) and waits until it is gone.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-done
	}
}

package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis replicates asynchronously: a master acknowledges a write before
// its replicas have it, and a failover (a killed master, CLUSTER FAILOVER
// FORCE or TAKEOVER, a Sentinel failover) may promote a replica that never
// got it. A lost lease could let a second owner take the same token; a
// lost staged batch or commit takes the checkpoint back behind what the
// stream announced, and the next diff announces the wrong previousStatus.
//
// So every write that matters for safety — a lease taken or renewed, a
// batch staged or discarded, a commit, a known mark, and the barrier that
// reading the staged batches sets (see [Redis.Staged]) — runs as one
// pipeline on one connection to the master of its shard's slot:
//
//	INFO replication     which replicas the master lists online, now
//	EVALSHA …            the script itself, never retried by the client
//	WAIT n timeout       until n replicas acknowledged it
//
// where n is the number of distinct replicas the master listed online
// within the last ReplicaGrace (counted per replication id, which a
// promotion or a restart changes). A write that fewer replicas
// acknowledged within ReplicaWait fails with [ErrNotReplicated], and its
// caller retries it on its ordinary path (the next round, the next
// cycle): the write may stand or be lost, which both stores' scripts
// already allow for a write whose reply was lost.
//
// WAIT does not make Redis consistent: a write every replica acknowledged
// is lost if all of them and the master lose it together (no fsync on the
// replicas, a power cut), or if a replica that left the master more than
// ReplicaGrace before, and missed it, is promoted (its data is stale: set
// cluster-replica-validity-factor, or Sentinel's down-after, so that it
// cannot be). A replica that left (killed, cut off) holds the master's
// writes up for ReplicaGrace: that is the price of not acknowledging a
// write it could be promoted without.

// ErrNotReplicated means a write ran on the master but was not
// acknowledged by every replica within the wait: it may stand or be lost
// in a failover, and the caller must treat it as failed.
var ErrNotReplicated = errors.New("checkpoint: the write is not on every replica of the master")

// replicaSeen remembers, per master address, which replicas it listed
// online and when, for the current replication id of that master.
type replicaSeen struct {
	mu    sync.Mutex
	nodes map[string]*masterSeen
}

type masterSeen struct {
	replID   string
	replicas map[string]time.Time // ip:port -> last listed online
}

// need is how many replicas a write to the master at addr waits for,
// before this write's INFO is read: those seen within grace.
func (s *replicaSeen) need(addr string, now time.Time, grace time.Duration) int {
	grace = max(grace, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.nodes[addr]
	if m == nil {
		return 0
	}
	n := 0
	for _, at := range m.replicas {
		if now.Sub(at) <= grace {
			n++
		}
	}
	return n
}

// observe records what INFO replication said of the master at addr at
// now, and returns how many replicas a write there waits for: every one
// listed online now or within grace before, under the same replication
// id (a new id, after a promotion or a restart, starts afresh).
func (s *replicaSeen) observe(addr, replID string, online []string, now time.Time, grace time.Duration) int {
	grace = max(grace, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodes == nil {
		s.nodes = map[string]*masterSeen{}
	}
	m := s.nodes[addr]
	if m == nil || m.replID != replID {
		m = &masterSeen{replID: replID, replicas: map[string]time.Time{}}
		s.nodes[addr] = m
	}
	for _, r := range online {
		m.replicas[r] = now
	}
	n := 0
	for r, at := range m.replicas {
		if now.Sub(at) > grace {
			delete(m.replicas, r)
			continue
		}
		n++
	}
	return n
}

// replication reads INFO replication: the node's role, its replication
// id, and the replicas it lists online (ip:port).
func replication(info string) (role, replID string, online []string) {
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case name == "role":
			role = value
		case name == "master_replid":
			replID = value
		case strings.HasPrefix(name, "slave") && len(name) > len("slave") && name[len("slave")] >= '0' && name[len("slave")] <= '9':
			var ip, port, state string
			for field := range strings.SplitSeq(value, ",") {
				k, v, _ := strings.Cut(field, "=")
				switch k {
				case "ip":
					ip = v
				case "port":
					port = v
				case "state":
					state = v
				}
			}
			if state == "online" {
				online = append(online, ip+":"+port)
			}
		}
	}
	return role, replID, online
}

// noRetry is a command the client must not send again after a broken
// connection: a script that may have run once must not run twice (a
// staged batch pushed twice, a commit that pops two batches). The caller
// retries on its own path, which allows for a write that may have run.
type noRetry struct{ *redis.Cmd }

func (noRetry) NoRetry() bool { return true }

// scriptReply is what exec returns: the script's reply, and whether the
// replicas acknowledged it (nil) or not (ErrNotReplicated, wrapped).
type scriptReply struct {
	val        any
	replicated error
}

// exec runs a write script on the master of keys[0]'s slot, once, and
// waits for the master's replicas as the comment above says (unless
// ReplicaWait is negative). err is the script's own failure (or the
// connection's); a script that ran but was not acknowledged by every
// replica returns its reply and a non-nil replicated.
func (r *Redis) exec(ctx context.Context, script *redis.Script, keys []string, args ...any) (scriptReply, error) {
	reply, err := r.execOnce(ctx, script, keys, args...)
	if err == nil && reply.replicated != nil {
		r.unreplicated.Add(1)
	}
	return reply, err
}

func (r *Redis) execOnce(ctx context.Context, script *redis.Script, keys []string, args ...any) (scriptReply, error) {
	node, err := r.masterFor(ctx, keys[0])
	if err != nil {
		return scriptReply{}, err
	}
	if node == nil { // a client of another kind: as it comes
		r.trips.Add(1)
		val, err := script.Run(ctx, r.client, keys, args...).Result()
		return scriptReply{val: val}, err
	}
	wait := r.opts.ReplicaWait > 0
	addr := node.Options().Addr
	conn := node.Conn() // WAIT counts this connection's writes: one connection throughout
	defer func() { _ = conn.Close() }()

	guess := 0
	if wait {
		guess = r.seen.need(addr, time.Now(), r.opts.ReplicaGrace)
	}
	var info *redis.StringCmd
	var res *redis.Cmd
	var acked *redis.IntCmd
	for _, verb := range []string{"evalsha", "eval"} { // eval once the node lacks the script (a promoted replica does)
		payload := script.Hash()
		if verb == "eval" {
			payload = r.scripts.source[script]
		}
		cmdArgs := make([]any, 0, 3+len(keys)+len(args))
		cmdArgs = append(cmdArgs, verb, payload, len(keys))
		for _, k := range keys {
			cmdArgs = append(cmdArgs, k)
		}
		res = redis.NewCmd(ctx, append(cmdArgs, args...)...)
		r.trips.Add(1)
		_, _ = conn.Pipelined(ctx, func(p redis.Pipeliner) error {
			if wait {
				info = p.Info(ctx, "replication")
			}
			_ = p.Process(ctx, noRetry{res})
			if wait && guess > 0 {
				acked = redis.NewIntCmd(ctx, "wait", guess, r.opts.ReplicaWait.Milliseconds())
				_ = p.Process(ctx, acked)
			}
			return nil
		})
		if !redis.HasErrorPrefix(res.Err(), "NOSCRIPT") {
			break
		}
	}
	if err := res.Err(); err != nil && !errors.Is(err, redis.Nil) {
		r.lostMaster(ctx)
		return scriptReply{}, err
	}
	reply := scriptReply{val: res.Val()}
	if !wait {
		return reply, nil
	}
	after := []redis.Cmder{info}
	if acked != nil {
		after = append(after, acked)
	}
	for _, cmd := range after {
		// The connection failed past the script (its WAIT held up by a
		// failover's client pause, the master gone): the write ran, and
		// no one knows whether its replicas have it.
		if cmd.Err() != nil && !isRedisError(cmd.Err()) {
			r.lostMaster(ctx)
			reply.replicated = fmt.Errorf("%w: the connection failed once the write ran: %w", ErrNotReplicated, cmd.Err())
			return reply, nil
		}
	}
	if err := info.Err(); err != nil {
		reply.replicated = fmt.Errorf("%w: INFO replication refused (%w): grant the user INFO and WAIT, or turn the wait off (redis-replica-wait 0), and a failover may lose acknowledged writes", ErrNotReplicated, err)
		return reply, nil
	}
	role, replID, online := replication(info.Val())
	if role != "master" {
		r.lostMaster(ctx)
		reply.replicated = fmt.Errorf("%w: %s is no longer a master (role %q)", ErrNotReplicated, addr, role)
		return reply, nil
	}
	need := r.seen.observe(addr, replID, online, time.Now(), r.opts.ReplicaGrace)
	if need == 0 {
		return reply, nil
	}
	got := int64(0)
	if acked != nil {
		if err := acked.Err(); err != nil {
			reply.replicated = fmt.Errorf("%w: WAIT refused (%w): turn the wait off (redis-replica-wait 0) for a server or proxy without it, and a failover may lose acknowledged writes", ErrNotReplicated, err)
			return reply, nil
		}
		got = acked.Val()
	}
	if got < int64(need) && guess < need {
		// More replicas than this write waited for: wait for them all,
		// on the same connection, whose last write this is.
		r.trips.Add(1)
		if got, err = conn.Wait(ctx, need, r.opts.ReplicaWait).Result(); err != nil {
			reply.replicated = fmt.Errorf("%w: %w", ErrNotReplicated, err)
			return reply, nil
		}
	}
	if got < int64(need) {
		reply.replicated = fmt.Errorf("%w: %d of the %d replicas of %s acknowledged it within %v", ErrNotReplicated, got, need, addr, r.opts.ReplicaWait)
	}
	return reply, nil
}

// isRedisError reports whether err is a reply of the server (an error it
// answered), not a failure of the connection.
func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// masterFor returns the client of the master that holds key's slot: the
// cluster's node, or the client itself (one server, or Sentinel's current
// master). It returns nil for a client of another kind.
func (r *Redis) masterFor(ctx context.Context, key string) (*redis.Client, error) {
	switch c := r.client.(type) {
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, key)
		if err != nil {
			c.ReloadState(ctx)
			return nil, err
		}
		return node, nil
	case *redis.Client:
		return c, nil
	}
	return nil, nil
}

// lostMaster has a cluster client read the slots again: a write that
// failed on the node it took for the slot's master (MOVED after a
// failover, a node down) goes to the new master next time.
func (r *Redis) lostMaster(ctx context.Context) {
	if c, ok := r.client.(*redis.ClusterClient); ok {
		c.ReloadState(ctx)
	}
}

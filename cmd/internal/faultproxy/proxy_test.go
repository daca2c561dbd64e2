package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/poller/testenv"
)

// echoServer is a real TCP server that echoes what it reads, counts it,
// and hands its connections to the test (to write from the server side).
type echoServer struct {
	ln       net.Listener
	received atomic.Int64
	accepted atomic.Int64
	conns    chan net.Conn
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln, conns: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.conns <- c
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					s.received.Add(int64(n))
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		for {
			select {
			case c := <-s.conns:
				_ = c.Close()
			default:
				return
			}
		}
	})
	return s
}

func newProxy(t *testing.T, opts Options) *Proxy {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func set(t *testing.T, p *Proxy, f Fault) {
	t.Helper()
	if err := p.Set(f); err != nil {
		t.Fatal(err)
	}
}

// roundTrip writes msg and reads it back (the echo), within 10s.
func roundTrip(c net.Conn, msg string) error {
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

// readErr reads from c until an error (within 10s) and returns it, with
// what was read before.
func readErr(c net.Conn) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
}

// dialReset connects to p and reads until an error: a connection the
// proxy resets at once may already be reset when connect returns.
func dialReset(p *Proxy) error {
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = readErr(c)
	return err
}

func TestPassForwardsBothWays(t *testing.T) {
	up := newEchoServer(t)
	var mu sync.Mutex
	var seen []byte
	p := newProxy(t, Options{Upstream: up.ln.Addr().String(), Tap: func() Tap {
		return func(b []byte, swallowed bool) {
			mu.Lock()
			defer mu.Unlock()
			if swallowed {
				t.Errorf("pass swallowed %q", b)
			}
			seen = append(seen, b...)
		}
	}})
	c := dial(t, p)
	for i := range 20 {
		if err := roundTrip(c, fmt.Sprintf("hello %d;", i)); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if want := "hello 0;hello 1;"; !bytes.HasPrefix(seen, []byte(want)) || len(seen) != int(up.received.Load()) {
		t.Errorf("the tap saw %q (%d bytes), the server received %d", seen, len(seen), up.received.Load())
	}
	mu.Unlock()
	// The proxy counts a chunk once it wrote it: the echo may reach the
	// client just before its count is added.
	deadline := time.Now().Add(5 * time.Second)
	st := p.Stats()
	for st.Forwarded != 2*up.received.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling a counter, not waiting for a result
		st = p.Stats()
	}
	if st.Accepted != 1 || st.Swallowed != 0 || st.Forwarded != 2*up.received.Load() {
		t.Errorf("stats %+v, server received %d", st, up.received.Load())
	}
}

// A black hole swallows both ways and keeps the connection open; when it
// ends, the connection that lost bytes is reset.
func TestBlackHoleSwallowsBothWaysThenResets(t *testing.T) {
	up := newEchoServer(t)
	var swallowedByTap atomic.Int64
	p := newProxy(t, Options{Upstream: up.ln.Addr().String(), Tap: func() Tap {
		return func(b []byte, swallowed bool) {
			if swallowed {
				swallowedByTap.Add(int64(len(b)))
			}
		}
	}})
	c := dial(t, p)
	if err := roundTrip(c, "before"); err != nil {
		t.Fatal(err)
	}
	server := <-up.conns
	before := up.received.Load()
	set(t, p, Fault{Mode: BlackHole})
	if _, err := c.Write([]byte("into the hole")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("from the server")); err != nil {
		t.Fatal(err)
	}
	want := int64(len("into the hole") + len("from the server"))
	testenv.WaitFor(t, 10*time.Second, "the proxy swallows both directions", func() error {
		if got := p.Stats().Swallowed; got != want {
			return fmt.Errorf("swallowed %d bytes, want %d", got, want)
		}
		return nil
	})
	if up.received.Load() != before || swallowedByTap.Load() != int64(len("into the hole")) {
		t.Errorf("the server received %d bytes in the hole; the tap saw %d swallowed", up.received.Load()-before, swallowedByTap.Load())
	}
	if p.Conns() != 1 {
		t.Errorf("%d connections open in the hole, want 1", p.Conns())
	}
	set(t, p, Fault{Mode: Pass})
	got, err := readErr(c)
	if len(got) != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after the hole the client read %q, %v; want nothing and a reset", got, err)
	}
	if st := p.Stats(); st.Reset != 1 {
		t.Errorf("stats %+v: want one connection reset", st)
	}
	// A new connection goes through.
	if err := roundTrip(dial(t, p), "after"); err != nil {
		t.Fatal(err)
	}
}

// A connection made during a hole is accepted and swallowed, never
// connected to the server, and reset when the hole ends; one that sent
// nothing during the hole goes on.
func TestBlackHoleAcceptsNewConnectionsAndSparesIdleOnes(t *testing.T) {
	up := newEchoServer(t)
	p := newProxy(t, Options{Upstream: up.ln.Addr().String()})
	idle := dial(t, p)
	if err := roundTrip(idle, "ping"); err != nil {
		t.Fatal(err)
	}
	set(t, p, Fault{Mode: BlackHole})
	late := dial(t, p)
	if _, err := late.Write([]byte("hello?")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the new connection is swallowed", func() error {
		if st := p.Stats(); st.Accepted != 2 || st.Swallowed != int64(len("hello?")) {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	if up.accepted.Load() != 1 {
		t.Errorf("the server saw %d connections; the one made in the hole must not reach it", up.accepted.Load())
	}
	set(t, p, Fault{Mode: Pass})
	if _, err := readErr(late); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the connection made in the hole: %v, want a reset", err)
	}
	if err := roundTrip(idle, "still here"); err != nil {
		t.Errorf("the idle connection did not survive the hole: %v", err)
	}
}

func TestResetResetsOpenAndNewConnections(t *testing.T) {
	up := newEchoServer(t)
	p := newProxy(t, Options{Upstream: up.ln.Addr().String()})
	c := dial(t, p)
	if err := roundTrip(c, "ping"); err != nil {
		t.Fatal(err)
	}
	set(t, p, Fault{Mode: Reset})
	if _, err := readErr(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("open connection: %v, want a reset", err)
	}
	if err := dialReset(p); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("new connection: %v, want a reset", err)
	}
	if st := p.Stats(); st.Reset != 1 || st.Refused != 1 || up.accepted.Load() != 1 {
		t.Errorf("stats %+v, the server saw %d connections: want one reset, one refused, one upstream", st, up.accepted.Load())
	}
	set(t, p, Fault{Mode: Pass})
	if err := roundTrip(dial(t, p), "after"); err != nil {
		t.Fatal(err)
	}
}

// Latency delays each chunk each way and keeps their order, also across
// a change of delay.
func TestLatencyDelaysInOrder(t *testing.T) {
	up := newEchoServer(t)
	p := newProxy(t, Options{Upstream: up.ln.Addr().String()})
	c := dial(t, p)
	const delay = 40 * time.Millisecond
	set(t, p, Fault{Mode: Latency, Delay: delay})
	start := time.Now()
	if err := roundTrip(c, "slow"); err != nil {
		t.Fatal(err)
	}
	// A lower bound: the proxy holds each chunk at least its delay.
	if rtt := time.Since(start); rtt < 2*delay {
		t.Errorf("a round trip took %v with %v each way", rtt, delay)
	}
	var want bytes.Buffer
	for i := range 50 {
		if i == 25 {
			set(t, p, Fault{Mode: Pass}) // chunks queued behind the delayed ones
		}
		msg := fmt.Sprintf("<%d>", i)
		want.WriteString(msg)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, want.Len())
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("read back %q, want %q", got, want.Bytes())
	}
	if err := p.Set(Fault{Mode: Latency}); err == nil {
		t.Error("a latency of 0 was accepted")
	}
	if err := p.Set(Fault{Mode: "flaky"}); err == nil {
		t.Error("an unknown mode was accepted")
	}
}

func TestUnreachableUpstreamIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p := newProxy(t, Options{Upstream: addr})
	if err := dialReset(p); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client of an unreachable server: %v, want a reset", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("a proxy without an upstream was built")
	}
}

// Through a real NATS server: published subjects are seen forwarded, and
// in a hole swallowed, while the client still believes it is connected.
func TestNATSPublishesThroughProxy(t *testing.T) {
	u, err := url.Parse(strings.Split(testenv.NATSURL(t), ",")[0])
	if err != nil {
		t.Fatal(err)
	}
	type pub struct {
		subject   string
		swallowed bool
	}
	var mu sync.Mutex
	var pubs []pub
	p := newProxy(t, Options{Upstream: u.Host, Tap: func() Tap {
		return NATSPublishes(func(subject string, swallowed bool) {
			mu.Lock()
			defer mu.Unlock()
			pubs = append(pubs, pub{subject, swallowed})
		})
	}})
	nc, err := nats.Connect("nats://"+p.Addr(), nats.Timeout(5*time.Second), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("faultproxy.test.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("faultproxy.test.a", []byte("PUB fake 3\r\nabc\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: "faultproxy.test.b", Reply: "inbox.1", Header: nats.Header{"K": {"v"}}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"faultproxy.test.a", "faultproxy.test.b"} {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil || m.Subject != want {
			t.Fatalf("received %v, %v; want %s", m, err, want)
		}
	}
	set(t, p, Fault{Mode: BlackHole})
	if err := nc.Publish("faultproxy.test.c", []byte("lost")); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(300 * time.Millisecond); err == nil {
		t.Error("a flush went through the hole")
	}
	if !nc.IsConnected() {
		t.Error("the client noticed the hole at once")
	}
	mu.Lock()
	got := slices.Clone(pubs)
	mu.Unlock()
	want := []pub{{"faultproxy.test.a", false}, {"faultproxy.test.b", false}, {"faultproxy.test.c", true}}
	if !slices.Equal(got, want) {
		t.Errorf("the tap saw %v, want %v", got, want)
	}
	set(t, p, Fault{Mode: Pass})
}

// Through a real Redis: a command in a hole times out, and the client
// works again once the hole ends (the broken connection reset).
func TestRedisThroughProxy(t *testing.T) {
	raw := testenv.RedisURL(t)
	_, prefix := testenv.RedisAt(t, raw) // deletes the test's keys at the end
	ropts, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, Options{Upstream: ropts.Addr})
	ropts.Addr, ropts.ReadTimeout, ropts.MaxRetries = p.Addr(), 300*time.Millisecond, -1
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	ctx := context.Background()
	key := prefix + "k"
	if err := rdb.Set(ctx, key, "1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	set(t, p, Fault{Mode: BlackHole})
	var ne net.Error
	if err := rdb.Get(ctx, key).Err(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("GET in the hole: %v, want a timeout", err)
	}
	set(t, p, Fault{Mode: Pass})
	testenv.WaitFor(t, 10*time.Second, "Redis answers after the hole", func() error {
		return rdb.Get(ctx, key).Err()
	})
}

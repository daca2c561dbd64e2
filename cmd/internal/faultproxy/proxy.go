// Package faultproxy is a TCP proxy that injects network faults between
// clients and their server, on command: it black-holes the traffic
// (bytes swallowed both ways, connections kept open, new ones accepted
// and swallowed too), resets the connections (and every new one while
// the fault lasts), or delays each chunk of bytes, in both directions and
// in order. A tap sees every byte a client sends, forwarded or swallowed.
//
// capoller's chaos harness puts one between each replica and Redis, and
// one between each replica and NATS, to partition a replica from either.
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does to the traffic.
type Mode string

// The modes.
const (
	// Pass forwards the bytes as they come.
	Pass Mode = "pass"
	// BlackHole reads and discards the bytes of both directions and keeps
	// the connections open; a connection accepted meanwhile is never
	// connected to the server. When the hole ends, each connection that
	// lost a byte (or was never connected) is reset: its byte streams
	// cannot go on, as if the middlebox that dropped the packets had also
	// forgotten the connection. One that lost nothing goes on.
	BlackHole Mode = "blackhole"
	// Reset resets every connection (RST, not FIN) and every new one at
	// once, until the fault ends.
	Reset Mode = "reset"
	// Latency delays every chunk read after the fault began by Fault.Delay,
	// in both directions, keeping the order of the bytes.
	Latency Mode = "latency"
)

// Fault is the proxy's behaviour from now on.
type Fault struct {
	Mode Mode
	// Delay is Latency's delay per chunk, each way.
	Delay time.Duration
}

func (f Fault) String() string {
	if f.Mode == Latency {
		return fmt.Sprintf("%s %v", f.Mode, f.Delay)
	}
	return string(f.Mode)
}

// Tap sees, in order, every chunk of bytes a client sends on one
// connection, and whether the proxy swallowed it (black hole) or forwarded
// it (at once or after a delay). It is called from the connection's own
// goroutine, when the chunk is read, and must not keep p.
type Tap func(p []byte, swallowed bool)

// Options configures a [Proxy].
type Options struct {
	// Upstream is the server's host:port; required.
	Upstream string
	// Listen is the address to listen on; default 127.0.0.1:0 (a free
	// port, see [Proxy.Addr]).
	Listen string
	// DialTimeout bounds the connection to the server; default 5s. A
	// client whose server cannot be reached is reset.
	DialTimeout time.Duration
	// Tap, if set, is called for each connection accepted; the Tap it
	// returns (nil for none) sees what the client sends on it.
	Tap func() Tap
}

// Stats counts what the proxy did since it started.
type Stats struct {
	// Accepted connections; Refused are those reset at once (Reset
	// mode, or an unreachable server); Reset those reset later.
	Accepted, Refused, Reset int64
	// Forwarded and Swallowed bytes, both directions.
	Forwarded, Swallowed int64
}

// Proxy forwards the connections made to it to its upstream, with the
// fault set last.
type Proxy struct {
	opts Options
	ln   net.Listener

	mu     sync.Mutex
	fault  Fault
	conns  map[*pair]struct{}
	closed bool

	wg                                             sync.WaitGroup
	accepted, refused, reset, forwarded, swallowed atomic.Int64
}

// New listens and starts forwarding, in Pass mode.
func New(opts Options) (*Proxy, error) {
	if opts.Upstream == "" {
		return nil, errors.New("faultproxy: an upstream address is required")
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen on %s: %w", opts.Listen, err)
	}
	p := &Proxy{opts: opts, ln: ln, fault: Fault{Mode: Pass}, conns: map[*pair]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Fault returns the fault in effect.
func (p *Proxy) Fault() Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// Set puts f in effect now: Reset resets every connection; the end of a
// black hole resets those that lost bytes.
func (p *Proxy) Set(f Fault) error {
	switch f.Mode {
	case Pass, BlackHole, Reset:
		f.Delay = 0
	case Latency:
		if f.Delay <= 0 {
			return fmt.Errorf("faultproxy: latency %v: want a positive delay", f.Delay)
		}
	default:
		return fmt.Errorf("faultproxy: unknown mode %q", f.Mode)
	}
	p.mu.Lock()
	prev := p.fault
	p.fault = f
	var doomed []*pair
	for c := range p.conns {
		if f.Mode == Reset || (prev.Mode == BlackHole && f.Mode != BlackHole && c.isBroken()) {
			doomed = append(doomed, c)
		}
	}
	p.mu.Unlock()
	for _, c := range doomed {
		if c.abort() {
			p.reset.Add(1)
		}
	}
	return nil
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	return Stats{Accepted: p.accepted.Load(), Refused: p.refused.Load(), Reset: p.reset.Load(),
		Forwarded: p.forwarded.Load(), Swallowed: p.swallowed.Load()}
}

// Conns is the number of connections open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, resets every connection and waits for their
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		c.abort()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			var ne net.Error
			if closed || !errors.As(err, &ne) || !ne.Timeout() {
				return
			}
			continue
		}
		p.accepted.Add(1)
		p.wg.Go(func() { p.serve(c.(*net.TCPConn)) })
	}
}

// serve runs one client's connection until either side ends it.
func (p *Proxy) serve(client *net.TCPConn) {
	var up *net.TCPConn
	switch p.Fault().Mode {
	case Reset:
		p.refused.Add(1)
		resetConn(client)
		return
	case BlackHole:
		// Never connected: swallowed until the hole ends, then reset.
	default:
		c, err := net.DialTimeout("tcp", p.opts.Upstream, p.opts.DialTimeout)
		if err != nil {
			p.refused.Add(1)
			resetConn(client)
			return
		}
		up = c.(*net.TCPConn)
	}
	c := &pair{p: p, client: client, up: up, done: make(chan struct{})}
	if up == nil {
		c.broken.Store(true)
	}
	p.mu.Lock()
	// The fault may have changed while dialing: a Reset since, or a hole
	// that ended, would have missed this connection.
	mode := p.fault.Mode
	if p.closed || mode == Reset || (up == nil && mode != BlackHole) {
		p.mu.Unlock()
		p.refused.Add(1)
		c.abort()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.abort()
	}()
	var tap Tap
	if p.opts.Tap != nil {
		tap = p.opts.Tap()
	}
	var wg sync.WaitGroup
	wg.Go(func() { c.pump(client, up, tap) })
	if up != nil {
		wg.Go(func() { c.pump(up, client, nil) })
	}
	wg.Wait()
}

// pair is a client's connection and the proxy's own to the server (nil
// when it was accepted into a black hole).
type pair struct {
	p      *Proxy
	client *net.TCPConn
	up     *net.TCPConn
	// broken: a byte was swallowed, so the streams cannot go on.
	broken atomic.Bool
	once   sync.Once
	done   chan struct{}
}

func (c *pair) isBroken() bool { return c.broken.Load() }

// abort resets both connections (once), and reports whether this call
// did.
func (c *pair) abort() bool {
	did := false
	c.once.Do(func() {
		did = true
		close(c.done)
		resetConn(c.client)
		if c.up != nil {
			resetConn(c.up)
		}
	})
	return did
}

// finish closes both connections after one side ended.
func (c *pair) finish() {
	c.once.Do(func() {
		close(c.done)
		_ = c.client.Close()
		if c.up != nil {
			_ = c.up.Close()
		}
	})
}

type chunk struct {
	data []byte
	due  time.Time
}

// pump copies src to dst (nil: swallow everything) with the fault in
// effect when each chunk is read, through a queue that keeps the order
// of delayed chunks.
func (c *pair) pump(src, dst *net.TCPConn, tap Tap) {
	queue := make(chan chunk, 64)
	var writer sync.WaitGroup
	writer.Go(func() { c.write(dst, queue) })
	defer writer.Wait()
	defer close(queue)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f, swallow := c.decide(dst == nil, n)
			if tap != nil {
				tap(buf[:n], swallow)
			}
			if !swallow {
				ch := chunk{data: append([]byte(nil), buf[:n]...), due: time.Now()}
				if f.Mode == Latency {
					ch.due = ch.due.Add(f.Delay)
				}
				select {
				case queue <- ch:
				case <-c.done:
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// decide says whether n bytes read now are swallowed (always, when the
// connection has no server side), and if so marks the connection broken,
// under the lock that Set holds: a hole that ends resets every connection
// that lost a byte to it.
func (c *pair) decide(noServer bool, n int) (Fault, bool) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	f := c.p.fault
	swallow := noServer || f.Mode == BlackHole || f.Mode == Reset
	if swallow {
		c.broken.Store(true)
		c.p.swallowed.Add(int64(n))
	}
	return f, swallow
}

// write sends the queued chunks to dst, each when it is due; once the
// source ended (the queue closed) it closes both connections.
func (c *pair) write(dst *net.TCPConn, queue <-chan chunk) {
	defer c.finish()
	failed := false
	for ch := range queue {
		if failed {
			continue // draining
		}
		if wait := time.Until(ch.due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				failed = true
				continue
			}
		}
		if _, swallow := c.decide(false, len(ch.data)); swallow {
			continue // delayed into a hole that began since: lost too
		}
		if _, err := dst.Write(ch.data); err != nil {
			failed = true
			c.abort()
			continue
		}
		c.p.forwarded.Add(int64(len(ch.data)))
	}
}

// resetConn closes a connection with an RST instead of a FIN.
func resetConn(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

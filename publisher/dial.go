package publisher

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/capoller/capoller/poller/sensitive"
)

// DialOptions configures [Dial].
type DialOptions struct {
	// URL is the NATS server's, or a comma-separated list of servers.
	URL string
	// Auth says how to authenticate and check the servers' certificates.
	Auth NATSAuth
	// Name is the client's name, as the servers show it.
	Name string
	// Logger, if set, hears of the connection's life: the client's
	// asynchronous errors, disconnections, reconnections, and each new
	// reason the servers cannot be reached. Without it the client's
	// asynchronous errors go to stderr, as nats.go prints them.
	Logger *zap.Logger
	// Options are more of nats.Connect's options: reconnection, timeouts,
	// buffers. Dial's own handlers are set after them, and win.
	Options []nats.Option
	// JetStream are the options of the connection's JetStream context.
	JetStream []jetstream.JetStreamOpt
}

// Conn is a connection [Dial] opened: the client's connection, a
// JetStream context on it, and what its handlers learnt: whether the
// client gave up for good, and why the servers cannot be reached.
type Conn struct {
	*nats.Conn
	// JetStream is a JetStream context on the connection.
	JetStream jetstream.JetStream

	closed      chan struct{}
	mu          sync.Mutex
	unreachable string // why the servers cannot be reached, while they cannot
}

// ClosedError is why a connection [Dial] opened ended for good: the client
// gave up on the servers (a fatal protocol error, or credentials the
// server refused twice) and will not reconnect; or it was closed.
type ClosedError struct {
	// Cause is the client's last error, without a URL; nil after Close.
	Cause error
}

// Error says that the connection is closed, and why.
func (e *ClosedError) Error() string {
	return fmt.Sprintf("the NATS connection was closed for good (%v)", e.Cause)
}

// Unwrap returns the cause.
func (e *ClosedError) Unwrap() error { return e.Cause }

// Dial connects to the NATS servers of o.URL with the authentication and
// TLS of o.Auth, and opens a JetStream context on the connection, which
// the caller closes. Its errors start with "connect to NATS at <url>", the
// URL redacted, or with "jetstream", and hold no secret.
func Dial(o DialOptions) (*Conn, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c := &Conn{closed: make(chan struct{})}
	opts, err := natsOptions(o.Auth)
	if err == nil {
		if o.Name != "" {
			opts = append(opts, nats.Name(o.Name))
		}
		opts = append(opts, o.Options...)
		opts = append(opts, c.handlers(o, log)...)
		c.Conn, err = nats.Connect(o.URL, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", sensitive.RedactURL(o.URL), sensitive.WithoutURL(err))
	}
	if c.JetStream, err = jetstream.New(c.Conn, o.JetStream...); err != nil {
		c.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return c, nil
}

// handlers are the callbacks that keep c's state and tell the log.
func (c *Conn) handlers(o DialOptions, log *zap.Logger) []nats.Option {
	opts := []nats.Option{
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
		nats.ReconnectHandler(func(*nats.Conn) { c.setUnreachable(""); log.Info("NATS reconnected") }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			// Each failed attempt to reach the server, the first
			// connection's too: logged once per change of cause.
			if msg := sensitive.WithoutURL(err).Error(); c.setUnreachable(msg) != msg {
				log.Warn("NATS is not reachable; retrying", zap.String("nats", sensitive.RedactURL(o.URL)), zap.String("cause", msg))
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Drain/Close
				log.Warn("NATS disconnected", zap.Error(err))
			}
		}),
	}
	// Always one: nats.go's default prints raw lines to stderr. Without a
	// Logger, the error is dropped; the call that meets it says why.
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("NATS error", zap.Error(err)) }))
	return opts
}

// setUnreachable records why the servers cannot be reached ("" once
// reconnected) and returns what it replaces.
func (c *Conn) setUnreachable(cause string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.unreachable
	c.unreachable = cause
	return old
}

// Closed is closed when the connection ends for good: the client gave up
// on the servers, or it was closed.
func (c *Conn) Closed() <-chan struct{} { return c.closed }

// Err is nil until Closed is closed, and then a [*ClosedError] holding the
// client's last error.
func (c *Conn) Err() error {
	select {
	case <-c.closed:
		return &ClosedError{Cause: sensitive.WithoutURL(c.LastError())}
	default:
		return nil
	}
}

// Explain returns err, and while the connection is down, err with why the
// servers cannot be reached: "(NATS is not reachable: <cause>)". A call
// made while disconnected fails with an error that says little ("outbound
// buffer limit exceeded").
func (c *Conn) Explain(err error) error {
	c.mu.Lock()
	cause := c.unreachable
	c.mu.Unlock()
	if err != nil && !c.IsConnected() && cause != "" {
		return fmt.Errorf("%w (NATS is not reachable: %s)", err, cause)
	}
	return err
}

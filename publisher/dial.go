package publisher

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

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
	// asynchronous errors are dropped: the call that meets one says why.
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
	fatal       error  // why the connection was ended for good, if Dial ended it
}

// setFatal records why the connection is ended for good.
func (c *Conn) setFatal(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fatal == nil {
		c.fatal = err
	}
}

// tlsFailure reports whether err is a failure of TLS that reconnecting
// will not mend: a certificate not trusted or not for the host, a
// handshake the server refused, or a plain-text server where TLS was
// asked for (and the reverse).
func tlsFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		header   tls.RecordHeaderError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &alert) || errors.As(err, &header) ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) ||
		strings.Contains(err.Error(), "remote error: tls:")
}

// ClosedError is why a connection [Dial] opened ended for good: the client
// gave up on the servers (a fatal protocol error, or credentials the
// server refused twice), or Dial ended it on a TLS failure that
// reconnecting will not mend; or it was closed.
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
	dialer := &dialRecorder{}
	opts, err := natsOptions(o.Auth)
	if err == nil {
		if o.Name != "" {
			opts = append(opts, nats.Name(o.Name))
		}
		opts = append(opts, o.Options...)
		opts = append(opts, c.handlers(o, log)...)
		dialer.d.Timeout = connectTimeout(opts)
		opts = append(opts, nats.SetCustomDialer(dialer))
		c.Conn, err = nats.Connect(o.URL, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", sensitive.RedactURL(o.URL), sensitive.WithoutURL(dialer.explain(err)))
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
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			if tlsFailure(err) {
				// A certificate the client does not trust, or a server
				// that speaks no TLS: retrying will not change it. The
				// connection ends, and Err says why.
				c.setFatal(sensitive.WithoutURL(err))
				go nc.Close()
			}
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
		c.mu.Lock()
		fatal := c.fatal
		c.mu.Unlock()
		if fatal != nil {
			return &ClosedError{Cause: fatal}
		}
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
		return &unreachableError{cause: cause, err: err}
	}
	return err
}

// unreachableError puts why the servers cannot be reached first, and the
// call's own error, which says little, after it.
type unreachableError struct {
	cause string
	err   error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("NATS is not reachable: %s (%v)", e.cause, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// dialRecorder dials the servers as nats.go's own dialer does, and keeps
// the last failure: nats.Connect reports only "no servers available for
// connection", and the refused connection, the name that does not
// resolve or the timeout is what an operator needs to read.
type dialRecorder struct {
	d    net.Dialer
	mu   sync.Mutex
	last error
}

// Dial is nats.CustomDialer's.
func (r *dialRecorder) Dial(network, address string) (net.Conn, error) {
	conn, err := r.d.Dial(network, address)
	if err != nil {
		r.mu.Lock()
		r.last = err
		r.mu.Unlock()
	}
	return conn, err
}

// connectTimeout is the dial timeout opts set (nats.Timeout), which a
// custom dialer must apply itself.
func connectTimeout(opts []nats.Option) time.Duration {
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		_ = opt(&o) // an option's error is nats.Connect's to report
	}
	return o.Timeout
}

// explain puts the last dial failure first in an error of nats.Connect
// that says only that no server was available.
func (r *dialRecorder) explain(err error) error {
	r.mu.Lock()
	last := r.last
	r.mu.Unlock()
	if last == nil || !errors.Is(err, nats.ErrNoServers) {
		return err
	}
	return fmt.Errorf("%w (%w)", last, err)
}

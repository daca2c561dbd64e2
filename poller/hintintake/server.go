// Package hintintake owns the endpoint EventBridge pushes Cloud
// Assistant's TaskCompleted events to: authenticated (a token, compared in
// constant time), bounded and strictly decoded (cloudassist.ParseHints),
// each hint handed over NATS to the replica that owns its shard
// (publisher.ForwardHint), retried while the shard changes hands. The
// owner's poller looks the invocation up (poller.Poller.Hint): a hint is
// never published.
package hintintake

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/sensitive"
	"github.com/capoller/capoller/publisher"
)

// Path is where EventBridge's HTTP target posts.
const Path = "/v1/hints/cloudassist"

// Server takes EventBridge's pushes on any replica and hands each hint to
// the owner of its shard (see publisher.ForwardHint). A hint is only a
// reason to look now: the owner looks the invocation up, and publishes
// what the API says.
type Server struct {
	log      *zap.Logger
	token    *tokenSource
	accounts map[string]string // uid → account; "" → the account of any uid
	shards   map[diff.Shard]bool
	prefix   string
	nc       *nats.Conn
	ttl      time.Duration // how long a hint waits for a shard's owner
	queue    chan forward
	opts     Options
	// forwarding counts the hints waiting for an owner that answers.
	forwarding atomic.Int64
	refusals   sync.Map // reason → logged once
	posted     prometheus.Counter
	refused    *prometheus.CounterVec
	routed     *prometheus.CounterVec
}

// forward is a hint on its way to its shard's owner.
type forward struct {
	subject string
	msg     publisher.HintMessage
}

// Options configure a [Server].
type Options struct {
	// Listen is the endpoint's address; TLSCert and TLSKey, if set, serve
	// TLS.
	Listen, TLSCert, TLSKey string
	// Token, or TokenFile (read again when it changes), is what a push
	// must carry, as a Bearer token or Basic's password.
	Token, TokenFile string
	// Accounts maps an Alibaba Cloud uid to the account whose shards its
	// hints are; the key "" takes any uid. A uid it lacks is refused.
	Accounts map[string]string
	// Shards are those polled: a hint for another is refused.
	Shards []diff.Shard
	// SubjectPrefix is the events' (see publisher.HintSubject).
	SubjectPrefix string
	// NATS carries the hints to the shards' owners.
	NATS *nats.Conn
	// Wait is how long a hint waits for its shard's owner, while the shard
	// changes hands; about twice the lease TTL.
	Wait time.Duration
	// Logger, default none; Registerer takes the endpoint's metrics,
	// default a registry of its own.
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

// New builds the endpoint; Listen opens its address and Start forwards
// what it takes.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	h := &Server{log: o.Logger.Named("hints"), token: newTokenSource(o.Token, o.TokenFile), accounts: o.Accounts,
		shards: map[diff.Shard]bool{}, prefix: o.SubjectPrefix, nc: o.NATS, ttl: o.Wait, queue: make(chan forward, 4096), opts: o,
		posted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "capoller_hints_posted_total", Help: "Hints EventBridge posted to this replica and it took."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "capoller_hints_refused_total", Help: "Pushes refused, by reason."}, []string{"reason"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "capoller_hints_forwarded_total",
			Help: "Hints handed to their shard's owner (ok), or given up on (unrouted: no owner answered in time, or the queue was full; polling finds their changes)."}, []string{"result"})}
	o.Registerer.MustRegister(h.posted, h.refused, h.routed)
	for _, s := range o.Shards {
		if s.Source == diff.SourceECS {
			h.shards[s] = true
		}
	}
	return h
}

// Listen opens the endpoint's address, with TLS if configured: a
// handler for any HTTP server (the Server itself).
func (h *Server) Listen() (net.Listener, error) {
	// A token it cannot read, or an empty one, would refuse every push
	// while the daemon looked healthy: say so now.
	if _, err := h.token.get(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", h.opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("hints-listen: %w", err)
	}
	if h.opts.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(h.opts.TLSCert, h.opts.TLSKey)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("hints-tls-cert and hints-tls-key: %w", sensitive.WithoutPath(err))
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	h.log.Info("hints endpoint listening", zap.String("addr", ln.Addr().String()), zap.Bool("tls", h.opts.TLSCert != ""))
	return ln, nil
}

// Start forwards the hints taken, in g, until ctx ends.
func (h *Server) Start(ctx context.Context, g *errgroup.Group) {
	for range 4 {
		g.Go(func() error { h.forwardAll(ctx); return nil })
	}
}

// ServeHTTP takes one push: authenticated, bounded, strictly decoded, for
// a known account and a shard this configuration polls.
func (h *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path != Path:
		h.refuse(w, "path", http.StatusNotFound, "not found: POST "+Path)
		return
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		h.refuse(w, "method", http.StatusMethodNotAllowed, "POST only")
		return
	case !h.authorized(r):
		w.Header().Set("WWW-Authenticate", `Bearer realm="capoller hints"`)
		h.refuse(w, "unauthorized", http.StatusUnauthorized, "a valid token is required")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, cloudassist.MaxHintBody))
	if err != nil {
		h.refuse(w, "too_large", http.StatusRequestEntityTooLarge, fmt.Sprintf("a body of at most %d bytes", cloudassist.MaxHintBody))
		return
	}
	hints, err := cloudassist.ParseHints(body, r.Header.Get("Content-Type"))
	if err != nil {
		var he *cloudassist.HintError
		status := http.StatusBadRequest
		reason := "malformed"
		if errors.As(err, &he) {
			reason = he.Reason
			if reason == "content_type" {
				status = http.StatusUnsupportedMediaType
			}
		}
		h.refuse(w, reason, status, err.Error())
		return
	}
	var routes []forward
	for _, hint := range hints {
		account, ok := h.accounts[hint.AccountUID]
		if !ok {
			account, ok = h.accounts[""]
		}
		if !ok {
			h.refuse(w, "account", http.StatusForbidden, "a hint for an account uid no account of this configuration names")
			return
		}
		shard := diff.Shard{Account: account, Source: diff.SourceECS, Region: hint.Region}
		if !h.shards[shard] {
			h.refuse(w, "shard", http.StatusUnprocessableEntity, fmt.Sprintf("no shard %s is polled with source ecs here", shard))
			return
		}
		routes = append(routes, forward{subject: publisher.HintSubject(h.prefix, shard),
			msg: publisher.HintMessage{InvokeID: hint.InvokeID, InstanceID: hint.InstanceID, Received: time.Now()}})
	}
	for _, f := range routes {
		select {
		case h.queue <- f:
		default:
			h.routed.WithLabelValues("unrouted").Inc()
		}
	}
	h.posted.Add(float64(len(hints)))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = fmt.Fprintf(w, "{\"accepted\":%d}\n", len(hints))
}

// refuse answers a refused push, counts it, and logs its kind once.
func (h *Server) refuse(w http.ResponseWriter, reason string, status int, msg string) {
	h.refused.WithLabelValues(reason).Inc()
	if _, seen := h.refusals.LoadOrStore(reason, true); !seen {
		h.log.Warn("a push was refused (logged once per reason; capoller_hints_refused_total counts them)",
			zap.String("reason", reason), zap.Int("status", status), zap.String("why", msg))
	}
	http.Error(w, msg, status)
}

// authorized compares the push's token, as a Bearer token or Basic's
// password, with the configured one, in constant time.
func (h *Server) authorized(r *http.Request) bool {
	want, err := h.token.get()
	if err != nil || want == "" {
		return false
	}
	got := ""
	if _, pw, ok := r.BasicAuth(); ok {
		got = pw
	} else if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = strings.TrimSpace(b)
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// forwardAll hands queued hints to their shards' owners until ctx ends.
// While a shard has no owner (it is changing hands), a hint is retried
// until h.ttl after it came.
func (h *Server) forwardAll(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-h.queue:
			h.routed.WithLabelValues(h.forward(ctx, f)).Inc()
		}
	}
}

func (h *Server) forward(ctx context.Context, f forward) string {
	h.forwarding.Add(1)
	defer h.forwarding.Add(-1)
	wait := 100 * time.Millisecond
	for {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := publisher.ForwardHint(fctx, h.nc, f.subject, f.msg)
		cancel()
		if err == nil {
			return "ok"
		}
		if ctx.Err() != nil || time.Since(f.msg.Received)+wait > h.ttl {
			h.log.Debug("a hint found no owner in time; the listing will find its change", zap.String("subject", f.subject), zap.Error(err))
			return "unrouted"
		}
		select {
		case <-ctx.Done():
			return "unrouted"
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// tokenSource is the hints' token: inline, or read from a file again when
// the file changes (a rotated Kubernetes Secret).
type tokenSource struct {
	inline, file string
	mu           sync.Mutex
	mod          time.Time
	size         int64
	value        string
}

func newTokenSource(inline, file string) *tokenSource {
	return &tokenSource{inline: inline, file: file}
}

func (t *tokenSource) get() (string, error) {
	if t.file == "" {
		return t.inline, nil
	}
	fi, err := os.Stat(t.file)
	if err != nil {
		return "", fmt.Errorf("hints-token-file %s: %w", t.file, sensitive.WithoutPath(err))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if fi.ModTime().Equal(t.mod) && fi.Size() == t.size && t.value != "" {
		return t.value, nil
	}
	value, err := sensitive.Secret("hints-token", "", t.file)
	if err != nil {
		return "", err
	}
	t.value, t.mod, t.size = value, fi.ModTime(), fi.Size()
	return t.value, nil
}

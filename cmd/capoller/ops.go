package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/capoller/capoller/poller"
)

// opsServer is the daemon's operations side: /metrics, /healthz and
// /readyz from the first second, also while start-up waits for NATS or
// Redis (/healthz says the process is alive, /readyz what it waits for);
// and the profiler's listener, if asked for.
type opsServer struct {
	reg     *prometheus.Registry
	metrics *poller.Metrics
	state   *opsState
	addr    string       // the metrics address bound ("" if none): the port chosen for ":0"
	pprof   net.Listener // nil unless --pprof-addr
	stopOps func()
}

// startOps listens on the metrics and profiler addresses before the daemon
// connects anywhere, and serves the ops endpoints at once.
func startOps(cfg config, log *zap.Logger) (*opsServer, error) {
	metricsLn, err := listenMetrics(cfg.MetricsAddr)
	if err != nil {
		return nil, err
	}
	o := &opsServer{reg: newRegistry(), state: &opsState{starting: "connecting to NATS"}, stopOps: func() {}}
	o.metrics = poller.NewMetrics(poller.MetricsOptions{Registerer: o.reg})
	if metricsLn != nil {
		o.addr = metricsLn.Addr().String()
		o.stopOps = serveOps(metricsLn, opsMux(o.reg, o.state.health, o.state.ready))
	}
	if o.pprof, err = listenPprof(cfg.PprofAddr); err != nil {
		o.stop()
		return nil, err
	}
	if o.pprof != nil {
		log.Warn("the Go profiler is served", zap.String("pprof_addr", o.pprof.Addr().String()))
	}
	return o, nil
}

// stop stops serving the ops endpoints and closes the profiler's listener.
func (o *opsServer) stop() {
	if o.pprof != nil {
		_ = o.pprof.Close()
	}
	o.stopOps()
}

// listenMetrics opens the metrics address, if any, before the daemon
// connects anywhere: an address it cannot listen on (a port in use) is a
// configuration error, not a failure found after start-up.
func listenMetrics(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, configError{fmt.Errorf("metrics-addr: %w", err)}
	}
	return ln, nil
}

// opsState is what /healthz and /readyz answer: while the daemon starts,
// what it waits for; then the running daemon's checks.
type opsState struct {
	mu       sync.Mutex
	starting string
	healthFn func() error
	readyFn  func(context.Context) error
}

func (o *opsState) setStarting(what string) {
	o.mu.Lock()
	o.starting = what
	o.mu.Unlock()
}

func (o *opsState) running(health func() error, ready func(context.Context) error) {
	o.mu.Lock()
	o.starting, o.healthFn, o.readyFn = "", health, ready
	o.mu.Unlock()
}

func (o *opsState) health() error {
	o.mu.Lock()
	h := o.healthFn
	o.mu.Unlock()
	if h == nil {
		return nil // starting: alive, and waiting (see /readyz)
	}
	return h()
}

func (o *opsState) ready(ctx context.Context) error {
	o.mu.Lock()
	starting, r := o.starting, o.readyFn
	o.mu.Unlock()
	if r == nil {
		return fmt.Errorf("starting: %s", starting)
	}
	return r(ctx)
}

// serveOps serves handler on ln until the returned stop is called.
func serveOps(ln net.Listener, handler http.Handler) (stop func()) {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // ends with the stop below
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
}

// serveHTTP serves handler on ln in g until ctx ends.
func serveHTTP(ctx context.Context, g *errgroup.Group, ln net.Listener, handler http.Handler, what string) {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}

// listenPprof opens the profiler's address, if any: a bare port binds to
// localhost, so that exposing the profiler takes an explicit host.
func listenPprof(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, configError{fmt.Errorf("pprof-addr: %w", err)}
	}
	return ln, nil
}

// pprofMux serves the Go profiler under /debug/pprof/.
func pprofMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// newRegistry is the registry /metrics serves: the daemon's metrics, the
// Go runtime's and the process's, and capoller_build_info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capoller_build_info", Help: "1, labelled by the version of the binary.",
			ConstLabels: prometheus.Labels{"version": buildVersion()}}, func() float64 { return 1 }))
	return reg
}

// opsMux serves /metrics, /healthz and /readyz. /healthz answers 503 with
// the reason while health reports an error, /readyz while ready does.
func opsMux(reg prometheus.Gatherer, health func() error, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

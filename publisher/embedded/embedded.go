// Package embedded runs a NATS server with JetStream inside the process:
// for `capoller run --nats-url embedded`, the demo, the harnesses and the
// tests. It is a package of its own so that importers of publisher do not
// build the NATS server.
package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures an in-process NATS server.
type Options struct {
	// StoreDir keeps JetStream's data; required, so restarts resume.
	StoreDir string
	// Host and Port to listen on; default 127.0.0.1 and a free port.
	Host string
	Port int
}

// Server is a NATS server with JetStream running in this process.
type Server struct {
	srv *server.Server
}

// Run starts an in-process NATS server with JetStream and waits until it
// accepts connections.
func Run(opts Options) (*Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("embedded: a server needs a store directory")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "capoller-embedded", Host: opts.Host, Port: opts.Port,
		JetStream: true, StoreDir: opts.StoreDir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded: the server did not become ready in 10s")
	}
	return &Server{srv: srv}, nil
}

// URL is the server's client URL.
func (e *Server) URL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it.
func (e *Server) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

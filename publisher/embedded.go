package publisher

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configures an in-process NATS server.
type EmbeddedOptions struct {
	// StoreDir keeps JetStream's data; required, so restarts resume.
	StoreDir string
	// Host and Port to listen on; default 127.0.0.1 and a free port.
	Host string
	Port int
}

// Embedded is a NATS server with JetStream running in this process.
type Embedded struct {
	srv *server.Server
}

// RunEmbedded starts an in-process NATS server with JetStream and waits
// until it accepts connections.
func RunEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("publisher: an embedded server needs a store directory")
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
		return nil, fmt.Errorf("publisher: embedded server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("publisher: embedded server did not become ready in 10s")
	}
	return &Embedded{srv: srv}, nil
}

// URL is the server's client URL.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

package main

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
)

// natsProxy forwards NATS connections and can end them with a protocol
// error that nats.go treats as fatal, as a server does when a subject
// passes its control-line limit.
type natsProxy struct {
	upstream string
	mu       sync.Mutex
	ln       net.Listener
	clients  []net.Conn
	servers  []net.Conn
}

// newNATSProxy is a TCP proxy to upstream (a NATS or Redis address, with
// or without its scheme), which a test can cut.
func newNATSProxy(t *testing.T, upstream string) *natsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, hostPort, ok := strings.Cut(upstream, "://")
	if !ok {
		hostPort = upstream
	}
	hostPort, _, _ = strings.Cut(hostPort, "/")
	p := &natsProxy{ln: ln, upstream: hostPort}
	t.Cleanup(func() { p.down() })
	go p.serve(ln)
	return p
}

func (p *natsProxy) serve(ln net.Listener) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.clients, p.servers = append(p.clients, client), append(p.servers, server)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(server, client); _ = server.Close() }()
		go func() { _, _ = io.Copy(client, server) }()
	}
}

// down stops listening and cuts every connection: to its clients the
// server is gone.
func (p *natsProxy) down() {
	p.mu.Lock()
	_ = p.ln.Close()
	p.mu.Unlock()
	p.kill("")
}

// up listens again on the same address.
func (p *natsProxy) up(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	ln, err := net.Listen("tcp", p.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	go p.serve(ln)
}

// kill cuts every connection from the server, sends the clients line,
// and closes them.
func (p *natsProxy) kill(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.servers {
		_ = s.Close()
	}
	for _, c := range p.clients {
		if line != "" {
			_, _ = c.Write([]byte(line))
		}
		_ = c.Close()
	}
	p.servers, p.clients = nil, nil
}

func (p *natsProxy) addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ln.Addr().String()
}

func (p *natsProxy) url() string { return "nats://" + p.addr() }

// TestRunExitsWhenNATSClosesForGood is the regression test of a dead bus
// connection: after a fatal protocol error nats.go never reconnects, and
// the daemon used to go on failing every publish while /healthz said ok.
// It must exit non-zero so that its supervisor restarts it.
func TestRunExitsWhenNATSClosesForGood(t *testing.T) {
	_, simURL := startEmulator(t)
	stream := testenv.Name("CAPOLLER_CLOSED")
	natsURL := testenv.NATSURL(t)
	testenv.NATS(t, natsURL, stream)
	proxy := newNATSProxy(t, natsURL)
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(t.Context(), []string{"run", "--endpoint", simURL, "--checkpoint", "natskv", "--bucket", stream,
			"--nats-url", proxy.url(), "--stream", stream, "--subject-prefix", strings.ToLower(stream), "--interval", "100ms"}, io.Discard, &stderr)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(stderr.String(), "capoller running") {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not start; logs:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	proxy.kill("-ERR 'Maximum Control Line Exceeded'\r\n")
	select {
	case code := <-done:
		if code != 1 || !strings.Contains(stderr.String(), "NATS connection was closed for good") {
			t.Errorf("exit %d; logs:\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the daemon went on with a closed NATS connection; logs:\n%s", stderr.String())
	}
}

// startEmulator runs an emulator with one instance per product, and sets
// the credentials the daemon's default chain reads to its key.
func startEmulator(t *testing.T) (*castest.Server, string) {
	t.Helper()
	sim, simURL := testenv.Emulator(t, castest.Options{AccessKeyID: "LTAIrun", AccessKeySecret: "run-secret", Instances: 1})
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIrun")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "run-secret")
	t.Setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
	return sim, simURL
}

// ecsInstance is the emulator's last ECS instance.
func ecsInstance(sim *castest.Server) (id string) {
	for _, inst := range sim.Instances() {
		if inst.Product == castest.ProductECS {
			id = inst.ID
		}
	}
	return id
}

// runOnEmulator runs script on an instance of the emulator, through the
// SDK with startEmulator's key pair, and returns the invocation's id.
func runOnEmulator(t *testing.T, simURL, instance, script string) string {
	t.Helper()
	client, err := ecs.NewClientWithOptions("cn-hangzhou", sdk.NewConfig(), credentials.NewStaticAKCredentialsProvider("LTAIrun", "run-secret"))
	if err != nil {
		t.Fatal(err)
	}
	client.Domain = strings.TrimPrefix(simURL, "http://")
	req := ecs.CreateRunCommandRequest()
	req.Type, req.CommandContent, req.InstanceId = "RunShellScript", script, &[]string{instance}
	resp, err := client.RunCommand(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.InvokeId
}

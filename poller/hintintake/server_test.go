package hintintake

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
)

// taskCompleted is EventBridge's push for one instance's run, as casim
// builds its own.
func taskCompleted(invokeID, instanceID, status string) string {
	b, _ := json.Marshal(castest.NewTaskCompleted("cn-hangzhou", "1234567890123456", invokeID, instanceID, status, time.Now()))
	return string(b)
}

// TestHintEndpointRefusals: each refusal has its status, and is counted by
// reason: an account uid none names (403), a region not polled (422), a
// body over 1 MiB (413), another method (405), another type (400); Basic
// auth's password is the token too.
func TestHintEndpointRefusals(t *testing.T) {
	h := New(Options{Listen: "127.0.0.1:0", Token: "hint-S3cret", Accounts: map[string]string{"1234567890123456": diff.DefaultAccount},
		Shards: []diff.Shard{{Account: diff.DefaultAccount, Source: diff.SourceECS, Region: "cn-hangzhou"}}, Logger: zap.NewNop(), Registerer: prometheus.NewRegistry()})
	do := func(method, body string, auth func(*http.Request)) int {
		req := httptest.NewRequest(method, Path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		auth(req)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer hint-S3cret") }
	ok := taskCompleted("t-1", "i-1", "Success")
	for _, c := range []struct {
		method, body string
		auth         func(*http.Request)
		want         int
	}{
		{http.MethodPost, ok, bearer, http.StatusAccepted},
		{http.MethodPost, ok, func(r *http.Request) { r.SetBasicAuth("eventbridge", "hint-S3cret") }, http.StatusAccepted},
		{http.MethodPost, ok, func(r *http.Request) { r.SetBasicAuth("eventbridge", "nope") }, http.StatusUnauthorized},
		{http.MethodPost, strings.Replace(ok, "1234567890123456", "6543210987654321", -1), bearer, http.StatusForbidden},
		{http.MethodPost, strings.Replace(ok, `"aliyunregionid":"cn-hangzhou"`, `"aliyunregionid":"cn-beijing"`, 1), bearer, http.StatusUnprocessableEntity},
		{http.MethodPost, strings.Repeat(" ", cloudassist.MaxHintBody+1) + ok, bearer, http.StatusRequestEntityTooLarge},
		{http.MethodGet, "", bearer, http.StatusMethodNotAllowed},
		{http.MethodPost, strings.Replace(ok, "TaskCompleted", "TaskStarted", 1), bearer, http.StatusBadRequest},
	} {
		if got := do(c.method, c.body, c.auth); got != c.want {
			t.Errorf("%s %.80q: %d, want %d", c.method, c.body, got, c.want)
		}
	}
	for reason, want := range map[string]float64{"account": 1, "shard": 1, "too_large": 1, "method": 1, "type": 1, "unauthorized": 1} {
		if got := testutil.ToFloat64(h.refused.WithLabelValues(reason)); got != want {
			t.Errorf("refusals for %s: %v, want %v", reason, got, want)
		}
	}
}

// TestHintEndpointServesTLS: with a certificate, the endpoint takes pushes
// over TLS only.
func TestHintEndpointServesTLS(t *testing.T) {
	p := testenv.NewPKI(t)
	h := New(Options{Listen: "127.0.0.1:0", TLSCert: p.ServerCert, TLSKey: p.ServerKey, Token: "hint-S3cret", Accounts: map[string]string{"": diff.DefaultAccount},
		Shards: []diff.Shard{{Account: diff.DefaultAccount, Source: diff.SourceECS, Region: "cn-hangzhou"}}, Logger: zap.NewNop(), Registerer: prometheus.NewRegistry()})
	ln, err := h.Listen()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	pem, err := os.ReadFile(p.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	post := func(url string) (int, error) {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(taskCompleted("t-1", "i-1", "Success")))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer hint-S3cret")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	addr := strings.Replace(ln.Addr().String(), "127.0.0.1", "localhost", 1)
	if code, err := post("https://" + addr + Path); err != nil || code != http.StatusAccepted {
		t.Errorf("over TLS: %d, %v", code, err)
	}
	if code, err := post("http://" + addr + Path); err == nil && code == http.StatusAccepted {
		t.Error("plain http was taken")
	}
}

// TestAHintWaitsForItsShardsNextOwner: a hint taken while no replica owns
// its shard (the owner is changing) is retried, and reaches the next owner
// once it serves the shard's hints.
func TestAHintWaitsForItsShardsNextOwner(t *testing.T) {
	nc, err := nats.Connect(testenv.NATSURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	shard := diff.Shard{Account: diff.DefaultAccount, Source: diff.SourceECS, Region: "cn-hangzhou"}
	prefix := strings.ToLower(testenv.Name("handoff"))
	h := New(Options{Listen: "127.0.0.1:0", Token: "hint-S3cret", Accounts: map[string]string{"": diff.DefaultAccount}, Shards: []diff.Shard{shard},
		SubjectPrefix: prefix, NATS: nc, Wait: 20 * time.Second, Logger: zap.NewNop(), Registerer: prometheus.NewRegistry()})
	g, ctx := errgroup.WithContext(t.Context())
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); _ = g.Wait() }()
	h.Start(ctx, g)
	req := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(taskCompleted("t-handoff", "i-1", "Success")))
	req.Header.Set("Authorization", "Bearer hint-S3cret")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusAccepted {
		t.Fatalf("push: %d", w.Code)
	}
	testenv.WaitFor(t, 10*time.Second, "a forward to find no owner", func() error {
		if n := testutil.ToFloat64(h.routed.WithLabelValues("ok")); n != 0 {
			return fmt.Errorf("forwarded %v with no owner", n)
		}
		if h.forwarding.Load() == 0 {
			return errors.New("not retrying yet")
		}
		return nil
	})
	got := make(chan publisher.HintMessage, 1)
	sub, err := publisher.ServeHints(nc, publisher.HintSubject(prefix, shard), func(m publisher.HintMessage) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	select {
	case m := <-got:
		if m.InvokeID != "t-handoff" || m.InstanceID != "i-1" {
			t.Errorf("the next owner got %+v", m)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the hint never reached the shard's next owner")
	}
	testenv.WaitFor(t, 5*time.Second, "the forward counted", func() error {
		if n := testutil.ToFloat64(h.routed.WithLabelValues("ok")); n != 1 {
			return fmt.Errorf("%v forwarded", n)
		}
		return nil
	})
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// TestCasimEventBridgeFlags: --eventbridge-url and --eventbridge-token push
// the workload's ended runs with the token and --uid's account id, the
// control plane shows the target, and bad values are refused.
func TestCasimEventBridgeFlags(t *testing.T) {
	type post struct {
		auth string
		ev   castest.TaskCompleted
	}
	posts := make(chan post, 100)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev castest.TaskCompleted
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("receiver: %v", err)
		}
		select {
		case posts <- post{r.Header.Get("Authorization"), ev}:
		default: // the test has what it needs
		}
	}))
	defer receiver.Close()

	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--access-key-id", "id", "--access-key-secret", "s", "--instances", "1", "--workload", "50ms",
			"--eventbridge-url", receiver.URL, "--eventbridge-token", "hint-token", "--uid", "1234567890123456",
			"--account", "prod:LTAIprod:prod-secret::6543210987654321"}, &lineWriter{ready: ready}, io.Discard)
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("casim printed nothing")
	}
	select {
	case p := <-posts:
		if p.auth != "Bearer hint-token" || p.ev.Type != castest.TaskCompletedType || p.ev.AliyunAccountID != "1234567890123456" {
			t.Errorf("pushed with Authorization %q: %+v", p.auth, p.ev)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("casim pushed nothing")
	}
	resp, err := http.Get(strings.TrimPrefix(line, "listening on ") + "/_casim/eventbridge")
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		URL      string            `json:"url"`
		TokenSet bool              `json:"tokenSet"`
		Stats    castest.PushStats `json:"stats"`
	}
	err = json.NewDecoder(resp.Body).Decode(&state)
	resp.Body.Close()
	if err != nil || state.URL != receiver.URL || !state.TokenSet || state.Stats.Events == 0 {
		t.Errorf("GET /_casim/eventbridge: %+v (%v)", state, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("casim exited %d on shutdown", code)
	}

	for _, bad := range [][]string{{"--eventbridge-url", "ftp://x"}, {"--uid", "42"}, {"--account", "prod:LTAIprod:hunter2::42"},
		{"--account", "prod:LTAIprod:hunter2:tok:"}} {
		var stderr bytes.Buffer
		args := append([]string{"--access-key-id", "id", "--access-key-secret", "s"}, bad...)
		if code := run(t.Context(), args, io.Discard, &stderr); code != 2 || strings.Contains(stderr.String(), "hunter2") || stderr.Len() == 0 {
			t.Errorf("casim %v: exit %d, stderr %q; want 2 with an error that hides the secret", bad, code, stderr.String())
		}
	}
}

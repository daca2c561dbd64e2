package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
)

func TestCasimBehaviourFlags(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--access-key-id", "id", "--access-key-secret", "s", "--instances", "1",
			"--order", "oldest", "--ties", "--unstable", "--drift", "--token-ttl", "5s", "--token-expires-on-change",
			"--strict-filters"}, &lineWriter{ready: ready}, io.Discard)
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("casim printed nothing")
	}
	resp, err := http.Get(strings.TrimPrefix(line, "listening on ") + "/_casim/behaviour")
	if err != nil {
		t.Fatal(err)
	}
	var got castest.Behaviour
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	want := castest.Behaviour{Order: castest.OrderOldest, Ties: true, Unstable: true, Drift: true,
		TokenTTL: castest.Duration(5 * time.Second), TokenExpiresOnChange: true, StrictFilters: true}
	if err != nil || got != want {
		t.Errorf("GET /_casim/behaviour = %+v (%v), want %+v", got, err, want)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("casim exited %d on shutdown", code)
	}
	for _, bad := range [][]string{{"--order", "sideways"}, {"--token-ttl", "-1s"}} {
		args := append([]string{"--access-key-id", "id", "--access-key-secret", "s"}, bad...)
		if code := run(t.Context(), args, io.Discard, io.Discard); code != 2 {
			t.Errorf("casim %v exited %d, want 2", bad, code)
		}
	}
}

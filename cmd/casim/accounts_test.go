package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCasimAccountFlag: each --account serves one more account with a
// fleet of its own, and a bad value is refused without showing its secret.
func TestCasimAccountFlag(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--access-key-id", "id", "--access-key-secret", "s", "--instances", "1",
			"--account", "prod:LTAIprod:prod-secret", "--account", "staging:STS.staging:staging-secret:tok"},
			&lineWriter{ready: ready}, io.Discard)
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("casim printed nothing")
	}
	base := strings.TrimPrefix(line, "listening on ")
	resp, err := http.Get(base + "/_casim/instances")
	if err != nil {
		t.Fatal(err)
	}
	var fleet []struct {
		InstanceID string `json:"instanceId"`
		Account    string `json:"account"`
	}
	err = json.NewDecoder(resp.Body).Decode(&fleet)
	resp.Body.Close()
	per := map[string]int{}
	for _, inst := range fleet {
		per[inst.Account]++
	}
	if err != nil || len(fleet) != 6 || per["default"] != 2 || per["prod"] != 2 || per["staging"] != 2 {
		t.Errorf("fleet: %v (%v), want 2 instances (one per product) in each of default, prod and staging", per, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("casim exited %d on shutdown", code)
	}

	for _, bad := range []string{"prod:LTAIprod", "prod:LTAIprod:hunter2:tok:more", "prod:LTAIprod:hunter2:", "default:LTAIx:hunter2",
		"pr od:LTAIx:hunter2", "prod:id:hunter2"} {
		var stderr bytes.Buffer
		code := run(t.Context(), []string{"--access-key-id", "id", "--access-key-secret", "s", "--account", bad}, io.Discard, &stderr)
		if code != 2 || strings.Contains(stderr.String(), "hunter2") || stderr.Len() == 0 {
			t.Errorf("--account %s: exit %d, stderr %q; want 2 with an error that hides the secret", bad, code, stderr.String())
		}
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type lineWriter struct {
	mu    sync.Mutex
	text  strings.Builder
	ready chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.text.Write(p)
	if line, _, ok := strings.Cut(w.text.String(), "\n"); ok && w.ready != nil {
		w.ready <- line
		w.ready = nil
	}
	return len(p), nil
}

func TestCasimServesTheDocumentedContract(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	out := &lineWriter{ready: ready}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--access-key-id", "id", "--access-key-secret", "s",
			"--instances", "2", "--regions", "cn-hangzhou,cn-shanghai"}, out, io.Discard)
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("casim printed nothing")
	}
	base, ok := strings.CutPrefix(line, "listening on ")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("first line %q, want \"listening on http://ADDR\"", line)
	}
	resp, err := http.Get(base + "/_casim/instances")
	if err != nil {
		t.Fatal(err)
	}
	var fleet []struct {
		InstanceID string `json:"instanceId"`
		RegionID   string `json:"regionId"`
		Product    string `json:"product"`
	}
	err = json.NewDecoder(resp.Body).Decode(&fleet)
	resp.Body.Close()
	if err != nil || len(fleet) != 8 {
		t.Fatalf("fleet: %d instances (%v), want 2 per product and region = 8", len(fleet), err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("casim exited %d on shutdown", code)
	}
	if code := run(t.Context(), []string{"--instances", "1"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("casim without credentials exited %d, want 2", code)
	}
}

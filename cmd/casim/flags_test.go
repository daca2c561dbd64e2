package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestRetentionAndSecurityTokenFlags(t *testing.T) {
	base := []string{"--listen", "127.0.0.1:0", "--access-key-id", "id", "--access-key-secret", "s", "--instances", "1"}
	if code := run(t.Context(), append(base, "--retention", "forever"), io.Discard, io.Discard); code != 2 {
		t.Errorf("--retention forever exited %d, want 2", code)
	}
	for _, extra := range [][]string{{"--retention", "legacy"}, {"--retention", "current", "--security-token", "tok"}, {"--oss-delivery-delay", "1s"}} {
		ctx, cancel := context.WithCancel(t.Context())
		ready := make(chan string, 1)
		done := make(chan int, 1)
		go func() { done <- run(ctx, append(base, extra...), &lineWriter{ready: ready}, io.Discard) }()
		select {
		case line := <-ready:
			if !strings.HasPrefix(line, "listening on http://") {
				t.Errorf("%v: first line %q", extra, line)
			}
		case code := <-done:
			t.Fatalf("%v: casim exited %d", extra, code)
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: casim printed nothing", extra)
		}
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("%v: exited %d on shutdown", extra, code)
		}
	}
}

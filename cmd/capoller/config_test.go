package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

// runRefused runs "capoller run" with args and wants it refused as a
// configuration error: exit code 2, with stderr naming the setting. The
// context is cancelled and NATS points at a closed port, so a configuration
// that is wrongly accepted fails fast (exit 1) instead of running.
func runRefused(t *testing.T, setting string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	base := []string{"run", "--nats-url", "nats://127.0.0.1:1", "--checkpoint", "natskv"}
	var stderr bytes.Buffer
	code := cli(ctx, append(base, args...), io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), setting) {
		t.Errorf("run %v: exit %d, stderr %q; want exit 2 naming %q", args, code, stderr.String(), setting)
	}
	return stderr.String()
}

func TestDuplicateWindowCoversTheLongestRetry(t *testing.T) {
	cfg, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DuplicateWindow != 10*time.Minute {
		t.Errorf("default duplicate window %v, want 10m", cfg.DuplicateWindow)
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--duplicate-window", "5m"}, noEnv); err != nil {
		t.Errorf("a 5m window (the longest retry pause) was refused: %v", err)
	}
	for _, v := range []string{"4m59s", "2m", "0s", "-10m"} {
		if msg := runRefused(t, "duplicate-window", "--duplicate-window", v); !strings.Contains(msg, "5m") {
			t.Errorf("--duplicate-window %s: %q does not say it must cover the 5m retry pause", v, msg)
		}
	}
}

package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An OpenTelemetry variable capoller cannot use stops run and notify at
// start-up (exit 2), naming the variable, before anything connects.
func TestTracingSettingsCapollerCannotUseStopTheStart(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "notify.yaml")
	if err := os.WriteFile(cfg, []byte("webhooks: [{name: x, kind: generic, url: 'http://127.0.0.1:9'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "jaeger")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "test")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test")
	for _, args := range [][]string{
		{"run", "--nats-url", "nats://127.0.0.1:1", "--redis-url", "redis://127.0.0.1:1/0"},
		{"notify", "--config", cfg, "--nats-url", "nats://127.0.0.1:1"},
	} {
		var stderr bytes.Buffer
		if code := cli(t.Context(), args, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), `OTEL_TRACES_EXPORTER="jaeger"`) {
			t.Errorf("%s: exit %d, stderr %q; want 2, naming OTEL_TRACES_EXPORTER", args[0], code, stderr.String())
		}
	}
}

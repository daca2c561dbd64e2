package main

import (
	"strings"
	"testing"
)

// TestMissingCredentialsAreSaidFirst: with no credentials anywhere the
// default chain looks (and the metadata service off), run says so, naming
// where it looked, and not that plain http would leak a token it does not
// have.
func TestMissingCredentialsAreSaidFirst(t *testing.T) {
	env := append(cleanEnv(t), "HOME="+t.TempDir(), "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true")
	env = dropEnv(env, "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN",
		"ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_CREDENTIALS_FILE", "ALIBABA_CLOUD_CREDENTIALS_URI")
	code, _, stderr := runBinaryEnv(t, env, "run", "--endpoint", "http://127.0.0.1:1")
	if code != 2 || !strings.Contains(stderr, "no Alibaba Cloud credentials found: looked in ALIBABA_CLOUD_ACCESS_KEY_ID") ||
		!strings.Contains(stderr, "~/.alibabacloud/credentials") || strings.Contains(stderr, "plain http") {
		t.Errorf("run without credentials: exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = runBinaryEnv(t, env, "config", "check")
	if code != 2 || !strings.Contains(stderr, "no Alibaba Cloud credentials found") {
		t.Errorf("config check without credentials: exit %d, stderr:\n%s", code, stderr)
	}
	// With a token in the environment, http is the problem, and says so.
	code, _, stderr = runBinaryEnv(t, append(env, "ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIx", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=y", "ALIBABA_CLOUD_SECURITY_TOKEN=z"),
		"config", "check", "--endpoint", "http://127.0.0.1:1")
	if code != 2 || !strings.Contains(stderr, "plain http would send the default credential chain's STS security token") {
		t.Errorf("a token over http: exit %d, stderr:\n%s", code, stderr)
	}
}

// dropEnv removes the named variables from env.
func dropEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			keep = keep && name != n
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// withTestKeys sets a key pair (no token) in the environment, so that the
// default credential chain finds keys wherever the tests run (.ci/run
// turns the metadata service off).
func withTestKeys(t *testing.T) {
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAItest")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")
	t.Setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "")
}

package cloudassist

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestProbeDefaultChain: the chain's sources are found where the SDK
// looks, in its order; nothing anywhere with the metadata service off is
// ErrNoCredentials, and with it on, not (an ECS instance may answer).
func TestProbeDefaultChain(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	home := t.TempDir()
	off := map[string]string{"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}
	if c := ProbeDefaultChain(env(off), home); !errors.Is(c.Missing(), ErrNoCredentials) || len(c.Sources) != 0 {
		t.Errorf("nothing anywhere: %+v, %v", c, c.Missing())
	}
	if c := ProbeDefaultChain(env(nil), home); c.Missing() != nil || !c.Metadata || !c.STS {
		t.Errorf("the metadata service on: %+v", c)
	}
	keys := map[string]string{"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIx", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "y", "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}
	if c := ProbeDefaultChain(env(keys), home); c.Missing() != nil || c.STS || len(c.Sources) != 1 || c.Sources[0] != "environment" {
		t.Errorf("keys in the environment: %+v", c)
	}
	if err := os.MkdirAll(filepath.Join(home, ".alibabacloud"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".alibabacloud", "credentials"), []byte("[default]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := ProbeDefaultChain(env(off), home); c.Missing() != nil || len(c.Sources) != 1 || c.Sources[0] != "credentials file" || !c.STS {
		t.Errorf("a credentials file: %+v", c)
	}
}

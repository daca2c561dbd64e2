package main

import (
	"strings"
	"testing"
)

// An account the configuration file does not list has no credentials,
// not even "default" once accounts are listed: the error names it.
func TestCredentialOfAnAccountNotListed(t *testing.T) {
	cfg, err := loadYAML(t, "accounts:\n  - name: prod\n    credentials: {type: access_key, source: env}\n    regions: [cn-hangzhou]\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.credential("staging", noEnv); err == nil || !strings.Contains(err.Error(), `"staging"`) {
		t.Errorf("credential(staging): %v", err)
	}
	if _, err := cfg.credential("default", noEnv); err == nil {
		t.Error("credential(default) with accounts that do not list it: no error")
	}
}

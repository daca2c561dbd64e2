package main

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestConfigYAMLUnknownSetting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "capoller.yaml")
	if err := os.WriteFile(path, []byte("interval: 10s\nfoo: 1\nduplicate_window: 10m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--config", path}, noEnv)
	if err == nil || !strings.Contains(err.Error(), `line 2: unknown setting "foo"`) || !strings.Contains(err.Error(), `line 3: unknown setting "duplicate_window"`) ||
		strings.Contains(err.Error(), "main.config") {
		t.Errorf("err = %v; want each unknown setting named, without Go type names", err)
	}
	if err := os.WriteFile(path, []byte("interval: soon\nregions: {a: b}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--config", path}, noEnv)
	if err == nil || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "into a duration") || !strings.Contains(err.Error(), "into a list") ||
		strings.Contains(err.Error(), "time.Duration") {
		t.Errorf("err = %v; want the bad values described without Go type names", err)
	}
}

// TestConfigYAMLErrorsShowNoValue: a secret in the wrong place of the file
// (a password where a number goes) must not be echoed by the error that
// refuses it.
func TestConfigYAMLErrorsShowNoValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "capoller.yaml")
	if err := os.WriteFile(path, []byte("qps: hunter2-S3cret\npage-size: S3cret-again\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--config", path}, noEnv)
	if err == nil || !strings.Contains(err.Error(), "into a number") || strings.Contains(err.Error(), "hunter") || strings.Contains(err.Error(), "S3cret") {
		t.Errorf("err = %v; want the bad values refused without showing them", err)
	}
}

// FuzzConfigYAML feeds arbitrary bytes to loadConfig as the configuration
// file. It must never panic; a configuration it accepts must be valid and
// survive a marshal and a re-load unchanged; an error names no Go type.
func FuzzConfigYAML(f *testing.F) {
	// More seeds, the tricky ones, are in testdata/fuzz/FuzzConfigYAML.
	f.Add([]byte(""))
	f.Add([]byte("interval: 10s\nregions: [cn-beijing]\nstream: FROMFILE\nsubject-prefix: fromfile\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, raw []byte) {
		path, again := filepath.Join(dir, "capoller.yaml"), filepath.Join(dir, "again.yaml")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(flag.NewFlagSet("fuzz", flag.ContinueOnError), []string{"--config", path}, noEnv)
		if err != nil {
			if strings.Contains(err.Error(), "main.config") {
				t.Errorf("the error names a Go type: %v", err)
			}
			return
		}
		if err := cfg.validate(); err != nil {
			t.Fatalf("loadConfig accepted an invalid configuration: %v", err)
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshal %+v: %v", cfg, err)
		}
		if err := os.WriteFile(again, out, 0o600); err != nil {
			t.Fatal(err)
		}
		back, err := loadConfig(flag.NewFlagSet("fuzz", flag.ContinueOnError), []string{"--config", again}, noEnv)
		if err != nil {
			t.Fatalf("re-loading\n%s\nfailed: %v", out, err)
		}
		back.Config = cfg.Config
		if !reflect.DeepEqual(cfg, back) {
			t.Fatalf("re-loading changed the configuration:\n%+v\n%+v\nmarshalled as\n%s", cfg, back, out)
		}
	})
}

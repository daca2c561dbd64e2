package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capoller/capoller/poller/cloudassist"
)

// TestConfigOutputSettings: the output settings from flags (a pattern
// per --output-redact, commas kept), the environment (one per line) and
// YAML (a list), and refusals that name the setting and the cause.
func TestConfigOutputSettings(t *testing.T) {
	load := func(args []string, env map[string]string) (config, error) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		return loadConfig(fs, args, func(k string) string { return env[k] })
	}
	cfg, err := load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := cfg.outputOptions()
	if err != nil || o.For != cloudassist.OutputFailures || o.MaxBytes != 8192 || o.NoBuiltinRedact || len(o.Redact) != 0 {
		t.Errorf("defaults: %+v, %v", o, err)
	}

	cfg, err = load([]string{"--output", "terminal", "--output-max-bytes", "1024", "--output-redact", `card-\d{4,6}`,
		"--output-redact", "secret-[a-z]+", "--output-redact-builtin=false"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o, err = cfg.outputOptions(); err != nil || o.For != cloudassist.OutputTerminal || o.MaxBytes != 1024 || !o.NoBuiltinRedact ||
		len(o.Redact) != 2 || o.Redact[0].String() != `card-\d{4,6}` || o.Redact[1].String() != "secret-[a-z]+" {
		t.Errorf("flags: %+v, %v", o, err)
	}

	cfg, err = load(nil, map[string]string{"CAPOLLER_OUTPUT_REDACT": "one\ntwo{1,2}", "CAPOLLER_OUTPUT": "none"})
	if err != nil {
		t.Fatal(err)
	}
	if o, _ = cfg.outputOptions(); len(o.Redact) != 2 || o.Redact[1].String() != "two{1,2}" || o.For != cloudassist.OutputNone {
		t.Errorf("environment: %+v", o)
	}

	path := filepath.Join(t.TempDir(), "capoller.yaml")
	if err := os.WriteFile(path, []byte("output: failures\noutput-redact:\n  - 'ghp_[A-Za-z0-9]{36}'\n  - 'xox[bp]-[0-9A-Za-z-]+'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = load([]string{"--config", path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ = cfg.outputOptions(); len(o.Redact) != 2 || o.Redact[0].String() != "ghp_[A-Za-z0-9]{36}" {
		t.Errorf("YAML: %+v", o)
	}

	typo := filepath.Join(t.TempDir(), "typo.yaml")
	if err := os.WriteFile(typo, []byte("output_redact:\n  - 'x'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := load([]string{"--config", typo}, nil); err == nil || !strings.Contains(err.Error(), "output_redact") {
		t.Errorf("a YAML key one character off: %v, want an error naming it", err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--output", "failure"}, `output: "failure" is not failures, terminal or none`},
		{[]string{"--output-redact", "([a-z"}, `output-redact: pattern 1 "([a-z": error parsing regexp: missing closing ]`},
		{[]string{"--output-redact", "ok", "--output-redact", "a*"}, `output-redact: pattern 2 "a*" matches the empty string`},
		{[]string{"--output-max-bytes", "10"}, "output-max-bytes 10: want 64 to 524288"},
		{[]string{"--output-redact-builtin=maybe"}, "output-redact-builtin"},
		{[]string{"--output-redacts", "x"}, "flag provided but not defined: -output-redacts"},
	} {
		_, err := load(c.args, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

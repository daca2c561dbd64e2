package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// subcommands are every subcommand, as a user types it.
func subcommands() [][]string {
	return [][]string{{"run"}, {"demo"}, {"status"}, {"replay"}, {"watch"}, {"bench"}, {"notify"}, {"config", "check"}, {"setup"}, {"chaos"}, {"schema"}}
}

// cleanEnv is an environment without CAPOLLER_* variables and with a fixed
// temporary directory, so that help shows the defaults a new user sees.
func cleanEnv(t *testing.T) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAPOLLER_") && !strings.HasPrefix(kv, "TMPDIR=") {
			env = append(env, kv)
		}
	}
	return append(env, "TMPDIR=/tmp")
}

// helpOf runs "capoller <cmd> --help" as a user does: help is on stdout,
// nothing on stderr, exit 0.
func helpOf(t *testing.T, cmd []string) string {
	t.Helper()
	code, stdout, stderr := runBinaryEnv(t, cleanEnv(t), append(cmd, "--help")...)
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "usage: capoller "+strings.Join(cmd, " ")+" [flags]\n") {
		t.Fatalf("%v --help: exit %d, stderr %q, stdout:\n%s", cmd, code, stderr, stdout)
	}
	return stdout
}

// TestHelpOfEachSubcommand holds each subcommand's help to a golden file
// (CAPOLLER_UPDATE_GOLDEN=1 rewrites them): its own flags first, then
// filters, then run's settings by group, each with a real type.
func TestHelpOfEachSubcommand(t *testing.T) {
	for _, cmd := range subcommands() {
		out := helpOf(t, cmd)
		if strings.Contains(out, " value\n") {
			t.Errorf("%v --help shows a type \"value\":\n%s", cmd, out)
		}
		golden := filepath.Join("testdata", "help", strings.Join(cmd, "-")+".txt")
		if os.Getenv("CAPOLLER_UPDATE_GOLDEN") == "1" {
			if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (CAPOLLER_UPDATE_GOLDEN=1 writes it)", err)
		}
		if out != string(want) {
			t.Errorf("%v --help differs from %s (CAPOLLER_UPDATE_GOLDEN=1 rewrites it):\n%s", cmd, golden, out)
		}
	}
}

// TestNoTwoFlagsOneLetterApart: on one subcommand, two flags whose names
// differ by one letter are a trap (watch's --region filtered, its
// --regions, run's setting, was taken and ignored). None is left.
func TestNoTwoFlagsOneLetterApart(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, cmd := range subcommands() {
		var names []string
		for _, m := range flagLine.FindAllStringSubmatch(helpOf(t, cmd), -1) {
			names = append(names, m[1])
		}
		if len(names) < 2 {
			t.Fatalf("%v: %d flags read from its help", cmd, len(names))
		}
		for i, a := range names {
			for _, b := range names[i+1:] {
				if editDistance(a, b) <= 1 {
					t.Errorf("%v takes --%s and --%s", cmd, a, b)
				}
			}
		}
	}
}

// TestAMistypedFlagIsRefusedWithASuggestion: run's --regions on watch and
// replay, whose filter is --region, is an error that suggests it, on three
// lines (the error, the suggestion, one line of usage), exit 2; so is
// --sources.
func TestAMistypedFlagIsRefusedWithASuggestion(t *testing.T) {
	for _, c := range []struct {
		args []string
		near string
	}{
		{[]string{"watch", "--regions", "cn-shanghai"}, "--region"},
		{[]string{"replay", "--regions", "cn-shanghai"}, "--region"},
		{[]string{"replay", "--sources", "swas"}, "--source"},
		{[]string{"status", "--josn"}, "--json"},
		{[]string{"run", "--intervall", "10s"}, "--interval"},
	} {
		code, stdout, stderr := runBinaryEnv(t, cleanEnv(t), c.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || stdout != "" || len(lines) != 3 || !strings.Contains(lines[0], "flag provided but not defined: "+strings.TrimPrefix(c.args[1], "-")) ||
			lines[1] != "did you mean "+c.near+"?" || !strings.HasPrefix(lines[2], "usage: capoller "+c.args[0]+" [flags]") {
			t.Errorf("%v: exit %d, stdout %q, stderr:\n%s", c.args, code, stdout, stderr)
		}
	}
}

// TestAnUnknownVariableIsAWarning: a CAPOLLER_* variable no setting reads
// is named in a warning with the nearest setting's variable.
func TestAnUnknownVariableIsAWarning(t *testing.T) {
	env := append(cleanEnv(t), "CAPOLLER_REGION=cn-shanghai", "ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIenv", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=env-secret")
	code, stdout, stderr := runBinaryEnv(t, env, "config", "check")
	if code != 0 || !strings.Contains(stderr, "capoller: warning: CAPOLLER_REGION is not a setting of capoller, and is ignored; did you mean CAPOLLER_REGIONS?") ||
		!strings.Contains(stdout, "cn-hangzhou") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// runBinaryEnv is runBinary with exactly env, within a minute.
func runBinaryEnv(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runBinaryIn(t, time.Minute, env, args...)
}

// TestARenamedSettingSaysItsNewName: --nats-nkey, one letter from the TLS
// key's --nats-key, became --nats-nkey-seed; the old flag, variable and
// YAML key each say so.
func TestARenamedSettingSaysItsNewName(t *testing.T) {
	code, _, stderr := runBinaryEnv(t, cleanEnv(t), "watch", "--nats-nkey", "seed.nk")
	if code != 2 || !strings.Contains(stderr, "did you mean --nats-nkey-seed?") {
		t.Errorf("--nats-nkey: exit %d, stderr:\n%s", code, stderr)
	}
	if got := unknownEnv([]string{"CAPOLLER_NATS_NKEY=seed.nk"}); len(got) != 1 || !strings.Contains(got[0], "renamed CAPOLLER_NATS_NKEY_SEED") {
		t.Errorf("CAPOLLER_NATS_NKEY: %q", got)
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("nats-nkey: seed.nk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runBinaryEnv(t, cleanEnv(t), "config", "check", "--config", file)
	if code != 2 || !strings.Contains(stderr, `line 1: unknown setting "nats-nkey": it was renamed nats-nkey-seed`) {
		t.Errorf("nats-nkey in YAML: exit %d, stderr:\n%s", code, stderr)
	}
}

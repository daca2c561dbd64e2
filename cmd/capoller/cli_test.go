package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// runBinary runs capoller as a user does (this test binary acting as it,
// see TestMain) and returns its exit code, stdout and stderr. It is killed
// after within, which fails the test.
func runBinary(t *testing.T, within time.Duration, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runBinaryIn(t, within, append(os.Environ(), env...), args...)
}

// runBinaryIn is runBinary with exactly env (beMainEnv added).
func runBinaryIn(t *testing.T, within time.Duration, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(env, beMainEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("capoller %q still running after %v; stderr:\n%s", args, within, errb.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// argsFor keeps, of run's arguments ("--name value" pairs, no command),
// --config and the settings of groups: what a subcommand that declares
// only those takes.
func argsFor(run []string, groups ...settingGroup) []string {
	var out []string
	for i := 0; i+1 < len(run); i += 2 {
		name := strings.TrimLeft(run[i], "-")
		if name == "config" || slices.Contains(groups, groupOf(name)) {
			out = append(out, run[i], run[i+1])
		}
	}
	return out
}

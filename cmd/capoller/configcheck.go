package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// configCommand runs "capoller config check": it validates the
// configuration file, the environment and the flags as run would take
// them, resolves every account's credentials (reading the variables and
// files they name, never printing them), and prints the effective
// configuration with secrets redacted, and the shards it makes.
func configCommand(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: capoller config check [the flags of run]")
		return 2
	}
	fs := newFlags("config check")
	cf := bindConfig(fs, os.Getenv, allGroups()...)
	if code, ok := parseArgs(fs, args[1:], stdout, stderr); !ok {
		return code
	}
	warnUnknownEnv(stderr)
	cfg, err := cf.load()
	if err != nil {
		fmt.Fprintf(stderr, "capoller config check: %v\n", err)
		return 2
	}
	shards, err := cfg.shards()
	if err != nil {
		fmt.Fprintf(stderr, "capoller config check: %v\n", err)
		return 2
	}
	var errs []error
	for _, name := range cfg.accountNames() {
		if _, err := cfg.credential(name, os.Getenv); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "capoller config check: %v\n", errors.Join(errs...))
		return 2
	}
	out, err := yaml.Marshal(cfg.redacted())
	if err != nil {
		fmt.Fprintf(stderr, "capoller config check: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "# the effective configuration (secrets redacted)\n%s", out)
	fmt.Fprintf(stdout, "# %d shards\n", len(shards))
	for _, s := range shards {
		fmt.Fprintf(stdout, "#   %s\n", s.Shard)
	}
	return 0
}

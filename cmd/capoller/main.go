// Command capoller turns Alibaba Cloud Cloud Assistant invocations into
// status-change events on NATS JetStream.
//
//	capoller run      the daemon
//	capoller demo     everything in one process, nothing to install
//	capoller status   the group: replicas, shard owners, leases, last cycles
//	capoller replay   audit history from the checkpoints or the stream
//	capoller watch    follow the live events at a terminal
//	capoller bench    measure strategies against the emulator
//	capoller notify   chat messages for failed invocations
//	capoller config   check the configuration
//	capoller setup    create or update the JetStream stream, showing the diff
//	capoller chaos    a soak under faults, checked against the emulator's truth
//	capoller schema   the event contract: JSON Schemas and the AsyncAPI document
//	capoller version  print the version
//
// main only wires packages together; the behaviour lives in poller,
// cloudassist, diff, checkpoint and publisher.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/redis/go-redis/v9"
)

func main() { os.Exit(process(os.Args[1:])) }

// process is the capoller process: a subcommand until SIGINT or SIGTERM.
// go-redis logs to stderr by itself; it is silenced here, for every
// subcommand, and the daemon routes it through its log instead.
func process(args []string) int {
	redis.SetLogger(droppedRedisLog{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli(ctx, args, os.Stdout, os.Stderr)
}

const usage = `usage: capoller <command> [flags]

commands:
  run      poll Cloud Assistant and publish status changes (the daemon)
  demo     run the whole system in one process: emulator, NATS, poller
  status   print the group's replicas and shards: owners, leases, last cycles and errors
  replay   print history: a time window's events (JSON lines, CSV, re-publish), or every record's state at a moment
  watch    follow the live events, one line each, coloured by status on a terminal
  bench    size capoller: API calls, latency, throughput and memory per strategy
  notify   post one chat message per failing invocation (DingTalk, Slack, Feishu, webhooks)
  config   config check: validate the configuration and print it, secrets redacted
  setup    create or update the JetStream stream to the configuration, printing the diff (destructive changes need --yes)
  chaos    soak replicas under faults (kills at every step, engine restarts, API faults) and check the stream against the truth
  schema   print the event contract: each event type's JSON Schema, the stream's AsyncAPI document
  version  print the version

Run "capoller <command> -h" for the flags of a command.
`

// cli runs one subcommand and returns the process exit code: 0 on success,
// 1 on a runtime failure, 2 on a usage or configuration error.
func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stdout, stderr)
	case "demo":
		return demoCommand(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCommand(ctx, args[1:], stdout, stderr)
	case "status":
		return statusCommand(ctx, args[1:], stdout, stderr)
	case "replay":
		return replayCommand(ctx, args[1:], stdout, stderr)
	case "watch":
		return watchCommand(ctx, args[1:], stdout, stderr)
	case "notify":
		return notifyCommand(ctx, args[1:], stdout, stderr)
	case "config":
		return configCommand(ctx, args[1:], stdout, stderr)
	case "setup":
		return setupCommand(ctx, args[1:], stdout, stderr)
	case "chaos":
		return chaosCommand(ctx, args[1:], stdout, stderr)
	case "schema":
		return schemaCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "capoller: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func versionString() string {
	return fmt.Sprintf("capoller %s %s", buildVersion(), runtime.Version())
}

// buildVersion is the module version of the binary, "(devel)" for a
// build from a checkout, followed by its VCS revision when known.
func buildVersion() string {
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				version += " " + s.Value[:12]
			}
		}
	}
	return version
}

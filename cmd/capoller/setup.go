package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/capoller/capoller/publisher"
)

// Exit codes of capoller setup beyond cli's 0, 1 and 2: the stream was
// left as it is.
const (
	exitNeedsYes   = 3 // a destructive change, and no --yes
	exitImpossible = 4 // a change JetStream cannot make
)

// setupCommand runs "capoller setup": it brings the JetStream stream to
// the configuration (the same file, environment and flags as run), as the
// daemon would create it: subjects "<prefix>.>", limits retention, file
// storage, stream-max-age, stream-max-bytes, duplicate-window and
// stream-replicas. It prints every change (field: have → want) and then:
// creates a missing stream; applies safe changes; applies destructive
// ones only with --yes, else changes nothing and exits 3; and changes
// nothing, exiting 4, if JetStream cannot make one of them. The operator's
// subjects beyond ours and the settings it does not manage are kept. Run
// twice, the second run prints "no changes".
func setupCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("setup")
	yes := fs.Bool("yes", false, "also apply destructive changes: lowering max age, max bytes, the duplicate window or the replicas, changing retention or discard")
	dryRun := fs.Bool("dry-run", false, "print the changes and make none; the exit code is the one a run would end with")
	cfg, code, ok := loadSettings(fs, args, stdout, stderr, groupNATS, groupStream)
	if !ok {
		return code
	}
	if cfg.NATSURL == "embedded" {
		fmt.Fprintln(stderr, `capoller setup: nats-url "embedded" is a server inside the daemon, which creates its stream itself: give the URL of a NATS server`)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := publisher.Dial(publisher.DialOptions{URL: cfg.NATSURL, Auth: cfg.NATS, Name: "capoller setup"})
	if err != nil {
		fmt.Fprintf(stderr, "capoller setup: %v\n", err)
		return 1
	}
	defer nc.Close()
	pub, err := publisher.New(nc.JetStream, publisher.Options{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, DuplicateWindow: cfg.DuplicateWindow,
		MaxAge: cfg.StreamMaxAge, MaxBytes: cfg.StreamMaxBytes, Replicas: cfg.StreamReplicas})
	if err != nil {
		fmt.Fprintf(stderr, "capoller setup: configuration: %v\n", err)
		return 2
	}
	plan, err := pub.PlanStream(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "capoller setup: %v\n", err)
		return 1
	}
	printPlan(stdout, plan)
	impossible, destructive := plan.Of(publisher.Impossible), plan.Of(publisher.Destructive)
	switch {
	case plan.Empty():
		return 0
	case len(impossible) > 0:
		fmt.Fprintf(stderr, "capoller setup: stream %s: %s JetStream cannot make (%s); nothing changed\n", plan.Stream, count(len(impossible), "change"), fieldNames(impossible))
		return exitImpossible
	case len(destructive) > 0 && !*yes:
		fmt.Fprintf(stderr, "capoller setup: stream %s: %s (%s); nothing changed: run again with --yes to apply the changes\n",
			plan.Stream, count(len(destructive), "destructive change"), fieldNames(destructive))
		return exitNeedsYes
	case *dryRun:
		fmt.Fprintf(stdout, "stream %s: dry run, nothing changed\n", plan.Stream)
		return 0
	}
	if err := pub.ApplyStreamPlan(ctx, plan, *yes); err != nil {
		fmt.Fprintf(stderr, "capoller setup: %v\n", err)
		return 1
	}
	if plan.Create {
		fmt.Fprintf(stdout, "stream %s created\n", plan.Stream)
	} else {
		fmt.Fprintf(stdout, "stream %s updated\n", plan.Stream)
	}
	return 0
}

// printPlan prints what the plan does, a setting a line: "field want" for
// a new stream, "field have → want" and what is at stake for an existing
// one.
func printPlan(w io.Writer, plan publisher.StreamPlan) {
	switch {
	case plan.Empty():
		fmt.Fprintf(w, "stream %s: no changes\n", plan.Stream)
		return
	case plan.Create:
		fmt.Fprintf(w, "stream %s does not exist; it is created with:\n", plan.Stream)
	default:
		fmt.Fprintf(w, "stream %s: %s:\n", plan.Stream, count(len(plan.Changes), "change"))
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range plan.Changes {
		switch {
		case plan.Create:
			fmt.Fprintf(tw, "  %s\t%s\n", c.Field, c.Want)
		case c.Kind == publisher.Safe:
			fmt.Fprintf(tw, "  %s\t%s → %s\t\n", c.Field, c.Have, c.Want)
		default:
			fmt.Fprintf(tw, "  %s\t%s → %s\t%s: %s\n", c.Field, c.Have, c.Want, c.Kind, c.Why)
		}
	}
	_ = tw.Flush()
	for line := range strings.Lines(b.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n")) // a safe change's padding
	}
}

func fieldNames(cs []publisher.StreamFieldChange) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Field
	}
	return strings.Join(names, ", ")
}

// count is "1 change", "2 changes".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

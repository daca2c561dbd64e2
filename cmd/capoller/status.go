package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/publisher"
)

// statusCommand prints the group's replicas and shards, read from the
// checkpoint store the configuration names (the same flags and file as
// run). It needs no running replica.
func statusCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	cfg, code, ok := loadSettings(fs, args, stdout, stderr, groupNATS, groupCheckpoint)
	if !ok {
		return code
	}
	shards, err := cfg.shards()
	if err != nil {
		fmt.Fprintf(stderr, "capoller status: configuration: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var st poller.GroupReader
	if cfg.Checkpoint == "natskv" {
		nc, err := publisher.Dial(publisher.DialOptions{URL: cfg.NATSURL, Auth: cfg.NATS, Name: "capoller status"})
		if err == nil { // a reader: the bucket is opened, never created
			defer nc.Close()
			st, err = checkpoint.NewKV(ctx, nc.JetStream, checkpoint.KVOptions{Bucket: cfg.Bucket, OpenOnly: true})
		}
		if err != nil {
			fmt.Fprintf(stderr, "capoller status: %v\n", err)
			return 1
		}
	} else {
		rs, closeStore, err := openStore(ctx, cfg, zap.NewNop(), nil, nil)
		if err != nil {
			fmt.Fprintf(stderr, "capoller status: %v\n", err)
			return 1
		}
		defer closeStore()
		st = rs
	}
	ids := make([]diff.Shard, len(shards))
	for i, s := range shards {
		ids[i] = s.Shard
	}
	rep, err := poller.ReadGroupStatus(ctx, st, ids, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "capoller status: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return 1
		}
		return 0
	}
	printStatus(stdout, rep)
	return 0
}

func printStatus(w io.Writer, rep poller.GroupStatus) {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return rep.At.Sub(t).Round(time.Second).String() + " ago"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "REPLICA\tHOST\tPID\tLISTS\tHOLDS\tSTARTED\tLAST SEEN\tNOTE\n")
	for _, r := range rep.Replicas {
		lists, note := "?", "-"
		if r.Lists != nil {
			lists = strconv.Itoa(*r.Lists)
		}
		switch {
		case r.Withdrawn != "":
			note = "stepped back: " + r.Withdrawn
		case len(r.Excluded) > 0:
			note = "leaves to the others: " + strings.Join(r.Excluded, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Host, r.PID, lists, r.Shards, ago(r.Started), ago(r.LastSeen), note)
	}
	if len(rep.Replicas) == 0 {
		fmt.Fprintf(tw, "(no live replica)\n")
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SHARD\tOWNER\tLEASE AGE\tTOKEN\tLAST SUCCESS\tLAST ERROR\n")
	for _, s := range rep.Shards {
		owner, age := s.Owner, time.Duration(s.LeaseAgeSeconds*float64(time.Second)).Round(time.Second).String()
		if owner == "" {
			owner, age = "(none)", "-"
		}
		if len(s.ListedBy) == 0 && !s.LastListed.IsZero() {
			owner = fmt.Sprintf("(listed by no live replica; last by %s %s)", s.LastLister, ago(s.LastListed))
		}
		lastErr := s.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.Shard, owner, age, s.Token, ago(s.LastSuccess), lastErr)
	}
	_ = tw.Flush()
}

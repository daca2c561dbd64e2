package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
)

// statusReport is what `capoller status --json` prints.
type statusReport struct {
	At       time.Time      `json:"at"`
	Replicas []replicaState `json:"replicas"`
	Shards   []shardState   `json:"shards"`
}

type replicaState struct {
	ID       string    `json:"id"`
	Host     string    `json:"host,omitempty"`
	PID      int       `json:"pid,omitempty"`
	Version  string    `json:"version,omitempty"`
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"lastSeen"`
	Shards   int       `json:"shards"`
}

type shardState struct {
	Shard string `json:"shard"`
	// Owner is empty when no live lease holds the shard.
	Owner string `json:"owner"`
	// LeaseAgeSeconds is how long the owner has held it.
	LeaseAgeSeconds float64   `json:"leaseAgeSeconds"`
	Token           uint64    `json:"token"`
	Expires         time.Time `json:"expires,omitzero"`
	LastSuccess     time.Time `json:"lastSuccess,omitzero"`
	LastCycle       time.Time `json:"lastCycle,omitzero"`
	LastError       string    `json:"lastError,omitempty"`
	ReportedBy      string    `json:"reportedBy,omitempty"`
}

// groupReader is what status reads from a store.
type groupReader interface {
	Members(ctx context.Context) ([]checkpoint.Member, error)
	Leases(ctx context.Context, shards []diff.Shard) ([]checkpoint.Lease, error)
	Statuses(ctx context.Context, shards []diff.Shard) ([]checkpoint.ShardStatus, error)
}

// statusCommand prints the group's replicas and shards, read from the
// checkpoint store the configuration names (the same flags and file as
// run). It needs no running replica.
func statusCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("capoller status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	cfg, err := loadConfig(fs, args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "capoller status: configuration: %v\n", err)
		return 2
	}
	shards, err := cfg.shards()
	if err != nil {
		fmt.Fprintf(stderr, "capoller status: configuration: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var st groupReader
	if cfg.Checkpoint == "natskv" {
		nc, js, err := connectJetStream(cfg.NATSURL, cfg.NATS, nats.Name("capoller status"))
		if err == nil { // a reader: the bucket is opened, never created
			defer nc.Close()
			st, err = checkpoint.NewKV(ctx, js, checkpoint.KVOptions{Bucket: cfg.Bucket, OpenOnly: true})
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
	rep, err := readStatus(ctx, st, ids, time.Now())
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

func readStatus(ctx context.Context, st groupReader, shards []diff.Shard, now time.Time) (statusReport, error) {
	rep := statusReport{At: now.UTC(), Replicas: []replicaState{}, Shards: []shardState{}}
	members, err := st.Members(ctx)
	if err != nil {
		return rep, fmt.Errorf("read the replicas: %w", err)
	}
	leases, err := st.Leases(ctx, shards)
	if err != nil {
		return rep, fmt.Errorf("read the leases: %w", err)
	}
	statuses, err := st.Statuses(ctx, shards)
	if err != nil {
		return rep, fmt.Errorf("read the shards' status: %w", err)
	}
	held := map[string]int{}
	for i, s := range shards {
		ss := shardState{Shard: s.String()}
		if i < len(leases) {
			l := leases[i]
			ss.Token = l.Token
			if l.Live(now) {
				ss.Owner, ss.Expires = l.Owner, l.Expires.UTC()
				ss.LeaseAgeSeconds = now.Sub(l.Acquired).Seconds()
				held[l.Owner]++
			}
		}
		if i < len(statuses) {
			st := statuses[i]
			ss.LastSuccess, ss.LastCycle, ss.LastError, ss.ReportedBy = st.LastSuccess, st.LastCycle, st.LastError, st.Replica
		}
		rep.Shards = append(rep.Shards, ss)
	}
	for _, m := range members {
		if !now.Before(m.Expires) {
			continue
		}
		rep.Replicas = append(rep.Replicas, replicaState{ID: m.ID, Host: m.Host, PID: m.PID, Version: m.Version,
			Started: m.Started.UTC(), LastSeen: m.Seen.UTC(), Shards: held[m.ID]})
	}
	return rep, nil
}

func printStatus(w io.Writer, rep statusReport) {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return rep.At.Sub(t).Round(time.Second).String() + " ago"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "REPLICA\tHOST\tPID\tSHARDS\tSTARTED\tLAST SEEN\n")
	for _, r := range rep.Replicas {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.ID, r.Host, r.PID, r.Shards, ago(r.Started), ago(r.LastSeen))
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
		lastErr := s.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.Shard, owner, age, s.Token, ago(s.LastSuccess), lastErr)
	}
	_ = tw.Flush()
}

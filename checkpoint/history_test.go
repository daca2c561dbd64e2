package checkpoint_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

type historyStore interface {
	store
	Commits(ctx context.Context, shard diff.Shard, after string, count int64) ([]checkpoint.HistoryCommit, error)
	HistoryShards(ctx context.Context) ([]diff.Shard, error)
}

// Both stores append a commit's transitions to the shard's history in
// the commit, whole, in commit order, readable page by page, and list
// the shards that have one.
func TestHistoryInBothStores(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t).(historyStore)
			shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
			other := diff.Shard{Account: "staging", Source: diff.SourceSWAS, Region: "cn-shanghai"}
			var batches [][]diff.Transition
			for i := range 5 {
				b := transitionsFor(shard, 10*i, 3)
				if i == 3 { // over a value's limit in KV: written in parts
					for j := range b {
						b[j].Record.ErrorInfo = strings.Repeat("x", 400_000)
					}
				}
				batches = append(batches, b)
				if err := s.Stage(t.Context(), shard, diff.Result{Transitions: b}); err != nil {
					t.Fatal(err)
				}
				if err := s.Commit(t.Context(), shard, nil, b); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Commit(t.Context(), other, nil, transitionsFor(other, 0, 1)); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(t.Context(), shard, []diff.Update{{Key: diff.Key{InvokeID: "quiet"}, State: diff.State{Status: diff.StatusRunning}}}, nil); err != nil {
				t.Fatal(err)
			}
			var got []checkpoint.HistoryCommit
			after := ""
			for {
				page, err := s.Commits(t.Context(), shard, after, 2)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				got = append(got, page...)
				after = page[len(page)-1].ID
			}
			if len(got) != len(batches) {
				t.Fatalf("%d commits in the history, want %d (a commit without transitions adds none)", len(got), len(batches))
			}
			for i, c := range got {
				if i > 0 && !c.At.After(got[i-1].At) && c.At != got[i-1].At || c.At.IsZero() || time.Since(c.At) > time.Minute {
					t.Errorf("commit %d at %v", i, c.At)
				}
				if len(c.Transitions) != len(batches[i]) {
					t.Fatalf("commit %d: %d transitions, want %d", i, len(c.Transitions), len(batches[i]))
				}
				for j, tr := range c.Transitions {
					want := batches[i][j]
					want.Account = "prod"
					if !equalTransition(tr, want) {
						t.Errorf("commit %d transition %d differs: got %s %q…", i, j, tr.ID, tr.Record.ErrorInfo[:min(10, len(tr.Record.ErrorInfo))])
					}
				}
			}
			from, err := s.Commits(t.Context(), shard, got[len(got)-1].ID, 10)
			if err != nil || len(from) != 0 {
				t.Errorf("after the last commit: %d, %v", len(from), err)
			}
			shards, err := s.HistoryShards(t.Context())
			if err != nil || !slices.Contains(shards, shard) || !slices.Contains(shards, other) {
				t.Errorf("shards with a history: %v, %v", shards, err)
			}
		})
	}
}

// A KV commit that stopped after writing the history and is finished
// again (the next cycle finishes the staged batch) is in the history
// once; commits past the age limit are purged.
func TestKVHistoryRedoAndAge(t *testing.T) {
	bucket := testenv.Name("CAPOLLER_HIST")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	b := transitionsFor(shard, 0, 3)
	for range 2 {
		if err := s.Stage(t.Context(), shard, diff.Result{Transitions: b}); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(t.Context(), shard, nil, b); err != nil {
			t.Fatal(err)
		}
	}
	commits, err := s.Commits(t.Context(), shard, "", 10)
	if err != nil || len(commits) != 1 {
		t.Fatalf("a batch committed twice is %d commits in the history, want 1 (%v)", len(commits), err)
	}
	young, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket, HistoryMaxAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	next := transitionsFor(shard, 10, 2)
	if err := young.Commit(t.Context(), shard, nil, next); err != nil {
		t.Fatal(err)
	}
	commits, err = young.Commits(t.Context(), shard, "", 10)
	if err != nil || len(commits) != 1 || commits[0].Transitions[0].ID != next[0].ID {
		t.Fatalf("after trimming by age: %d commits, %v", len(commits), err)
	}
}

// The KV history keeps at least HistoryMaxLen transitions, dropping whole
// commits from the oldest, as the Redis history does.
func TestKVHistoryRetentionByCount(t *testing.T) {
	bucket := testenv.Name("CAPOLLER_HIST")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	for i := range 20 {
		if err := s.Commit(t.Context(), shard, nil, transitionsFor(shard, 3*i, 3)); err != nil {
			t.Fatal(err)
		}
	}
	// Trimming runs at most hourly per shard and process: a new store trims
	// at its first commit.
	small, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket, HistoryMaxLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := small.Commit(t.Context(), shard, nil, transitionsFor(shard, 100, 3)); err != nil {
		t.Fatal(err)
	}
	commits, err := small.Commits(t.Context(), shard, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range commits {
		n += len(c.Transitions)
	}
	if len(commits) != 5 || n != 15 || commits[0].Transitions[0].ID != transitionsFor(shard, 48, 1)[0].ID {
		t.Errorf("kept %d commits of %d transitions, want the 4 newest that hold 10, then the new one (15)", len(commits), n)
	}
}

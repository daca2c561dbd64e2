package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// BenchmarkReplay replays 1,000,000 history entries (four shards, commits
// of 1000 transitions) with `capoller replay` as a child process writing
// to a pipe, and then rebuilds every record's state with --at. It reports
// events/s and the child's peak RSS for each. The history holds 250,000
// records, each through four statuses.
//
//	go test ./cmd/capoller -run XXX -bench BenchmarkReplay -benchtime 1x
func BenchmarkReplay(b *testing.B) {
	redisURL := testenv.RedisURL(b)
	rdb, prefix := testenv.RedisAt(b, redisURL)
	store, err := checkpoint.NewRedis(rdb, checkpoint.RedisOptions{KeyPrefix: prefix, HistoryMaxLen: -1, HistoryMaxAge: -1})
	if err != nil {
		b.Fatal(err)
	}
	const shards, commits, perCommit = 4, 250, 1000
	steps := []diff.Status{diff.StatusPending, diff.StatusScheduled, diff.StatusRunning, diff.StatusSuccess}
	start := time.Now().Add(-time.Hour)
	for s := range shards {
		shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: fmt.Sprintf("cn-bench-%d", s)}
		for c := range commits {
			batch := make([]diff.Transition, perCommit)
			for i := range batch {
				n := c*perCommit + i
				rec := n / len(steps) // each record goes through the four steps
				batch[i] = diff.Transition{ID: fmt.Sprintf("%032x", s<<40|n), Source: shard.Source, Region: shard.Region, Previous: steps[(n+3)%4],
					ObservedAt: start.Add(time.Duration(n) * time.Millisecond), PreviousObservedAt: start,
					Record: diff.Record{Key: diff.Key{InvokeID: fmt.Sprintf("t-%d", rec/30), InstanceID: fmt.Sprintf("i-%06d", rec%30)},
						CommandID: "c-bench", CommandName: "deploy", Status: steps[n%4], Repeats: 1, StartTime: start, FinishTime: start}}
			}
			if err := store.Commit(b.Context(), shard, nil, batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	run := func(args ...string) (lines int, secs, rssMiB float64) {
		cmd := exec.Command(exe, append([]string{"replay", "--redis-url", redisURL, "--key-prefix", prefix}, args...)...)
		cmd.Env = append(os.Environ(), beMainEnv+"=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		began := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines++
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		secs = time.Since(began).Seconds()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rssMiB = float64(ru.Maxrss) / 1024
		}
		return lines, secs, rssMiB
	}
	b.ResetTimer()
	for b.Loop() {
		n, secs, rss := run()
		if n != shards*commits*perCommit {
			b.Fatalf("replay printed %d events, want %d", n, shards*commits*perCommit)
		}
		b.ReportMetric(float64(n)/secs, "events/s")
		b.ReportMetric(rss, "peak-RSS-MiB")
		n, secs, rss = run("--at", time.Now().Format(time.RFC3339Nano))
		if want := shards * commits * perCommit / len(steps); n != want {
			b.Fatalf("--at printed %d records, want %d", n, want)
		}
		b.ReportMetric(secs, "at-seconds")
		b.ReportMetric(rss, "at-peak-RSS-MiB")
		b.ReportMetric(float64(n), "at-records")
	}
}

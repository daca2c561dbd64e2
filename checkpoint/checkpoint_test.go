package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// store is the contract both implementations satisfy.
type store interface {
	Load(ctx context.Context, shard diff.Shard, keys []diff.Key) (diff.Previous, error)
	Absent(ctx context.Context, shard diff.Shard, seen func(diff.Key) bool) (map[diff.Key]diff.State, error)
	Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, transitions []diff.Transition) error
	MarkKnown(ctx context.Context, shard diff.Shard) error
	Stage(ctx context.Context, shard diff.Shard, batch diff.Result) error
	Staged(ctx context.Context, shard diff.Shard) (diff.Result, bool, error)
}

func stores(t *testing.T) map[string]func(t *testing.T) store {
	return map[string]func(t *testing.T) store{
		"redis": func(t *testing.T) store {
			client, prefix := testenv.Redis(t)
			s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix, ChunkSize: 100})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"natskv": func(t *testing.T) store {
			bucket := testenv.Name("CAPOLLER_CKPT")
			_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
			s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

func TestStoreContract(t *testing.T) {
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	other := diff.Shard{Source: diff.SourceECS, Region: "cn-beijing"}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			var keys []diff.Key
			var updates []diff.Update
			for i := range 250 { // more than one HMGET chunk
				k := diff.Key{InvokeID: fmt.Sprintf("t-%03d", i/5)}
				if i%5 != 0 {
					k.InstanceID = fmt.Sprintf("i-%d", i%5)
				}
				keys = append(keys, k)
				updates = append(updates, diff.Update{Key: k, State: diff.State{Status: diff.StatusRunning, Repeats: i % 3, ObservedAt: t0}})
			}
			prev, err := s.Load(t.Context(), shard, keys)
			if err != nil || prev.Known || len(prev.States) != 0 {
				t.Fatalf("empty store: known=%v states=%d err=%v", prev.Known, len(prev.States), err)
			}
			tr := diff.Transition{ID: "e1", Source: diff.SourceECS, Region: "cn-hangzhou", Record: diff.Record{Key: keys[1], Status: diff.StatusRunning}, ObservedAt: t0}
			if err := s.Commit(t.Context(), shard, updates, []diff.Transition{tr}); err != nil {
				t.Fatal(err)
			}
			prev, err = s.Load(t.Context(), shard, append(keys, diff.Key{InvokeID: "t-never"}))
			if err != nil || prev.Known || len(prev.States) != len(keys) {
				t.Fatalf("after commit: known=%v states=%d err=%v; a commit alone must not make the shard known", prev.Known, len(prev.States), err)
			}
			if err := s.MarkKnown(t.Context(), shard); err != nil {
				t.Fatal(err)
			}
			if marked, err := s.Load(t.Context(), shard, keys[:1]); err != nil || !marked.Known {
				t.Fatalf("after MarkKnown: known=%v err=%v", marked.Known, err)
			}
			for _, u := range updates {
				if got := prev.States[u.Key]; got != u.State {
					t.Fatalf("%v: got %+v, want %+v", u.Key, got, u.State)
				}
			}
			// A later commit of one record leaves the others alone.
			changed := diff.Update{Key: keys[7], State: diff.State{Status: diff.StatusSuccess, Repeats: 1, ObservedAt: t0.Add(time.Second)}}
			if err := s.Commit(t.Context(), shard, []diff.Update{changed}, nil); err != nil {
				t.Fatal(err)
			}
			prev, err = s.Load(t.Context(), shard, keys)
			if err != nil || prev.States[keys[7]] != changed.State || prev.States[keys[8]] != updates[8].State {
				t.Fatalf("after a partial commit: %+v / %+v, %v", prev.States[keys[7]], prev.States[keys[8]], err)
			}
			// A tombstone survives; Absent returns exactly the records not seen.
			gone := diff.Update{Key: keys[9], State: diff.State{Status: diff.StatusSuccess, ObservedAt: t0, Gone: true}}
			if err := s.Commit(t.Context(), shard, []diff.Update{gone}, nil); err != nil {
				t.Fatal(err)
			}
			absent, err := s.Absent(t.Context(), shard, func(k diff.Key) bool { return k != keys[9] && k != keys[7] })
			if err != nil || len(absent) != 2 || absent[keys[9]] != gone.State || absent[keys[7]] != changed.State {
				t.Fatalf("Absent: %+v, %v", absent, err)
			}
			// Shards are independent.
			if prev, err := s.Load(t.Context(), other, keys); err != nil || prev.Known || len(prev.States) != 0 {
				t.Fatalf("other shard: known=%v states=%d err=%v", prev.Known, len(prev.States), err)
			}
		})
	}
}

func TestRedisHistoryAndCorruption(t *testing.T) {
	client, prefix := testenv.Redis(t)
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	historyKey := prefix + "history:{prod/ecs/cn-hangzhou}"
	// A commit written by an earlier version: one JSON transition.
	legacy := `{"id":"e-old","account":"prod","source":"ecs","regionId":"cn-hangzhou","level":"instance","invokeId":"t-0",` +
		`"instanceId":"i-0","repeats":1,"from":"Running","to":"Failed","exitCode":7,"observedAt":"2026-01-01T00:00:00Z"}`
	client.XAdd(t.Context(), &redis.XAddArgs{Stream: historyKey, Values: []string{"event", legacy}})
	batches := [][]diff.Transition{transitionsFor(shard, 0, 3), transitionsFor(shard, 3, 2)}
	for _, b := range batches {
		if err := s.Commit(t.Context(), shard, nil, b); err != nil {
			t.Fatal(err)
		}
	}
	old, last, err := s.History(t.Context(), shard, "", 1)
	if err != nil || len(old) != 1 || old[0].ID != "e-old" || old[0].Record.ExitCode != 7 || old[0].Previous != diff.StatusRunning ||
		old[0].Record.Status != diff.StatusFailed || old[0].Account != "prod" || !old[0].ObservedAt.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("the earlier version's entry: %+v, %v", old, err)
	}
	first, last, err := s.History(t.Context(), shard, last, 1)
	if err != nil || len(first) != 3 {
		t.Fatalf("the first commit: %d transitions, %v", len(first), err)
	}
	for i, got := range first {
		want := batches[0][i]
		want.Account = "prod"
		if !equalTransition(got, want) {
			t.Errorf("history transition %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	rest, _, err := s.History(t.Context(), shard, last, 10)
	if err != nil || len(rest) != 2 || rest[0].ID != batches[1][0].ID || rest[1].ID != batches[1][1].ID {
		t.Fatalf("the second commit: %+v, %v", rest, err)
	}

	client.HSet(t.Context(), prefix+"records:{prod/ecs/cn-hangzhou}", "5:t-bad", "garbage")
	_, err = s.Load(t.Context(), shard, []diff.Key{{InvokeID: "t-bad"}})
	if !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("a corrupt value gave %v, want ErrCorrupt", err)
	}
	client.XAdd(t.Context(), &redis.XAddArgs{Stream: historyKey, Values: []string{"batch", "\x05garbage"}})
	if _, _, err := s.History(t.Context(), shard, "", 10); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("a corrupt history entry gave %v, want ErrCorrupt", err)
	}
}

// The history keeps at least HistoryMaxLen transitions, dropping whole
// commits from the oldest, and no commit older than HistoryMaxAge.
func TestRedisHistoryRetention(t *testing.T) {
	client, prefix := testenv.Redis(t)
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	historyKey := prefix + "history:{default/ecs/cn-hangzhou}"
	count := func() (entries, transitions int) {
		t.Helper()
		msgs, err := client.XRange(t.Context(), historyKey, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			n := 1
			fmt.Sscan(fmt.Sprint(m.Values["n"]), &n)
			transitions += n
		}
		return len(msgs), transitions
	}

	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix, HistoryMaxLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := s.Commit(t.Context(), shard, nil, transitionsFor(shard, 3*i, 3)); err != nil {
			t.Fatal(err)
		}
	}
	if entries, n := count(); entries != 4 || n != 12 {
		t.Fatalf("kept %d commits of %d transitions, want the last 4 (12 transitions: the fewest commits that hold 10)", entries, n)
	}
	got, _, err := s.History(t.Context(), shard, "", 10)
	if err != nil || len(got) != 12 || got[0].ID != transitionsFor(shard, 48, 1)[0].ID {
		t.Fatalf("history after trimming: %d transitions, %v", len(got), err)
	}
	if n := client.HGet(t.Context(), prefix+"meta:{default/ecs/cn-hangzhou}", "historyLen").Val(); n != "12" {
		t.Errorf("meta historyLen %q, want 12", n)
	}
	// A lost count is counted again from the stream.
	client.HDel(t.Context(), prefix+"meta:{default/ecs/cn-hangzhou}", "historyLen")
	if err := s.Commit(t.Context(), shard, nil, transitionsFor(shard, 100, 3)); err != nil {
		t.Fatal(err)
	}
	if entries, n := count(); entries != 4 || n != 12 {
		t.Fatalf("with the count lost, kept %d commits of %d transitions, want 4 (12)", entries, n)
	}

	// By age: a commit from two days ago goes with the next commit.
	aged := diff.Shard{Source: diff.SourceSWAS, Region: "cn-hangzhou"}
	agedKey := prefix + "history:{default/swas/cn-hangzhou}"
	twoDaysAgo := time.Now().Add(-48 * time.Hour).UnixMilli()
	client.XAdd(t.Context(), &redis.XAddArgs{Stream: agedKey, ID: fmt.Sprintf("%d-0", twoDaysAgo), Values: []string{"n", "1", "event", "{}"}})
	client.XAdd(t.Context(), &redis.XAddArgs{Stream: agedKey, ID: fmt.Sprintf("%d-0", time.Now().Add(-time.Minute).UnixMilli()),
		Values: []string{"event", `{"id":"recent"}`}})
	byAge, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix, HistoryMaxAge: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := byAge.Commit(t.Context(), aged, nil, transitionsFor(aged, 0, 2)); err != nil {
		t.Fatal(err)
	}
	got, _, err = byAge.History(t.Context(), aged, "", 10)
	if err != nil || len(got) != 3 || got[0].ID != "recent" {
		t.Fatalf("history by age: %+v, %v", got, err)
	}
}

// transitionsFor makes n instance transitions of shard with every field
// set, ids numbered from first.
func transitionsFor(shard diff.Shard, first, n int) []diff.Transition {
	var out []diff.Transition
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	for i := first; i < first+n; i++ {
		out = append(out, diff.Transition{ID: fmt.Sprintf("e%04d", i), Source: shard.Source, Region: shard.Region,
			Previous: diff.StatusRunning, PreviousObservedAt: at.Add(time.Duration(i) * time.Second),
			Record: diff.Record{Key: diff.Key{InvokeID: "t-1", InstanceID: fmt.Sprintf("i-%d", i)}, CommandID: "c-1", CommandName: "deploy",
				Status: diff.StatusFailed, Repeats: 2, ExitCode: 3, ErrorCode: "CommandFailed", ErrorInfo: "line 1\nline 2",
				StartTime: at, FinishTime: at.Add(time.Minute)},
			ObservedAt: at.Add(time.Duration(i+1) * time.Second)})
	}
	return out
}

func equalTransition(a, b diff.Transition) bool {
	ar, br := a.Record, b.Record
	return a.ID == b.ID && a.Account == b.Account && a.Source == b.Source && a.Region == b.Region && a.Previous == b.Previous &&
		a.PreviousObservedAt.Equal(b.PreviousObservedAt) && a.ObservedAt.Equal(b.ObservedAt) &&
		ar.Key == br.Key && ar.CommandID == br.CommandID && ar.CommandName == br.CommandName && ar.Status == br.Status &&
		ar.Repeats == br.Repeats && ar.ExitCode == br.ExitCode && ar.ErrorCode == br.ErrorCode && ar.ErrorInfo == br.ErrorInfo &&
		ar.StartTime.Equal(br.StartTime) && ar.FinishTime.Equal(br.FinishTime) && ar.Cut == br.Cut
}

func TestRedisUnreachable(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer client.Close()
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	if _, err := s.Load(t.Context(), shard, []diff.Key{{InvokeID: "t"}}); err == nil {
		t.Error("Load succeeded without a server")
	}
	if err := s.Commit(t.Context(), shard, []diff.Update{{Key: diff.Key{InvokeID: "t"}}}, nil); err == nil {
		t.Error("Commit succeeded without a server")
	}
}

func TestKVConcurrentCommitConflicts(t *testing.T) {
	bucket := testenv.Name("CAPOLLER_CKPT")
	url := testenv.NATSURL(t)
	_, js := testenv.NATS(t, url, bucket)
	a, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	b, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	k := []diff.Key{{InvokeID: "t-1"}}
	up := []diff.Update{{Key: k[0], State: diff.State{Status: diff.StatusRunning, ObservedAt: time.Unix(1, 0).UTC()}}}
	for _, s := range []*checkpoint.KV{a, b} {
		if _, err := s.Load(t.Context(), shard, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Commit(t.Context(), shard, up, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(t.Context(), shard, up, nil); !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("second writer: %v, want ErrConflict", err)
	}
	if _, err := b.Load(t.Context(), shard, k); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(t.Context(), shard, up, nil); err != nil {
		t.Fatalf("after reloading: %v", err)
	}
}

// TestRedisStagesBatchesInOrder: batches staged before the previous ones
// committed queue up; each commit of a batch with events clears the
// oldest, a quiet commit none, and an empty stage all. A batch staged by
// a version that held one is the oldest.
func TestRedisStagesBatchesInOrder(t *testing.T) {
	client, prefix := testenv.Redis(t)
	s := newRedis(t, client, prefix)
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	batch := func(id string) diff.Result {
		return diff.Result{Transitions: []diff.Transition{{ID: id, Record: diff.Record{Key: diff.Key{InvokeID: id}, Status: diff.StatusRunning}}}}
	}
	oldest := func(want string) {
		t.Helper()
		got, ok, err := s.Staged(t.Context(), shard)
		if err != nil || ok != (want != "") || (ok && got.Transitions[0].ID != want) {
			t.Fatalf("oldest staged: %+v %v %v, want %q", got, ok, err, want)
		}
	}
	// The first layout's single staged batch.
	legacy := newRedis(t, client, prefix)
	if err := legacy.Stage(t.Context(), shard, batch("a")); err != nil {
		t.Fatal(err)
	}
	raw := client.LIndex(t.Context(), prefix+"staged:{default/ecs/r}", 0).Val()
	client.Del(t.Context(), prefix+"staged:{default/ecs/r}")
	client.Set(t.Context(), prefix+"outbox:{default/ecs/r}", raw, 0)
	oldest("a")
	for _, id := range []string{"b", "c"} {
		if err := s.Stage(t.Context(), shard, batch(id)); err != nil {
			t.Fatal(err)
		}
	}
	oldest("a")
	if err := s.Commit(t.Context(), shard, []diff.Update{{Key: diff.Key{InvokeID: "q"}, State: diff.State{Status: diff.StatusSuccess}}}, nil); err != nil {
		t.Fatal(err)
	}
	oldest("a") // a quiet commit clears nothing
	for _, want := range []string{"b", "c", ""} {
		if err := s.Commit(t.Context(), shard, nil, batch("x").Transitions); err != nil {
			t.Fatal(err)
		}
		oldest(want)
	}
	for _, id := range []string{"d", "e"} {
		if err := s.Stage(t.Context(), shard, batch(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Stage(t.Context(), shard, diff.Result{}); err != nil {
		t.Fatal(err)
	}
	oldest("")

	// A corrupt oldest batch is dropped alone: the valid ones behind it stay.
	for _, id := range []string{"f", "g"} {
		if err := s.Stage(t.Context(), shard, batch(id)); err != nil {
			t.Fatal(err)
		}
	}
	client.Set(t.Context(), prefix+"outbox:{default/ecs/r}", "\xff\xff\x0fgarbage", 0)
	if _, _, err := s.Staged(t.Context(), shard); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("a corrupt oldest batch: %v", err)
	}
	if err := s.DiscardOldestStaged(t.Context(), shard); err != nil {
		t.Fatal(err)
	}
	oldest("f")
	if err := s.DiscardOldestStaged(t.Context(), shard); err != nil {
		t.Fatal(err)
	}
	oldest("g")
}

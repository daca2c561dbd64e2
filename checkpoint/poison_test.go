package checkpoint_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// hostileKeys are ids that broke the first encoding: separators of the
// field ("/") and of the state ("|"), the KV store's line and marker
// syntax ("\n", "\t", "!known"), and a prefix of another key.
func hostileKeys() []diff.Key {
	return []diff.Key{
		{InvokeID: "!known"},
		{InvokeID: "t-a/i-b"},
		{InvokeID: "t-a", InstanceID: "i-b"},
		{InvokeID: "t-a/i", InstanceID: "-b"},
		{InvokeID: "t-a"},
		{InvokeID: "t\nline", InstanceID: "i\tx"},
		{InvokeID: "5:t-a"},
		{InvokeID: "t|pipe", InstanceID: "i|pipe"},
		{InvokeID: "t-ü.*>%20 x", InstanceID: strings.Repeat("é", 1500)},
		{InvokeID: "\x00\xff", InstanceID: "\x00"},
	}
}

// TestStoresRoundTripAnyString is the regression test of poison pills in
// the checkpoint: every id and status, whatever it holds, comes back as it
// was committed, and no record is mistaken for another or for a marker.
func TestStoresRoundTripAnyString(t *testing.T) {
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 1, time.UTC)
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			keys := hostileKeys()
			var updates []diff.Update
			for i, k := range keys {
				st := diff.State{Status: diff.Status(fmt.Sprintf("Run|ning\n%d", i)), Repeats: i, ObservedAt: t0.Add(time.Duration(i))}
				if i%3 == 0 {
					st.Gone, st.GoneAt = true, t0.Add(time.Hour)
				}
				updates = append(updates, diff.Update{Key: k, State: st})
			}
			if _, err := s.Load(t.Context(), shard, keys); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(t.Context(), shard, updates, nil); err != nil {
				t.Fatal(err)
			}
			prev, err := s.Load(t.Context(), shard, keys)
			if err != nil {
				t.Fatal(err)
			}
			if prev.Known {
				t.Error(`a record with the id "!known" made the shard known`)
			}
			for _, u := range updates {
				if got, ok := prev.States[u.Key]; !ok || got != u.State {
					t.Errorf("%q: got %+v (%v), want %+v", u.Key, got, ok, u.State)
				}
			}
			absent, err := s.Absent(t.Context(), shard, func(k diff.Key) bool { return k != keys[2] })
			if err != nil || len(absent) != 1 || absent[keys[2]] != updates[2].State {
				t.Fatalf("Absent of one record: %+v, %v", absent, err)
			}
			// Forgetting one record leaves its look-alikes alone.
			if err := s.Commit(t.Context(), shard, []diff.Update{{Key: keys[1], Forget: true}}, nil); err != nil {
				t.Fatal(err)
			}
			prev, err = s.Load(t.Context(), shard, keys)
			if err != nil || len(prev.States) != len(keys)-1 || prev.States[keys[2]] != updates[2].State {
				t.Fatalf("after forgetting %q: %d states, %v", keys[1], len(prev.States), err)
			}
			if _, ok := prev.States[keys[1]]; ok {
				t.Errorf("%q was not forgotten", keys[1])
			}
		})
	}
}

// TestStoresStageABatch checks the outbox: a staged batch comes back
// whole, and the commit clears it.
func TestStoresStageABatch(t *testing.T) {
	shard := diff.Shard{Source: diff.SourceSWAS, Region: "cn-hangzhou"}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			if _, ok, err := s.Staged(t.Context(), shard); ok || err != nil {
				t.Fatalf("empty store has a staged batch: %v %v", ok, err)
			}
			keys := hostileKeys()
			batch := diff.Result{}
			for i, k := range keys[:4] {
				rec := diff.Record{Key: k, CommandID: "c|1", CommandName: "n\n", Status: diff.StatusFailed, Repeats: i, ExitCode: -3,
					ErrorCode: "E", ErrorInfo: strings.Repeat("x", 10), StartTime: t0, FinishTime: t0.Add(time.Second)}
				batch.Transitions = append(batch.Transitions, diff.Transition{ID: fmt.Sprint("id", i), Source: shard.Source, Region: shard.Region,
					Record: rec, Previous: diff.StatusRunning, PreviousObservedAt: t0, ObservedAt: t0.Add(time.Minute)})
				batch.Updates = append(batch.Updates, diff.Update{Key: k, State: diff.State{Status: diff.StatusFailed, Repeats: i, ObservedAt: t0.Add(time.Minute)}})
			}
			batch.Updates = append(batch.Updates, diff.Update{Key: keys[5], Forget: true})
			if err := s.Stage(t.Context(), shard, batch); err != nil {
				t.Fatal(err)
			}
			got, ok, err := s.Staged(t.Context(), shard)
			if err != nil || !ok {
				t.Fatalf("staged: %v %v", ok, err)
			}
			if !slices.EqualFunc(got.Transitions, batch.Transitions, func(a, b diff.Transition) bool {
				return a.ID == b.ID && a.Source == b.Source && a.Region == b.Region && a.Previous == b.Previous &&
					a.PreviousObservedAt.Equal(b.PreviousObservedAt) && a.ObservedAt.Equal(b.ObservedAt) &&
					a.Record.Key == b.Record.Key && a.Record.Status == b.Record.Status && a.Record.ErrorInfo == b.Record.ErrorInfo &&
					a.Record.CommandName == b.Record.CommandName && a.Record.ExitCode == b.Record.ExitCode && a.Record.Repeats == b.Record.Repeats &&
					a.Record.StartTime.Equal(b.Record.StartTime) && a.Record.FinishTime.Equal(b.Record.FinishTime)
			}) || !slices.Equal(got.Updates, batch.Updates) {
				t.Fatalf("staged batch changed:\n got %+v\nwant %+v", got, batch)
			}
			if _, err := s.Load(t.Context(), shard, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(t.Context(), shard, got.Updates, got.Transitions); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := s.Staged(t.Context(), shard); ok || err != nil {
				t.Fatalf("the commit left the batch staged: %v %v", ok, err)
			}
		})
	}
}

// TestRedisMigratesTheFirstEncoding loads a shard written in the first
// encoding: every record keeps its state, tombstones included.
func TestRedisMigratesTheFirstEncoding(t *testing.T) {
	client, prefix := testenv.Redis(t)
	client.HSet(t.Context(), prefix+"state:ecs:r", "t-1", "Running|0|1000", "t-1/i-1", "Success|2|2000", "t-2", "Failed|0|3000|gone",
		"t-3", "Run|ning|1|4000", "t-4", "garbage")
	client.HSet(t.Context(), prefix+"meta:ecs:r", "known", "1")
	s := newRedis(t, client, prefix)
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	keys := []diff.Key{{InvokeID: "t-1"}, {InvokeID: "t-1", InstanceID: "i-1"}, {InvokeID: "t-2"}, {InvokeID: "t-3"}, {InvokeID: "t-4"}}
	prev, err := s.Load(t.Context(), shard, keys)
	if err != nil || !prev.Known || len(prev.States) != 4 {
		t.Fatalf("migrated: known=%v %+v %v", prev.Known, prev.States, err)
	}
	if st := prev.States[keys[1]]; st.Status != diff.StatusSuccess || st.Repeats != 2 || st.ObservedAt.UnixNano() != 2000 || st.Gone {
		t.Errorf("instance: %+v", st)
	}
	if st := prev.States[keys[2]]; !st.Gone || st.Status != diff.StatusFailed || st.GoneAt.IsZero() {
		t.Errorf("tombstone: %+v", st)
	}
	if st := prev.States[keys[3]]; st.Status != "Run|ning" || st.Repeats != 1 {
		t.Errorf("a legacy status holding '|': %+v", st)
	}
	if n := client.Exists(t.Context(), prefix+"state:ecs:r").Val(); n != 0 {
		t.Error("the legacy hash is still there")
	}
}

func newRedis(t *testing.T, client *redis.Client, prefix string) *checkpoint.Redis {
	t.Helper()
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKVMigratesTheFirstLayout loads a shard written as one gzipped value
// of "field\tstate" lines: the records and the known flag survive, and the
// shard can be written at once.
func TestKVMigratesTheFirstLayout(t *testing.T) {
	s, kv := newKVBucket(t)
	var legacy bytes.Buffer
	zw := gzip.NewWriter(&legacy)
	// A status with "|", and an id with a newline, which this layout split.
	fmt.Fprint(zw, "!known\t1\nt-1\tRunning|0|1000\nt-1/i-1\tSuccess|2|2000|gone\nt-2\tRun|ning|1|3000\nt-\nbroken\tRunning|0|1\n")
	_ = zw.Close()
	if _, err := kv.Put(t.Context(), "ecs.r", legacy.Bytes()); err != nil {
		t.Fatal(err)
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	keys := []diff.Key{{InvokeID: "t-1"}, {InvokeID: "t-1", InstanceID: "i-1"}, {InvokeID: "t-2"}}
	prev, err := s.Load(t.Context(), shard, keys)
	if err != nil || !prev.Known || len(prev.States) != 3 {
		t.Fatalf("migrated: known=%v %+v %v", prev.Known, prev.States, err)
	}
	if st := prev.States[keys[1]]; !st.Gone || st.Repeats != 2 || prev.States[keys[2]].Status != "Run|ning" {
		t.Errorf("states %+v", prev.States)
	}
	if err := s.MarkKnown(t.Context(), shard); err != nil {
		t.Errorf("MarkKnown after a migration: %v", err)
	}
	if err := s.Commit(t.Context(), shard, []diff.Update{{Key: keys[0], State: diff.State{Status: diff.StatusSuccess}}}, nil); err != nil {
		t.Errorf("Commit after a migration: %v", err)
	}
	if _, err := kv.Get(t.Context(), "ecs.r"); err == nil {
		t.Error("the legacy value is still there")
	}
}

// TestStagedBatchesKeepAnyTime: a staged event's times round-trip whatever
// their year (the API's timestamps are parsed from text).
func TestStagedBatchesKeepAnyTime(t *testing.T) {
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			old, late := time.Date(1000, 1, 1, 0, 0, 0, 5, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
			tr := diff.Transition{ID: "e", Record: diff.Record{Key: diff.Key{InvokeID: "t"}, StartTime: old, FinishTime: late}, ObservedAt: old}
			if err := s.Stage(t.Context(), shard, diff.Result{Transitions: []diff.Transition{tr}}); err != nil {
				t.Fatal(err)
			}
			got, ok, err := s.Staged(t.Context(), shard)
			if err != nil || !ok || !got.Transitions[0].Record.StartTime.Equal(old) || !got.Transitions[0].Record.FinishTime.Equal(late) {
				t.Fatalf("staged %+v %v %v", got.Transitions, ok, err)
			}
		})
	}
}

// TestStoresStageABatchLargerThanAValue: a batch of 100 events with
// 6,000-byte ids is over a megabyte, more than one KV value may hold; it
// must still stage, or the shard could never publish again.
func TestStoresStageABatchLargerThanAValue(t *testing.T) {
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			var batch diff.Result
			for i := range 100 {
				k := diff.Key{InvokeID: fmt.Sprintf("%06d", i) + strings.Repeat("i", 6000), InstanceID: strings.Repeat("n", 6000)}
				batch.Transitions = append(batch.Transitions, diff.Transition{ID: fmt.Sprint(i), Record: diff.Record{Key: k, Status: diff.StatusRunning}})
				batch.Updates = append(batch.Updates, diff.Update{Key: k, State: diff.State{Status: diff.StatusRunning}})
			}
			if err := s.Stage(t.Context(), shard, batch); err != nil {
				t.Fatal(err)
			}
			got, ok, err := s.Staged(t.Context(), shard)
			if err != nil || !ok || len(got.Transitions) != 100 || got.Transitions[99].Record.Key != batch.Transitions[99].Record.Key {
				t.Fatalf("staged: %v %v, %d transitions", ok, err, len(got.Transitions))
			}
			// A smaller batch staged after it is read back alone: at once
			// where one batch is staged at a time, after the first one's
			// commit where they queue.
			if err := s.Stage(t.Context(), shard, diff.Result{Transitions: batch.Transitions[:1]}); err != nil {
				t.Fatal(err)
			}
			if q, ok := s.(interface{ MaxStaged() int }); ok && q.MaxStaged() > 1 {
				if got, _, err := s.Staged(t.Context(), shard); err != nil || len(got.Transitions) != 100 {
					t.Fatalf("the first batch, still the oldest: %d transitions, %v", len(got.Transitions), err)
				}
				if err := s.Commit(t.Context(), shard, batch.Updates, batch.Transitions); err != nil {
					t.Fatal(err)
				}
			}
			if got, _, err := s.Staged(t.Context(), shard); err != nil || len(got.Transitions) != 1 {
				t.Fatalf("the second batch: %d transitions, %v", len(got.Transitions), err)
			}
		})
	}
}

// newKVBucket is a KV store on a bucket of its own, and a hand on the
// bucket's raw values.
func newKVBucket(t *testing.T) (*checkpoint.KV, jetstream.KeyValue) {
	t.Helper()
	bucket := testenv.Name("CAPOLLER_CKPT")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return s, kv
}

package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
)

// connectFirstTo connects to the cluster through node first, falling
// over to the others, in order, when it goes.
func connectFirstTo(t *testing.T, cluster *testenv.NATSNodes, first int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	urls := cluster.URLs()
	ordered := append([]string{urls[first]}, append(urls[:first:first], urls[first+1:]...)...)
	nc, err := nats.Connect(strings.Join(ordered, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// TestClusterStreamReplicas: on a three-node cluster the stream is created
// with three replicas, and a publisher asking for another count reports
// the difference and leaves the stream as it is.
func TestClusterStreamReplicas(t *testing.T) {
	cluster := testenv.NATSCluster(t, 3)
	stream := testenv.Name("CAPOLLER_R3")
	prefix := strings.ToLower(stream)
	_, js := testenv.NATS(t, cluster.URL(), stream)
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: prefix, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	change, err := pub.SetupStream(t.Context())
	if err != nil || !change.Created {
		t.Fatalf("setup: %+v, %v; want the stream created", change, err)
	}
	if cfg := streamConfig(t, js, stream); cfg.Replicas != 3 {
		t.Fatalf("created with %d replicas, want 3", cfg.Replicas)
	}
	if change, err := pub.SetupStream(t.Context()); err != nil || change.Created || len(change.Kept) != 0 {
		t.Errorf("setup again: %+v, %v; want no change", change, err)
	}
	one, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	change, err = one.SetupStream(t.Context())
	if err != nil || change.Created || !slices.Equal(change.Kept, []string{"replicas 3 (ours 1)"}) {
		t.Errorf("setup with the default replicas: %+v, %v; want the difference reported", change, err)
	}
	if cfg := streamConfig(t, js, stream); cfg.Replicas != 3 {
		t.Errorf("replicas became %d, want the stream's 3", cfg.Replicas)
	}
}

// clusterBatch is batch number b of n transitions, each with its own id.
func clusterBatch(b, n int) []diff.Transition {
	out := make([]diff.Transition, n)
	for i := range out {
		out[i] = transition(fmt.Sprintf("t-%04d", b), fmt.Sprintf("i-%03d", i), diff.StatusRunning, diff.StatusSuccess)
	}
	return out
}

// TestClusterPublishSurvivesANodeLoss publishes batches to a stream with
// three replicas, through a connection to the node leading the stream,
// and shuts that node down mid-run. A batch that is not acknowledged is
// published again, as the poller does, until it is. Afterwards the stream
// holds every event exactly once: the duplicate window spans the change of
// leader.
func TestClusterPublishSurvivesANodeLoss(t *testing.T) {
	cluster := testenv.NATSCluster(t, 3)
	stream := testenv.Name("CAPOLLER_LOSS")
	prefix := strings.ToLower(stream)
	_, setup := testenv.NATS(t, cluster.URL(), stream)
	opts := publisher.Options{Stream: stream, SubjectPrefix: prefix, Replicas: 3, AckTimeout: 2 * time.Second}
	first, err := publisher.New(setup, opts)
	if err != nil {
		t.Fatal(err)
	}
	if change, err := first.SetupStream(t.Context()); err != nil || !change.Created {
		t.Fatalf("setup: %+v, %v", change, err)
	}
	var leader int
	testenv.WaitFor(t, 10*time.Second, "a leader of "+stream, func() error {
		if leader = cluster.StreamLeader(stream); leader < 0 {
			return errors.New("none")
		}
		return nil
	})
	nc, js := connectFirstTo(t, cluster, leader)
	pub, err := publisher.New(js, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.SetupStream(t.Context()); err != nil {
		t.Fatal(err)
	}

	// The test's goroutine publishes; another shuts the leader down once
	// ten batches are in, while publishing goes on.
	const size = 25
	var (
		ids      = map[string]bool{}
		failures int
		dups     int                   // events of a failed batch stored before it failed
		shutdown = make(chan struct{}) // closed when the node is down
		before   int                   // batches acknowledged before the shutdown
		after    int                   // and after it completed
		start    time.Time
	)
	for b := 0; after < 20; b++ {
		if b == 10 {
			before, start = b, time.Now()
			go func() { defer close(shutdown); cluster.Shutdown(leader) }()
		}
		batch := clusterBatch(b, size)
		testenv.WaitFor(t, time.Minute, fmt.Sprintf("batch %d acknowledged", b), func() error {
			res, err := pub.Publish(t.Context(), batch)
			if err != nil {
				failures++
				t.Logf("batch %d: %v", b, err)
				// Published again once the stream answers, as the next cycle
				// would.
				testenv.WaitFor(t, time.Minute, "the stream answering", func() error {
					ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond) // a request lost in a reconnect is asked again
					defer cancel()
					_, err := js.Stream(ctx, stream)
					return err
				})
				return err
			}
			dups += res.Duplicates
			if res.Published+res.Duplicates != size {
				t.Fatalf("batch %d: %+v, want %d acknowledged", b, res, size)
			}
			return nil
		})
		for _, tr := range batch {
			ids[tr.ID] = true
		}
		select {
		case <-shutdown:
			after++
		default:
		}
	}
	t.Logf("%d batches of %d; node %d (the stream leader) shut down after %d; %d failed publishes, %d events found stored when published again; 20 batches after it was down, in %v",
		len(ids)/size, size, leader, before, failures, dups, time.Since(start).Round(time.Millisecond))
	// The new leader remembers the ids the old one stored.
	if res, err := pub.Publish(t.Context(), clusterBatch(0, size)); err != nil || res.Duplicates != size {
		t.Errorf("batch 0 published again after the loss: %+v, %v; want all %d found duplicates", res, err, size)
	}
	if nc.ConnectedUrl() == cluster.URLs()[leader] {
		t.Error("the publisher's connection is still to the node shut down")
	}

	// Read the stream back, through a survivor.
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	if msgs := s.CachedInfo().State.Msgs; msgs != uint64(len(ids)) {
		t.Errorf("the stream holds %d messages, want the %d acknowledged", msgs, len(ids))
	}
	cons, err := s.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	testenv.WaitFor(t, time.Minute, "reading the stream back", func() error {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return err
		}
		for m := range batch.Messages() {
			seen[m.Headers().Get(jetstream.MsgIDHeader)]++
		}
		if len(seen) < len(ids) {
			return fmt.Errorf("%d of %d events read", len(seen), len(ids))
		}
		return batch.Error()
	})
	for id, n := range seen {
		if n != 1 || !ids[id] {
			t.Errorf("event %s: stored %d times, acknowledged %v; want once, acknowledged", id, n, ids[id])
		}
	}
}

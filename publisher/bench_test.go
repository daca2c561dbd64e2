package publisher_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
)

// BenchmarkPublish publishes batches of 10,000 distinct events and waits
// for every acknowledgement.
func BenchmarkPublish(b *testing.B) {
	stream := testenv.Name("CAPOLLER_BENCH")
	_, js := testenv.NATS(b, testenv.NATSURL(b), stream)
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: strings.ToLower(stream)})
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.EnsureStream(b.Context()); err != nil {
		b.Fatal(err)
	}
	const batch = 10_000
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		trs := make([]diff.Transition, batch)
		for i := range trs {
			trs[i] = transition(fmt.Sprintf("t-%d", n), "i-1", diff.StatusRunning, diff.StatusSuccess)
			n++
		}
		if res, err := pub.Publish(b.Context(), trs); err != nil || res.Published != batch {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.ReportMetric(float64(batch)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

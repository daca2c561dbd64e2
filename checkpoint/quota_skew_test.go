package checkpoint_test

import (
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/poller/testenv"
)

// TestKVQuotaSurvivesAReplicaAnHourAhead: KV.Take uses the caller's
// clock. One replica whose clock runs an hour ahead takes a call and
// stores a TAT an hour in the future; the others must not be told to wait
// an hour for each call of that account, region and API.
func TestKVQuotaSurvivesAReplicaAnHourAhead(t *testing.T) {
	bucket := testenv.Name("CAPOLLER_CKPT")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	kv, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if wait, err := kv.Take(t.Context(), "default/cn-hangzhou/DescribeInvocations", 10, 1, now.Add(time.Hour)); err != nil || wait != 0 {
		t.Fatalf("skewed take: %v %v", wait, err)
	}
	wait, err := kv.Take(t.Context(), "default/cn-hangzhou/DescribeInvocations", 10, 1, now)
	if err != nil {
		t.Fatal(err)
	}
	if wait > time.Second {
		t.Fatalf("a replica with a correct clock must wait %v for a 10/s quota", wait)
	}
}

// TestKVQuotaSurvivesASmallSkew: with 2 s of skew, the fast replica
// taking calls at its own pace must not starve the correct one.
func TestKVQuotaSurvivesASmallSkew(t *testing.T) {
	bucket := testenv.Name("CAPOLLER_CKPT")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	kv, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	const key = "default/cn-hangzhou/DescribeInvocations"
	now := time.Now()
	for step := range 50 { // 5 s of simulated time, 100 ms apart
		at := now.Add(time.Duration(step) * 100 * time.Millisecond)
		if _, err := kv.Take(t.Context(), key, 10, 1, at.Add(2*time.Second)); err != nil { // fast replica
			t.Fatal(err)
		}
		if step > 10 {
			wait, err := kv.Take(t.Context(), key, 10, 1, at) // correct replica
			if err != nil {
				t.Fatal(err)
			}
			if wait > time.Second {
				t.Fatalf("at %v the correct replica must wait %v (quota 10/s, skew 2 s)", at.Sub(now), wait)
			}
		}
	}
}

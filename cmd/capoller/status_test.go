package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/poller/testenv"
)

// TestStatusOnlyReads: capoller status needs no running replica and never
// writes; with natskv it does not create a missing bucket (a daemon
// started later with --stream-replicas 3 would keep that one as it is),
// and says the bucket is missing.
func TestStatusOnlyReads(t *testing.T) {
	url := testenv.NATSURL(t)
	bucket := testenv.Name("CAPOLLER_STATUS")
	_, js := testenv.NATS(t, url, bucket)
	var out, errOut bytes.Buffer
	rc := statusCommand(t.Context(), []string{"--checkpoint", "natskv", "--nats-url", url, "--bucket", bucket, "--json"}, &out, &errOut)
	if rc != 1 || !strings.Contains(errOut.String(), bucket) {
		t.Fatalf("status of a missing bucket: exit %d, %q", rc, errOut.String())
	}
	if _, err := js.KeyValue(t.Context(), bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("status created bucket %s (%v)", bucket, err)
	}
}

package poller

import (
	"strings"
	"testing"
)

// TestReplicaIDsAreUniquePerProcess: two processes given one
// --replica-id are two owners.
func TestReplicaIDsAreUniquePerProcess(t *testing.T) {
	a, b := ReplicaID("capoller", "host"), ReplicaID("capoller", "host")
	if a == b || !strings.HasPrefix(a, "capoller-") {
		t.Fatalf("ids %q and %q", a, b)
	}
	if id := ReplicaID("", "web.1:x"); !strings.HasPrefix(id, "web.1-x-") {
		t.Fatalf("from the host name: %q", id)
	}
}

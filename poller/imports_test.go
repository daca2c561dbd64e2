package poller_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestThePollerNeedsOnlyDiffAndTheStoresContract: the poller builds
// without the Alibaba SDK, the NATS server or the listers: it sees them
// through its own small interfaces.
func TestThePollerNeedsOnlyDiffAndTheStoresContract(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "aliyun") || strings.Contains(dep, "nats-server") || strings.Contains(dep, "/cloudassist") ||
			strings.HasSuffix(dep, "capoller/publisher") {
			t.Errorf("poller depends on %s", dep)
		}
	}
}

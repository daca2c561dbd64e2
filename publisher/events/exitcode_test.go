package events_test

import (
	"testing"

	"github.com/capoller/capoller/publisher/events"
)

// TestExitCodeOfIsOnlyAProcesssCode: the API's 0 beside a Timeout, an
// abort or a delivery failure is no exit code; a success's 0, a failure's
// code and any code other than 0 are.
func TestExitCodeOfIsOnlyAProcesssCode(t *testing.T) {
	code := func(n int64) *int64 { return &n }
	for _, c := range []struct {
		status    events.Status
		errorCode string
		exit      *int64
		want      int64
		ok        bool
	}{
		{events.Success, "", code(0), 0, true},
		{events.Failed, "ExitCodeNonzero", code(3), 3, true},
		{events.Failed, "", code(1), 1, true},
		{events.Timeout, "ExecutionTimeout", code(0), 0, false},
		{events.Aborted, "", code(0), 0, false},
		{events.Cancelled, "", code(0), 0, false},
		{events.Failed, "DeliveryTimeout", code(0), 0, false},
		{events.Failed, "InstanceNotExists", code(0), 0, false},
		{events.Timeout, "ExecutionTimeout", code(137), 137, true}, // killed: the API gave the signal's code
		{events.Running, "", nil, 0, false},                        // an invocation, or no code at all
	} {
		d := events.Data{Status: c.status, ErrorCode: c.errorCode, ExitCode: c.exit}
		if got, ok := d.ExitCodeOf(); got != c.want || ok != c.ok {
			t.Errorf("%s %s exit %v: ExitCodeOf %d, %v; want %d, %v", c.status, c.errorCode, c.exit, got, ok, c.want, c.ok)
		}
	}
}

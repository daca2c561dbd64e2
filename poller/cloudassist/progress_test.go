package cloudassist

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestQuotaWaitsReportProgress(t *testing.T) {
	var n atomic.Int32
	ctx := WithProgress(t.Context(), func() { n.Add(1) })
	if err := quotaWait(ctx, 350*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Begin, every 100ms (3), end.
	if got := n.Load(); got < 5 {
		t.Errorf("a 350ms quota wait reported progress %d times, want at least 5", got)
	}
	n.Store(0)
	if err := sleep(ctx, 50*time.Millisecond); err != nil || n.Load() != 0 {
		t.Errorf("a backoff reported progress %d times (err %v), want none", n.Load(), err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := quotaWait(cancelled, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled wait returned %v", err)
	}
	if err := quotaWait(t.Context(), time.Millisecond); err != nil { // without WithProgress
		t.Fatal(err)
	}
}

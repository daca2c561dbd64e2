package publisher_test

import (
	"testing"
	"time"

	"github.com/capoller/capoller/publisher"
)

func TestDefaultDuplicateWindowCoversTheLongestRetry(t *testing.T) {
	pub, err := publisher.New(nil, publisher.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := pub.StreamConfig().Duplicates; got != 10*time.Minute {
		t.Errorf("default duplicate window %v, want 10m (over the poller's 5m longest retry pause)", got)
	}
	// A short max age caps the default instead of making it an error.
	pub, err = publisher.New(nil, publisher.Options{MaxAge: 3 * time.Minute})
	if err != nil {
		t.Fatalf("default window with a 3m max age: %v", err)
	}
	if got := pub.StreamConfig().Duplicates; got != 3*time.Minute {
		t.Errorf("duplicate window %v with a 3m max age, want 3m", got)
	}
}

package harness_test

import (
	"testing"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/poller"
)

func TestParseHookFault(t *testing.T) {
	for _, tc := range []struct {
		fault, stopAt string
		want          harness.Fault
		bad           bool
	}{
		{"", "", harness.Fault{}, false},
		{"", "published", harness.Fault{Step: poller.StepPublished, Action: "stop", Nth: 1}, false},
		{"staged:kill:3", "published", harness.Fault{Step: poller.StepStaged, Action: "kill", Nth: 3}, false},
		{"committed:stop", "", harness.Fault{Step: poller.StepCommitted, Action: "stop", Nth: 1}, false},
		{"nowhere:kill", "", harness.Fault{}, true},
		{"fetched:explode", "", harness.Fault{}, true},
		{"fetched:kill:0", "", harness.Fault{}, true},
		{"fetched", "", harness.Fault{}, true},
	} {
		got, err := harness.ParseFault(tc.fault, tc.stopAt)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseFault(%q, %q) = %+v, %v", tc.fault, tc.stopAt, got, err)
		}
	}
}

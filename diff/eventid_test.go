package diff

import "testing"

// TestEventIDsDoNotChange pins the ids earlier versions published: a
// replica of another version must compute the same id for the same
// change, or JetStream would not drop a re-publish across an upgrade as a
// duplicate.
func TestEventIDsDoNotChange(t *testing.T) {
	for _, c := range []struct {
		t    Transition
		want string
	}{
		{Transition{Source: SourceECS, Region: "cn-hangzhou", Record: Record{Key: Key{InvokeID: "t-hz0abc"}, Status: StatusRunning}},
			"fad33ec69d6f90a13e903014e18f9d06"},
		{Transition{Source: SourceECS, Region: "cn-hangzhou", Record: Record{Key: Key{InvokeID: "t-hz0abc", InstanceID: "i-bp1"}, Status: StatusFailed, Repeats: 3}, Previous: StatusRunning},
			"fae36f5a8dd50a807a199801695b4f12"},
		{Transition{Source: SourceSWAS, Region: "ap-southeast-1", Record: Record{Key: Key{InvokeID: "t-x", InstanceID: "ins-9"}, Status: StatusSuccess, Repeats: 12345}, Previous: StatusPending},
			"b6d9a3531ad31a38418105d814505c67"},
	} {
		if got := EventID(c.t); got != c.want {
			t.Errorf("EventID(%s %s %s/%s run %d %s→%s) = %s, earlier versions gave %s", c.t.Source, c.t.Region,
				c.t.Record.InvokeID, c.t.Record.InstanceID, c.t.Record.Repeats, c.t.Previous, c.t.Record.Status, got, c.want)
		}
	}
}

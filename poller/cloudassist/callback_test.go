package cloudassist

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
)

// errEmit stands for the poller's own failures inside a listing: a Redis
// load, a NATS publish, a Redis commit.
var errEmit = errors.New("commit: redis: connection refused") //nolint:gochecknoglobals // test sentinel

// failOn is an emit that fails on the first chunk holding a record of
// invokeID ("" fails on the first chunk).
func failOn(invokeID string) func(diff.Snapshot) error {
	return func(chunk diff.Snapshot) error {
		if invokeID == "" || slices.ContainsFunc(chunk.Records, func(r diff.Record) bool { return r.InvokeID == invokeID }) {
			return errEmit
		}
		return nil
	}
}

func assertCallbackError(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, errEmit) || err.Error() != errEmit.Error() {
		t.Errorf("%s: err %q; want the callback's own error %q, without the listing's context", what, err, errEmit)
	}
}

// TestCallbackErrorsAreNotBlamedOnTheAPI: an error of emit comes back from
// Stream as it is, wherever in the listing it happened.
func TestCallbackErrorsAreNotBlamedOnTheAPI(t *testing.T) {
	f := startSim(t, 1)
	inst := f.ecsInstances()[0]
	for range 3 {
		f.run(t, "exit 0", 0, inst)
	}
	eventually(t, 5*time.Second, "the runs to finish", func() bool { return f.invocationsReached("Success") == 3 })
	for _, strategy := range []Strategy{StrategyFull, StrategyIncremental} {
		for _, page := range []string{"first page", "second page"} {
			l := f.lister(t, func(o *Options) { o.PageSize, o.Strategy, o.ResyncEvery = 1, strategy, time.Hour })
			emit := failOn("")
			if page == "second page" {
				n := 0
				emit = func(diff.Snapshot) error {
					if n++; n == 2 {
						return errEmit
					}
					return nil
				}
			}
			_, err := l.Stream(t.Context(), emit)
			assertCallbackError(t, string(strategy)+", "+page, err)
		}
	}
	// A steady incremental cycle: its head page.
	l := f.lister(t, func(o *Options) { o.PageSize, o.Strategy, o.ResyncEvery = 1, StrategyIncremental, time.Hour })
	if _, err := l.Stream(t.Context(), failOn("none")); err != nil {
		t.Fatal(err)
	}
	_, err := l.Stream(t.Context(), failOn(""))
	assertCallbackError(t, "steady incremental cycle", err)
}

// TestCallbackErrorsPassLookUpsAndStatusListings: the look-ups and status
// listings of an incremental cycle add their context to the API's errors
// only, however deeply they nest.
func TestCallbackErrorsPassLookUpsAndStatusListings(t *testing.T) {
	f := startSim(t, 1)
	inst := f.ecsInstances()[0]
	running := f.run(t, "hang", 0, inst)
	var done []string
	for range 3 {
		done = append(done, f.run(t, "exit 0", 0, inst))
	}
	eventually(t, 5*time.Second, "the runs to finish", func() bool { return f.invocationsReached("Success") == 3 })
	for _, tc := range []struct{ name, failOn string }{
		{"head", done[2]},                               // the newest: the head page
		{"Running listing", running},                    // active Running: describe invocations page 1: …
		{"look-up inside the Running listing", done[1]}, // … look up: describe invocations page 1: …
		{"look-up after the listings", done[0]},         // look up: describe invocations page 1: …
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := f.lister(t, func(o *Options) { o.PageSize, o.Strategy, o.ResyncEvery = 1, StrategyIncremental, time.Hour })
			if _, err := l.Stream(t.Context(), failOn("none")); err != nil { // the full listing: every id known
				t.Fatal(err)
			}
			// Pretend two finished invocations were open at the last cycle:
			// one newer than the running one (looked up as soon as the
			// Running listing passes it), one older (looked up at the end).
			created := l.inc.open[running].created
			l.inc.open[done[1]] = openInvocation{created: created.Add(time.Hour), status: diff.StatusRunning}
			l.inc.open[done[0]] = openInvocation{created: created.Add(-time.Hour), status: diff.StatusRunning}
			cy := steadyCycle{inc: &l.inc, ch: l.api.newChunker(false, failOn(tc.failOn)), read: map[string]bool{},
				open: map[string]openInvocation{}, fresh: map[string]int64{}}
			err := cy.statusListings(t.Context(), l.api, []string{done[1], running, done[0]})
			assertCallbackError(t, tc.name, err)
		})
	}
}

package cloudassist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostileAPI is an API of the test's own that speaks the wire JSON (and
// checks no signature): answer returns the body of each call, by its
// parameters.
type hostileAPI struct {
	URL   string
	mu    sync.Mutex
	calls map[string]int
}

func newHostileAPI(t *testing.T, answer func(action string, params url.Values) any) *hostileAPI {
	t.Helper()
	h := &hostileAPI{calls: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		params := r.URL.Query()
		if err := r.ParseForm(); err == nil {
			for k, v := range r.PostForm {
				params[k] = v
			}
		}
		action := params.Get("Action")
		h.mu.Lock()
		h.calls[action]++
		h.mu.Unlock()
		w.Header().Set("Content-Type", "application/json;charset=utf-8")
		_ = json.NewEncoder(w).Encode(answer(action, params))
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

func (h *hostileAPI) Calls(action string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[action]
}

func (h *hostileAPI) options(mutate func(*Options)) Options {
	o := Options{Region: region, Endpoint: h.URL, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret, Timeout: 5 * time.Second,
		TransientRetries: -1, ThrottleRetries: -1}
	if mutate != nil {
		mutate(&o)
	}
	return o
}

// aborts counts OnListingAborted calls by reason.
type aborts struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *aborts) record(reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int{}
	}
	a.n[reason]++
}

func (a *aborts) get(reason string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[reason]
}

// listingCtx bounds a listing that, unfixed, would never end.
func listingCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// cyclingTokens answers a NextToken listing whose tokens go "" → A → B → A.
func cyclingTokens(token string) string {
	switch token {
	case "":
		return "A"
	case "A":
		return "B"
	}
	return "A"
}

func TestNextTokenCycleFailsTheListing(t *testing.T) {
	for _, tc := range []struct {
		name string
		list func(o Options) error
		want string
	}{
		{"describe invocations", func(o Options) error {
			l, err := NewECS(o)
			if err != nil {
				return err
			}
			_, err = l.Snapshot(listingCtx(t))
			return err
		}, `describe invocations page 3 (request r-B): cloudassist: malformed response: NextToken "A" seen before at page 2`},
		{"describe invocation results", func(o Options) error {
			l, err := NewECSResults(o)
			if err != nil {
				return err
			}
			_, err = l.Snapshot(listingCtx(t))
			return err
		}, `describe invocation results page 3 (request r-B): cloudassist: malformed response: NextToken "A" seen before at page 2`},
		{"history of a periodic task", func(o Options) error {
			l, err := NewECS(o)
			if err != nil {
				return err
			}
			_, err = l.Snapshot(listingCtx(t))
			return err
		}, `history of t-periodic: describe invocation results page 3`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newHostileAPI(t, func(action string, p url.Values) any {
				token := p.Get("NextToken")
				switch {
				case action == "DescribeInvocations" && tc.name == "history of a periodic task":
					return obj{"RequestId": "r", "Invocations": obj{"Invocation": []obj{{"InvokeId": "t-periodic", "InvocationStatus": "Running",
						"RepeatMode": "Period", "InvokeInstances": obj{"InvokeInstance": []obj{{"InstanceId": "i-1", "InvocationStatus": "Running"}}}}}}}
				case action == "DescribeInvocations":
					return obj{"RequestId": "r-" + token, "NextToken": cyclingTokens(token), "Invocations": obj{"Invocation": []obj{
						{"InvokeId": "t-" + token, "InvocationStatus": "Success"}}}}
				}
				return obj{"RequestId": "r-" + token, "Invocation": obj{"NextToken": cyclingTokens(token), "InvocationResults": obj{
					"InvocationResult": []obj{{"InvokeId": "t-periodic", "InstanceId": "i-1", "InvocationStatus": "Success", "Repeats": 1}}}}}
			})
			var aborted aborts
			err := tc.list(api.options(func(o *Options) { o.OnListingAborted = aborted.record }))
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v; want ErrMalformed saying %q", err, tc.want)
			}
			if n := aborted.get(AbortTokenCycle); n != 1 {
				t.Errorf("OnListingAborted(%s) called %d times, want once", AbortTokenCycle, n)
			}
			if calls := api.Calls("DescribeInvocations") + api.Calls("DescribeInvocationResults"); calls > 5 {
				t.Errorf("%d calls: the cycle was followed", calls)
			}
		})
	}
}

// TestEndlessListingHitsThePageLimit: a listing that goes on past what the
// API can hold fails, whatever path reads it.
func TestEndlessListingHitsThePageLimit(t *testing.T) {
	endless := func(token string) string { // p1, p2, p3…: never the same, never empty
		n, _ := strconv.Atoi(strings.TrimPrefix(token, "p"))
		return fmt.Sprintf("p%d", n+1)
	}
	api := newHostileAPI(t, func(action string, p url.Values) any {
		token := p.Get("NextToken")
		return obj{"RequestId": "r", "NextToken": endless(token), "Invocations": obj{"Invocation": []obj{
			{"InvokeId": "t-" + token, "InvocationStatus": "Success"}}}}
	})
	var aborted aborts
	// 100 records at 10 a page: 10 pages, plus a tenth, plus ten.
	const limit = 21
	for _, strategy := range []Strategy{StrategyFull, StrategyIncremental} {
		before := api.Calls("DescribeInvocations")
		l, err := NewECS(api.options(func(o *Options) {
			o.PageSize, o.MaxRecords, o.Strategy, o.OnListingAborted = 10, 100, strategy, aborted.record
		}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Snapshot(listingCtx(t))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), fmt.Sprintf("describe invocations: cloudassist: malformed response: listing exceeded %d pages", limit)) {
			t.Fatalf("%s: err %v; want the page limit", strategy, err)
		}
		if calls := api.Calls("DescribeInvocations") - before; calls != limit {
			t.Errorf("%s: %d calls, want %d", strategy, calls, limit)
		}
	}
	if n := aborted.get(AbortPageLimit); n != 2 {
		t.Errorf("OnListingAborted(%s) called %d times, want 2", AbortPageLimit, n)
	}
}

// swasCommands is a SWAS page of invocations t-<from>… (count of them).
func swasCommands(total, from, count int) obj {
	cmds := []obj{}
	for i := from; i < from+count; i++ {
		cmds = append(cmds, obj{"InvokeId": fmt.Sprintf("t-%d", i), "InvocationStatus": "Success", "CommandId": "c-1"})
	}
	return obj{"RequestId": "r", "TotalCount": total, "CommandInvocations": cmds}
}

func TestSWASListingsThatNeverEnd(t *testing.T) {
	t.Run("PageNumber past the data answers the last page", func(t *testing.T) {
		// Four invocations, two a page, TotalCount 1000: pages 3, 4… repeat page 2.
		api := newHostileAPI(t, func(_ string, p url.Values) any {
			page, _ := strconv.Atoi(p.Get("PageNumber"))
			return swasCommands(1000, 2*(min(page, 2)-1), 2)
		})
		var aborted aborts
		l, err := NewSWAS(api.options(func(o *Options) { o.PageSize, o.OnListingAborted = 2, aborted.record }))
		if err != nil {
			t.Fatal(err)
		}
		snap, err := l.Snapshot(listingCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if snap.Complete || len(snap.Records) != 4 {
			t.Errorf("complete=%v with %d records; want the 4 read, incomplete", snap.Complete, len(snap.Records))
		}
		if calls := api.Calls("DescribeCommandInvocations"); calls != 3 {
			t.Errorf("%d calls, want 3: the repeated page ends the listing, and it is not read again", calls)
		}
		if n := aborted.get(AbortRepeatedPage); n != 1 {
			t.Errorf("OnListingAborted(%s) called %d times, want once", AbortRepeatedPage, n)
		}
	})
	t.Run("TotalCount grows with every page", func(t *testing.T) {
		api := newHostileAPI(t, func(_ string, p url.Values) any {
			page, _ := strconv.Atoi(p.Get("PageNumber"))
			return swasCommands(2*page+2, 2*(page-1), 2)
		})
		var aborted aborts
		l, err := NewSWAS(api.options(func(o *Options) { o.PageSize, o.MaxRecords, o.OnListingAborted = 2, 20, aborted.record }))
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Snapshot(listingCtx(t))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "describe command invocations: cloudassist: malformed response: listing exceeded 21 pages") {
			t.Fatalf("err %v; want the page limit", err)
		}
		if calls := api.Calls("DescribeCommandInvocations"); calls != 21 {
			t.Errorf("%d calls, want 21", calls)
		}
		if n := aborted.get(AbortPageLimit); n != 1 {
			t.Errorf("OnListingAborted(%s) called %d times, want once", AbortPageLimit, n)
		}
	})
}

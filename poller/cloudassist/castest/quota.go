package castest

import (
	"errors"
	"net/http"
	"slices"
	"time"
)

// quotaKey is what the API throttles by: account, action and region, as
// Alibaba throttles each account on its own.
type quotaKey struct{ account, action, region string }

type quotaWindow struct {
	start time.Time
	calls int
}

// SetQuota limits every API action to quota calls per window in each
// region and account, as Alibaba does per minute; 0 removes the limit.
// Windows are aligned on multiples of window, so a client throttled in
// window T may call again from window T+1. Each account spends its own
// windows: one account's calls never throttle another's.
func (s *Server) SetQuota(quota int, window time.Duration) error {
	if quota < 0 || window < 0 {
		return errors.New("castest: quota and window must be positive")
	}
	if window == 0 {
		window = time.Minute
	}
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	s.quota, s.quotaWindow = quota, window
	s.windows = map[quotaKey]*quotaWindow{}
	return nil
}

// admit counts a call of account against its quota and reports an error
// once the window's calls are spent.
func (s *Server) admit(account, action, region string, now time.Time) *apiError {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	if s.quota == 0 {
		return nil
	}
	start := now.Truncate(s.quotaWindow)
	k := quotaKey{account, action, region}
	w := s.windows[k]
	if w == nil || !w.start.Equal(start) {
		w = &quotaWindow{start: start}
		s.windows[k] = w
	}
	w.calls++
	if w.calls > s.quota {
		s.throttled[callKey{account, action}]++
		return errorf(http.StatusBadRequest, "Throttling.User", "Request was denied due to user flow control.")
	}
	return nil
}

// Throttled reports how many calls of each action the quota refused, in
// every account (see AccountHandle.Throttled for one).
func (s *Server) Throttled() map[string]int { return s.throttledOf("") }

// throttledOf counts the refused calls of one account, or of all ("").
func (s *Server) throttledOf(account string) map[string]int {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	return sumCalls(s.throttled, account)
}

// CallLog returns the arrival time of every admitted signed call of action,
// in every account, so a checker can verify a client kept under the quota
// (see AccountHandle.CallLog for one account).
func (s *Server) CallLog(action string) []time.Time { return s.callLogOf("", action, "") }

// CallLogIn returns the arrival time of every admitted signed call of
// action for region, in every account: when each region was polled.
func (s *Server) CallLogIn(action, region string) []time.Time { return s.callLogOf("", action, region) }

// loggedCall is an admitted call's arrival, and its RegionId.
type loggedCall struct {
	at     time.Time
	region string
}

// callLogOf returns the call log of action in one account, or in all (""),
// for one region or all (""), in arrival order.
func (s *Server) callLogOf(account, action, region string) []time.Time {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	var out []time.Time
	logs := 0
	for k, log := range s.callLog {
		if k.action != action || (account != "" && k.account != account) {
			continue
		}
		logs++
		for _, c := range log {
			if region == "" || c.region == region {
				out = append(out, c.at)
			}
		}
	}
	if logs > 1 { // merge the accounts' logs
		slices.SortStableFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	}
	return out
}

// logCall records the arrival of an admitted call.
func (s *Server) logCall(account, action, region string, at time.Time) {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	k := callKey{account, action}
	if len(s.callLog[k]) < 1_000_000 {
		s.callLog[k] = append(s.callLog[k], loggedCall{at, region})
	}
}

package castest

import (
	"errors"
	"maps"
	"net/http"
	"time"
)

// quotaKey is what the API throttles by: action, product and region (one
// account per emulator).
type quotaKey struct{ action, region string }

type quotaWindow struct {
	start time.Time
	calls int
}

// SetQuota limits every API action to quota calls per window in each
// region, as Alibaba does per minute; 0 removes the limit. Windows are
// aligned on multiples of window, so a client throttled in window T may
// call again from window T+1.
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

// admit counts a call against its quota and reports an error once the
// window's calls are spent.
func (s *Server) admit(action, region string, now time.Time) *apiError {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	if s.quota == 0 {
		return nil
	}
	start := now.Truncate(s.quotaWindow)
	w := s.windows[quotaKey{action, region}]
	if w == nil || !w.start.Equal(start) {
		w = &quotaWindow{start: start}
		s.windows[quotaKey{action, region}] = w
	}
	w.calls++
	if w.calls > s.quota {
		s.throttled[action]++
		return errorf(http.StatusBadRequest, "Throttling.User", "Request was denied due to user flow control.")
	}
	return nil
}

// Throttled reports how many calls of each action the quota refused.
func (s *Server) Throttled() map[string]int {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	return maps.Clone(s.throttled)
}

// CallLog returns the arrival time of every admitted signed call of action,
// so a checker can verify a client kept under the quota.
func (s *Server) CallLog(action string) []time.Time {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	return append([]time.Time(nil), s.callLog[action]...)
}

func (s *Server) logCall(action string, at time.Time) {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	if len(s.callLog[action]) < 1_000_000 {
		s.callLog[action] = append(s.callLog[action], at)
	}
}

package notify

import "time"

// limiter keeps a webhook under its sliding windows: at most max posts
// in any window of per. Unlike a token bucket it never lets a burst and
// the refill add up past a service's "N per minute" (DingTalk throttles a
// robot for ten minutes when it is exceeded). Not safe for concurrent use.
type limiter struct {
	windows []window
}

type window struct {
	max  int
	per  time.Duration
	sent []time.Time // ascending, only the last max
}

func newLimiter(limits []LimitConfig) *limiter {
	l := &limiter{}
	for _, c := range limits {
		l.windows = append(l.windows, window{max: c.Messages, per: c.Per})
	}
	return l
}

// free is how many posts may go at now; -1 for unlimited.
func (l *limiter) free(now time.Time) int {
	free := -1
	for i := range l.windows {
		w := &l.windows[i]
		n := w.max
		for _, t := range w.sent {
			if now.Sub(t) < w.per {
				n--
			}
		}
		if free < 0 || n < free {
			free = max(n, 0)
		}
	}
	return free
}

// next is when a post may go, at or after now.
func (l *limiter) next(now time.Time) time.Time {
	at := now
	for _, w := range l.windows {
		if len(w.sent) < w.max {
			continue
		}
		// The oldest of the last max posts must leave the window.
		if t := w.sent[len(w.sent)-w.max].Add(w.per); t.After(at) {
			at = t
		}
	}
	return at
}

// record notes a post at now.
func (l *limiter) record(now time.Time) {
	for i := range l.windows {
		w := &l.windows[i]
		w.sent = append(w.sent, now)
		if len(w.sent) > w.max {
			w.sent = append(w.sent[:0], w.sent[len(w.sent)-w.max:]...)
		}
	}
}

package poller

import (
	"errors"
	"sync"
	"time"
)

// Loops are the pollers a process runs, for its health check to ask
// whether their loops are turning. The zero value is ready to use.
type Loops struct {
	mu      sync.Mutex
	running map[*Poller]struct{}
}

// Add counts p as running until the returned func is called.
func (l *Loops) Add(p *Poller) (remove func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running == nil {
		l.running = map[*Poller]struct{}{}
	}
	l.running[p] = struct{}{}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.running, p)
	}
}

// Turning joins the errors of the pollers whose loops are stuck.
func (l *Loops) Turning(now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for p := range l.running {
		errs = append(errs, p.Turning(now))
	}
	return errors.Join(errs...)
}

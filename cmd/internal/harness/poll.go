package harness

import (
	"errors"
	"fmt"
	"time"
)

// finalError ends a Poll at once.
type finalError struct{ error }

func (e finalError) Unwrap() error { return e.error }

// Final marks err as one that no further polling can cure: Poll returns
// it at once.
func Final(err error) error { return finalError{err} }

// Poll calls cond every 50ms until it returns nil, and fails with its
// last error after within (or at once with an error made by Final); what
// names the condition in that error.
func Poll(within time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var final finalError
		if errors.As(err, &final) {
			return final.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %w", what, within, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition of an engine
	}
}

package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/publisher/events"
)

// maxNameLen is the longest stream name JetStream accepts.
const maxNameLen = 255

// ValidStreamName checks a JetStream stream name: 1 to 255 characters of
// [A-Za-z0-9_-]. The server also refuses whitespace, ".", "*", ">" and path
// separators; the narrower set is also safe in file names and subjects.
func ValidStreamName(name string) error {
	if name == "" || len(name) > maxNameLen || events.EscapeToken(name) != name {
		return fmt.Errorf("publisher: stream name %q: use 1 to %d characters of [A-Za-z0-9_-]", name, maxNameLen)
	}
	return nil
}

// StreamChange is what [NATS.SetupStream] did to the stream, for the caller
// to log.
type StreamChange struct {
	// Created: the stream did not exist, and was created with StreamConfig.
	Created bool
	// Raised: the existing stream's duplicate window, PreviousDuplicates,
	// was shorter than ours and was raised to Duplicates. Nothing else of an
	// existing stream is ever changed.
	Raised             bool
	PreviousDuplicates time.Duration
	// Duplicates is the stream's duplicate window.
	Duplicates time.Duration
	// Kept lists how an existing stream differs from StreamConfig, left as
	// the operator set it, e.g. `max age 24h0m0s (ours 0s)`.
	Kept []string
}

// StreamConflictError refuses an existing stream that events cannot be
// published to as it is: changing an operator's stream is not ours to do.
type StreamConflictError struct {
	Stream  string
	Problem string // what is wrong with it
	Fix     string // what would make it usable
}

func (e *StreamConflictError) Error() string {
	return fmt.Sprintf("publisher: stream %s %s: %s", e.Stream, e.Problem, e.Fix)
}

// SetupStream creates the stream if it does not exist. An existing stream
// is checked, not rewritten: if none of its subjects covers "<prefix>.>",
// or it does not acknowledge publishes, it is refused with a
// [*StreamConflictError]. Its subjects, retention,
// storage, limits and replicas are kept. The one change made is raising a
// duplicate window shorter than ours (up to the stream's max age), since a
// shorter one lets a re-publish after an outage be stored twice.
func (p *NATS) SetupStream(ctx context.Context) (StreamChange, error) {
	want := p.StreamConfig()
	s, err := p.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = p.js.CreateStream(ctx, want); err == nil {
			return StreamChange{Created: true, Duplicates: want.Duplicates}, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return StreamChange{}, fmt.Errorf("publisher: create stream %s: %w", want.Name, err)
		}
		s, err = p.js.Stream(ctx, want.Name) // created meanwhile, by another replica
	}
	if err != nil {
		return StreamChange{}, fmt.Errorf("publisher: look up stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	if err := usable(have, want.Subjects[0]); err != nil {
		return StreamChange{}, err
	}
	p.maxMsgSize.Store(int64(have.MaxMsgSize))
	change := StreamChange{Duplicates: have.Duplicates}
	target := want.Duplicates
	if have.MaxAge > 0 && target > have.MaxAge {
		target = have.MaxAge // the server refuses a window over the age
	}
	if have.Duplicates < target {
		update := have
		update.Duplicates = target
		if _, err := p.js.UpdateStream(ctx, update); err != nil {
			return StreamChange{}, fmt.Errorf("publisher: raise the duplicate window of stream %s from %v to %v: %w", want.Name, have.Duplicates, target, err)
		}
		change.Raised, change.PreviousDuplicates, change.Duplicates = true, have.Duplicates, target
	}
	change.Kept = kept(have, want, change.Duplicates)
	return change, nil
}

// usable refuses an existing stream that does not capture subject, or does
// not acknowledge what it stores.
func usable(have jetstream.StreamConfig, subject string) error {
	if !slices.ContainsFunc(have.Subjects, func(f string) bool { return covers(f, subject) }) {
		problem := "exists with no subjects"
		if len(have.Subjects) > 0 {
			problem = fmt.Sprintf("exists with subjects %s, none of which covers %s", strings.Join(have.Subjects, ", "), subject)
		}
		return &StreamConflictError{Stream: have.Name, Problem: problem,
			Fix: fmt.Sprintf("add %s to its subjects, or use another stream or subject prefix", subject)}
	}
	if have.NoAck {
		return &StreamConflictError{Stream: have.Name, Problem: "does not acknowledge publishes (no-ack)",
			Fix: "events are checkpointed only once acknowledged: turn no-ack off, or use another stream"}
	}
	return nil
}

// kept lists the settings in which an existing stream differs from ours.
func kept(have, want jetstream.StreamConfig, duplicates time.Duration) []string {
	var out []string
	note := func(what string, h, w any) {
		if h != w {
			out = append(out, fmt.Sprintf("%s %v (ours %v)", what, h, w))
		}
	}
	note("retention", have.Retention, want.Retention)
	note("storage", have.Storage, want.Storage)
	note("max age", have.MaxAge, want.MaxAge)
	note("max bytes", bytesName(have.MaxBytes), bytesName(want.MaxBytes))
	note("replicas", have.Replicas, want.Replicas)
	note("duplicate window", duplicates, want.Duplicates)
	return out
}

// covers reports whether the subject filter matches every subject that
// want matches: "a.>" and ">" cover "a.b.>", "a.*" does not.
func covers(filter, want string) bool {
	f, w := strings.Split(filter, "."), strings.Split(want, ".")
	for i, wt := range w {
		if i >= len(f) {
			return false
		}
		switch ft := f[i]; {
		case ft == ">":
			return true
		case wt == ">" || wt == "*":
			return false // f[i] matches one token, wt more
		case ft != "*" && ft != wt:
			return false
		}
	}
	return len(f) == len(w)
}

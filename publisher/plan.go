package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Sentinels of [NATS.ApplyStreamPlan].
var (
	// ErrStreamChangeImpossible refuses a plan with a change JetStream
	// cannot make to an existing stream (its storage, for one).
	ErrStreamChangeImpossible = errors.New("publisher: a change JetStream cannot make")
	// ErrStreamChangeDestructive refuses a destructive plan that was not
	// consented to.
	ErrStreamChangeDestructive = errors.New("publisher: a destructive change, not consented to")
)

// ChangeKind says what applying one change of a [StreamPlan] risks.
type ChangeKind int

const (
	// Safe changes delete nothing and weaken nothing: creating the stream,
	// adding a subject, raising (not removing) a limit, the duplicate
	// window or the replicas, turning acknowledgements on.
	Safe ChangeKind = iota
	// Destructive changes can delete stored messages or weaken what the
	// stream promises its consumers: lowering max age, max bytes, the
	// duplicate window or the replicas, changing retention or discard, and
	// removing an age or bytes limit (the stream then grows unbounded).
	Destructive
	// Impossible changes are ones JetStream does not make to an existing
	// stream: its storage, retention to or from work queue (and, before
	// server 2.10, any retention change).
	Impossible
)

func (k ChangeKind) String() string {
	switch k {
	case Safe:
		return "safe"
	case Destructive:
		return "destructive"
	default:
		return "impossible"
	}
}

// StreamFieldChange is one setting a [StreamPlan] changes.
type StreamFieldChange struct {
	// Field is the setting's name as the server's JSON names it: max_age.
	Field string
	// Have is the stream's value, empty when the stream is created; Want
	// the configuration's. Both are readable: "unlimited", "24h0m0s".
	Have, Want string
	Kind       ChangeKind
	// Why says what a destructive change can lose, or why an impossible
	// one is, and what to do instead.
	Why string
}

// StreamPlan is what bringing a stream to [NATS.StreamConfig] takes.
// Settings the configuration does not name (max_msgs, max_msg_size…) and
// subjects beyond "<prefix>.>" are the operator's and are kept.
type StreamPlan struct {
	Stream string
	// Create: the stream does not exist; Changes then list every setting
	// it is created with, all Safe.
	Create  bool
	Changes []StreamFieldChange
	// Config is what the stream is created with, or updated to: the
	// existing stream's own configuration with the changes made.
	Config jetstream.StreamConfig
}

// Empty reports whether the stream is already as configured.
func (p StreamPlan) Empty() bool { return !p.Create && len(p.Changes) == 0 }

// Of lists the changes of one kind.
func (p StreamPlan) Of(kind ChangeKind) []StreamFieldChange {
	var out []StreamFieldChange
	for _, c := range p.Changes {
		if c.Kind == kind {
			out = append(out, c)
		}
	}
	return out
}

// PlanStream reads the stream, if it exists, and plans what bringing it to
// [NATS.StreamConfig] takes (see [DiffStream]). It changes nothing.
func (p *NATS) PlanStream(ctx context.Context) (StreamPlan, error) {
	want := p.StreamConfig()
	s, err := p.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return DiffStream(nil, want, ""), nil
	}
	if err != nil {
		return StreamPlan{}, fmt.Errorf("publisher: look up stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	return DiffStream(&have, want, p.js.Conn().ConnectedServerVersion()), nil
}

// ApplyStreamPlan creates or updates the stream as planned, in one call:
// all of the plan is applied, or none of it. It refuses a plan with an
// impossible change ([ErrStreamChangeImpossible]), and one with a
// destructive change unless destructive is true
// ([ErrStreamChangeDestructive]). The update is of the configuration read
// by [NATS.PlanStream]: a change made meanwhile by someone else is
// overwritten.
func (p *NATS) ApplyStreamPlan(ctx context.Context, plan StreamPlan, destructive bool) error {
	switch {
	case plan.Empty():
		return nil
	case len(plan.Of(Impossible)) > 0:
		return fmt.Errorf("%w: stream %s: %s", ErrStreamChangeImpossible, plan.Stream, fields(plan.Of(Impossible)))
	case len(plan.Of(Destructive)) > 0 && !destructive:
		return fmt.Errorf("%w: stream %s: %s", ErrStreamChangeDestructive, plan.Stream, fields(plan.Of(Destructive)))
	case plan.Create:
		if _, err := p.js.CreateStream(ctx, plan.Config); err != nil {
			return fmt.Errorf("publisher: create stream %s: %w", plan.Stream, err)
		}
		return nil
	}
	if _, err := p.js.UpdateStream(ctx, plan.Config); err != nil {
		return fmt.Errorf("publisher: update stream %s: %w", plan.Stream, err)
	}
	return nil
}

func fields(cs []StreamFieldChange) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Field
	}
	return strings.Join(names, ", ")
}

// DiffStream plans how to bring the stream have (nil: there is none) to
// want, on a server of the given version ("2.9.10"; empty: unknown, taken
// as 2.10 or later). It manages subjects (want's first one must be
// covered: it is added if no subject covers it, and the operator's others
// are kept), retention, storage, discard, max_age, max_bytes,
// duplicate_window, replicas and no_ack; every other setting of have is
// kept. A limit of 0 or less is unlimited.
func DiffStream(have *jetstream.StreamConfig, want jetstream.StreamConfig, server string) StreamPlan {
	plan := StreamPlan{Stream: want.Name}
	if have == nil {
		plan.Create, plan.Config = true, want
		add := func(field, value string) {
			plan.Changes = append(plan.Changes, StreamFieldChange{Field: field, Want: value, Kind: Safe})
		}
		add("subjects", strings.Join(want.Subjects, ", "))
		add("retention", policyName(want.Retention))
		add("storage", policyName(want.Storage))
		add("discard", policyName(want.Discard))
		add("max_age", ageName(want.MaxAge))
		add("max_bytes", bytesName(want.MaxBytes))
		add("duplicate_window", want.Duplicates.String())
		add("replicas", strconv.Itoa(replicas(want.Replicas)))
		return plan
	}
	cfg := *have
	cfg.Subjects = slices.Clone(have.Subjects)
	change := func(field, h, w string, kind ChangeKind, why string) {
		plan.Changes = append(plan.Changes, StreamFieldChange{Field: field, Have: h, Want: w, Kind: kind, Why: why})
	}
	if ours := want.Subjects[0]; !slices.ContainsFunc(have.Subjects, func(f string) bool { return covers(f, ours) }) {
		cfg.Subjects = append(cfg.Subjects, ours)
		change("subjects", orNone(strings.Join(have.Subjects, ", ")), strings.Join(cfg.Subjects, ", "), Safe, "")
	}
	if have.Retention != want.Retention {
		kind, why := Destructive, "every consumer of the stream, not only capoller's, sees messages kept or removed under another policy"
		switch {
		case have.Retention == jetstream.WorkQueuePolicy || want.Retention == jetstream.WorkQueuePolicy:
			kind, why = Impossible, "JetStream does not change a stream's retention to or from workqueue: use another --stream, or delete this one (and its messages) and run setup again"
		case !atLeast(server, 2, 10):
			kind, why = Impossible, fmt.Sprintf("NATS server %s does not change a stream's retention (2.10 and later do): use another --stream, or delete this one (and its messages) and run setup again", server)
		}
		cfg.Retention = want.Retention
		change("retention", policyName(have.Retention), policyName(want.Retention), kind, why)
	}
	if have.Storage != want.Storage {
		cfg.Storage = want.Storage
		change("storage", policyName(have.Storage), policyName(want.Storage), Impossible,
			"JetStream does not change a stream's storage: use another --stream, or delete this one (and its messages) and run setup again")
	}
	if have.Discard != want.Discard {
		cfg.Discard = want.Discard
		why := "once a limit is reached, the oldest messages are deleted to make room, where the stream now refuses new ones"
		if want.Discard == jetstream.DiscardNew {
			why = "once a limit is reached, new messages are refused, where the stream now deletes the oldest ones"
		}
		change("discard", policyName(have.Discard), policyName(want.Discard), Destructive, why)
	}
	if h, w := unlimited(int64(have.MaxAge)), unlimited(int64(want.MaxAge)); h != w {
		cfg.MaxAge = want.MaxAge
		kind, why := Safe, ""
		switch {
		case lower(h, w):
			kind, why = Destructive, "deletes the stored messages older than "+want.MaxAge.String()
		case w == 0:
			kind, why = Destructive, "removes the stream's age limit: it then keeps every event until its bytes limit, or the server's storage, is full (set stream-max-age to keep a limit)"
		}
		change("max_age", ageName(have.MaxAge), ageName(want.MaxAge), kind, why)
	}
	if h, w := unlimited(have.MaxBytes), unlimited(want.MaxBytes); h != w {
		cfg.MaxBytes = w
		kind, why := Safe, ""
		switch {
		case lower(h, w):
			kind, why = Destructive, "deletes the oldest stored messages beyond "+bytesName(want.MaxBytes)
		case w == 0:
			kind, why = Destructive, "removes the stream's bytes limit: it then grows until its age limit, or the server's storage, stops it (set stream-max-bytes to keep a limit)"
		}
		change("max_bytes", bytesName(have.MaxBytes), bytesName(want.MaxBytes), kind, why)
	}
	if have.Duplicates != want.Duplicates {
		cfg.Duplicates = want.Duplicates
		kind, why := Safe, ""
		if want.Duplicates < have.Duplicates {
			kind, why = Destructive, fmt.Sprintf("an event re-published %v to %v after it was first stored (an outage between publish and checkpoint) is stored twice", want.Duplicates, have.Duplicates)
		}
		change("duplicate_window", have.Duplicates.String(), want.Duplicates.String(), kind, why)
	}
	if h, w := replicas(have.Replicas), replicas(want.Replicas); h != w {
		cfg.Replicas = w
		kind, why := Safe, ""
		if w < h {
			kind, why = Destructive, fmt.Sprintf("fewer copies of every message: losing %d server(s) then loses the stream", w)
		}
		change("replicas", strconv.Itoa(h), strconv.Itoa(w), kind, why)
	}
	if have.NoAck {
		cfg.NoAck = false
		change("no_ack", "true", "false", Safe, "")
	}
	if len(plan.Changes) > 0 {
		plan.Config = cfg
	}
	return plan
}

// unlimited is a limit with every "no limit" (0, -1) as 0.
func unlimited(v int64) int64 { return max(v, 0) }

// lower reports whether the limit w is tighter than h (0: none).
func lower(h, w int64) bool { return w > 0 && (h == 0 || w < h) }

// replicas is a replica count as the server reads it: 0 is 1.
func replicas(n int) int { return max(n, 1) }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func ageName(d time.Duration) string {
	if d <= 0 {
		return "unlimited"
	}
	return d.String()
}

func bytesName(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

// policyName is a stream policy (retention, storage, discard) as the
// server's JSON has it: "limits", "file", "old".
func policyName(p interface {
	json.Marshaler
	fmt.Stringer
}) string {
	raw, err := p.MarshalJSON()
	var name string
	if err != nil || json.Unmarshal(raw, &name) != nil {
		return p.String()
	}
	return name
}

// atLeast reports whether the server version ("2.9.10", "v2.11.0-RC.1") is
// major.minor or later; an empty or unreadable one is taken as later.
func atLeast(version string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return true
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}

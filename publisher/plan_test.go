package publisher_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/publisher"
)

// DiffStream classifies each change by what applying it risks, keeps the
// operator's other subjects and settings, and finds nothing to do on a
// stream that is as configured.
func TestDiffStreamClassifiesChanges(t *testing.T) {
	want := jetstream.StreamConfig{Name: "S", Subjects: []string{"cap.>"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
		MaxAge: 24 * time.Hour, MaxBytes: 1 << 30, Duplicates: 10 * time.Minute, Replicas: 3}
	base := func(edit func(*jetstream.StreamConfig)) *jetstream.StreamConfig {
		c := want
		c.Subjects = []string{"cap.>"}
		edit(&c)
		return &c
	}
	for _, tc := range []struct {
		name   string
		have   *jetstream.StreamConfig
		server string
		field  string
		kind   publisher.ChangeKind
	}{
		{"raise max age", base(func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }), "", "max_age", publisher.Safe},
		{"lower max age", base(func(c *jetstream.StreamConfig) { c.MaxAge = 48 * time.Hour }), "", "max_age", publisher.Destructive},
		{"lower max bytes", base(func(c *jetstream.StreamConfig) { c.MaxBytes = -1 }), "", "max_bytes", publisher.Destructive},
		{"raise max bytes", base(func(c *jetstream.StreamConfig) { c.MaxBytes = 1 << 20 }), "", "max_bytes", publisher.Safe},
		{"raise window", base(func(c *jetstream.StreamConfig) { c.Duplicates = time.Minute }), "", "duplicate_window", publisher.Safe},
		{"lower window", base(func(c *jetstream.StreamConfig) { c.Duplicates = time.Hour }), "", "duplicate_window", publisher.Destructive},
		{"raise replicas", base(func(c *jetstream.StreamConfig) { c.Replicas = 1 }), "", "replicas", publisher.Safe},
		{"lower replicas", base(func(c *jetstream.StreamConfig) { c.Replicas = 5 }), "", "replicas", publisher.Destructive},
		{"discard", base(func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardNew }), "", "discard", publisher.Destructive},
		{"interest on 2.10", base(func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy }), "2.10.0", "retention", publisher.Destructive},
		{"interest on 2.9", base(func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy }), "2.9.10", "retention", publisher.Impossible},
		{"workqueue", base(func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }), "2.15.2", "retention", publisher.Impossible},
		{"storage", base(func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }), "", "storage", publisher.Impossible},
		{"no ack", base(func(c *jetstream.StreamConfig) { c.NoAck = true }), "", "no_ack", publisher.Safe},
		{"our subject missing", base(func(c *jetstream.StreamConfig) { c.Subjects = []string{"other.>"} }), "", "subjects", publisher.Safe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := publisher.DiffStream(tc.have, want, tc.server)
			if plan.Create || len(plan.Changes) != 1 || plan.Changes[0].Field != tc.field || plan.Changes[0].Kind != tc.kind {
				t.Fatalf("plan %+v; want one %v change of %s", plan, tc.kind, tc.field)
			}
			if c := plan.Changes[0]; tc.kind != publisher.Safe && c.Why == "" {
				t.Errorf("a %v change without a reason: %+v", tc.kind, c)
			}
		})
	}

	// The operator's subjects stay, ours is added; other settings are kept.
	have := base(func(c *jetstream.StreamConfig) {
		c.Subjects = []string{"other.>"}
		c.MaxMsgs = 100
		c.MaxMsgSize = 4096
	})
	plan := publisher.DiffStream(have, want, "")
	if got := plan.Config; !slices.Equal(got.Subjects, []string{"other.>", "cap.>"}) || got.MaxMsgs != 100 || got.MaxMsgSize != 4096 {
		t.Errorf("update to %+v; want the operator's subject and limits kept, ours added", got)
	}
	// Our subject among others is enough, and every "unlimited" is one.
	same := base(func(c *jetstream.StreamConfig) { c.Subjects = []string{"x.>", "cap.>", "y.*"} })
	unlimited := want
	unlimited.MaxAge, unlimited.MaxBytes = 0, 0
	if plan := publisher.DiffStream(same, want, ""); !plan.Empty() {
		t.Errorf("covered stream: %+v; want no changes", plan.Changes)
	}
	if plan := publisher.DiffStream(base(func(c *jetstream.StreamConfig) { c.MaxAge, c.MaxBytes = 0, -1 }), unlimited, ""); !plan.Empty() {
		t.Errorf("max bytes -1 against 0: %+v; want no changes", plan.Changes)
	}
	if plan := publisher.DiffStream(nil, want, ""); !plan.Create || plan.Config.Name != "S" || len(plan.Of(publisher.Safe)) != len(plan.Changes) {
		t.Errorf("missing stream: %+v; want it created, safely", plan)
	}
}

// ApplyStreamPlan makes no impossible change, and no destructive one
// without consent.
func TestApplyStreamPlanRefuses(t *testing.T) {
	js, stream, prefix := streamFixture(t, "CAPOLLER_APPLY")
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, MaxAge: time.Hour, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: prefix, MaxAge: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pub.PlanStream(t.Context())
	if err != nil || len(plan.Of(publisher.Destructive)) != 1 {
		t.Fatalf("plan %+v, %v; want lowering max age, destructive", plan, err)
	}
	if err := pub.ApplyStreamPlan(t.Context(), plan, false); !errors.Is(err, publisher.ErrStreamChangeDestructive) {
		t.Errorf("destructive without consent: %v", err)
	}
	if cfg := streamConfig(t, js, stream); cfg.MaxAge != time.Hour {
		t.Errorf("max age became %v without consent", cfg.MaxAge)
	}
	plan.Changes[0].Kind = publisher.Impossible
	if err := pub.ApplyStreamPlan(t.Context(), plan, true); !errors.Is(err, publisher.ErrStreamChangeImpossible) {
		t.Errorf("impossible change: %v", err)
	}
}

// A restart of the daemon (SetupStream, with the configuration it created
// the stream with) leaves every limit the operator set since as it is:
// max age, max bytes, max msgs, replicas. It reports them, and changes
// nothing.
func TestSetupStreamKeepsOperatorLimitsOnRestart(t *testing.T) {
	js, stream, prefix := streamFixture(t, "CAPOLLER_RESTART")
	opts := publisher.Options{Stream: stream, SubjectPrefix: prefix, MaxAge: 24 * time.Hour, MaxBytes: 1 << 20}
	pub, err := publisher.New(js, opts)
	if err != nil {
		t.Fatal(err)
	}
	if change, err := pub.SetupStream(t.Context()); err != nil || !change.Created {
		t.Fatalf("first start: %+v, %v", change, err)
	}
	if cfg := streamConfig(t, js, stream); cfg.MaxAge != 24*time.Hour || cfg.MaxBytes != 1<<20 {
		t.Fatalf("created with max age %v, max bytes %d; want the configuration's", cfg.MaxAge, cfg.MaxBytes)
	}
	operator := streamConfig(t, js, stream)
	operator.MaxAge, operator.MaxBytes, operator.MaxMsgs = 72*time.Hour, 5<<20, 1000
	if _, err := js.UpdateStream(t.Context(), operator); err != nil {
		t.Fatal(err)
	}
	opts.Replicas = 3 // a configuration that differs in replicas too
	restarted, err := publisher.New(js, opts)
	if err != nil {
		t.Fatal(err)
	}
	change, err := restarted.SetupStream(t.Context())
	if err != nil || change.Created || change.Raised {
		t.Fatalf("restart: %+v, %v; want the stream left as it is", change, err)
	}
	if want := []string{"max age 72h0m0s (ours 24h0m0s)", "replicas 1 (ours 3)", "max bytes 5242880 (ours 1048576)"}; !sameSet(change.Kept, want) {
		t.Errorf("restart reported %q, want %q", change.Kept, want)
	}
	cfg := streamConfig(t, js, stream)
	if cfg.MaxAge != 72*time.Hour || cfg.MaxBytes != 5<<20 || cfg.MaxMsgs != 1000 || cfg.Replicas != 1 {
		t.Errorf("after a restart: max age %v, max bytes %d, max msgs %d, replicas %d; want the operator's 72h, 5 MiB, 1000, 1",
			cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs, cfg.Replicas)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

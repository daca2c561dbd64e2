package diff

import "time"

// Source names the API family a record came from. It is the second token of
// every event subject.
type Source string

// The sources capoller polls. ECS DescribeInvocations and
// DescribeInvocationResults both report SourceECS: they are two views of the
// same records.
const (
	SourceECS  Source = "ecs"
	SourceSWAS Source = "swas"
)

// Level says whether a record is an invocation's aggregate status or the
// status of the invocation on one instance.
type Level string

// The two levels.
const (
	LevelInvocation Level = "invocation"
	LevelInstance   Level = "instance"
)

// Key identifies a record within one shard (source and region). InstanceID
// is empty for the invocation aggregate.
type Key struct {
	InvokeID   string
	InstanceID string
}

// Level is the record level the key addresses.
func (k Key) Level() Level {
	if k.InstanceID == "" {
		return LevelInvocation
	}
	return LevelInstance
}

// Record is one normalized observation: an invocation aggregate or one
// instance's run of it.
type Record struct {
	Key
	CommandID   string
	CommandName string
	Status      Status
	// Repeats counts the runs on the instance (0 or 1 for a one-off task).
	Repeats int
	// The fields below are set at instance level only.
	ExitCode   int64
	ErrorCode  string
	ErrorInfo  string
	StartTime  time.Time
	FinishTime time.Time
	// Cut names the free texts that were cut to [MaxText] (see
	// [Record.BoundTexts]), and the output if it was cut.
	Cut TextFields

	// The run's output, at instance level, for a status whose output is
	// announced. Output is valid UTF-8; once the poller's OutputFiller has
	// vetted it (OutputRaw false) it is redacted and bounded, and only then
	// is it staged or published. OutputRaw marks text as read from the
	// API: decoded, but neither redacted nor bounded.
	Output    string
	OutputRaw bool
	// OutputDropped is the API's Dropped: the bytes it cut beyond its own
	// bound. OutputURI is where the output was delivered to OSS, if it was.
	OutputDropped int64
	OutputURI     string
	// OutputMissing says the output could not be read in time (throttling,
	// errors): the event goes out without it and is never sent again.
	OutputMissing bool
}

// Snapshot is an error-free listing of one shard at one moment. A listing
// with a failed page is never a Snapshot: the lister returns an error.
//
// Records of the same key may appear several times, one per run of a
// periodic task: adjacent, in strictly increasing (Repeats, Status.Rank)
// order — at most one record per run, except that a run's outcome may be
// followed by the stop of its schedule. Listers guarantee it; the diff
// relies on it.
type Snapshot struct {
	// Account is the shard's; the poller sets it.
	Account    string
	Source     Source
	Region     string
	ObservedAt time.Time
	Records    []Record
	// Complete is true when absence can be trusted: every record the API
	// holds is in Records. Only then may checkpointed records missing from
	// it be expired (see [Expire]). A listing whose pages shifted while it
	// was read, or an incremental one, is not Complete.
	Complete bool
}

// State is what the checkpoint remembers about a record: its last published
// status, its run, and when that status was first observed.
type State struct {
	Status     Status
	Repeats    int
	ObservedAt time.Time
	// Gone marks a tombstone: the record was missing from a complete
	// listing (retention). The tombstone keeps the last status, so a record
	// that reappears is diffed against it: a real change is announced, an
	// unchanged record only comes back to life.
	Gone bool
	// GoneAt is when the record was tombstoned; tombstones are pruned some
	// time after it (see [Prune]).
	GoneAt time.Time
}

// Previous is the checkpoint's view of a shard before a cycle.
type Previous struct {
	// Known is false until the shard's first cycle has been committed. The
	// baseline policy uses it to tell "first start" from "new record".
	Known bool
	// States holds the checkpointed state of the snapshot's records,
	// tombstones included; records the checkpoint has never seen are
	// absent.
	States map[Key]State
}

// Update is a new state to checkpoint for one record.
type Update struct {
	Key   Key
	State State
	// Forget removes the record from the checkpoint instead (a pruned
	// tombstone); State is then ignored.
	Forget bool
}

// Transition is one observed status change: one event.
type Transition struct {
	// ID is the deterministic event id (see [EventID]).
	ID                 string
	Account            string
	Source             Source
	Region             string
	Record             Record
	Previous           Status
	PreviousObservedAt time.Time
	ObservedAt         time.Time
	// Trace is the trace context the event is published with; it is not
	// part of the id. It is staged with its batch, so that a re-publish
	// after a crash carries the trace context the first publish did.
	Trace TraceContext
}

// TraceContext is a W3C trace context, as the traceparent and tracestate
// headers carry it; empty when capoller does not trace.
type TraceContext struct {
	Parent, State string
}

// Level is the level of the record that changed.
func (t Transition) Level() Level { return t.Record.Level() }

// Shard is the unit of polling, checkpointing and ownership: one source of
// one account in one region. Its id, account/source/region, is stable: it
// names the shard's keys, metrics and log lines.
type Shard struct {
	Account string
	Source  Source
	Region  string
}

// DefaultAccount names the account configured by flags and the SDK's
// default credential chain, and that of every shard from before accounts.
const DefaultAccount = "default"

// AccountOf returns account, or DefaultAccount if it is empty.
func AccountOf(account string) string {
	if account == "" {
		return DefaultAccount
	}
	return account
}

// Canonical returns the shard with its account named: a shard of the
// empty account is the default account's, and every map keyed by shards
// must see them as one.
func (s Shard) Canonical() Shard {
	s.Account = AccountOf(s.Account)
	return s
}

// Canonical returns canonical copies of shards (see [Shard.Canonical]).
func Canonical(shards []Shard) []Shard {
	out := make([]Shard, len(shards))
	for i, s := range shards {
		out[i] = s.Canonical()
	}
	return out
}

// String returns the shard's id, account/source/region.
func (s Shard) String() string { return AccountOf(s.Account) + "/" + string(s.Source) + "/" + s.Region }

package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// clockSkew is how far replay trusts the poller's clock and the store's
// (or the NATS server's) to disagree: it reads the history and the stream
// from this long before --from.
const clockSkew = 5 * time.Minute

// replayOptions are replay's own flags, beside run's configuration.
type replayOptions struct {
	filter       events.Filter
	fromStream   bool
	at           time.Time
	format       string
	replayPrefix string
	replayStream string
}

// replayCommand writes history: the events of a time window from the
// checkpoints' history (or the stream), as CloudEvents JSON lines, CSV, or
// re-published under another subject prefix; or, with --at, the state of
// every record at one moment. It only reads the stores, so it works with
// no poller running and for shards whose poller is gone.
func replayCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("replay")
	var o replayOptions
	var from, until, at string
	fs.BoolVar(&o.fromStream, "from-stream", false, "read the JetStream stream instead of the checkpoints' history")
	fs.StringVar(&from, "from", "", "the first moment: RFC 3339 (2026-12-01T03:00:00Z) or a duration ago (10m)")
	fs.StringVar(&from, "since", "", "the same as --from")
	fs.StringVar(&until, "until", "", "the moment after the last event (same forms as --from); default now")
	fs.StringVar(&at, "at", "", "print every record's state at this moment instead of events (same forms as --from)")
	ff := addFilterFlags(fs)
	fs.StringVar(&o.format, "format", "json", "json (CloudEvents JSON lines), csv, or publish (re-publish under --replay-prefix)")
	fs.StringVar(&o.replayPrefix, "replay-prefix", "", "subject prefix of a re-publish; default <subject-prefix>-replay")
	fs.StringVar(&o.replayStream, "replay-stream", "", "stream a re-publish goes to, created if missing; default <stream>_REPLAY")
	cfg, code, ok := loadSettings(fs, args, stdout, stderr, groupNATS, groupStream, groupCheckpoint)
	if !ok {
		return code
	}
	usageErr := func(err error) int {
		fmt.Fprintf(stderr, "capoller replay: %v\n", err)
		return 2
	}
	var err error
	if o.filter, err = ff.filter(); err != nil {
		return usageErr(err)
	}
	now := time.Now()
	if o.filter.From, err = parseMoment(from, now); err != nil {
		return usageErr(fmt.Errorf("--from: %w", err))
	}
	if o.filter.Until, err = parseMoment(until, now); err != nil {
		return usageErr(fmt.Errorf("--until: %w", err))
	}
	if o.at, err = parseMoment(at, now); err != nil {
		return usageErr(fmt.Errorf("--at: %w", err))
	}
	f := &o.filter
	switch {
	case o.format != "json" && o.format != "csv" && o.format != "publish":
		return usageErr(fmt.Errorf("--format %q: want json, csv or publish", o.format))
	case !o.at.IsZero() && (o.fromStream || o.format == "publish" || from != "" || until != ""):
		return usageErr(errors.New("--at prints states from the history: it takes neither --from-stream, --from, --until nor --format publish"))
	case !f.From.IsZero() && !f.Until.IsZero() && !f.From.Before(f.Until):
		return usageErr(fmt.Errorf("--from %s is not before --until %s", events.Stamp(f.From), events.Stamp(f.Until)))
	}
	if o.replayPrefix == "" {
		o.replayPrefix = cfg.SubjectPrefix + "-replay"
	}
	if o.replayStream == "" {
		o.replayStream = cfg.Stream + "_REPLAY"
	}
	if o.format == "publish" && (o.replayPrefix == cfg.SubjectPrefix || strings.HasPrefix(o.replayPrefix, cfg.SubjectPrefix+".") || o.replayStream == cfg.Stream) {
		// Old events on the live subjects would reach every consumer as new.
		return usageErr(fmt.Errorf("--replay-prefix %q and --replay-stream %q: a re-publish must not go to the live events' prefix %q or stream %q",
			o.replayPrefix, o.replayStream, cfg.SubjectPrefix, cfg.Stream))
	}
	if err := replay(ctx, cfg, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "capoller replay: %v\n", err)
		return 1
	}
	return 0
}

// parseMoment reads a time as RFC 3339 or a duration before now; "" is
// the zero time.
func parseMoment(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration ago must not be negative", v)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-12-01T03:00:00Z) or a duration ago (10m)", v)
	}
	return t, nil
}

// filterFlags are the event filters replay and watch share.
type filterFlags struct {
	accounts, sources, regions, invocations, instances, commands, levels, statuses string
}

func addFilterFlags(fs *flag.FlagSet) *filterFlags {
	ff := &filterFlags{}
	fs.StringVar(&ff.accounts, "account", "", "comma-separated accounts")
	fs.StringVar(&ff.sources, "source", "", "comma-separated sources: ecs, swas")
	fs.StringVar(&ff.regions, "region", "", "comma-separated regions")
	fs.StringVar(&ff.invocations, "invocation", "", "comma-separated invocation ids")
	fs.StringVar(&ff.instances, "instance", "", "comma-separated instance ids")
	fs.StringVar(&ff.commands, "command", "", "comma-separated command ids or names")
	fs.StringVar(&ff.levels, "level", "", "invocation or instance")
	fs.StringVar(&ff.statuses, "status", "", "comma-separated statuses, any case (failed,timeout)")
	return ff
}

// filter is the filter the flags set, times apart.
func (ff *filterFlags) filter() (events.Filter, error) {
	f := events.Filter{Accounts: splitList(ff.accounts), Sources: splitList(ff.sources), Regions: splitList(ff.regions),
		Invocations: splitList(ff.invocations), Instances: splitList(ff.instances), Commands: splitList(ff.commands)}
	for _, l := range splitList(ff.levels) {
		if l != string(events.LevelInvocation) && l != string(events.LevelInstance) {
			return f, fmt.Errorf("--level %q: want invocation or instance", l)
		}
		f.Levels = append(f.Levels, events.Level(l))
	}
	for _, s := range splitList(ff.statuses) {
		f.Statuses = append(f.Statuses, diff.NormalizeStatus(s))
	}
	return f, nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func replay(ctx context.Context, cfg config, o replayOptions, stdout, stderr io.Writer) error {
	var js jetstream.JetStream
	if o.fromStream || o.format == "publish" || cfg.Checkpoint == "natskv" {
		nc, err := publisher.Dial(publisher.DialOptions{URL: cfg.NATSURL, Auth: cfg.NATS, Name: "capoller replay"})
		if err != nil {
			return err
		}
		defer nc.Close()
		js = nc.JetStream
	}
	w := bufio.NewWriterSize(stdout, 256<<10)
	defer w.Flush()
	if o.fromStream {
		out, finish, err := replayOutput(ctx, o, js, w)
		if err != nil {
			return err
		}
		if err := replayStream(ctx, js, cfg, o.filter, out); err != nil {
			return err
		}
		return finish()
	}
	var h checkpoint.HistorySource
	if cfg.Checkpoint == "natskv" { // a reader: the bucket is opened, never created
		kv, err := checkpoint.NewKV(ctx, js, checkpoint.KVOptions{Bucket: cfg.Bucket, OpenOnly: true})
		if err != nil {
			return err
		}
		h = kv
	} else {
		rs, closeStore, err := openStore(ctx, cfg, zap.NewNop(), nil, nil)
		if err != nil {
			return err
		}
		defer closeStore()
		var ok bool
		if h, ok = rs.(checkpoint.HistorySource); !ok {
			return errors.New("this checkpoint store keeps no history")
		}
	}
	if !o.at.IsZero() {
		return replayAt(ctx, h, o.filter, o.at, o.format, w, stderr)
	}
	out, finish, err := replayOutput(ctx, o, js, w)
	if err != nil {
		return err
	}
	if err := replayHistory(ctx, h, o.filter, out); err != nil {
		return err
	}
	return finish()
}

// replayOutput returns where replayed events go, and what finishes it.
func replayOutput(ctx context.Context, o replayOptions, js jetstream.JetStream, w io.Writer) (func(events.Event, []byte, *diff.Transition) error, func() error, error) {
	switch o.format {
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(csvHeader()); err != nil {
			return nil, nil, err
		}
		return func(e events.Event, _ []byte, _ *diff.Transition) error { return cw.Write(csvRow(e)) },
			func() error { cw.Flush(); return cw.Error() }, nil
	case "publish":
		pub, err := publisher.New(js, publisher.Options{Stream: o.replayStream, SubjectPrefix: o.replayPrefix})
		if err != nil {
			return nil, nil, err
		}
		if err := pub.EnsureStream(ctx); err != nil {
			return nil, nil, err
		}
		var batch []diff.Transition
		total := 0
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			if _, err := pub.Publish(ctx, batch); err != nil {
				return fmt.Errorf("re-publish after %d events: %w", total, err)
			}
			total += len(batch)
			batch = batch[:0]
			return nil
		}
		return func(e events.Event, _ []byte, t *diff.Transition) error {
				if t == nil {
					tr := transitionOf(e)
					t = &tr
				}
				if batch = append(batch, *t); len(batch) == 1000 {
					return flush()
				}
				return nil
			}, func() error {
				if err := flush(); err != nil {
					return err
				}
				_, err := fmt.Fprintf(w, "re-published %d events under %s.> to stream %s\n", total, o.replayPrefix, o.replayStream)
				return err
			}, nil
	}
	var buf []byte
	return func(e events.Event, body []byte, _ *diff.Transition) error {
		if body == nil {
			var err error
			if buf, err = e.AppendJSON(buf[:0]); err != nil {
				return err
			}
			body = buf
		}
		if _, err := w.Write(body); err != nil {
			return err
		}
		_, err := w.Write([]byte{'\n'})
		return err
	}, func() error { return nil }, nil
}

func csvHeader() []string {
	return []string{"id", "time", "account", "source", "regionId", "level", "invokeId", "instanceId", "repeats", "commandId", "commandName",
		"previousStatus", "status", "terminal", "exitCode", "errorCode", "errorInfo", "observedAt", "previousObservedAt", "outputLastLine", "outputMissing"}
}

// csvText keeps a spreadsheet from taking an API's text for a formula: a
// cell starting with =, +, -, @, a tab or a carriage return gets a
// leading apostrophe (OWASP's advice for CSV injection).
func csvText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func csvRow(e events.Event) []string {
	d := e.Data
	var repeats, exit string
	if d.Repeats != nil {
		repeats = strconv.Itoa(*d.Repeats)
	}
	if code, ok := d.ExitCodeOf(); ok {
		exit = strconv.FormatInt(code, 10) // blank where the API's 0 stands for none
	}
	return []string{e.ID, events.Stamp(e.Time), csvText(d.Account), csvText(d.Source), csvText(d.RegionID), string(d.Level),
		csvText(d.InvokeID), csvText(d.InstanceID), repeats, csvText(d.CommandID), csvText(d.CommandName), csvText(string(d.PreviousStatus)),
		csvText(string(d.Status)), strconv.FormatBool(d.Terminal), exit, csvText(d.ErrorCode), csvText(d.ErrorInfo), d.ObservedAt, d.PreviousObservedAt,
		csvText(lastOutputLine(d)), strconv.FormatBool(d.OutputMissing)}
}

// transitionOf rebuilds the transition an event announced, to publish it
// again.
func transitionOf(e events.Event) diff.Transition {
	d := e.Data
	t := diff.Transition{ID: e.ID, Account: d.Account, Source: diff.Source(d.Source), Region: d.RegionID, Previous: d.PreviousStatus,
		ObservedAt: d.Observed(), PreviousObservedAt: d.PreviousObserved(),
		Record: diff.Record{Key: diff.Key{InvokeID: d.InvokeID, InstanceID: d.InstanceID}, CommandID: d.CommandID, CommandName: d.CommandName,
			Status: d.Status, ErrorCode: d.ErrorCode, ErrorInfo: d.ErrorInfo, StartTime: d.Started(), FinishTime: d.Finished()}}
	if d.Repeats != nil {
		t.Record.Repeats = *d.Repeats
	}
	if d.ExitCode != nil {
		t.Record.ExitCode = *d.ExitCode
	}
	t.Record.Output, t.Record.OutputDropped, t.Record.OutputURI, t.Record.OutputMissing = d.Output, d.OutputDropped, d.OutputURI, d.OutputMissing
	for f := diff.TextFields(1); f != 0 && f <= diff.FieldOutput; f <<= 1 { // what was cut stays marked
		if names := f.Names(); len(names) == 1 && slices.Contains(d.Truncated, names[0]) {
			t.Record.Cut |= f
		}
	}
	return t
}

// historyShards lists the shards with a history that the filter can
// match.
func historyShards(ctx context.Context, h checkpoint.HistorySource, f events.Filter) ([]diff.Shard, error) {
	all, err := h.HistoryShards(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(s diff.Shard) bool {
		return len(f.Accounts) > 0 && !slices.Contains(f.Accounts, diff.AccountOf(s.Account)) ||
			len(f.Sources) > 0 && !slices.Contains(f.Sources, string(s.Source)) ||
			len(f.Regions) > 0 && !slices.Contains(f.Regions, s.Region)
	}), nil
}

// replayHistory emits the filtered events of every shard's history in
// commit order (see checkpoint.HistoryReader).
func replayHistory(ctx context.Context, h checkpoint.HistorySource, f events.Filter, emit func(events.Event, []byte, *diff.Transition) error) error {
	shards, err := historyShards(ctx, h, f)
	if err != nil {
		return err
	}
	var since time.Time
	if !f.From.IsZero() {
		// A commit comes after what it observed, but the commit's time is
		// the store's clock and the observation the poller's: reading from
		// clockSkew earlier, Match makes the exact cut.
		since = f.From.Add(-clockSkew)
	}
	r := checkpoint.ReadHistory(h, shards, since)
	for {
		c, ok, err := r.Next(ctx)
		if err != nil || !ok {
			return err
		}
		for i := range c.Transitions {
			t := &c.Transitions[i]
			if e := publisher.NewEvent(*t); f.Match(e) {
				if err := emit(e, nil, t); err != nil {
					return err
				}
			}
		}
	}
}

// recordState is one line of `replay --at`.
type recordState struct {
	Account     string       `json:"account"`
	Source      string       `json:"source"`
	RegionID    string       `json:"regionId"`
	Level       events.Level `json:"level"`
	InvokeID    string       `json:"invokeId"`
	InstanceID  string       `json:"instanceId,omitempty"`
	Repeats     int          `json:"repeats"`
	CommandID   string       `json:"commandId"`
	CommandName string       `json:"commandName"`
	Status      diff.Status  `json:"status"`
	Since       string       `json:"since"`
	EventID     string       `json:"eventId"`
}

// replayAt prints the state of every record at the moment at: the last
// event observed then or before, from the history. A moment before the
// history's first event (or a history with none) has no state to print:
// a note on stderr says so, and why.
func replayAt(ctx context.Context, h checkpoint.HistorySource, f events.Filter, at time.Time, format string, w, notes io.Writer) error {
	type record struct {
		account, source, region string
		key                     diff.Key
	}
	last := map[record]recordState{}
	// A record's status is the last of all its events until then: the
	// status filter applies to the states rebuilt, not to the events.
	all := f
	all.Statuses = nil
	var first time.Time // the history's first event that the filters keep
	err := replayHistory(ctx, h, all, func(e events.Event, _ []byte, t *diff.Transition) error {
		if first.IsZero() || t.ObservedAt.Before(first) {
			first = t.ObservedAt
		}
		if t.ObservedAt.After(at) {
			return nil
		}
		d := e.Data
		last[record{d.Account, d.Source, d.RegionID, t.Record.Key}] = recordState{Account: d.Account, Source: d.Source, RegionID: d.RegionID,
			Level: d.Level, InvokeID: d.InvokeID, InstanceID: d.InstanceID, Repeats: t.Record.Repeats, CommandID: d.CommandID,
			CommandName: d.CommandName, Status: d.Status, Since: d.ObservedAt, EventID: e.ID}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case first.IsZero():
		fmt.Fprintln(notes, "capoller replay: --at: the history holds no event (that the filters keep): no record has a state to show")
	case at.Before(first):
		fmt.Fprintf(notes, "capoller replay: --at %s is before the history's first event (%s): no record had a state yet\n",
			events.Stamp(at), events.Stamp(first))
	}
	states := make([]recordState, 0, len(last))
	byStatus := events.Filter{Statuses: f.Statuses}
	for _, s := range last {
		if byStatus.Match(events.Event{Data: events.Data{Status: s.Status}}) {
			states = append(states, s)
		}
	}
	slices.SortFunc(states, func(a, b recordState) int {
		return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(a.Source, b.Source), strings.Compare(a.RegionID, b.RegionID),
			strings.Compare(a.InvokeID, b.InvokeID), strings.Compare(a.InstanceID, b.InstanceID))
	})
	if format == "csv" {
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"account", "source", "regionId", "level", "invokeId", "instanceId", "repeats", "commandId", "commandName", "status", "since", "eventId"})
		for _, s := range states {
			_ = cw.Write([]string{csvText(s.Account), csvText(s.Source), csvText(s.RegionID), string(s.Level), csvText(s.InvokeID),
				csvText(s.InstanceID), strconv.Itoa(s.Repeats), csvText(s.CommandID), csvText(s.CommandName), csvText(string(s.Status)), s.Since, s.EventID})
		}
		cw.Flush()
		return cw.Error()
	}
	enc := json.NewEncoder(w)
	for _, s := range states {
		if err := enc.Encode(s); err != nil {
			return err
		}
	}
	return nil
}

// replayStream emits the filtered events of the stream, as published, in
// stream order, up to its last message when the replay started.
func replayStream(ctx context.Context, js jetstream.JetStream, cfg config, f events.Filter, emit func(events.Event, []byte, *diff.Transition) error) error {
	o := publisher.ReadOptions{Stream: cfg.Stream, Subject: f.Subject(cfg.SubjectPrefix)}
	if !f.From.IsZero() {
		o.From = f.From.Add(-clockSkew) // published after it was observed, by the server's clock
	}
	return publisher.ReadStream(ctx, js, o, func(e events.Event, raw []byte) error {
		if !f.Match(e) {
			return nil
		}
		return emit(e, raw, nil)
	})
}

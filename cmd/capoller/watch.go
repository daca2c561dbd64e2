package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// watchCommand follows the live stream and prints one line per
// transition, for people at a terminal: coloured by status on a
// terminal, plain when piped or when NO_COLOR is set.
func watchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("watch")
	var since, color string
	fs.StringVar(&since, "since", "", "start in the past: a duration ago (10m), an RFC 3339 time, or a stream sequence (#1234 or 1234); default: new events only")
	fs.StringVar(&color, "color", "auto", "auto (on a terminal, unless NO_COLOR is set), always or never")
	ff := addFilterFlags(fs)
	cfg, code, ok := loadSettings(fs, args, stdout, stderr, groupNATS, groupStream)
	if !ok {
		return code
	}
	usageErr := func(err error) int {
		fmt.Fprintf(stderr, "capoller watch: %v\n", err)
		return 2
	}
	f, err := ff.filter()
	if err != nil {
		return usageErr(err)
	}
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.Subject(cfg.SubjectPrefix)}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if err := startAt(&occ, since, time.Now()); err != nil {
		return usageErr(fmt.Errorf("--since: %w", err))
	}
	var colored bool
	switch color {
	case "always":
		colored = true
	case "never":
	case "auto":
		colored = os.Getenv("NO_COLOR") == "" && isTerminal(stdout)
	default:
		return usageErr(fmt.Errorf("--color %q: want auto, always or never", color))
	}

	nc, err := publisher.Dial(publisher.DialOptions{URL: cfg.NATSURL, Auth: cfg.NATS, Name: "capoller watch", Options: []nats.Option{nats.MaxReconnects(-1)}})
	if err != nil {
		fmt.Fprintf(stderr, "capoller watch: %v\n", err)
		return 1
	}
	defer nc.Close()
	cons, err := nc.JetStream.OrderedConsumer(ctx, cfg.Stream, occ)
	if err != nil {
		fmt.Fprintf(stderr, "capoller watch: follow stream %s: %v\n", cfg.Stream, err)
		return 1
	}
	msgs, err := cons.Messages()
	if err != nil {
		fmt.Fprintf(stderr, "capoller watch: follow stream %s: %v\n", cfg.Stream, err)
		return 1
	}
	go func() { <-ctx.Done(); msgs.Stop() }()
	for {
		msg, err := msgs.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return 0
			}
			fmt.Fprintf(stderr, "capoller watch: %v\n", err)
			return 1
		}
		e, err := events.Decode(msg.Data())
		if err != nil || !f.Match(e) {
			continue
		}
		if _, err := io.WriteString(stdout, watchLine(e, colored)); err != nil {
			return 1 // the reader went away (a closed pipe)
		}
	}
}

// startAt sets where a watch starts: a duration ago, a time, or a stream
// sequence; "" is new events only.
func startAt(occ *jetstream.OrderedConsumerConfig, since string, now time.Time) error {
	if since == "" {
		return nil
	}
	if seq, err := strconv.ParseUint(strings.TrimPrefix(since, "#"), 10, 64); err == nil {
		if seq == 0 {
			return errors.New("stream sequences start at 1")
		}
		occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
		return nil
	}
	at, err := parseMoment(since, now)
	if err != nil {
		return fmt.Errorf("%w, or a stream sequence (#1234)", err)
	}
	occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &at
	return nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// maxOutputLine bounds the output's last line a watch line shows, in
// characters.
const maxOutputLine = 100

// watchLine is one transition as a line, with the last line of a
// failure's output (through events.DisplayText) when the event has it:
//
//	03:00:05  Failed        prod/ecs/cn-hangzhou  t-1/i-1 run 1  deploy  Running→Failed  exit 2  CommandFailed: No such file  output: rm: /data: No such file
func watchLine(e events.Event, colored bool) string {
	d := e.Data
	var b strings.Builder
	at := d.Observed()
	if at.IsZero() {
		at = e.Time
	}
	b.WriteString(at.UTC().Format("2006-01-02 15:04:05"))
	b.WriteString("  ")
	status := fmt.Sprintf("%-13s", oneLine(string(d.Status), 40))
	if c := statusColor(d.Status); colored && c != "" {
		status = c + status + "\x1b[0m"
	}
	b.WriteString(status)
	fmt.Fprintf(&b, " %s/%s/%s  %s", oneLine(d.Account, 64), oneLine(d.Source, 16), oneLine(d.RegionID, 64), oneLine(d.InvokeID, 128))
	if d.InstanceID != "" {
		b.WriteString("/" + oneLine(d.InstanceID, 128))
		if d.Repeats != nil && *d.Repeats > 0 {
			fmt.Fprintf(&b, " run %d", *d.Repeats)
		}
	}
	name := d.CommandName
	if name == "" {
		name = d.CommandID
	}
	if name != "" {
		b.WriteString("  " + oneLine(name, 40))
	}
	prev := oneLine(string(d.PreviousStatus), 40)
	if prev == "" {
		prev = "new"
	}
	fmt.Fprintf(&b, "  %s→%s", prev, oneLine(string(d.Status), 40))
	if code, ok := d.ExitCodeOf(); ok && d.Status.Terminal() {
		fmt.Fprintf(&b, "  exit %d", code)
	}
	if d.ErrorCode != "" || d.ErrorInfo != "" {
		b.WriteString("  " + oneLine(strings.TrimPrefix(d.ErrorCode+": "+d.ErrorInfo, ": "), 100))
	}
	b.WriteString(outputLine(d))
	b.WriteByte('\n')
	return b.String()
}

// outputLine is what a line shows of the event's output: its last line
// ([lastOutputLine]), "output missing" if it could not be read, nothing
// if the event has none.
func outputLine(d events.Data) string {
	if d.OutputMissing {
		return "  output missing"
	}
	if line := lastOutputLine(d); line != "" {
		return "  output: " + line
	}
	return ""
}

// lastOutputLine is the last line of the event's output that is not
// blank, through events.DisplayText, cut to maxOutputLine characters; ""
// if there is none.
func lastOutputLine(d events.Data) string {
	if last := events.LastLines(d.Output, 1); len(last) == 1 {
		return clip(strings.TrimSpace(last[0]), maxOutputLine)
	}
	return ""
}

// oneLine is the first line of s through events.DisplayText (so without
// escape sequences, control characters or invisible formatting ones,
// which could drive the terminal or disguise the line), cut to max
// characters.
func oneLine(s string, max int) string {
	s, _, _ = strings.Cut(events.DisplayText(strings.TrimSpace(s)), "\n")
	return clip(strings.TrimSpace(s), max)
}

// clip cuts s to max characters, the last of them "…".
func clip(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// statusColor is the ANSI colour of a status: red for failures, green for
// success, yellow while it runs, grey for the stopped ones.
func statusColor(s events.Status) string {
	switch s {
	case events.Failed, events.PartialFailed, events.Error, events.Timeout, events.Aborted, events.Invalid:
		return "\x1b[31m"
	case events.Success, events.Finished:
		return "\x1b[32m"
	case events.Pending, events.Scheduled, events.Running, events.Stopping:
		return "\x1b[33m"
	case events.Stopped, events.Cancelled, events.Terminated:
		return "\x1b[90m"
	}
	return ""
}

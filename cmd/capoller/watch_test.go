package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// watchSequence is a known run: an invocation on two instances, one of
// which fails with a multi-line error holding an escape sequence and an
// output whose last line holds colours, a bidi override and a CR, and a
// SWAS invocation of another account, whose output could not be read.
func watchSequence() []diff.Transition {
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	inst := func(id, instance string, prev, to diff.Status, sec int, exit int64, code, info string) diff.Transition {
		return diff.Transition{ID: id, Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou", Previous: prev,
			ObservedAt: at.Add(time.Duration(sec) * time.Second), PreviousObservedAt: at,
			Record: diff.Record{Key: diff.Key{InvokeID: "t-deploy", InstanceID: instance}, CommandID: "c-1", CommandName: "deploy.sh",
				Status: to, Repeats: 1, ExitCode: exit, ErrorCode: code, ErrorInfo: info}}
	}
	return []diff.Transition{
		{ID: "w1", Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou", ObservedAt: at,
			Record: diff.Record{Key: diff.Key{InvokeID: "t-deploy"}, CommandID: "c-1", CommandName: "deploy.sh", Status: diff.StatusRunning}},
		inst("w2", "i-aaa", "", diff.StatusRunning, 0, 0, "", ""),
		inst("w3", "i-bbb", "", diff.StatusRunning, 0, 0, "", ""),
		inst("w4", "i-aaa", diff.StatusRunning, diff.StatusSuccess, 5, 0, "", ""),
		withOutput(inst("w5", "i-bbb", diff.StatusRunning, diff.StatusFailed, 6, 2, "CommandFailed", "rm: cannot remove \x1b[31m/data\nsecond line"),
			"cleaning up\n\x1b[31mrm: cannot remove '/data': Permission denied\x1b[0m \u202eevil\r\n\n"),
		{ID: "w6", Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou", Previous: diff.StatusRunning, ObservedAt: at.Add(6 * time.Second),
			Record: diff.Record{Key: diff.Key{InvokeID: "t-deploy"}, CommandID: "c-1", CommandName: "deploy.sh", Status: diff.StatusPartialFailed}},
		{ID: "w7", Account: "staging", Source: diff.SourceSWAS, Region: "cn-shanghai", Previous: diff.StatusPending, ObservedAt: at.Add(9 * time.Second),
			Record: diff.Record{Key: diff.Key{InvokeID: "t-swas", InstanceID: "ins-1"}, CommandID: "c-2", Status: diff.StatusTimeout, Repeats: 3, ExitCode: -1,
				OutputMissing: true}},
	}
}

func withOutput(t diff.Transition, output string) diff.Transition {
	t.Record.Output = output
	return t
}

// watchCLI runs `capoller watch` until it printed lines lines, then stops
// it.
func watchCLI(t *testing.T, natsURL, stream string, lines int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(ctx, append([]string{"watch", "--nats-url", natsURL, "--stream", stream, "--subject-prefix", strings.ToLower(stream)}, args...), &stdout, &stderr)
	}()
	testenv.WaitFor(t, 10*time.Second, "watch to print its lines", func() error {
		if n := strings.Count(stdout.String(), "\n"); n < lines {
			select {
			case code := <-done:
				t.Fatalf("watch exited %d: %s", code, stderr.String())
			default:
			}
			return fmt.Errorf("%d lines", n)
		}
		return nil
	})
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("watch exited %d after its context ended: %s", code, stderr.String())
	}
	return stdout.String()
}

// watchStream is a fresh stream to publish to, and its server.
func watchStream(t *testing.T) (natsURL, stream string, pub *publisher.NATS) {
	natsURL = testenv.NATSURL(t)
	stream = testenv.Name("CAPOLLER_WATCH")
	_, js := testenv.NATS(t, natsURL, stream)
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: strings.ToLower(stream)})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(t.Context()); err != nil {
		t.Fatal(err)
	}
	return natsURL, stream, pub
}

func TestWatchPrintsAKnownSequence(t *testing.T) {
	natsURL, stream, pub := watchStream(t)
	seq := watchSequence()
	if _, err := pub.Publish(t.Context(), seq); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NO_COLOR", "")
	golden(t, "watch.golden", watchCLI(t, natsURL, stream, len(seq), "--since", "#1"))
	golden(t, "watch-color.golden", watchCLI(t, natsURL, stream, len(seq), "--since", "1", "--color", "always"))
	// Filters: the failures of one account only, from a time.
	failed := watchCLI(t, natsURL, stream, 2, "--since", "2026-12-01T03:00:00Z", "--status", "failed,timeout,partialfailed", "--account", "prod")
	if strings.Count(failed, "\n") != 2 || !strings.Contains(failed, "Running→Failed") || !strings.Contains(failed, "Running→PartialFailed") {
		t.Errorf("filtered watch printed:\n%s", failed)
	}
}

// A watch started without --since prints only what is published after it
// started.
func TestWatchFollowsNewEvents(t *testing.T) {
	natsURL, stream, pub := watchStream(t)
	seq := watchSequence()
	if _, err := pub.Publish(t.Context(), seq[:3]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(ctx, []string{"watch", "--nats-url", natsURL, "--stream", stream, "--subject-prefix", strings.ToLower(stream)}, &stdout, &stderr)
	}()
	// Publish until watch shows the first new one: it may subscribe after
	// the first publish.
	n := 0
	testenv.WaitFor(t, 10*time.Second, "watch to see a new event", func() error {
		if strings.Contains(stdout.String(), "i-new") {
			return nil
		}
		n++
		fresh := seq[3]
		fresh.ID, fresh.Record.InstanceID = fmt.Sprintf("new-%d", n), "i-new"
		_, err := pub.Publish(t.Context(), []diff.Transition{fresh})
		return fmt.Errorf("nothing yet (%w)", err)
	})
	cancel()
	<-done
	if out := stdout.String(); strings.Contains(out, "new→Running") {
		t.Errorf("watch without --since printed old events:\n%s", out)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("CAPOLLER_UPDATE_GOLDEN") == "1" { // rewrite the golden files
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n got:\n%s\nwant:\n%s", name, got, want)
	}
}

// A failure's line ends with its output's last line, safe to show and
// cut to maxOutputLine characters; an event without output shows none.
func TestWatchLineShowsTheOutputsLastLine(t *testing.T) {
	repeats, exit := 1, int64(1)
	e := events.Event{ID: "e", Data: events.Data{Account: "prod", Source: "ecs", RegionID: "cn-hangzhou", Level: events.LevelInstance,
		InvokeID: "t-1", InstanceID: "i-1", Repeats: &repeats, ExitCode: &exit, PreviousStatus: events.Running, Status: events.Failed,
		ObservedAt: "2026-12-01T03:00:00Z"}}
	if line := watchLine(e, false); strings.Contains(line, "output") {
		t.Errorf("an event without output: %q", line)
	}
	e.Data.Output = "first\n\x1b[1m" + strings.Repeat("é", 300) + "\x1b[0m\r\n"
	line := watchLine(e, false)
	_, shown, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "  output: ")
	if !ok || utf8.RuneCountInString(shown) != maxOutputLine || !strings.HasSuffix(shown, "é…") || strings.ContainsAny(line, "\x1b\r") {
		t.Errorf("a long last line: %q", line)
	}
	e.Data.Output = "done\n\n   \n"
	if line := watchLine(e, false); !strings.HasSuffix(line, "  output: done\n") {
		t.Errorf("trailing blank lines: %q", line)
	}
}

// TestWatchLineShowsNoExitCodeBesideATimeout: the API's 0 beside a Timeout
// is no exit code, and watch does not print one; a failure's code it does.
func TestWatchLineShowsNoExitCodeBesideATimeout(t *testing.T) {
	zero, three := int64(0), int64(3)
	e := events.Event{ID: "e", Data: events.Data{Account: "prod", Source: "ecs", RegionID: "cn-hangzhou", Level: events.LevelInstance,
		InvokeID: "t-1", InstanceID: "i-1", ExitCode: &zero, PreviousStatus: events.Running, Status: events.Timeout, ErrorCode: "ExecutionTimeout",
		ObservedAt: "2026-12-01T03:00:00Z"}}
	if line := watchLine(e, false); strings.Contains(line, "exit") || !strings.Contains(line, "ExecutionTimeout") {
		t.Errorf("a timeout: %q", line)
	}
	e.Data.Status, e.Data.ErrorCode, e.Data.ExitCode = events.Failed, "ExitCodeNonzero", &three
	if line := watchLine(e, false); !strings.Contains(line, "exit 3") {
		t.Errorf("a failure: %q", line)
	}
}

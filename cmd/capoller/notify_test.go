package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/notify"
)

// notifyInvocation is one invocation failing on n instances, then its
// Failed aggregate.
func notifyInvocation(invokeID string, n int) []diff.Transition {
	t0 := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	var out []diff.Transition
	for i := range n {
		tr := diff.Transition{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou", Previous: diff.StatusRunning, PreviousObservedAt: t0,
			ObservedAt: t0.Add(time.Minute), Record: diff.Record{Key: diff.Key{InvokeID: invokeID, InstanceID: fmt.Sprintf("i-%03d", i)},
				CommandName: "deploy", CommandID: "c-1", Status: diff.StatusFailed, Repeats: 1, ExitCode: 1, ErrorCode: "ExitCodeNonzero"}}
		tr.ID = diff.EventID(tr)
		out = append(out, tr)
	}
	agg := diff.Transition{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou", Previous: diff.StatusRunning, PreviousObservedAt: t0,
		ObservedAt: t0.Add(time.Minute), Record: diff.Record{Key: diff.Key{InvokeID: invokeID}, CommandName: "deploy", CommandID: "c-1", Status: diff.StatusFailed}}
	agg.ID = diff.EventID(agg)
	return append(out, agg)
}

// notifyProc is "capoller notify" as a child process (this test binary,
// through TestMain).
type notifyProc struct {
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

func startNotify(t *testing.T, args ...string) *notifyProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &notifyProc{logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(exe, append([]string{"notify"}, args...)...)
	p.cmd.Env = append(os.Environ(), beMainEnv+"=1")
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("notify logs:\n%s", p.logs.String())
		}
	})
	testenv.WaitFor(t, 15*time.Second, "notify to start", func() error {
		if !strings.Contains(p.logs.String(), "capoller notify running") {
			return fmt.Errorf("logs so far: %s", p.logs.String())
		}
		return nil
	})
	return p
}

// Killed (SIGKILL) while a post is under way and other invocations are
// held in groups, then started again on the same durable consumer,
// notify sends every invocation exactly once: nothing missing, nothing
// twice, and every event acknowledged.
func TestNotifyKilledAndRestarted(t *testing.T) {
	natsURL := testenv.NATSURL(t)
	es := testenv.NewEventStream(t, natsURL, "NOTIFYCMD")
	js, pub, stream, prefix := es.JS, es.Pub, es.Name, es.Prefix

	var mu sync.Mutex
	accepted := map[string]int{} // invocation → messages accepted
	events := map[string]int{}   // invocation → events its message covered
	calls := 0
	blocked := make(chan struct{})
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls++
		call := calls
		mu.Unlock()
		if call == 4 { // the fourth post hangs until notify is killed
			close(blocked)
			select {
			case <-r.Context().Done(): // the client died: nothing was accepted
				return
			case <-release:
				return
			}
		}
		var p struct{ Summaries []notify.Summary }
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("payload: %v", err)
		}
		mu.Lock()
		for _, s := range p.Summaries {
			accepted[s.InvokeID]++
			events[s.InvokeID] = len(s.EventIDs)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	defer close(release)

	dir := t.TempDir()
	config := filepath.Join(dir, "notify.yaml")
	yaml := fmt.Sprintf("deliver: all\ngroup_window: 3s\nsettle: 200ms\nack_wait: 2s\nwebhooks: [{name: sink, kind: generic, url: %q}]\n", hook.URL)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", config, "--nats-url", natsURL, "--stream", stream, "--subject-prefix", prefix, "--durable", "notify-test"}

	first := startNotify(t, args...)
	var all []string
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			id := fmt.Sprintf("t-%02d", i)
			all = append(all, id)
			if _, err := pub.Publish(t.Context(), notifyInvocation(id, 30)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, 10)
	select {
	case <-blocked:
	case <-time.After(20 * time.Second):
		t.Fatalf("the fourth post never came; logs:\n%s", first.logs.String())
	}
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	mu.Lock()
	before := len(accepted)
	mu.Unlock()
	if before != 3 {
		t.Fatalf("%d invocations delivered before the kill, want 3", before)
	}

	startNotify(t, args...)
	publish(10, 15)
	testenv.WaitFor(t, 30*time.Second, "every invocation delivered and every event acknowledged", func() error {
		mu.Lock()
		n := len(accepted)
		mu.Unlock()
		if n != len(all) {
			return fmt.Errorf("%d of %d invocations delivered", n, len(all))
		}
		c, err := js.Consumer(t.Context(), stream, "notify-test")
		if err != nil {
			return err
		}
		info, err := c.Info(t.Context())
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("%d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, id := range all {
		if accepted[id] != 1 {
			t.Errorf("%s delivered %d times", id, accepted[id])
		}
		if events[id] != 31 {
			t.Errorf("%s's message covers %d events, want its 31", id, events[id])
		}
	}
}

func TestNotifyCommandConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("webhooks: [{name: x, kind: generic, url: 'http://127.0.0.1:9'}]\nrulez: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongShape := filepath.Join(dir, "shape.yaml")
	if err := os.WriteFile(wrongShape, []byte("webhooks: {name: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--config: required"},
		{[]string{"--config", bad}, `line 2: unknown setting "rulez"; did you mean rules?`},
		{[]string{"--config", bad, "--stream", "A.B"}, "stream name"},
		{[]string{"--config", bad, "--nats-url", "http://x"}, "nats-url"},
		{[]string{"--config", bad, "--log-format", "xml"}, "log-format"},
		{[]string{"--config", bad, "extra"}, "unexpected arguments"},
		{[]string{"--config", wrongShape}, "into a setting"},
	} {
		var stderr bytes.Buffer
		if code := cli(t.Context(), append([]string{"notify"}, c.args...), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q, want it to mention %q", c.args, code, stderr.String(), c.want)
		}
		if strings.Contains(stderr.String(), " in type ") || strings.Contains(stderr.String(), "notify.") {
			t.Errorf("%v: a Go type name in %q", c.args, stderr.String())
		}
	}
}

// TestNotifyLogsItsStop: a SIGTERM stops notify cleanly (exit 0), and its
// last line says it stopped and why: quiet is not silence.
func TestNotifyLogsItsStop(t *testing.T) {
	natsURL := testenv.NATSURL(t)
	es := testenv.NewEventStream(t, natsURL, "NOTIFYSTOP")
	stream, prefix := es.Name, es.Prefix
	config := filepath.Join(t.TempDir(), "notify.yaml")
	if err := os.WriteFile(config, []byte("webhooks: [{name: sink, kind: generic, url: \"http://127.0.0.1:1/\"}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startNotify(t, "--config", config, "--nats-url", natsURL, "--stream", stream, "--subject-prefix", prefix, "--durable", "notify-stop")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("notify did not stop after SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(p.logs.String(), `"msg":"capoller notify stopped","durable":"notify-stop","reason":"asked to stop (SIGTERM or SIGINT)"`) {
		t.Errorf("exit %d; logs:\n%s", code, p.logs.String())
	}
}

package poller_test

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
)

// TestInvokeCommandRunsAreAnnounced holds that an invocation made by the
// command lifecycle (CreateCommand, then InvokeCommand) is listed and
// announced like a RunCommand one: every instance's run and the
// aggregate, with the saved command's id and name.
func TestInvokeCommandRunsAreAnnounced(t *testing.T) {
	h := newHarness(t)
	src, st, pub := h.parts(50)
	kill := startPoller(t, h.poller(src, st, pub, nil))
	defer kill()

	create := ecs.CreateCreateCommandRequest()
	create.Name, create.Type = "deploy-saved", "RunShellScript"
	create.CommandContent = base64.StdEncoding.EncodeToString([]byte("echo saved; exit 4"))
	created, err := h.sdk.CreateCommand(create)
	if err != nil {
		t.Fatalf("CreateCommand: %v", err)
	}
	invoke := ecs.CreateInvokeCommandRequest()
	invoke.CommandId, invoke.InstanceId = created.CommandId, &[]string{h.instances[0], h.instances[1]}
	invoked, err := h.sdk.InvokeCommand(invoke)
	if err != nil {
		t.Fatalf("InvokeCommand: %v", err)
	}
	waitCaughtUp(t, h, 15*time.Second)
	final := finalFromEvents(h.events())
	for _, key := range []diff.Key{{InvokeID: invoked.InvokeId}, {InvokeID: invoked.InvokeId, InstanceID: h.instances[0]},
		{InvokeID: invoked.InvokeId, InstanceID: h.instances[1]}} {
		got, ok := final[key]
		if !ok {
			t.Fatalf("no event for %v", key)
		}
		if got.Status != "Failed" || got.CommandID != created.CommandId || got.CommandName != "deploy-saved" {
			t.Errorf("%v: announced %s of command %s %q, want Failed of %s \"deploy-saved\"", key, got.Status, got.CommandID, got.CommandName, created.CommandId)
		}
		if key.InstanceID != "" && (got.ExitCode == nil || *got.ExitCode != 4) {
			t.Errorf("%v: exit code %v, want 4", key, got.ExitCode)
		}
	}
}

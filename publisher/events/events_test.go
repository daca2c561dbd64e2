package events_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/publisher/events"
)

func instanceEvent(status events.Status) events.Event {
	repeats := 1
	return events.Event{SpecVersion: "1.0", ID: "e1", Type: events.TypeInstance, Data: events.Data{
		Account: "prod", Source: "ecs", RegionID: "cn-hangzhou", Level: events.LevelInstance, InvokeID: "t-1", InstanceID: "i-1",
		CommandID: "c-1", CommandName: "deploy", Status: status, Repeats: &repeats, ObservedAt: "2026-12-01T03:00:00Z"}}
}

func TestFilterMatch(t *testing.T) {
	e := instanceEvent(events.Failed)
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		f    events.Filter
		want bool
	}{
		{events.Filter{}, true},
		{events.Filter{Accounts: []string{"prod", "dev"}}, true},
		{events.Filter{Accounts: []string{"dev"}}, false},
		{events.Filter{Sources: []string{"swas"}}, false},
		{events.Filter{Regions: []string{"cn-hangzhou"}, Levels: []events.Level{events.LevelInstance}}, true},
		{events.Filter{Levels: []events.Level{events.LevelInvocation}}, false},
		{events.Filter{Statuses: []events.Status{"failed"}}, true},
		{events.Filter{Statuses: []events.Status{events.Success, events.Timeout}}, false},
		{events.Filter{Invocations: []string{"t-1"}, Instances: []string{"i-1"}}, true},
		{events.Filter{Instances: []string{"i-2"}}, false},
		{events.Filter{Commands: []string{"deploy"}}, true},
		{events.Filter{Commands: []string{"c-1"}}, true},
		{events.Filter{Commands: []string{"c-2"}}, false},
		{events.Filter{From: at, Until: at.Add(time.Second)}, true},
		{events.Filter{From: at.Add(time.Nanosecond)}, false},
		{events.Filter{Until: at}, false},
	} {
		if got := c.f.Match(e); got != c.want {
			t.Errorf("%+v: Match %v, want %v", c.f, got, c.want)
		}
	}
}

// The subject a filter gives matches every subject the publisher would
// give a matching event, and is as narrow as one subject can be.
func TestFilterSubject(t *testing.T) {
	for _, c := range []struct {
		f    events.Filter
		want string
	}{
		{events.Filter{}, "capoller.>"},
		{events.Filter{Sources: []string{"ecs"}}, "capoller.ecs.>"},
		{events.Filter{Sources: []string{"ecs", "swas"}, Regions: []string{"cn-hangzhou"}}, "capoller.*.cn-hangzhou.>"},
		{events.Filter{Statuses: []events.Status{"Partial Failed"}}, "capoller.*.*.*.partialfailed.>"},
		{events.Filter{Levels: []events.Level{events.LevelInvocation}, Invocations: []string{"t-1"}}, "capoller.*.*.invocation.*.t-1"},
		{events.Filter{Invocations: []string{"t-1"}}, "capoller.>"},
		{events.Filter{Instances: []string{"i-1"}}, "capoller.*.*.instance.*.*.i-1"},
		{events.Filter{Levels: []events.Level{events.LevelInstance}, Invocations: []string{"t.1 *"}}, "capoller.*.*.instance.*.t%2E1%20%2A.*"},
		{events.Filter{Accounts: []string{"prod"}, Commands: []string{"deploy"}}, "capoller.>"},
	} {
		if got := c.f.Subject("capoller"); got != c.want {
			t.Errorf("%+v: Subject %q, want %q", c.f, got, c.want)
		}
	}
}

func TestDedupForgetsBeyondItsWindow(t *testing.T) {
	d := events.NewDedup(events.DedupOptions{Window: 3})
	for _, id := range []string{"a", "b", "c"} {
		if d.Seen(id) {
			t.Fatalf("%s seen before it came", id)
		}
	}
	if !d.Seen("a") || !d.Seen("c") {
		t.Fatal("a recent id was not seen")
	}
	d.Seen("d") // a goes
	if d.Seen("a") {
		t.Fatal("an id beyond the window was still seen")
	}
	if !d.Seen("d") {
		t.Fatal("the newest id was not seen")
	}
}

func TestDecodeRefusesWhatIsNotAnEvent(t *testing.T) {
	if _, err := events.Decode([]byte(`{"specversion":"1.0","type":"io.capoller.invocation.status.v1","id":"x","data":{"invokeId":"t","status":"Failed","level":"invocation"}}`)); err != nil {
		t.Fatalf("a minimal invocation event was refused: %v", err)
	}
	for _, body := range []string{`not json`, `{}`, `{"specversion":"1.0","type":"other","id":"x"}`,
		`{"specversion":"1.0","type":"io.capoller.instance.status.v1","id":"x","data":{"invokeId":"t"}}`,
		`{"specversion":"1.0","type":"io.capoller.instance.status.v1","id":"x","data":{"invokeId":"t","status":"Failed","level":"instance"}}`,
		`{"specversion":"1.0","type":"io.capoller.invocation.status.v1","id":"x","data":{"invokeId":"t","status":"Failed","level":"instance","instanceId":"i"}}`,
		`{"specversion":"1.0","type":"io.capoller.invocation.status.v1","id":"x","data":{"invokeId":"t","status":"Failed"}}`} {
		if _, err := events.Decode([]byte(body)); err == nil {
			t.Errorf("%s: decoded", body)
		}
	}
}

// Importing the package pulls neither the Alibaba SDK nor NATS (server or
// client) into a build.
func TestImportsStayLight(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "aliyun") || strings.Contains(dep, "nats-io") || strings.Contains(dep, "go.uber.org") || strings.Contains(dep, "redis") {
			t.Errorf("events depends on %s", dep)
		}
	}
}

package events_test

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/trace"

	"github.com/capoller/capoller/publisher/events"
)

// A subscriber decodes a message body into an event, and acts on the
// failures of one command.
func ExampleDecode() {
	body := []byte(`{"specversion":"1.0","id":"9f2c","source":"/capoller/ecs/cn-hangzhou","type":"io.capoller.instance.status.v1",` +
		`"subject":"t-1/i-1","time":"2026-12-01T03:00:05Z","datacontenttype":"application/json","data":{"account":"prod",` +
		`"source":"ecs","regionId":"cn-hangzhou","level":"instance","invokeId":"t-1","commandId":"c-1","commandName":"deploy",` +
		`"previousStatus":"Running","status":"Failed","terminal":true,"observedAt":"2026-12-01T03:00:05Z",` +
		`"previousObservedAt":"2026-12-01T03:00:00Z","instanceId":"i-1","repeats":1,"exitCode":2,"errorCode":"CommandFailed"}}`)
	e, err := events.Decode(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	if e.Data.Status == events.Failed && e.Data.Terminal {
		run := e.Run()
		fmt.Printf("%s failed on %s (run %d) after %s, exit %d\n", e.Data.CommandName, run.InstanceID, run.Repeats,
			e.Data.PreviousStatus, *e.Data.ExitCode)
	}
	// Output: deploy failed on i-1 (run 1) after Running, exit 2
}

// A filter gives the subject to subscribe to; Match keeps what the subject
// cannot express.
func ExampleFilter_Subject() {
	f := events.Filter{Sources: []string{"ecs"}, Regions: []string{"cn-hangzhou"}, Statuses: []events.Status{events.Failed}, Accounts: []string{"prod"}}
	fmt.Println(f.Subject("capoller"))
	// Output: capoller.ecs.cn-hangzhou.*.failed.>
}

// A subscriber that reads the stream again (after a restart, or beside a
// replay) drops what it handled already.
func ExampleDedup() {
	seen := events.NewDedup(events.DedupOptions{Window: 10_000})
	for _, id := range []string{"e1", "e2", "e1"} {
		if seen.Seen(id) {
			fmt.Println("skip", id)
			continue
		}
		fmt.Println("handle", id)
	}
	// Output:
	// handle e1
	// handle e2
	// skip e1
}

// A subscriber shows the end of a failed run's output on a terminal or in
// a chat: colours, cursor moves, CRs that redraw a line and bidi
// overrides cannot disguise it.
func ExampleLastLines() {
	output := "downloading 10%\rdownloading 100%\n\x1b[31mERROR\x1b[0m: disk full\x00\n"
	for _, line := range events.LastLines(output, 2) {
		fmt.Println("| " + line)
	}
	// Output:
	// | downloading 100%
	// | ERROR: disk full␀
}

// A subscriber continues the trace of the cycle that observed the change:
// a span started from the event's context is a child of the publish that
// announced it (tracer.Start(ctx, "handle") with the subscriber's own
// tracer).
func ExampleEvent_TraceContext() {
	body := []byte(`{"specversion":"1.0","id":"9f2c","source":"/capoller/ecs/cn-hangzhou","type":"io.capoller.invocation.status.v1",` +
		`"subject":"t-1","time":"2026-12-01T03:00:05Z","datacontenttype":"application/json","data":{"account":"prod",` +
		`"source":"ecs","regionId":"cn-hangzhou","level":"invocation","invokeId":"t-1","commandId":"c-1","commandName":"deploy",` +
		`"previousStatus":"Running","status":"Failed","terminal":true,"observedAt":"2026-12-01T03:00:05Z","previousObservedAt":""},` +
		`"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`)
	e, err := events.Decode(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := e.TraceContext(context.Background())
	parent := trace.SpanContextFromContext(ctx)
	fmt.Println(parent.TraceID(), parent.SpanID(), parent.IsSampled())
	// Output: 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 true
}

package schema_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
	"github.com/capoller/capoller/publisher/events/schema"
)

// object is a JSON object as encoding/json decodes it.
type object = map[string]any

func load(t *testing.T, eventType string) object {
	t.Helper()
	raw, err := schema.JSON(eventType)
	if err != nil {
		t.Fatal(err)
	}
	var doc object
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("the schema of %s is not JSON: %v", eventType, err)
	}
	return doc
}

// resolve follows a local $ref ("#/$defs/data") from s within root.
func resolve(t *testing.T, root, s object) object {
	t.Helper()
	ref, ok := s["$ref"].(string)
	if !ok {
		return s
	}
	target, err := testenv.JSONPointer(root, strings.TrimPrefix(ref, "#"))
	obj, isObj := target.(object)
	if err != nil || !isObj || !strings.HasPrefix(ref, "#/") {
		t.Fatalf("$ref %q does not resolve within the schema: %v", ref, err)
	}
	return obj
}

// transition is a record's change at one level: the fullest one sets
// every field NewEvent reads, the barest none it may leave out.
func transition(instance string, fullest bool) diff.Transition {
	at := time.Date(2026, 12, 1, 3, 0, 5, 123456789, time.UTC)
	tr := diff.Transition{Source: diff.SourceSWAS, Region: "cn-hangzhou", ObservedAt: at,
		Record: diff.Record{Key: diff.Key{InvokeID: "t-1", InstanceID: instance}, Status: diff.StatusFailed}}
	if fullest {
		tr.Account, tr.Previous, tr.PreviousObservedAt = "prod", diff.StatusRunning, at.Add(-time.Second)
		r := &tr.Record
		r.CommandID, r.CommandName, r.Repeats, r.ExitCode, r.ErrorCode, r.ErrorInfo = "c-1", "deploy", 2, 3, "ExitCodeNonzero", "exit code is not zero"
		r.StartTime, r.FinishTime = at.Add(-3*time.Second), at.Add(-2*time.Second)
		r.Output, r.OutputDropped, r.OutputURI, r.OutputMissing = "[cut 99999 bytes]…ERROR", 1024, "oss://bucket/out", true
		r.Cut = diff.FieldErrorInfo | diff.FieldCommandName | diff.FieldErrorCode | diff.FieldCommandID | diff.FieldOutput
		tr.Trace = diff.TraceContext{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "capoller=1"}
	}
	tr.ID = diff.EventID(tr)
	return tr
}

// encoded is an event as published, decoded into JSON values.
func encoded(t *testing.T, tr diff.Transition) object {
	t.Helper()
	b, err := publisher.NewEvent(tr).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var m object
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSchemasMatchTheGoTypes holds each schema to package events' types
// and to what the publisher encodes, so that neither can drift from the
// other: every JSON field of Event and Data that an event of the type can
// carry is a property, of a compatible type; every property is such a
// field; and the required properties are exactly the fields the barest
// event carries. A field added to the Go types fails here until the
// schemas name it.
func TestSchemasMatchTheGoTypes(t *testing.T) {
	for _, tc := range []struct{ eventType, instance string }{{events.TypeInstance, "i-1"}, {events.TypeInvocation, ""}} {
		t.Run(tc.eventType, func(t *testing.T) {
			root := load(t, tc.eventType)
			full, bare := encoded(t, transition(tc.instance, true)), encoded(t, transition(tc.instance, false))
			if full["type"] != tc.eventType {
				t.Fatalf("NewEvent made a %v, want a %s", full["type"], tc.eventType)
			}
			data := resolve(t, root, root["properties"].(object)["data"].(object))
			matchGoType(t, root, root, reflect.TypeFor[events.Event](), full, bare, tc.eventType == events.TypeInstance)
			matchGoType(t, root, data, reflect.TypeFor[events.Data](), full["data"].(object), bare["data"].(object), tc.eventType == events.TypeInstance)
		})
	}
}

// matchGoType compares the object schema s with the struct type typ, given
// the fullest and the barest encodings of an event. everyField says every
// field of typ must be carried (true of instance events, which carry all).
func matchGoType(t *testing.T, root, s object, typ reflect.Type, full, bare object, everyField bool) {
	t.Helper()
	props, _ := s["properties"].(object)
	fields := map[string]reflect.Type{}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = f.Type
		_, carried := full[name]
		prop, declared := props[name].(object)
		switch {
		case !carried && everyField:
			t.Errorf("%s.%s (json %q): the fullest event does not carry it, so the schema cannot be checked against it", typ.Name(), f.Name, name)
		case carried && !declared:
			t.Errorf("%s.%s (json %q) has no property in the schema", typ.Name(), f.Name, name)
		case !carried && declared:
			t.Errorf("property %q: this type's events never carry %s.%s", name, typ.Name(), f.Name)
		case declared:
			if want, got := jsonType(f.Type), typeOf(t, root, prop); want != got {
				t.Errorf("property %q is of type %q, %s.%s (%s) encodes as %q", name, got, typ.Name(), f.Name, f.Type, want)
			}
			if f.Type == reflect.TypeFor[time.Time]() && resolve(t, root, prop)["format"] != "date-time" {
				t.Errorf("property %q (a time.Time) is not format date-time", name)
			}
		}
	}
	for name := range props {
		if _, ok := fields[name]; !ok {
			t.Errorf("property %q is no JSON field of %s", name, typ.Name())
		}
		if _, ok := full[name]; !ok {
			t.Errorf("property %q: the fullest event does not carry it", name)
		}
	}
	var required []string
	for _, r := range s["required"].([]any) {
		required = append(required, r.(string))
	}
	var always []string
	for name := range bare {
		if name != "dataschema" { // optional: the stream keeps events published before capoller named its schemas, without it
			always = append(always, name)
		}
	}
	slices.Sort(required)
	slices.Sort(always)
	if !slices.Equal(required, always) {
		t.Errorf("%s: required %v, but the barest event carries %v", typ.Name(), required, always)
	}
}

// jsonType is the JSON Schema type encoding/json gives a Go type.
func jsonType(typ reflect.Type) string {
	if typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch {
	case typ == reflect.TypeFor[time.Time]():
		return "string"
	case typ.Kind() == reflect.String:
		return "string"
	case typ.Kind() == reflect.Bool:
		return "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		return "integer"
	case typ.Kind() == reflect.Slice:
		return "array"
	case typ.Kind() == reflect.Struct:
		return "object"
	}
	return "unknown Go kind " + typ.Kind().String()
}

// typeOf is a property's "type", through a $ref.
func typeOf(t *testing.T, root, prop object) string {
	t.Helper()
	prop = resolve(t, root, prop)
	typ, _ := prop["type"].(string)
	if typ == "array" {
		items, _ := prop["items"].(object)
		if items == nil || items["type"] != "string" {
			return "array of " + typeOf(t, root, items)
		}
	}
	return typ
}

// The two schemas describe one envelope and one data object: what they
// share is written the same in both, so that a fix to one cannot miss the
// other.
func TestSchemasAgreeOnWhatTheyShare(t *testing.T) {
	inst, inv := load(t, events.TypeInstance), load(t, events.TypeInvocation)
	differ := map[string]bool{"type": true, "dataschema": true, "subject": true} // named by type
	for name, p := range inv["properties"].(object) {
		if !differ[name] && !reflect.DeepEqual(p, inst["properties"].(object)[name]) {
			t.Errorf("envelope property %q differs between the schemas", name)
		}
	}
	dInst := inst["$defs"].(object)["data"].(object)["properties"].(object)
	dInv := inv["$defs"].(object)["data"].(object)["properties"].(object)
	differ = map[string]bool{"level": true, "status": true, "terminal": true, "truncated": true} // their examples and wording are the level's
	for name, p := range dInv {
		if !differ[name] && !reflect.DeepEqual(p, dInst[name]) {
			t.Errorf("data property %q differs between the schemas", name)
		}
	}
	for _, name := range []string{"stamp", "stampOrEmpty"} {
		if !reflect.DeepEqual(inst["$defs"].(object)[name], inv["$defs"].(object)[name]) {
			t.Errorf("$defs/%s differs between the schemas", name)
		}
	}
}

// Each schema is a draft 2020-12 schema whose $id is the URI its events
// name in dataschema, and it accepts what capoller encodes: the fullest
// and barest events of its type, and odd ones (any byte in a string, a
// cut field, times with and without nanoseconds).
func TestSchemasAcceptWhatCapollerEncodes(t *testing.T) {
	s := testenv.EventSchemas(t)
	for _, typ := range schema.Types() {
		doc := load(t, typ)
		uri, _ := schema.URIOf(typ)
		if doc["$id"] != uri || doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $id %v, $schema %v", typ, doc["$id"], doc["$schema"])
		}
	}
	var trs []diff.Transition
	for _, inst := range []string{"i-1", ""} {
		trs = append(trs, transition(inst, true), transition(inst, false))
		odd := transition(inst, true)
		odd.Record.InvokeID, odd.Record.CommandName, odd.Record.Status = "t-\x00\xff.*>", "日本 \u2028 <&>", "SomethingNew"
		odd.ObservedAt = odd.ObservedAt.Truncate(time.Second)
		odd.ID = diff.EventID(odd)
		trs = append(trs, odd)
	}
	for _, tr := range trs {
		ev := publisher.NewEvent(tr)
		body, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		header := map[string][]string{"Nats-Msg-Id": {tr.ID}, "Content-Type": {events.ContentType}}
		if typ, err := s.Validate(header, body); err != nil || typ != ev.Type {
			t.Errorf("%s refused (%s): %v\n%s", ev.Type, typ, err, body)
		}
	}
}

// The schemas refuse what is not an event of their type, so that the
// tests that find events valid could fail: each mutation of a valid event
// is refused.
func TestSchemasRefuseWhatIsNoEvent(t *testing.T) {
	s := testenv.EventSchemas(t)
	header := map[string][]string{"Content-Type": {events.ContentType}}
	for _, tc := range []struct {
		name     string
		instance string
		mutate   func(m object)
	}{
		{"no id", "i-1", func(m object) { delete(m, "id") }},
		{"an empty invocation id", "i-1", func(m object) { m["data"].(object)["invokeId"] = "" }},
		{"a time that is no RFC 3339", "i-1", func(m object) { m["time"] = "yesterday" }},
		{"an observedAt that is no RFC 3339", "", func(m object) { m["data"].(object)["observedAt"] = "2026-12-01 03:00:05" }},
		{"exitCode as a string", "i-1", func(m object) { m["data"].(object)["exitCode"] = "3" }},
		{"an instance event without its instance", "i-1", func(m object) { delete(m["data"].(object), "instanceId") }},
		{"an invocation event of level instance", "", func(m object) { m["data"].(object)["level"] = "instance" }},
		{"an unknown source", "", func(m object) { m["data"].(object)["source"] = "ecs-results" }},
		{"another specversion", "", func(m object) { m["specversion"] = "0.3" }},
		{"another dataschema", "", func(m object) { m["dataschema"] = events.SchemaInstance }},
		{"truncated empty", "i-1", func(m object) { m["data"].(object)["truncated"] = []any{} }},
	} {
		m := encoded(t, transition(tc.instance, true))
		tc.mutate(m)
		body, _ := json.Marshal(m)
		header["Nats-Msg-Id"] = []string{"x"}
		if id, ok := m["id"].(string); ok {
			header["Nats-Msg-Id"] = []string{id}
		}
		if _, err := s.Validate(header, body); err == nil {
			t.Errorf("%s: accepted\n%s", tc.name, body)
		}
	}
	good, _ := json.Marshal(encoded(t, transition("i-1", false)))
	for name, h := range map[string]map[string][]string{
		"no Nats-Msg-Id":       {"Content-Type": {events.ContentType}},
		"another Content-Type": {"Content-Type": {"application/json"}, "Nats-Msg-Id": {transition("i-1", false).ID}},
		"a bad traceparent":    {"Content-Type": {events.ContentType}, "Nats-Msg-Id": {transition("i-1", false).ID}, "traceparent": {"00-xyz"}},
	} {
		if _, err := s.Validate(h, good); err == nil {
			t.Errorf("headers with %s: accepted", name)
		}
	}
}

// The AsyncAPI document is YAML of AsyncAPI 3.0.0, every $ref in it
// resolves (within it, or to a shipped schema, whose type is the
// message's name), each channel declares exactly the parameters its
// address names, the addresses match the subjects the publisher makes, and
// its examples are valid messages.
func TestAsyncAPIDocument(t *testing.T) {
	raw := schema.AsyncAPI()
	doc, err := testenv.AsyncAPIPointer(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	root := doc.(object)
	if root["asyncapi"] != "3.0.0" || root["id"] != schema.AsyncAPIURI {
		t.Fatalf("asyncapi %v, id %v; want 3.0.0, %s", root["asyncapi"], root["id"], schema.AsyncAPIURI)
	}
	for _, key := range []string{"/info/title", "/info/version", "/servers/nats/protocol", "/channels", "/operations", "/components/messages"} {
		if _, err := testenv.JSONPointer(root, key); err != nil {
			t.Errorf("no %s: %v", key, err)
		}
	}
	refs := 0
	walk(root, func(ref string) {
		refs++
		file, pointer, _ := strings.Cut(ref, "#")
		if file == "" {
			if _, err := testenv.JSONPointer(root, pointer); err != nil {
				t.Errorf("$ref %q: %v", ref, err)
			}
			return
		}
		if _, ok := schema.Files()[file]; !ok || pointer != "" {
			t.Errorf("$ref %q names no shipped schema", ref)
		}
	})
	if refs < 20 {
		t.Errorf("only %d $refs found: the walk is broken", refs)
	}

	s := testenv.EventSchemas(t)
	for _, msgName := range []string{"instanceStatus", "invocationStatus"} {
		msg := root["components"].(object)["messages"].(object)[msgName].(object)
		ref := msg["payload"].(object)["schema"].(object)["$ref"].(string)
		if want, _ := schema.FileOf(msg["name"].(string)); ref != want {
			t.Errorf("message %s (%v): payload %q, want %q", msgName, msg["name"], ref, want)
		}
		if msg["contentType"] != events.ContentType {
			t.Errorf("message %s: contentType %v", msgName, msg["contentType"])
		}
		for _, ex := range msg["examples"].([]any) {
			ex := ex.(object)
			header := map[string][]string{}
			for k, v := range ex["headers"].(object) {
				header[k] = []string{v.(string)}
			}
			body, _ := json.Marshal(ex["payload"])
			if typ, err := s.Validate(header, body); err != nil || typ != msg["name"] {
				t.Errorf("message %s: example %v (%s): %v", msgName, ex["name"], typ, err)
			}
		}
	}

	// The addresses, made patterns, match the publisher's subjects.
	for channel, tr := range map[string]diff.Transition{"instanceStatus": transition("i-1.odd", true), "invocationStatus": transition("", true)} {
		ch := root["channels"].(object)[channel].(object)
		address := ch["address"].(string)
		placeholder := regexp.MustCompile(`\{([A-Za-z0-9_-]+)\}`)
		var named []string
		for _, m := range placeholder.FindAllStringSubmatch(address, -1) {
			named = append(named, m[1])
		}
		var declared []string
		for p := range ch["parameters"].(object) {
			declared = append(declared, p)
		}
		slices.Sort(named)
		slices.Sort(declared)
		if !slices.Equal(named, declared) {
			t.Errorf("channel %s: address names %v, parameters %v", channel, named, declared)
		}
		var pattern strings.Builder
		rest := address
		for _, loc := range placeholder.FindAllStringIndex(address, -1) {
			pattern.WriteString(regexp.QuoteMeta(address[len(address)-len(rest) : loc[0]]))
			rest = address[loc[1]:]
			if address[loc[0]:loc[1]] == "{prefix}" {
				pattern.WriteString(`[^.]+(\.[^.]+)*`)
			} else {
				pattern.WriteString(`[^.]+`)
			}
		}
		pattern.WriteString(regexp.QuoteMeta(rest))
		subject, err := publisher.Subject("capoller.prod", tr)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile("^" + pattern.String() + "$").MatchString(subject) {
			t.Errorf("channel %s: address %s does not match the subject %s", channel, address, subject)
		}
	}
}

// walk calls f with every $ref in v.
func walk(v any, f func(string)) {
	switch x := v.(type) {
	case object:
		if ref, ok := x["$ref"].(string); ok {
			f(ref)
		}
		for _, c := range x {
			walk(c, f)
		}
	case []any:
		for _, c := range x {
			walk(c, f)
		}
	}
}

// The documents are what the package serves, and only known types have
// one.
func TestFiles(t *testing.T) {
	files := schema.Files()
	if len(files) != 3 {
		t.Errorf("%d files, want the two schemas and the AsyncAPI document", len(files))
	}
	for name, b := range files {
		if len(b) == 0 || !bytes.HasSuffix(b, []byte("\n")) {
			t.Errorf("%s: %d bytes, not ending with a newline", name, len(b))
		}
		if strings.HasSuffix(name, ".json") {
			if _, err := jsonschema.UnmarshalJSON(bytes.NewReader(b)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	if _, err := schema.JSON("io.capoller.instance.status.v2"); err == nil || !strings.Contains(err.Error(), events.TypeInstance) {
		t.Errorf("an unknown type: %v, want an error naming the known ones", err)
	}
}

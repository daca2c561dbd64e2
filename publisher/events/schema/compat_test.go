package schema_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/capoller/capoller/publisher/events"
	"github.com/capoller/capoller/publisher/events/schema"
)

// Compatibility is checked both ways, because the stream keeps events for
// as long as it is configured to (by default, for ever) and `capoller
// replay`, `watch --since` and a new durable consumer read old events:
//
//   - a consumer written against the old schema reads new events: nothing
//     it relied on may go (a property, a required one, a type), and no
//     closed set of values may grow (an enum value added: a consumer that
//     switches over source or level would not know it);
//   - a consumer written against the new schema reads old events: nothing
//     may be required that old events lack (an optional property made
//     required, a new required property), and no closed set may shrink.
//
// Adding an optional property is compatible: consumers ignore what they do
// not know (the schemas say so, and none forbids additional properties).
// Statuses, error codes and the names in truncated are open: the schemas
// give known values as examples, not an enum, and a consumer must handle a
// value it does not know, so a new status is not a break. Any other change
// of a keyword that constrains values (pattern, format, minLength,
// additionalProperties, anyOf…) counts as breaking: the checker does not
// prove two constraints equivalent, it refuses the change, and a human
// decides. A change that breaks consumers gets a new event type (v2) with
// a schema and a baseline of its own, beside v1.

// annotations are keywords that constrain nothing.
var annotations = map[string]bool{"title": true, "description": true, "examples": true, "$comment": true, "default": true, "deprecated": true}

// breaking lists the changes from old to new that break a consumer,
// either way (see above). Each names the JSON pointer of the schema it is
// found at.
func breaking(old, new map[string]any) []string {
	c := &checker{oldRoot: old, newRoot: new}
	if old["$id"] != new["$id"] {
		c.add("", "its $id, the events' dataschema, changed from %v to %v", old["$id"], new["$id"])
	}
	c.compare("", old, new)
	return c.found
}

type checker struct {
	oldRoot, newRoot map[string]any
	found            []string
}

func (c *checker) add(at, format string, args ...any) {
	c.found = append(c.found, fmt.Sprintf("at %q: ", at)+fmt.Sprintf(format, args...))
}

// deref follows a local $ref, keeping the keywords beside it (2020-12
// applies both).
func deref(root map[string]any, s map[string]any) map[string]any {
	ref, ok := s["$ref"].(string)
	if !ok || !strings.HasPrefix(ref, "#/") {
		return s
	}
	target := any(root)
	for _, tok := range strings.Split(ref[2:], "/") {
		m, _ := target.(map[string]any)
		target = m[strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")]
	}
	out := map[string]any{}
	if m, ok := target.(map[string]any); ok {
		for k, v := range m {
			out[k] = v
		}
	}
	for k, v := range s {
		if k != "$ref" {
			out[k] = v
		}
	}
	return out
}

func (c *checker) compare(at string, oldAny, newAny any) {
	o, oOK := oldAny.(map[string]any)
	n, nOK := newAny.(map[string]any)
	if !oOK || !nOK { // a boolean schema (true, false) on either side
		if !reflect.DeepEqual(oldAny, newAny) {
			c.add(at, "the schema changed from %v to %v", oldAny, newAny)
		}
		return
	}
	if strings.Count(at, "/") > 64 { // a recursive $ref: what is below was compared above
		return
	}
	o, n = deref(c.oldRoot, o), deref(c.newRoot, n)
	keys := maps.Clone(o)
	maps.Copy(keys, n)
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		ov, inOld := o[k]
		nv, inNew := n[k]
		switch {
		case annotations[k], k == "$defs", k == "$id", k == "$schema" && at != "":
		case k == "properties":
			c.properties(at, ov, nv)
		case k == "required":
			c.required(at, ov, nv)
		case k == "enum":
			c.enum(at, ov, nv)
		case k == "items":
			if !inOld || !inNew {
				c.add(at, "items constrained %v before, %v now", inOld, inNew)
				continue
			}
			c.compare(at+"/items", ov, nv)
		case k == "type":
			if !reflect.DeepEqual(ov, nv) {
				c.add(at, "type changed from %v to %v", ov, nv)
			}
		case k == "const":
			if !reflect.DeepEqual(ov, nv) {
				c.add(at, "const changed from %v to %v (a consumer may match on it)", describe(ov, inOld), describe(nv, inNew))
			}
		default:
			if !reflect.DeepEqual(withoutAnnotations(ov), withoutAnnotations(nv)) {
				c.add(at, "%s changed from %v to %v (not proven compatible)", k, describe(ov, inOld), describe(nv, inNew))
			}
		}
	}
}

func describe(v any, present bool) string {
	if !present {
		return "absent"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func (c *checker) properties(at string, ov, nv any) {
	o, _ := ov.(map[string]any)
	n, _ := nv.(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(o)) {
		if _, ok := n[name]; !ok {
			c.add(at, "property %q removed: a consumer reading it finds nothing", name)
			continue
		}
		c.compare(at+"/properties/"+name, o[name], n[name])
	}
	// A property only in new is an optional one added (a required one is
	// found by required): compatible.
}

func (c *checker) required(at string, ov, nv any) {
	o, n := asSlice(ov), asSlice(nv)
	for _, name := range n {
		if !slices.Contains(o, name) {
			c.add(at, "property %q became required: events published before may lack it", name)
		}
	}
	for _, name := range o {
		if !slices.Contains(n, name) {
			c.add(at, "property %q is no longer required: consumers rely on it", name)
		}
	}
}

func (c *checker) enum(at string, ov, nv any) {
	if ov == nil || nv == nil {
		c.add(at, "enum added or removed (%v, %v): a closed set of values opened or closed", describe(ov, ov != nil), describe(nv, nv != nil))
		return
	}
	o, n := ov.([]any), nv.([]any)
	for _, v := range n {
		if !slices.ContainsFunc(o, func(x any) bool { return reflect.DeepEqual(x, v) }) {
			c.add(at, "enum value %v added: a consumer switching over the values does not know it", v)
		}
	}
	for _, v := range o {
		if !slices.ContainsFunc(n, func(x any) bool { return reflect.DeepEqual(x, v) }) {
			c.add(at, "enum value %v removed: events the stream keeps still carry it", v)
		}
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// withoutAnnotations is v without annotation keywords, at any depth.
func withoutAnnotations(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			if !annotations[k] {
				out[k] = withoutAnnotations(e)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = withoutAnnotations(e)
		}
		return out
	}
	return v
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func baseline(t *testing.T, eventType string) map[string]any {
	t.Helper()
	name, err := schema.FileOf(eventType)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "baseline", name))
	if err != nil {
		t.Fatalf("%v: each type's schema as first released is frozen there", err)
	}
	return decode(t, b)
}

// TestNoBreakingChange holds each shipped schema to its baseline, the
// schema as the type was first released: a change that breaks consumers
// either way fails here. Never edit a baseline to make this pass: give
// the breaking change a new type (v2) instead.
func TestNoBreakingChange(t *testing.T) {
	for _, typ := range schema.Types() {
		current, err := schema.JSON(typ)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range breaking(baseline(t, typ), decode(t, current)) {
			t.Errorf("%s: %s", typ, b)
		}
	}
}

// TestBreakingChangesAreCaught shows the check above can fail: each change
// that breaks consumers, made to a copy of the shipped schema, is found,
// and the compatible ones are not.
func TestBreakingChangesAreCaught(t *testing.T) {
	raw, err := schema.JSON(events.TypeInstance)
	if err != nil {
		t.Fatal(err)
	}
	data := func(s map[string]any) map[string]any { return s["$defs"].(map[string]any)["data"].(map[string]any) }
	prop := func(s map[string]any, name string) map[string]any {
		return data(s)["properties"].(map[string]any)[name].(map[string]any)
	}
	for _, tc := range []struct {
		name   string
		change func(s map[string]any)
		want   string // "" for a compatible change
	}{
		{"a data property removed", func(s map[string]any) { delete(data(s)["properties"].(map[string]any), "exitCode") }, `property "exitCode" removed`},
		{"an envelope property removed", func(s map[string]any) { delete(s["properties"].(map[string]any), "subject") }, `property "subject" removed`},
		{"a type changed", func(s map[string]any) { prop(s, "repeats")["type"] = "string" }, "type changed from integer to string"},
		{"a type widened", func(s map[string]any) { prop(s, "exitCode")["type"] = []any{"integer", "null"} }, "type changed"},
		{"an optional property made required", func(s map[string]any) {
			data(s)["required"] = append(data(s)["required"].([]any), "errorCode")
		}, `property "errorCode" became required`},
		{"a new required property", func(s map[string]any) {
			data(s)["properties"].(map[string]any)["zone"] = map[string]any{"type": "string"}
			data(s)["required"] = append(data(s)["required"].([]any), "zone")
		}, `property "zone" became required`},
		{"a required property made optional", func(s map[string]any) {
			data(s)["required"] = slices.DeleteFunc(data(s)["required"].([]any), func(v any) bool { return v == "status" })
		}, `property "status" is no longer required`},
		{"an enum value added", func(s map[string]any) {
			prop(s, "source")["enum"] = append(prop(s, "source")["enum"].([]any), "ecs-results")
		}, "enum value ecs-results added"},
		{"an enum value removed", func(s map[string]any) { prop(s, "source")["enum"] = []any{"ecs"} }, "enum value swas removed"},
		{"a const changed", func(s map[string]any) { prop(s, "level")["const"] = "run" }, "const changed"},
		{"a pattern added", func(s map[string]any) { prop(s, "invokeId")["pattern"] = "^t-" }, "pattern changed"},
		{"a format changed", func(s map[string]any) {
			s["properties"].(map[string]any)["time"].(map[string]any)["format"] = "date"
		}, "format changed"},
		{"a closed data object", func(s map[string]any) { data(s)["additionalProperties"] = false }, "additionalProperties changed"},
		{"a shared definition changed", func(s map[string]any) {
			s["$defs"].(map[string]any)["stamp"].(map[string]any)["type"] = "integer"
		}, `at "/properties/data/properties/observedAt": type changed`},
		{"the schema's URI changed", func(s map[string]any) { s["$id"] = "https://example.com/other.json" }, "$id"},

		{"an optional property added", func(s map[string]any) {
			data(s)["properties"].(map[string]any)["zone"] = map[string]any{"type": "string"}
		}, ""},
		{"an envelope extension added (partitionkey)", func(s map[string]any) {
			s["properties"].(map[string]any)["partitionkey"] = map[string]any{"type": "string", "pattern": "^p-"}
		}, ""},
		{"descriptions and examples reworded", func(s map[string]any) {
			prop(s, "status")["examples"] = []any{"Running", "SomethingNew"}
			prop(s, "status")["description"] = "reworded"
			s["title"] = "renamed"
		}, ""},
	} {
		old, changed := decode(t, raw), decode(t, raw)
		tc.change(changed)
		found := breaking(old, changed)
		switch {
		case tc.want == "" && len(found) > 0:
			t.Errorf("%s: a compatible change found breaking: %v", tc.name, found)
		case tc.want != "" && !slices.ContainsFunc(found, func(f string) bool { return strings.Contains(f, tc.want) }):
			t.Errorf("%s: not found breaking (want %q), found %v", tc.name, tc.want, found)
		}
	}
}

// The baselines are the schemas as v1 was first released: each still
// describes its type, and differs from the shipped one only compatibly
// (above); here, that they are the files they claim to be.
func TestBaselinesAreOfTheirTypes(t *testing.T) {
	for _, typ := range schema.Types() {
		b := baseline(t, typ)
		uri, _ := schema.URIOf(typ)
		if b["$id"] != uri || b["title"] != typ {
			t.Errorf("baseline of %s: $id %v, title %v", typ, b["$id"], b["title"])
		}
	}
}

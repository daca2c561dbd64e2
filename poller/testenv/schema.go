package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/publisher/events/schema"
)

// Schemas validates messages against the event contract capoller ships
// (package schema), with a maintained JSON Schema validator: each body
// against the JSON Schema of its type, formats (date-time) asserted, and
// the headers against the AsyncAPI document's.
type Schemas struct {
	byType  map[string]*jsonschema.Schema
	headers *jsonschema.Schema
}

// EventSchemas compiles the shipped schemas.
func EventSchemas(t testing.TB) *Schemas {
	t.Helper()
	s := &Schemas{byType: map[string]*jsonschema.Schema{}}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, typ := range schema.Types() {
		raw, err := schema.JSON(typ)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("testenv: the schema of %s is not JSON: %v", typ, err)
		}
		uri, _ := schema.URIOf(typ)
		if err := c.AddResource(uri, doc); err != nil {
			t.Fatal(err)
		}
		if s.byType[typ], err = c.Compile(uri); err != nil {
			t.Fatalf("testenv: the schema of %s does not compile: %v", typ, err)
		}
	}
	headers, err := AsyncAPIPointer(schema.AsyncAPI(), "/components/schemas/headers")
	if err != nil {
		t.Fatal(err)
	}
	hc := jsonschema.NewCompiler()
	hc.DefaultDraft(jsonschema.Draft7) // an AsyncAPI Schema Object is a superset of draft 7
	const headersURL = "https://capoller.io/schemas/asyncapi-headers.json"
	if err := hc.AddResource(headersURL, headers); err != nil {
		t.Fatal(err)
	}
	if s.headers, err = hc.Compile(headersURL); err != nil {
		t.Fatalf("testenv: the AsyncAPI headers schema does not compile: %v", err)
	}
	return s
}

// Validate checks one message as published: its headers against the
// AsyncAPI document's, its Nats-Msg-Id against the event's id, its body
// against the schema of its type, and that its dataschema names that
// schema (every event capoller publishes now carries it). It returns the
// event's type.
func (s *Schemas) Validate(header map[string][]string, body []byte) (string, error) {
	hdr := map[string]any{}
	for k, vs := range header {
		if len(vs) != 1 {
			return "", fmt.Errorf("header %s has %d values", k, len(vs))
		}
		hdr[k] = vs[0]
	}
	if err := s.headers.Validate(hdr); err != nil {
		return "", fmt.Errorf("headers: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("body: %w", err)
	}
	obj, _ := doc.(map[string]any)
	typ, _ := obj["type"].(string)
	sch := s.byType[typ]
	if sch == nil {
		return typ, fmt.Errorf("body: no schema for type %q", typ)
	}
	if err := sch.Validate(doc); err != nil {
		return typ, fmt.Errorf("body of %s: %w", typ, err)
	}
	uri, _ := schema.URIOf(typ)
	if obj["dataschema"] != uri {
		return typ, fmt.Errorf("dataschema %v, want %s", obj["dataschema"], uri)
	}
	if obj["id"] != hdr["Nats-Msg-Id"] {
		return typ, fmt.Errorf("id %v, Nats-Msg-Id %v", obj["id"], hdr["Nats-Msg-Id"])
	}
	return typ, nil
}

// AsyncAPIPointer is the value at a JSON pointer (RFC 6901) of a YAML
// document, as JSON values (maps, slices, strings, json.Number, bools).
func AsyncAPIPointer(doc []byte, pointer string) (any, error) {
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	b, err := json.Marshal(v) // YAML's maps are map[string]any: JSON takes them
	if err != nil {
		return nil, fmt.Errorf("not JSON-compatible: %w", err)
	}
	if v, err = jsonschema.UnmarshalJSON(bytes.NewReader(b)); err != nil { // numbers as json.Number, as the validator takes them
		return nil, err
	}
	return JSONPointer(v, pointer)
}

// JSONPointer is the value at pointer (RFC 6901) in a JSON value.
func JSONPointer(v any, pointer string) (any, error) {
	if pointer == "" {
		return v, nil
	}
	if pointer[0] != '/' {
		return nil, fmt.Errorf("pointer %q does not start with /", pointer)
	}
	for _, tok := range strings.Split(pointer[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[tok]
			if !ok {
				return nil, fmt.Errorf("pointer %q: no %q", pointer, tok)
			}
			v = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return nil, fmt.Errorf("pointer %q: no item %q", pointer, tok)
			}
			v = x[i]
		default:
			return nil, errors.New("pointer " + pointer + ": goes through a scalar")
		}
	}
	return v, nil
}

// Package schema holds capoller's event contract as documents, for
// consumers in any language: a JSON Schema (draft 2020-12) per event type,
// covering the whole CloudEvents envelope and its data, and an AsyncAPI 3.0
// document of the stream (subjects, headers, delivery). The files beside
// this one are the source; `capoller schema` prints them.
//
// The schemas are held to package events' types by this package's tests
// (every field, its type and whether it is always present), to the events
// of an end-to-end run, and to a frozen baseline that a change breaking
// consumers cannot pass (see compat_test.go).
package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"strings"

	"github.com/capoller/capoller/publisher/events"
)

//go:embed *.json asyncapi.yaml
var files embed.FS

// AsyncAPIURI is the AsyncAPI document's id: like the schemas' URIs, an
// identifier, not a download location.
const AsyncAPIURI = "https://capoller.io/schemas/asyncapi.yaml"

// AsyncAPIFile is the AsyncAPI document's file name. It refers to the
// schemas by their file names ([FileOf]), so that the three files written
// side by side make a complete document for AsyncAPI tools.
const AsyncAPIFile = "asyncapi.yaml"

// Types are the event types, each with a schema.
func Types() []string { return []string{events.TypeInstance, events.TypeInvocation} }

// URIOf is the URI of an event type's schema, the events' dataschema.
func URIOf(eventType string) (string, error) {
	switch eventType {
	case events.TypeInstance:
		return events.SchemaInstance, nil
	case events.TypeInvocation:
		return events.SchemaInvocation, nil
	}
	return "", fmt.Errorf("schema: unknown event type %q: the types are %s", eventType, strings.Join(Types(), ", "))
}

// FileOf is the file name of an event type's schema: the type, ".json".
func FileOf(eventType string) (string, error) {
	if _, err := URIOf(eventType); err != nil {
		return "", err
	}
	return eventType + ".json", nil
}

// JSON is the JSON Schema of an event type.
func JSON(eventType string) ([]byte, error) {
	name, err := FileOf(eventType)
	if err != nil {
		return nil, err
	}
	return read(name), nil
}

// AsyncAPI is the AsyncAPI 3.0 document, in YAML.
func AsyncAPI() []byte { return read(AsyncAPIFile) }

// Files are every document by file name: the schemas and the AsyncAPI
// document that refers to them.
func Files() map[string][]byte {
	out := map[string][]byte{AsyncAPIFile: AsyncAPI()}
	for _, t := range Types() {
		name, _ := FileOf(t) // a known type
		out[name] = read(name)
	}
	return out
}

func read(name string) []byte {
	b, err := fs.ReadFile(files, name)
	if err != nil {
		panic(fmt.Sprintf("schema: %s is not embedded: %v", name, err)) // the go:embed pattern holds every name above
	}
	return b
}

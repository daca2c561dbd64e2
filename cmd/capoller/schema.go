package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/capoller/capoller/publisher/events/schema"
)

// schemaCommand runs "capoller schema": it prints the event contract that
// package schema ships. --type prints one event type's JSON Schema,
// --asyncapi the AsyncAPI document, --dir writes them all into a
// directory (where the document's references to the schemas resolve);
// without a flag it lists them. It reads no configuration.
func schemaCommand(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("schema")
	typ := fs.String("type", "", "print the JSON Schema of one event type: instance, invocation, or a type's full name")
	asyncAPI := fs.Bool("asyncapi", false, "print the AsyncAPI 3.0 document of the stream (YAML): subjects, messages, headers, delivery")
	dir := fs.String("dir", "", "write the schemas and the AsyncAPI document into this `path`, created if missing, for AsyncAPI tools")
	if code, ok := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	chosen := 0
	for _, set := range []bool{*typ != "", *asyncAPI, *dir != ""} {
		if set {
			chosen++
		}
	}
	switch {
	case chosen > 1:
		fmt.Fprintln(stderr, "capoller schema: give one of --type, --asyncapi and --dir")
		return 2
	case *typ != "":
		full := eventType(*typ)
		b, err := schema.JSON(full)
		if err != nil {
			fmt.Fprintf(stderr, "capoller schema: --type %q: give instance, invocation, or one of %s\n", *typ, strings.Join(schema.Types(), ", "))
			return 2
		}
		_, _ = stdout.Write(b)
	case *asyncAPI:
		_, _ = stdout.Write(schema.AsyncAPI())
	case *dir != "":
		if err := writeSchemas(*dir, stdout); err != nil {
			fmt.Fprintf(stderr, "capoller schema: --dir: %v\n", err)
			return 1
		}
	default:
		listSchemas(stdout)
	}
	return 0
}

// eventType is the full event type a --type value names: "instance" and
// "invocation" stand for their v1 types.
func eventType(s string) string {
	for _, t := range schema.Types() {
		if s == strings.TrimSuffix(strings.TrimPrefix(t, "io.capoller."), ".status.v1") {
			return t
		}
	}
	return s
}

// listSchemas prints what capoller schema can print, and how.
func listSchemas(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOCUMENT\tURI\tPRINTED BY")
	for _, t := range schema.Types() {
		uri, _ := schema.URIOf(t) // a known type
		fmt.Fprintf(tw, "%s\t%s\tcapoller schema --type %s\n", t, uri, strings.TrimSuffix(strings.TrimPrefix(t, "io.capoller."), ".status.v1"))
	}
	fmt.Fprintf(tw, "AsyncAPI 3.0\t%s\tcapoller schema --asyncapi\n", schema.AsyncAPIURI)
	_ = tw.Flush()
	fmt.Fprintln(w, "\ncapoller schema --dir DIR writes them all, side by side, where the AsyncAPI document's references resolve.")
}

// writeSchemas writes every document into dir, and names each file it
// wrote.
func writeSchemas(dir string, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := schema.Files()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, path)
	}
	return nil
}

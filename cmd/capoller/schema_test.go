package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capoller/capoller/publisher/events"
	"github.com/capoller/capoller/publisher/events/schema"
)

// capoller schema prints the documents package schema ships, byte for
// byte, writes them side by side with --dir, and refuses what it cannot
// print, naming what it can.
func TestSchemaCommand(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := cli(t.Context(), append([]string{"schema"}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	for _, tc := range []struct {
		args []string
		want func() []byte
	}{
		{[]string{"--type", "instance"}, func() []byte { b, _ := schema.JSON(events.TypeInstance); return b }},
		{[]string{"--type", "invocation"}, func() []byte { b, _ := schema.JSON(events.TypeInvocation); return b }},
		{[]string{"--type", events.TypeInvocation}, func() []byte { b, _ := schema.JSON(events.TypeInvocation); return b }},
		{[]string{"--asyncapi"}, schema.AsyncAPI},
	} {
		code, out, errOut := run(tc.args...)
		if code != 0 || errOut != "" || out != string(tc.want()) || len(out) < 1000 {
			t.Errorf("schema %v: exit %d, stderr %q, %d bytes printed", tc.args, code, errOut, len(out))
		}
	}

	code, out, _ := run()
	for _, want := range []string{events.SchemaInstance, events.SchemaInvocation, schema.AsyncAPIURI, "--type instance", "--asyncapi", "--dir"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("schema without flags: exit %d, no %q in:\n%s", code, want, out)
		}
	}

	dir := filepath.Join(t.TempDir(), "contract")
	if code, out, errOut := run("--dir", dir); code != 0 || errOut != "" || strings.Count(out, "\n") != 3 {
		t.Fatalf("schema --dir: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	for name, want := range schema.Files() {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("--dir wrote %s: %d bytes, %v; want the %d shipped", name, len(got), err, len(want))
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "run"}, "give instance, invocation, or one of " + events.TypeInstance},
		{[]string{"--type", "instance", "--asyncapi"}, "give one of --type, --asyncapi and --dir"},
		{[]string{"--types", "instance"}, "did you mean --type?"},
	} {
		if code, out, errOut := run(tc.args...); code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("schema %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run("--dir", filepath.Join(blocked, "sub")); code != 1 || !strings.Contains(errOut, blocked) {
		t.Errorf("schema --dir under a file: exit %d, stderr %q; want exit 1 naming the path", code, errOut)
	}
}

package notify

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// Golden compares a webhook's JSON body, indented, with testdata/name;
// with CAPOLLER_UPDATE_GOLDEN=1 it rewrites the file first (as
// cmd/capoller's golden tests do).
func Golden(t *testing.T, name string, body []byte) {
	t.Helper()
	var b bytes.Buffer
	if err := json.Indent(&b, body, "", "  "); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", name, err, body)
	}
	b.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if os.Getenv("CAPOLLER_UPDATE_GOLDEN") == "1" {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("%s differs (CAPOLLER_UPDATE_GOLDEN=1 rewrites it):\n got:\n%s\nwant:\n%s", name, got, want)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigYAMLNamesTheKeyAndTakesOneString, through the binary as an
// operator runs it: a list setting takes one string (comma-separated, as
// the flag does; a redaction pattern whole), and a value of the wrong type
// is refused naming its key and line.
func TestConfigYAMLNamesTheKeyAndTakesOneString(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := []string{"ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIyaml", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=yaml-secret"}
	ok := write("ok.yaml", "regions: cn-hangzhou, cn-beijing\nsources: ecs\noutput-redact: 'token=\\S+,more'\n")
	code, stdout, stderr := runBinary(t, 30*time.Second, env, "config", "check", "--config", ok)
	if code != 0 || !strings.Contains(stdout, "regions:\n    - cn-hangzhou\n    - cn-beijing\n") || !strings.Contains(stdout, "token=\\S+,more") {
		t.Errorf("config check of one-string lists exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, c := range []struct{ body, want string }{
		{"regions: {cn-hangzhou: 1}\n", "line 1: regions: expected a list of strings, or one string"},
		{"interval: [30s]\n", "line 1: interval: cannot unmarshal !!seq into a duration"},
		{"accounts:\n  - name: prod\n    regions:\n      - [cn-hangzhou]\n", "line 4: accounts[0].regions: expected a list of strings, or one string"},
		{"accounts:\n  - name: prod\n    qps: 3\n", `line 3: accounts[0]: unknown setting "qps"`},
		// A key one letter off is refused, naming the one meant, at every depth.
		{"intervall: 5s\n", `line 1: unknown setting "intervall"; did you mean interval?`},
		{"hints:\n  listn: ':8443'\n", `line 2: unknown setting "listn"; did you mean listen?`},
		{"hints:\n  token_file: /run/token\n", `line 2: unknown setting "token_file"; did you mean token-file?`},
		{"accounts:\n  - name: prod\n    regoins: cn-hangzhou\n", `line 3: accounts[0]: unknown setting "regoins"; did you mean regions?`},
	} {
		code, _, stderr := runBinary(t, 30*time.Second, env, "config", "check", "--config", write("bad.yaml", c.body))
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", c.body, code, stderr, c.want)
		}
	}
}

package cloudassist

import (
	"regexp"
	"strings"
	"testing"

	"github.com/capoller/capoller/diff"
)

// TestRedactionTakesSecretsAndOnlySecrets: what the built-in patterns
// catch, what they leave (the words that say why a run failed), and the
// operator's own patterns, with and without the built-ins.
func TestRedactionTakesSecretsAndOnlySecrets(t *testing.T) {
	builtin := newRedactor(OutputOptions{})
	for _, c := range []struct{ in, want string }{
		{"DB_PASSWORD=s3cr3t ./migrate", "DB_PASSWORD=[REDACTED] ./migrate"},
		{"curl -H token='abc def' x", "curl -H token=[REDACTED] x"},
		{`{"AccessKeySecret": "Zx9\"q", "AccessKeyId": "LTAI5tQ1w2e3r4t5y6u7i8o9"}`, `{"AccessKeySecret": [REDACTED], "AccessKeyId": "[REDACTED]"}`},
		{"export ALIBABA_CLOUD_ACCESS_KEY_SECRET=abc", "export ALIBABA_CLOUD_ACCESS_KEY_SECRET=[REDACTED]"},
		{"sts STS.NUgYrLnoC37mZZCNnAbez2N2X and CAIS9gF1q6Ft5B2yfSjIr5bWAAAAAAAA", "sts [REDACTED] and [REDACTED]"},
		{"a\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----\nb", "a\n[REDACTED]\nb"},
		{"cut short: -----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn", "cut short: [REDACTED]"},
		{"cut at the API's bound: LTAI5tQ1", "cut at the API's bound: [REDACTED]"},
		// Kept: the words that say why.
		{"dial tcp 127.0.0.1:6390: connect: connection refused", "dial tcp 127.0.0.1:6390: connect: connection refused"},
		{"error: invalid token: expired", "error: invalid token: expired"},
		{"password policy violated", "password policy violated"},
		{"exit status 3", "exit status 3"},
	} {
		if got := builtin.redact(c.in); got != c.want {
			t.Errorf("redact(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
	own := []*regexp.Regexp{regexp.MustCompile(`card-\d{4}`)}
	if got := newRedactor(OutputOptions{Redact: own}).redact("card-1234 password=x"); got != "[REDACTED] password=[REDACTED]" {
		t.Errorf("own and built-in patterns: %q", got)
	}
	if got := newRedactor(OutputOptions{Redact: own, NoBuiltinRedact: true}).redact("card-1234 password=x"); got != "[REDACTED] password=x" {
		t.Errorf("own patterns only: %q", got)
	}
}

// TestVetKeepsTheEnd: a long output keeps its end, marked and named, and
// an output within the bound is untouched.
func TestVetKeepsTheEnd(t *testing.T) {
	v := newVetter(OutputOptions{MaxBytes: 100})
	rec := diff.Record{Output: strings.Repeat("a", 500) + "the error is here", OutputRaw: true}
	v.vet(&rec)
	if len(rec.Output) > 100 || !strings.HasPrefix(rec.Output, "[cut 517 bytes]…") || !strings.HasSuffix(rec.Output, "the error is here") ||
		rec.Cut != diff.FieldOutput || rec.OutputRaw {
		t.Errorf("vetted to %q (%d bytes), cut %v, raw %v", rec.Output, len(rec.Output), rec.Cut.Names(), rec.OutputRaw)
	}
	short := diff.Record{Output: "short", OutputRaw: true}
	v.vet(&short)
	if short.Output != "short" || short.Cut != 0 {
		t.Errorf("a short output became %q, cut %v", short.Output, short.Cut.Names())
	}
}

package cloudassist

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// OutputFor says which runs' output their events carry.
type OutputFor string

// The choices of [OutputOptions.For].
const (
	// OutputFailures: every terminal status but Success (the default).
	OutputFailures OutputFor = "failures"
	// OutputTerminal: every terminal status.
	OutputTerminal OutputFor = "terminal"
	// OutputNone: no output at all, and no call to read it.
	OutputNone OutputFor = "none"
)

// ParseOutputFor reads a [OutputFor] setting.
func ParseOutputFor(s string) (OutputFor, error) {
	switch f := OutputFor(strings.ToLower(strings.TrimSpace(s))); f {
	case OutputFailures, OutputTerminal, OutputNone:
		return f, nil
	}
	return "", fmt.Errorf("%q is not failures, terminal or none", s)
}

// DefaultOutputMaxBytes bounds an event's output by default.
const DefaultOutputMaxBytes = 8 << 10

// DefaultOutputWait bounds by default how long a cycle tries to read the
// output its events lack (the ecs source's look-ups).
const DefaultOutputWait = 30 * time.Second

// OutputOptions says which events carry their run's output, and how it is
// made safe to publish.
type OutputOptions struct {
	// For: which statuses; default OutputFailures.
	For OutputFor
	// MaxBytes bounds the text, whose end is kept: a script prints its
	// errors last. Default DefaultOutputMaxBytes.
	MaxBytes int
	// Redact lists the operator's patterns. Each match is replaced by
	// [REDACTED] before the text is bounded, stored or published.
	Redact []*regexp.Regexp
	// NoBuiltinRedact turns off the built-in patterns (see
	// BuiltinRedactions).
	NoBuiltinRedact bool
	// Wait bounds how long a cycle tries to read output it lacks, under
	// throttling or errors, before its events go out without it
	// (OutputMissing). Default DefaultOutputWait.
	Wait time.Duration
}

func (o OutputOptions) withDefaults() (OutputOptions, error) {
	if o.For == "" {
		o.For = OutputFailures
	}
	if _, err := ParseOutputFor(string(o.For)); err != nil {
		return o, fmt.Errorf("cloudassist: output: %w", err)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultOutputMaxBytes
	}
	if o.MaxBytes < 64 {
		return o, fmt.Errorf("cloudassist: output max bytes must be at least 64, got %d", o.MaxBytes)
	}
	if o.Wait == 0 {
		o.Wait = DefaultOutputWait
	}
	if o.Wait < 0 {
		return o, fmt.Errorf("cloudassist: output wait must be positive, got %v", o.Wait)
	}
	return o, nil
}

// Wants reports whether an event of this status carries its run's output.
func (o OutputOptions) Wants(s diff.Status) bool {
	switch o.For {
	case OutputNone:
		return false
	case OutputTerminal:
		return s.Terminal()
	}
	return s.Terminal() && s != diff.StatusSuccess
}

// redacted is what a secret becomes.
const redacted = "[REDACTED]"

// BuiltinRedactions are the patterns applied unless turned off. They catch
// secrets by their shape or by the name they are printed under:
//   - Alibaba AccessKey IDs (LTAI…) and STS ones (STS.…), and STS security
//     tokens (CAIS…);
//   - a value printed after a name that says it is secret:
//     AccessKeySecret, access_key_secret, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
//     password, passwd, token, secret, api_key… followed by = or :
//     (JSON's "password": "…" too);
//   - PEM private keys, from BEGIN to END (to the end of the text when the
//     API cut it before END, from its start when the cut left only END).
//
// They cannot catch a secret printed bare (an AccessKey secret is 30
// random characters, like many harmless strings), encoded (Base64, hex,
// URL-escaped), split over lines, or under a name they do not know: add
// patterns for those with [OutputOptions.Redact], or keep secrets out of
// scripts' output.
func BuiltinRedactions() []*regexp.Regexp {
	return []*regexp.Regexp{
		regexp.MustCompile(`\bLTAI[0-9A-Za-z]{12,30}\b|\bLTAI[0-9A-Za-z]*\z`),
		regexp.MustCompile(`\bSTS\.[0-9A-Za-z]{16,}`),
		regexp.MustCompile(`\bCAIS[0-9A-Za-z+/=_-]{16,}`),
		regexp.MustCompile(`(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)`),
		// After the one above: an END left alone began before the text.
		regexp.MustCompile(`(?s)\A.*?-----END [A-Z0-9 ]*PRIVATE KEY-----`),
	}
}

// namedSecret matches a value printed after a name that says it is
// secret; only the value is replaced, so the text still says what was
// there.
func namedSecret() *regexp.Regexp {
	const names = `(?:access[_-]?key[_-]?secret|secret[_-]?access[_-]?key|access[_-]?secret|` +
		`alibaba_cloud_access_key_secret|alicloud_secret_key|client[_-]?secret|api[_-]?key|` +
		`password|passwd|pwd|token|secret)`
	return regexp.MustCompile(`(?i)(\b` + names + `"?\s*[=:]\s*)("[^"\n]*"|'[^'\n]*'|[^\s"',;&]+)`)
}

// redactor applies an [OutputOptions]' patterns.
type redactor struct {
	patterns []*regexp.Regexp
	named    *regexp.Regexp // nil when the built-ins are off
}

func newRedactor(o OutputOptions) *redactor {
	r := &redactor{patterns: append([]*regexp.Regexp(nil), o.Redact...)}
	if !o.NoBuiltinRedact {
		r.patterns = append(r.patterns, BuiltinRedactions()...)
		r.named = namedSecret()
	}
	return r
}

// redact replaces every secret in s.
func (r *redactor) redact(s string) string {
	if r.named != nil {
		s = r.named.ReplaceAllString(s, "${1}"+redacted)
	}
	for _, p := range r.patterns {
		s = p.ReplaceAllLiteralString(s, redacted)
	}
	return s
}

// decodeOutput turns an API's Output into text: decoded from Base64 when
// it was sent so (text that is not valid Base64 is kept as sent), as
// valid UTF-8 (an invalid byte becomes U+FFFD). Every other character,
// NUL and terminal escapes included, is kept: JSON carries them, and
// consumers show them safely (events.DisplayText).
func decodeOutput(s string, isBase64 bool) string {
	if isBase64 && s != "" {
		if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s)); err == nil {
			s = string(raw)
		}
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// keepOutput gives a record read with its output that output, raw, if
// its status carries it.
func (o OutputOptions) keepOutput(rec *diff.Record, text string, isBase64 bool, dropped int64, uri string) {
	if rec.InstanceID == "" || !o.Wants(rec.Status) {
		return
	}
	rec.Output, rec.OutputRaw = decodeOutput(text, isBase64), true
	rec.OutputDropped, rec.OutputURI = dropped, uri
}

// vetter makes raw output publishable: redacted, then bounded.
type vetter struct {
	o OutputOptions
	r *redactor
}

func newVetter(o OutputOptions) *vetter { return &vetter{o: o, r: newRedactor(o)} }

// vet redacts and bounds a record's raw output. Redaction comes first, on
// the whole text, so that the cut cannot leave part of a secret.
func (v *vetter) vet(rec *diff.Record) {
	if !rec.OutputRaw {
		return
	}
	rec.OutputRaw = false
	text := v.r.redact(rec.Output)
	var cut bool
	if rec.Output, cut = diff.CutHead(text, v.o.MaxBytes); cut {
		rec.Cut |= diff.FieldOutput
	}
}

// fillFromRows vets the output the listing read with the records: the
// ecs-results and swas sources, and the history of periodic tasks, read
// it in the rows they list, at no extra call.
func (v *vetter) fillFromRows(ts []diff.Transition) {
	for i := range ts {
		v.vet(&ts[i].Record)
	}
}

// FillOutputs vets the output that the listing read with the records.
func (c *ECSResults) FillOutputs(_ context.Context, ts []diff.Transition) {
	c.api.vetter.fillFromRows(ts)
}

// FillOutputs vets the output that the listing read with the records.
func (c *SWAS) FillOutputs(_ context.Context, ts []diff.Transition) {
	c.vetter.fillFromRows(ts)
}

// FillOutputs gives the transitions that announce an outcome their run's
// output. DescribeInvocations lists no output without an InvokeId, so the
// output of an invocation's instances is read in one look-up per
// invocation (IncludeOutput=true), sharing the calls' quota. What cannot
// be read within the output wait (throttling, errors) goes out without
// it, marked OutputMissing. A periodic task's runs read from its history
// already hold their output.
func (c *ECS) FillOutputs(ctx context.Context, ts []diff.Transition) {
	a := c.api
	a.vetter.fillFromRows(ts)
	want := map[string][]int{} // invocation -> the transitions lacking output
	var order []string
	for i := range ts {
		r := &ts[i].Record
		if r.InstanceID == "" || r.Output != "" || r.OutputMissing || !a.opts.Output.Wants(r.Status) {
			continue
		}
		if _, ok := want[r.InvokeID]; !ok {
			order = append(order, r.InvokeID)
		}
		want[r.InvokeID] = append(want[r.InvokeID], i)
	}
	if len(order) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.Output.Wait)
	defer cancel()
	var failed error
	for _, id := range order {
		runs := map[string]ecs.InvokeInstance{}
		err := ctx.Err()
		if err == nil {
			err = a.describeInvocations(ctx, func(req *ecs.DescribeInvocationsRequest) {
				req.InvokeId, req.IncludeOutput = id, requests.NewBoolean(true)
			}, func(inv ecs.Invocation) error {
				if inv.InvokeId == id {
					for _, in := range inv.InvokeInstances.InvokeInstance {
						runs[in.InstanceId] = in
					}
				}
				return nil
			})
		}
		for _, i := range want[id] {
			r := &ts[i].Record
			in, ok := runs[r.InstanceID]
			// A periodic task's instance shows its latest run: another
			// run's output is not this one's.
			if err != nil || !ok || in.Repeats != r.Repeats && max(in.Repeats, r.Repeats) > 1 {
				r.OutputMissing = true
				continue
			}
			r.Output, r.OutputRaw, r.OutputDropped = decodeOutput(in.Output, true), true, int64(in.Dropped)
			a.vetter.vet(r)
		}
		if err != nil && failed == nil {
			failed = err
		}
	}
	if failed != nil && !errors.Is(failed, context.Canceled) {
		a.opts.Logger.Warn("some events go out without their run's output: it could not be read in time",
			zap.String("region", a.opts.Region), zap.Duration("wait", a.opts.Output.Wait), zap.Error(failed))
	}
}

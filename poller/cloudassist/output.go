package cloudassist

import (
	"context"
	"encoding/base64"
	"encoding/json"
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
//   - a value printed after a name that says it is secret, as
//     name=value or JSON's "name": "value": AccessKeySecret,
//     access_key_secret, ALIBABA_CLOUD_ACCESS_KEY_SECRET, password, passwd,
//     token, secret, api_key, security_token… (DB_PASSWORD=… too);
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

// namedSecrets match a value printed after a name that says it is
// secret, as name=value or as JSON's "name": "value"; only the value is
// replaced, so the text still says what was there. A bare "name: value"
// is not taken: "invalid token: expired" says why a run failed.
func namedSecrets() []*regexp.Regexp {
	const names = `(?:access[_-]?key[_-]?secret|secret[_-]?access[_-]?key|access[_-]?secret|` +
		`alibaba_cloud_access_key_secret|alicloud_secret_key|client[_-]?secret|api[_-]?key|security[_-]?token|` +
		`password|passwd|pwd|token|secret)`
	return []*regexp.Regexp{
		regexp.MustCompile(`(?i)(` + names + `\s*=\s*)("[^"\n]*"|'[^'\n]*'|[^\s"',;&]+)`),
		regexp.MustCompile(`(?i)("` + names + `"\s*:\s*)("(?:[^"\\\n]|\\.)*")`),
	}
}

// redactor applies an [OutputOptions]' patterns.
type redactor struct {
	patterns []*regexp.Regexp
	named    []*regexp.Regexp // none when the built-ins are off
}

func newRedactor(o OutputOptions) *redactor {
	r := &redactor{patterns: append([]*regexp.Regexp(nil), o.Redact...)}
	if !o.NoBuiltinRedact {
		r.patterns = append(r.patterns, BuiltinRedactions()...)
		r.named = namedSecrets()
	}
	return r
}

// redact replaces every secret in s.
func (r *redactor) redact(s string) string {
	for _, p := range r.named {
		s = p.ReplaceAllString(s, "${1}"+redacted)
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
// output. DescribeInvocations lists no output without an InvokeId or an
// InstanceId, so output is read by look-ups with IncludeOutput=true:
// one per invocation (all its instances in one call), or one per instance
// (its newest invocations, a page of them, in one call), whichever takes
// fewer calls — a command run across a fleet fails on many instances at
// once, a busy instance fails many commands. They share the calls' quota.
// What cannot be read within the output wait (throttling, errors),
// counted over all the look-ups of one listing, goes out without it,
// marked OutputMissing. A periodic task's runs read from its history, and
// the invocations an incremental listing looked up, already hold theirs.
func (c *ECS) FillOutputs(ctx context.Context, ts []diff.Transition) {
	a := c.api
	a.vetter.fillFromRows(ts)
	byInvocation := map[string][]int{} // the transitions lacking output
	byInstance := map[string][]int{}
	var invocations, instances []string
	for i := range ts {
		r := &ts[i].Record
		if r.InstanceID == "" || r.Output != "" || r.OutputMissing || !a.opts.Output.Wants(r.Status) {
			continue
		}
		if _, ok := byInvocation[r.InvokeID]; !ok {
			invocations = append(invocations, r.InvokeID)
		}
		byInvocation[r.InvokeID] = append(byInvocation[r.InvokeID], i)
		if _, ok := byInstance[r.InstanceID]; !ok {
			instances = append(instances, r.InstanceID)
		}
		byInstance[r.InstanceID] = append(byInstance[r.InstanceID], i)
	}
	if len(invocations) == 0 {
		return
	}
	// The wait bounds a whole listing's look-ups, not each batch's: an
	// incremental listing fills its output page by page, and its next
	// pages must not wait behind throttled look-ups.
	budget := a.opts.Output.Wait - c.outputSpent
	start := time.Now()
	defer func() { c.outputSpent += time.Since(start) }()
	ctx, cancel := context.WithTimeout(ctx, max(budget, 0))
	defer cancel()
	groups, lookUp := invocations, func(id string, want []int) (map[runKey]instanceOutput, error) {
		return a.lookUpOutput(ctx, id)
	}
	wanted := byInvocation
	if len(instances) < len(invocations) {
		groups, wanted = instances, byInstance
		lookUp = func(id string, want []int) (map[runKey]instanceOutput, error) {
			ids := map[string]bool{}
			for _, i := range want {
				ids[ts[i].Record.InvokeID] = true
			}
			return a.lookUpInstanceOutput(ctx, id, ids)
		}
	}
	var failed error
	for _, id := range groups {
		var runs map[runKey]instanceOutput
		err := ctx.Err()
		if err == nil {
			runs, err = lookUp(id, wanted[id])
		}
		for _, i := range wanted[id] {
			r := &ts[i].Record
			in, ok := runs[runKey{r.InvokeID, r.InstanceID}]
			// A periodic task's instance shows its latest run: another
			// run's output is not this one's.
			if !ok || in.Repeats != r.Repeats && max(in.Repeats, r.Repeats) > 1 {
				r.OutputMissing = true
				continue
			}
			r.Output, r.OutputRaw = decodeOutput(in.Output, true), true
			r.OutputDropped, r.OutputURI = int64(in.Dropped), in.OssOutputUri
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

// runKey names one instance's run of one invocation.
type runKey struct{ invokeID, instanceID string }

// instanceOutput is what a look-up with IncludeOutput says of one
// instance's latest run. OssOutputUri is not in the V1 SDK's struct.
type instanceOutput struct {
	InstanceId   string
	Repeats      int
	Output       string
	Dropped      int
	OssOutputUri string
}

// lookUpOutput reads the output of every instance of one invocation:
// DescribeInvocations by InvokeId with IncludeOutput, its pages followed.
// The output is Base64: no ContentEncoding is asked for.
func (a *ecsAPI) lookUpOutput(ctx context.Context, invokeID string) (map[runKey]instanceOutput, error) {
	out := map[runKey]instanceOutput{}
	pages := 0
	err := a.outputPages(ctx, "describe invocation output", func(req *ecs.DescribeInvocationsRequest) { req.InvokeId = invokeID },
		func(runs map[runKey]instanceOutput) bool {
			for k, in := range runs {
				if k.invokeID == invokeID {
					out[k] = in
				}
			}
			pages++
			return len(out) == 0 && pages < maxOutputPages // one invocation: its page holds all its instances
		})
	return out, err
}

// maxOutputPages bounds a look-up: by invocation, one page holds it; by
// instance, the invocations whose output it wants are among its newest.
// An API that hands out NextTokens without end costs no more.
const maxOutputPages = 3

// lookUpInstanceOutput reads what one instance printed for the
// invocations wanted: DescribeInvocations by InstanceId with
// IncludeOutput, newest first, until every one was read (or a few pages).
func (a *ecsAPI) lookUpInstanceOutput(ctx context.Context, instanceID string, wanted map[string]bool) (map[runKey]instanceOutput, error) {
	out := map[runKey]instanceOutput{}
	pages := 0
	err := a.outputPages(ctx, "describe instance output", func(req *ecs.DescribeInvocationsRequest) { req.InstanceId = instanceID },
		func(runs map[runKey]instanceOutput) bool {
			for k, in := range runs {
				if k.instanceID == instanceID && wanted[k.invokeID] {
					out[k] = in
				}
			}
			pages++
			return len(out) < len(wanted) && pages < maxOutputPages
		})
	return out, err
}

// errEnoughPages ends a look-up's paging once it read what it wanted.
var errEnoughPages = errors.New("cloudassist: enough pages")

// outputPages walks the pages of a DescribeInvocations look-up with
// IncludeOutput, handing each page's runs to each until it says stop.
func (a *ecsAPI) outputPages(ctx context.Context, action string, filter func(*ecs.DescribeInvocationsRequest), each func(map[runKey]instanceOutput) bool) error {
	err := walk(ctx, a.opts, action, func(token string) (map[runKey]instanceOutput, string, string, error) {
		req := ecs.CreateDescribeInvocationsRequest()
		filter(req)
		req.IncludeOutput = requests.NewBoolean(true)
		req.MaxResults, req.NextToken = requests.NewInteger(a.opts.PageSize), token
		resp, err := invoke(ctx, a.opts, &a.calls, "DescribeInvocations", func() (*ecs.DescribeInvocationsResponse, error) {
			return a.client.DescribeInvocations(req)
		})
		if err != nil {
			return nil, "", "", err
		}
		runs, err := parseOutputs(resp.GetHttpContentBytes())
		if err != nil {
			return nil, "", "", err
		}
		return runs, resp.NextToken, resp.RequestId, nil
	}, func(runs map[runKey]instanceOutput) error {
		if !each(runs) {
			return errEnoughPages
		}
		return nil
	})
	if errors.Is(err, errEnoughPages) {
		return nil
	}
	return err
}

// parseOutputs reads, from a DescribeInvocations answer asked with
// IncludeOutput, what each instance printed for each invocation.
func parseOutputs(body []byte) (map[runKey]instanceOutput, error) {
	var resp struct {
		Invocations struct {
			Invocation []struct {
				InvokeId        string
				InvokeInstances struct{ InvokeInstance []instanceOutput }
			}
		}
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("cloudassist: decode the output in a DescribeInvocations answer: %w", err)
	}
	out := map[runKey]instanceOutput{}
	for _, inv := range resp.Invocations.Invocation {
		for _, in := range inv.InvokeInstances.InvokeInstance {
			out[runKey{inv.InvokeId, in.InstanceId}] = in
		}
	}
	return out, nil
}

// rawBodyKey carries, in a listing call's context, a function that sees
// each answer's raw body: what the SDK's structs drop.
type rawBodyKey struct{}

// keepLookedUpOutput gives a record read by a look-up that asked for
// output the output its instance printed, if it is this run's.
func (ch *chunker) keepLookedUpOutput(rec *diff.Record) {
	in, ok := ch.output[runKey{rec.InvokeID, rec.InstanceID}]
	if !ok || rec.InstanceID == "" || in.Repeats != rec.Repeats && max(in.Repeats, rec.Repeats) > 1 {
		return
	}
	ch.t.output.keepOutput(rec, in.Output, true, int64(in.Dropped), in.OssOutputUri)
}

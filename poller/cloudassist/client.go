package cloudassist

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
)

// Options configures a lister. Zero values get the documented defaults.
type Options struct {
	// Region is the region to list; required.
	Region string
	// Endpoint is the API base URL, e.g. http://127.0.0.1:8080 for casim.
	// Empty means Alibaba's public endpoints over HTTPS.
	Endpoint string
	// Credential, if set, signs every call: any of the SDK's providers
	// (static access key or STS token, RAM role ARN, ECS RAM role, CLI
	// profile…), used as it is. Listers may share one — the listers of an
	// account's shards should, so that it assumes a role once — if it is
	// safe for concurrent use, which the SDK's refreshing providers are
	// not by themselves ([Credentials.Provider] makes such a provider).
	// Set it or the static keys below, not both.
	Credential CredentialsProvider
	// AccessKeyID, AccessKeySecret and SecurityToken are static
	// credentials. When they and Credential are empty the SDK's default
	// chain is used (ALIBABA_CLOUD_* environment, CLI profile, credentials
	// file, ECS RAM role…).
	AccessKeyID     string
	AccessKeySecret string
	SecurityToken   string
	// Timeout bounds one API call; default 15s.
	Timeout time.Duration
	// PageSize is MaxResults per page, 1..50; default 50.
	PageSize int
	// MaxRecords is the most records the API keeps, and so the most one
	// listing can return; default 100,000 (the largest retention Alibaba
	// documents). A listing longer than that at PageSize, plus a tenth
	// and ten pages for arrivals, fails: the API is looping.
	MaxRecords int
	// Logger receives warnings about odd but usable data; default no-op.
	Logger *zap.Logger
	// Strategy is how the ecs source reads the API; default full. (The
	// ecs-results and swas sources always list fully.)
	Strategy Strategy
	// ResyncEvery is how often an incremental lister lists everything;
	// default 10m.
	ResyncEvery time.Duration
	// HeadOverlap is how far past the newest invocation it knows, in
	// creation time, an incremental lister reads the head of the listing
	// each cycle; default 1m, negative for none (the head scan then still
	// reads the whole newest known second). It finds invocations that
	// share a second with known ones in any order, or that a drifting page
	// skipped, by the next cycle; keep it above the polling interval.
	HeadOverlap time.Duration
	// Limits, if set, keeps calls under a rate shared with other listers.
	Limits *Limits
	// ThrottleWindow is the API's throttling window: a throttled call is
	// retried after the next window boundary, plus jitter. Default 1m.
	ThrottleWindow time.Duration
	// ThrottleRetries bounds the retries of a throttled call; 0 means until
	// the context ends, -1 none.
	ThrottleRetries int
	// TransientRetries bounds the retries of a call that failed
	// transiently (5xx, network, undecodable body), with exponential
	// backoff; default 3, -1 none.
	TransientRetries int
	// OnCall, if set, learns of every API call made (retries included).
	OnCall func(action string)
	// OnError, if set, learns of every API call that failed, retried or
	// not (a cancelled one excepted).
	OnError func(err *APIError)
	// OnBackoff, if set, learns of every pause before a retry.
	OnBackoff func(class Class, wait time.Duration)
	// OnSkipped, if set, learns of every record skipped because it has no
	// id or no status (see the Skip* reasons). A listing logs its skipped
	// records once, with a count and an example, when that count changed
	// since the previous listing.
	OnSkipped func(reason string)
	// OnListingAborted, if set, learns of every listing cut short because
	// it would never end (see the Abort* reasons).
	OnListingAborted func(reason string)
	// Now is the clock that stamps snapshots; default time.Now.
	Now func() time.Time
	// Output says which events carry their run's output, and how it is
	// made safe to publish (see [OutputOptions]).
	Output OutputOptions
	// Tracing, if set, traces every API call (a page, a look-up) as a
	// child of its context's span, its retries and pauses included.
	// Default: OpenTelemetry's no-op provider.
	Tracing trace.TracerProvider
}

// maxRestarts bounds how often one listing restarts after the API refused
// its NextToken.
const maxRestarts = 3

// The reasons a listing is cut short, as [Options.OnListingAborted]
// reports them.
const (
	// AbortTokenCycle: a NextToken came back that the listing had already
	// followed. The cycle fails with [ErrMalformed].
	AbortTokenCycle = "token_cycle"
	// AbortPageLimit: the listing ran past the pages MaxRecords allows.
	// The cycle fails with [ErrMalformed].
	AbortPageLimit = "page_limit"
	// AbortRepeatedPage: a full SWAS page held nothing new while TotalCount
	// promised more (PageNumber past the data, answered with old pages).
	// The listing ends there, incomplete: its records are used, its
	// absences are not.
	AbortRepeatedPage = "repeated_page"
)

// maxPages bounds the pages of one listing: what MaxRecords takes at
// PageSize, plus a tenth and ten pages for records that arrive meanwhile.
func (o Options) maxPages() int {
	n := (o.MaxRecords + o.PageSize - 1) / o.PageSize
	return n + n/10 + 10
}

// aborted reports a listing cut short.
func (o Options) aborted(reason string) {
	if o.OnListingAborted != nil {
		o.OnListingAborted(reason)
	}
}

// withDefaults validates opts and fills in defaults on a copy.
func (o Options) withDefaults() (Options, error) {
	if o.Region == "" {
		return o, errors.New("cloudassist: a region is required")
	}
	if o.Timeout == 0 {
		o.Timeout = 15 * time.Second
	}
	if o.Timeout < 0 {
		return o, fmt.Errorf("cloudassist: timeout must be positive, got %v", o.Timeout)
	}
	if o.PageSize == 0 {
		o.PageSize = 50
	}
	if o.PageSize < 1 || o.PageSize > 50 {
		return o, fmt.Errorf("cloudassist: page size must be within 1..50, got %d", o.PageSize)
	}
	if o.MaxRecords == 0 {
		o.MaxRecords = 100_000
	}
	if o.MaxRecords < 0 {
		return o, fmt.Errorf("cloudassist: max records must be positive, got %d", o.MaxRecords)
	}
	if o.AccessKeyID != "" && o.AccessKeySecret == "" {
		return o, errors.New("cloudassist: an access key id needs its secret")
	}
	if o.Credential != nil && (o.AccessKeyID != "" || o.AccessKeySecret != "" || o.SecurityToken != "") {
		return o, errors.New("cloudassist: set a Credential or static keys, not both")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tracing == nil {
		o.Tracing = noop.NewTracerProvider()
	}
	output, err := o.Output.withDefaults()
	if err != nil {
		return o, err
	}
	o.Output = output
	if o.Strategy == "" {
		o.Strategy = StrategyFull
	}
	if _, err := ParseStrategy(string(o.Strategy)); err != nil {
		return o, err
	}
	if o.ResyncEvery == 0 {
		o.ResyncEvery = 10 * time.Minute
	}
	if o.HeadOverlap == 0 {
		o.HeadOverlap = time.Minute
	}
	if o.ThrottleWindow == 0 {
		o.ThrottleWindow = time.Minute
	}
	if o.TransientRetries == 0 {
		o.TransientRetries = 3
	}
	if o.ThrottleWindow < 0 || o.ThrottleRetries < -1 || o.TransientRetries < -1 {
		return o, errors.New("cloudassist: bad retry options")
	}
	return o, nil
}

// sdkSetup is what every SDK client needs: configuration, credentials and,
// for a custom endpoint, the host to send to.
type sdkSetup struct {
	config     *sdk.Config
	credential auth.Credential
	domain     string // empty: let the SDK resolve (ECS) or use the product default
}

// prepare validates opts, fills in defaults, and derives the SDK setup.
func prepare(opts Options) (Options, sdkSetup, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return o, sdkSetup{}, err
	}
	setup, err := newSDKSetup(o)
	return o, setup, err
}

func newSDKSetup(o Options) (sdkSetup, error) {
	setup := sdkSetup{config: sdk.NewConfig().WithAutoRetry(false).WithTimeout(o.Timeout).WithScheme("HTTPS")}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return setup, fmt.Errorf("cloudassist: endpoint %q is not an http(s) URL", o.Endpoint)
		}
		setup.domain = u.Host
		if u.Scheme == "http" {
			setup.config = setup.config.WithScheme("HTTP")
		}
	}
	switch {
	case o.Credential != nil:
		setup.credential = o.Credential
	case o.AccessKeyID != "" && o.SecurityToken != "":
		setup.credential = credentials.NewStaticSTSCredentialsProvider(o.AccessKeyID, o.AccessKeySecret, o.SecurityToken)
	case o.AccessKeyID != "":
		setup.credential = credentials.NewStaticAKCredentialsProvider(o.AccessKeyID, o.AccessKeySecret)
	}
	return setup, nil
}

// invoke makes one API call under the rate limit, retrying it by the
// class of its error: a throttled call waits past the next window
// boundary (and lowers the rate), a transient failure backs off
// exponentially a few times; anything else returns at once, translated.
func invoke[T any](ctx context.Context, o Options, c *caller, action string, fn func() (T, error)) (_ T, err error) {
	var zero T
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(10*time.Second),
		backoff.WithMaxElapsedTime(0))
	throttles, transients := 0, 0
	// The SDK takes no context: the span is ours, around every attempt.
	ctx, span := o.Tracing.Tracer(tracerName).Start(ctx, action, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("rpc.system", "alibaba_cloud"), attribute.String("rpc.method", action),
			attribute.String("cloud.region", o.Region)))
	defer func() { endCall(span, throttles, transients, err) }()
	for {
		if err := o.Limits.wait(ctx, o.Region, action); err != nil {
			return zero, err
		}
		if o.OnCall != nil {
			o.OnCall(action)
		}
		v, err := do(ctx, c, fn)
		if err == nil {
			o.Limits.passed(o.Region, action)
			return v, nil
		}
		if ctx.Err() != nil {
			return zero, ctx.Err()
		}
		apiErr := translate(action, err)
		if o.OnError != nil {
			o.OnError(apiErr)
		}
		var wait time.Duration
		switch apiErr.Class {
		case ClassThrottled:
			o.Limits.throttled(o.Region, action, o.Now(), o.ThrottleWindow)
			if throttles++; o.ThrottleRetries == -1 || o.ThrottleRetries > 0 && throttles > o.ThrottleRetries {
				return zero, apiErr
			}
			wait = untilNextWindow(o.Now(), o.ThrottleWindow)
			// Once per window and action at most: the retry waits past it.
			o.Logger.Info("API throttled; waiting for the next quota window", zap.String("action", action),
				zap.String("region", o.Region), zap.Duration("wait", wait), zap.Int("throttled", throttles))
		case ClassTransient:
			if transients++; o.TransientRetries == -1 || transients > o.TransientRetries {
				return zero, apiErr
			}
			wait = bo.NextBackOff()
		default:
			return zero, apiErr
		}
		if o.OnBackoff != nil {
			o.OnBackoff(apiErr.Class, wait)
		}
		pause := sleep
		if apiErr.Class == ClassThrottled {
			pause = quotaWait // waiting for the quota is progress, see WithProgress
		}
		if err := pause(ctx, wait); err != nil {
			return zero, err
		}
	}
}

// tracerName is the instrumentation scope of the API calls' spans.
const tracerName = "github.com/capoller/capoller/poller/cloudassist"

// endCall ends an API call's span with its retries, and its error's class.
func endCall(span trace.Span, throttles, transients int, err error) {
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("capoller.throttled", throttles), attribute.Int("capoller.transient_failures", transients))
		if err != nil {
			span.RecordError(err)
			class := "cancelled"
			if e, ok := errors.AsType[*APIError](err); ok {
				class = e.Class.String()
			}
			span.SetAttributes(attribute.String("error.type", class))
			span.SetStatus(codes.Error, class)
		}
	}
	span.End()
}

// untilNextWindow is the pause until just past the next window boundary:
// throttled in window T, the API answers again from T+1. Up to a tenth of
// the window (at most 5s) of jitter spreads the callers.
func untilNextWindow(now time.Time, window time.Duration) time.Duration {
	next := now.Truncate(window).Add(window)
	jitter := time.Duration(rand.Int64N(int64(min(window/10, 5*time.Second)) + 1))
	return next.Sub(now) + jitter
}

// caller serializes calls on one SDK client, which is not safe for
// concurrent use, and lets a context abandon a call the SDK cannot cancel.
type caller struct {
	mu sync.Mutex
}

// do runs fn, the SDK call, and returns early if ctx ends first. The
// abandoned call still finishes (bounded by the SDK timeout) before the
// next call may start.
func do[T any](ctx context.Context, c *caller, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := ctx.Err(); err != nil {
			var zero T
			done <- result{zero, err}
			return
		}
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

package cloudassist

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"go.uber.org/zap"
)

// Options configures a lister. Zero values get the documented defaults.
type Options struct {
	// Region is the region to list; required.
	Region string
	// Endpoint is the API base URL, e.g. http://127.0.0.1:8080 for casim.
	// Empty means Alibaba's public endpoints over HTTPS.
	Endpoint string
	// AccessKeyID, AccessKeySecret and SecurityToken are static
	// credentials. When AccessKeyID is empty the SDK's default chain is used
	// (ALIBABA_CLOUD_* environment, CLI profile, credentials file, ECS RAM
	// role…).
	AccessKeyID     string
	AccessKeySecret string
	SecurityToken   string
	// Timeout bounds one API call; default 15s.
	Timeout time.Duration
	// PageSize is MaxResults per page, 1..50; default 50.
	PageSize int
	// Logger receives warnings about odd but usable data; default no-op.
	Logger *zap.Logger
	// Now is the clock that stamps snapshots; default time.Now.
	Now func() time.Time
}

// maxRestarts bounds how often one listing restarts after the API refused
// its NextToken.
const maxRestarts = 3

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
	if o.AccessKeyID != "" && o.AccessKeySecret == "" {
		return o, errors.New("cloudassist: an access key id needs its secret")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
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
	case o.AccessKeyID != "" && o.SecurityToken != "":
		setup.credential = credentials.NewStaticSTSCredentialsProvider(o.AccessKeyID, o.AccessKeySecret, o.SecurityToken)
	case o.AccessKeyID != "":
		setup.credential = credentials.NewStaticAKCredentialsProvider(o.AccessKeyID, o.AccessKeySecret)
	}
	return setup, nil
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
